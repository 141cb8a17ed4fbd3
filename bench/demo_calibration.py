"""The demo plan, before and after calibration on this machine's runs.

Run 1: recommend for the bundled demo scenario (what `make run` does) and execute the top plan on
SmolLM2-135M into a temporary run store. Fit the calibration on run 1's measurements only. Run 2:
recommend again with that calibration and execute its top plan. Reported: for quality loss and
decode latency (and the other measured metrics), whether the measured value lies inside the
predicted range - run 1 against the uncalibrated prediction, run 2 against the calibrated one.
Run: `python -m bench demo_calibration`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bench._common import ratio

SCENARIO = os.environ.get("DEMO_SCENARIO", "bundled-demo")
MODEL = "smollm2-135m"
CHECK = ("quality_loss_pct", "decode_ms_per_token", "size_mb", "inference_memory_mb", "prefill_ms")


def _inside(plan, report) -> dict:
    out = {}
    for metric in CHECK:
        p = plan.predicted.get(metric)
        m = report.final_metrics.get(metric)
        if p is None or p.value is None or m is None:
            continue
        lo, hi = p.low if p.low is not None else p.value, p.high if p.high is not None else p.value
        out[metric] = {"predicted": p.value, "low": lo, "high": hi, "measured": m,
                       "inside": lo <= m <= hi, "basis": p.basis, "note": p.note}
    return out


def main() -> dict:
    from runners.execute import execute
    from slmrec.calibrate import Calibration
    from slmrec.evidence import RunStore
    from slmrec.kb import load_kb
    from slmrec.recommend import recommend

    kb = load_kb()
    work = Path(tempfile.mkdtemp(prefix="slmrec-demo-cal-"))
    try:
        store = RunStore(work / "runs.sqlite")
        rec1 = recommend(SCENARIO, kb, top_k=1, counterfactuals=False)
        rep1 = execute(rec1.top, kb=kb, model=MODEL, out_dir=work / "run1", store=store,
                       progress=False, log=lambda *_: None)
        cal = Calibration.from_store(work / "runs.sqlite", kb=kb)
        rec2 = recommend(SCENARIO, kb, top_k=1, calibration=cal, counterfactuals=False)
        rep2 = execute(rec2.top, kb=kb, model=MODEL, out_dir=work / "run2", store=False,
                       progress=False, log=lambda *_: None)
        before, after = _inside(rec1.top, rep1), _inside(rec2.top, rep2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    plan1 = " -> ".join(s.method for s in rec1.top.steps)
    plan2 = " -> ".join(s.method for s in rec2.top.steps)
    md = [f"Run 1 plan: {plan1}; run 2 plan (recommended with the calibration): {plan2}.", "",
          "| metric | run 1 predicted [low, high] | measured | inside | run 2 calibrated "
          "[low, high] | measured | inside |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for metric in CHECK:
        b, a = before.get(metric), after.get(metric)
        if not b and not a:
            continue
        cell = lambda d: ("–", "–", "–") if not d else (  # noqa: E731
            f"{d['predicted']:.4g} [{d['low']:.4g}, {d['high']:.4g}]", f"{d['measured']:.4g}",
            "yes" if d["inside"] else "no")
        md.append(f"| {metric} | " + " | ".join(cell(b) + cell(a)) + " |")

    def flag(d, metric):
        return None if metric not in d else float(d[metric]["inside"])

    return {
        "title": "the demo plan's measured quality and latency against predicted ranges, "
                 "before and after calibration on this machine's run",
        "ratios": {
            "quality_inside_after": ratio(flag(after, "quality_loss_pct"), ">= 1",
                                          "run 2 quality loss inside its calibrated range"),
            "decode_inside_after": ratio(flag(after, "decode_ms_per_token"), ">= 1",
                                         "run 2 decode ms/token inside its calibrated range"),
            "quality_inside_before": ratio(flag(before, "quality_loss_pct"), None,
                                           "run 1, uncalibrated"),
            "decode_inside_before": ratio(flag(before, "decode_ms_per_token"), None,
                                          "run 1, uncalibrated"),
        },
        "plans": [plan1, plan2], "before": before, "after": after, "markdown": "\n".join(md),
    }
