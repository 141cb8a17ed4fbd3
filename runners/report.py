"""Run reports: what was predicted next to what was measured, per step and metric.

`RunReport` is what `runners.execute.execute` returns; `write_reports` puts `report.json` and
`report.md` into the run folder (atomically), and `comparison_table` is the text table the CLI
prints at the end of a run. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

# Metrics shown even without a prediction, in this order (others follow alphabetically).
CORE_METRICS = ("params", "size_mb", "bits_per_weight", "sparsity", "ppl", "quality_loss_pct",
                "prefill_ms", "decode_ms_per_token", "throughput_tok_s", "peak_memory_mb",
                "inference_memory_mb", "step_peak_memory_mb", "train_loss", "wall_s",
                "step_hours")
UNITS = {"params": "", "size_mb": "MB", "ppl": "", "prefill_ms": "ms", "sparsity": "",
         "decode_ms_per_token": "ms", "peak_memory_mb": "MB", "step_peak_memory_mb": "MB",
         "train_loss": "", "wall_s": "s", "bits_per_weight": "bits", "quality_loss_pct": "%",
         "inference_memory_mb": "MB", "throughput_tok_s": "tokens/s", "step_hours": "h",
         "step_quality_loss_pct": "%"}


@dataclass
class StepReport:
    index: int
    method: str
    runner: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"          # pending | completed | failed
    reason: str | None = None
    wall_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    predicted: dict[str, dict] = field(default_factory=dict)
    checkpoint: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    resumed: bool = False            # completed by an earlier invocation of the same run


@dataclass
class RunReport:
    status: str                      # completed | failed | interrupted
    out_dir: str
    plan_name: str | None = None
    plan_hash: str = ""
    kb_version: str | None = None
    base_model: str = ""
    teacher: str | None = None
    seed: int = 0
    run_id: int | None = None
    store: str | None = None
    reason: str | None = None
    failed_step: int | None = None
    started: str | None = None
    finished: str | None = None
    wall_s: float | None = None
    hardware: dict[str, Any] = field(default_factory=dict)
    base_metrics: dict[str, float] = field(default_factory=dict)
    steps: list[StepReport] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)
    final_predicted: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def exit_code(self) -> int:
        """0 completed, 1 failed or interrupted (2 is reserved for user mistakes)."""
        return 0 if self.ok else 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["comparison"] = comparison_rows(self)
        return _clean(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunReport":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["steps"] = [StepReport(**{k: v for k, v in s.items()
                                    if k in StepReport.__dataclass_fields__})
                      for s in d.get("steps", [])]
        return cls(**d)


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _order(names) -> list[str]:
    names = set(names)
    return [m for m in CORE_METRICS if m in names] + sorted(names - set(CORE_METRICS))


# The text a perplexity-based figure is measured on. After every step the executor measures
# the same small, fixed validation slice (the probe: `probe_ppl`, and the quality losses derived
# from it); an evaluate step measures `ppl` on its own, larger slice. Figures on two slices are
# never compared with each other.
PROBE = "probe"
EVAL = "evaluate step"
PROBE_METRICS = frozenset({"probe_ppl", "quality_loss_pct", "step_quality_loss_pct"})
SLICED_METRICS = PROBE_METRICS | {"ppl"}


def metric_slice(metric: str, runner: str | None) -> str | None:
    """The named text slice `metric` was measured on after a step run by `runner` (None: the
    metric is not measured on text)."""
    if metric in PROBE_METRICS:
        return PROBE
    if metric == "ppl":
        return EVAL if runner == "evaluate" else PROBE
    return None


def final_runner(steps) -> str | None:
    """The runner of the last completed step that measured `ppl`: the plan-level `ppl` is its."""
    done = [s for s in steps if _get(s, "status") == "completed"
            and "ppl" in (_get(s, "metrics") or {})]
    return _get(done[-1], "runner") if done else None


def _get(obj, key):
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def slice_warnings(rows: list[dict]) -> list[str]:
    """One line when a metric appears on more than one slice in `rows`."""
    seen: dict[str, set] = {}
    for r in rows:
        if r.get("slice") and r.get("measured") is not None:
            seen.setdefault(r["metric"], set()).add(r["slice"])
    return [f"warning: {m} is measured on different text slices here ({', '.join(sorted(v))}); "
            f"compare {m} only within one slice (probe_ppl and quality_loss_pct are on the "
            "probe slice throughout)" for m, v in sorted(seen.items()) if len(v) > 1]


# Signed, additive metrics: compared by difference (percentage points), not by ratio.
DIFFERENCE_METRICS = frozenset({"quality_loss_pct", "step_quality_loss_pct"})
RANGE_SLACK = 0.01


def compare_one(scope: str, method: str, metric: str, pred: Mapping | None,
                measured: float | None, runner: str | None = None) -> dict:
    pred = pred or {}
    value, low, high = pred.get("value"), pred.get("low"), pred.get("high")
    ratio = within = diff = None
    if measured is not None and value is not None and math.isfinite(measured):
        if metric in DIFFERENCE_METRICS:
            diff = measured - value
        elif value != 0:
            ratio = measured / value
    if measured is not None and low is not None and high is not None:
        # An analytic point prediction is "in range" within rounding (1%), not only when exact.
        slack = RANGE_SLACK * max(abs(low), abs(high)) if metric not in DIFFERENCE_METRICS else 0.0
        within = low - slack <= measured <= high + slack
    return {"scope": scope, "method": method, "metric": metric, "predicted": value,
            "predicted_low": low, "predicted_high": high, "measured": measured,
            "ratio": ratio, "difference": diff, "within_range": within,
            "unit": pred.get("unit") or UNITS.get(metric, ""),
            "slice": metric_slice(metric, runner)}


def comparison_rows(report: RunReport, predicted_only: bool = False) -> list[dict]:
    """One row per (step or plan, metric): predicted value/low/high, measured, measured/predicted."""
    rows = []
    for s in report.steps:
        names = set(s.predicted) | (set() if predicted_only else set(s.metrics))
        for metric in _order(names):
            rows.append(compare_one(f"step {s.index + 1}", s.method, metric,
                                    s.predicted.get(metric), s.metrics.get(metric), s.runner))
    names = set(report.final_predicted) | (set() if predicted_only else set(report.final_metrics))
    last = final_runner(report.steps)
    for metric in _order(names):
        rows.append(compare_one("plan", "final", metric, report.final_predicted.get(metric),
                                report.final_metrics.get(metric), last))
    return rows


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e7 or abs(v) < 1e-3):
            return f"{v:.3g}"
        if v == int(v):
            return f"{int(v):,}"
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def vs_predicted(r: dict) -> str:
    """measured/predicted as '1.23×', or measured−predicted as '+0.4 pp' for percentages."""
    if r["difference"] is not None:
        return f"{r['difference']:+.2f} pp"
    return fmt(r["ratio"]) + "×" if r["ratio"] is not None else ""


def _range(r: dict) -> str:
    if r["predicted_low"] is None and r["predicted_high"] is None:
        return ""
    return f"{fmt(r['predicted_low'])}–{fmt(r['predicted_high'])}"


def comparison_table(report: RunReport, full: bool = False) -> str:
    """The predicted-vs-measured text table printed at the end of `slmrec run`.

    Without `full`: per step every predicted metric plus the core measurements.
    """
    keep = {"size_mb", "ppl", "decode_ms_per_token", "wall_s"}
    rows = [r for r in comparison_rows(report)
            if full or r["predicted"] is not None or r["predicted_low"] is not None
            or r["metric"] in keep or (r["scope"] == "plan" and r["metric"] in CORE_METRICS)]
    header = ["step", "method", "metric", "slice", "predicted", "range", "measured",
              "vs predicted", "in range"]
    cells = [header] + [[r["scope"], r["method"], r["metric"], r["slice"] or "",
                         fmt(r["predicted"]), _range(r),
                         fmt(r["measured"]), vs_predicted(r),
                         fmt(r["within_range"]) if r["within_range"] is not None else ""]
                        for r in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + slice_warnings(rows))


def _status_line(report: RunReport) -> str:
    line = f"**{report.status}**"
    if report.reason:
        line += f": {report.reason}"
    return line


def to_markdown(report: RunReport) -> str:
    out = [f"# Run report{': ' + report.plan_name if report.plan_name else ''}", "",
           f"- status: {_status_line(report)}",
           f"- base model: `{report.base_model}`"]
    if report.teacher:
        out.append(f"- teacher: `{report.teacher}`")
    out += [f"- run id: {report.run_id if report.run_id is not None else '– (no store)'}"
            + (f" in `{report.store}`" if report.store else ""),
            f"- plan hash: `{report.plan_hash}`, KB version: `{report.kb_version or '–'}`, "
            f"seed: {report.seed}",
            f"- started {report.started or '–'}, finished {report.finished or '–'}, "
            f"wall time {fmt(report.wall_s)} s"]
    if report.hardware:
        out.append("- hardware: " + ", ".join(f"{k} {v}" for k, v in report.hardware.items()))
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    out += ["", "## Steps", "", "| # | method | runner | status | wall s | checkpoint | notes |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in report.steps:
        status = s.status + (" (resumed)" if s.resumed else "")
        notes = "; ".join(([s.reason] if s.reason else []) + s.notes).replace("|", "\\|")
        out.append(f"| {s.index + 1} | {s.method} | {s.runner or '–'} | {status} | "
                   f"{fmt(s.wall_s)} | {'`' + s.checkpoint + '`' if s.checkpoint else '–'} | "
                   f"{notes} |")
    if report.base_metrics:
        out += ["", "## Input model", "", "| metric | measured |", "| --- | --- |"]
        out += [f"| {m} | {fmt(report.base_metrics[m])} |" for m in _order(report.base_metrics)]
    out += ["", "## Predicted vs measured", "",
            "*vs predicted* is measured / predicted (for percentages: measured − predicted, in "
            "percentage points); *in range* says whether the measurement falls inside the "
            "predicted low–high range. *slice* names the text a perplexity is measured on: "
            f"`{PROBE}`, the small fixed validation slice measured after every step (`probe_ppl`, "
            f"and `quality_loss_pct`, the probe perplexity change against the input model, in %); "
            f"`{EVAL}`, the evaluate step's own, larger slice. Compare perplexities within one "
            "slice only.", ""]
    rows = comparison_rows(report)
    warnings = slice_warnings(rows)
    out += [f"> {w}" for w in warnings] + ([""] if warnings else [])
    out += ["| step | method | metric | slice | predicted | range | measured | vs predicted | "
            "in range |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['scope']} | {r['method']} | {r['metric']} | {r['slice'] or '–'} | "
                   f"{fmt(r['predicted'])} | {_range(r)} | {fmt(r['measured'])} | "
                   f"{vs_predicted(r) or '–'} | "
                   f"{fmt(r['within_range']) if r['within_range'] is not None else '–'} |")
    return "\n".join(out) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    from slmrec.safeio import write_text

    write_text(path, text)


def write_reports(report: RunReport, out_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write report.json and report.md (atomically) into the run folder; return their paths."""
    folder = Path(out_dir or report.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    js, md = folder / "report.json", folder / "report.md"
    _atomic_write(js, json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n")
    _atomic_write(md, to_markdown(report))
    return js, md


def read_report(path: str | os.PathLike) -> RunReport:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    return RunReport.from_dict(json.loads(p.read_text(encoding="utf-8")))
