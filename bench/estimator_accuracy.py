"""Estimator against published figures: checkpoint sizes and decode speeds (bench/data/).

Sizes: the per-tensor format model (kb/formats.yaml) against 100 published file sizes. Speeds:
runtime profiles (kb/runtimes.yaml) against published batch-1 decode speeds. The runtime
constants are fitted here by non-negative least squares on one half of the rows (a fixed hash
split) and the error is reported on the other half; `kb/runtimes.yaml` holds the constants this
bench printed (its `rows:` say how many rows each fit used). Run: `python -m bench
estimator_accuracy`.
"""

from __future__ import annotations

import csv
import hashlib
import statistics
from pathlib import Path

import yaml

from bench._common import ratio

DATA = Path(__file__).resolve().parent / "data"
FULL_FIT_ROWS = 6   # rows a (runtime, class) needs before fixed overheads are fitted too
UNITS = {"GB": 1e9, "MB": 1e6, "GiB": 2 ** 30, "MiB": 2 ** 20}
KINDS = {"datacenter-gpu": ("gpu", 80.0, []), "consumer-gpu": ("gpu", 16.0, []),
         "apple-silicon": ("soc", 64.0, ["apple-silicon", "unified-memory"]),
         "mobile-soc": ("soc", 16.0, []), "cpu": ("cpu", 16.0, []), "cpu-igpu": ("gpu", 16.0, []),
         "egpu-sbc-host": ("gpu", 16.0, [])}


def _csv(name: str) -> list[dict]:
    lines = [ln for ln in (DATA / name).read_text(encoding="utf-8").splitlines()
             if not ln.startswith("#")]
    return list(csv.DictReader(lines))


def _archs(kb):
    from slmrec.estimate import Arch
    from slmrec.schema import BaseModelCard

    out = {m.id: Arch.from_card(m) for m in kb.models.values()}
    for m in yaml.safe_load((DATA / "bench_models.yaml").read_text(encoding="utf-8"))["models"]:
        card = {k: v for k, v in m.items() if k not in ("source", "note")}
        card.update(name=m["id"], family="bench", architecture="bench", tokenizer="bench",
                    license="bench", sources=["slmrec-measured"])
        out[m["id"]] = Arch.from_card(BaseModelCard(**card))
    return out


def _hardware(klass: str, bw: float):
    from slmrec.schema import Hardware

    kind, mem, caps = KINDS[klass]
    # decode at batch 1 is bandwidth-bound; the compute peak is set high so it never binds here
    return Hardware(id="bench-device", name="bench device", kind=kind, memory_gb=mem,
                    memory_bandwidth_gbs=bw, peak_tflops={"fp16": 1000.0}, precisions=["fp16"],
                    capabilities=caps, sources=["slmrec-measured"])


def _state(est, fmt: str):
    s = est.initial_state()
    est._apply_format(s, fmt)
    return s


def _err(pred: float, pub: float) -> float:
    return pred / pub - 1.0


def _summary(errs: list[float]) -> dict:
    a = sorted(abs(e) for e in errs)
    p90 = a[min(len(a) - 1, int(round(0.9 * (len(a) - 1))))] if a else None
    ratios = [1 + e for e in errs]
    return {"n": len(errs), "median_abs": statistics.median(a) if a else None, "p90_abs": p90,
            "bias": statistics.median(ratios) if ratios else None}


def _half(row: dict) -> str:
    key = "|".join(str(row[k]) for k in ("model", "format", "runtime", "hardware", "context"))
    return "fit" if int(hashlib.sha1(key.encode()).hexdigest(), 16) % 2 == 0 else "holdout"


def sizes(kb, archs) -> tuple[list[dict], dict]:
    from slmrec.estimate import Estimator, Workload

    hw = _hardware("cpu", 20.0)
    rows = []
    for r in _csv("published_sizes.csv"):
        est = Estimator(kb, archs[r["model"]], hw, Workload())
        pred = est.weight_bytes(_state(est, r["format"]), read=False)
        pub = float(r["size"]) * UNITS[r["unit"]]
        rows.append({**r, "predicted_gb": round(pred / 1e9, 4), "published_gb": round(pub / 1e9, 4),
                     "err": _err(pred, pub)})
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["format"], []).append(r["err"])
    return rows, {"all": _summary([r["err"] for r in rows]),
                  **{k: _summary(v) for k, v in sorted(by.items())}}


def _features(kb, archs, r: dict) -> tuple[float, float, float, float]:
    """(ms reading at peak bandwidth, layers, layers if dequantizing, ms reading the weights at
    peak bandwidth if dequantizing) for one speed row."""
    from slmrec.estimate import Estimator, Workload

    est = Estimator(kb, archs[r["model"]], _hardware(r["hardware_class"], float(r["bandwidth_gbs"])),
                    Workload(context=int(r["context"]), prompt_tokens=64, batch=1))
    s = _state(est, r["format"])
    weights = est.weight_bytes(s, read=True)
    bw = float(r["bandwidth_gbs"]) * 1e9
    ms = (weights + est.kv_bytes(s)) / bw * 1000
    deq = bool(s.int_quant)
    return ms, s.layers, s.layers if deq else 0.0, weights / bw * 1000 if deq else 0.0


def fit_profiles(kb, archs, rows: list[dict]) -> dict:
    """Per (runtime, hardware class): t_ms = ms_at_peak/eff + token_ms + layers*layer_ms
    + deq_layers*dequant_layer_ms + deq_ms_at_peak*dequant_byte_cost, non-negative least
    squares (scipy) on relative error (each row divided by its published time, so slow devices
    do not dominate). Classes with fewer than FULL_FIT_ROWS rows fit the efficiency alone (and the packed-byte cost when they hold
    both packed and float rows)."""
    import numpy as np
    from scipy.optimize import nnls

    groups: dict[tuple[str, str], list[tuple]] = {}
    for r in rows:
        x = _features(kb, archs, r)
        groups.setdefault((r["runtime"], r["hardware_class"]), []).append((x, 1000 / float(r["tok_s"])))
        groups.setdefault((r["runtime"], "default"), []).append((x, 1000 / float(r["tok_s"])))
    fits = {}
    for (rt, klass), items in groups.items():
        a = np.array([[ms, 1.0, layers, deq, deq_ms] for (ms, layers, deq, deq_ms), _ in items])
        runtime = kb.runtimes.get(rt) if kb is not None else None
        if runtime is not None and not runtime.unpacks_weights:
            a[:, 4] = 0.0   # fused block kernels (llama.cpp, ExecuTorch): no per-byte unpacking
        y = np.array([t for _, t in items])
        if len(items) < 2:
            continue
        if len(items) < FULL_FIT_ROWS:
            # few rows: the efficiency alone, plus the packed-byte cost where the group holds both
            # packed and float rows (it is what tells them apart)
            keep_deq = bool((a[:, 4] > 0).any() and (a[:, 4] == 0).any())
            a[:, 1:4] = 0.0
            if not keep_deq:
                a[:, 4] = 0.0
        coef, _ = nnls(a / y[:, None], np.ones_like(y))
        eff = 1.0 / coef[0] if coef[0] > 1e-9 else 1.0
        fits[(rt, klass)] = {"bandwidth_efficiency": round(min(eff, 1.2), 3),
                             "token_ms": round(float(coef[1]), 4),
                             "layer_ms": round(float(coef[2]), 4),
                             "dequant_layer_ms": round(float(coef[3]), 4),
                             "dequant_byte_cost": round(float(coef[4]), 4), "rows": len(items)}
    return fits


def speeds(kb, archs) -> tuple[list[dict], dict, dict]:
    from slmrec.estimate import Estimator, Workload

    rows = [r for r in _csv("published_speeds.csv") if r["scope"] == "decode"]
    fit_rows = [r for r in rows if _half(r) == "fit"]
    fitted = fit_profiles(kb, archs, fit_rows)
    out = []
    for r in rows:
        est = Estimator(kb, archs[r["model"]],
                        _hardware(r["hardware_class"], float(r["bandwidth_gbs"])),
                        Workload(context=int(r["context"]), prompt_tokens=64, batch=1),
                        runtime=r["runtime"])
        s = _state(est, r["format"])
        decode_ms = est.metrics(s)[5]
        pub_ms = 1000 / float(r["tok_s"])
        out.append({**r, "half": _half(r), "predicted_ms": round(decode_ms, 3),
                    "published_ms": round(pub_ms, 3), "err": _err(decode_ms, pub_ms),
                    "profile_class": est.profile.hardware_class})
    hold = [r for r in out if r["half"] == "holdout"]
    by_class: dict[str, list[float]] = {}
    by_rt: dict[str, list[float]] = {}
    for r in hold:
        by_class.setdefault(r["hardware_class"], []).append(r["err"])
        by_rt.setdefault(r["runtime"], []).append(r["err"])
    stats = {"holdout": _summary([r["err"] for r in hold]),
             "all": _summary([r["err"] for r in out]),
             "by_class": {k: _summary(v) for k, v in sorted(by_class.items())},
             "by_runtime": {k: _summary(v) for k, v in sorted(by_rt.items())}}
    return out, stats, {f"{k[0]}@{k[1]}": v for k, v in sorted(fitted.items())}


def _pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def main() -> dict:
    from slmrec.kb import load_kb

    kb = load_kb()
    archs = _archs(kb)
    size_rows, size_stats = sizes(kb, archs)
    speed_rows, speed_stats, fitted = speeds(kb, archs)
    sa, sh = size_stats["all"], speed_stats["holdout"]
    biases = {k: v["bias"] for k, v in speed_stats["by_class"].items()}
    lo_bias = min(biases.values()) if biases else None
    hi_bias = max(biases.values()) if biases else None
    md = ["Sizes (per-tensor format model vs published file sizes):", "",
          "| format | rows | median |err| | p90 |err| | median pred/pub |", "| --- | --- | --- | --- | --- |"]
    for k, v in size_stats.items():
        md.append(f"| {k} | {v['n']} | {_pct(v['median_abs'])} | {_pct(v['p90_abs'])} | "
                  f"{v['bias']:.3f} |")
    md += ["", "Decode time per token on the held-out half (runtime profiles fitted on the other half):",
           "", "| device class | rows | median |err| | p90 |err| | median pred/pub |",
           "| --- | --- | --- | --- | --- |"]
    for k, v in speed_stats["by_class"].items():
        md.append(f"| {k} | {v['n']} | {_pct(v['median_abs'])} | {_pct(v['p90_abs'])} | {v['bias']:.3f} |")
    md += ["", "| runtime | rows | median |err| | p90 |err| | median pred/pub |",
           "| --- | --- | --- | --- | --- |"]
    for k, v in speed_stats["by_runtime"].items():
        md.append(f"| {k} | {v['n']} | {_pct(v['median_abs'])} | {_pct(v['p90_abs'])} | {v['bias']:.3f} |")
    md += ["", "Constants fitted on the fit half (copy into kb/runtimes.yaml):", "",
           "| runtime@class | efficiency | token_ms | layer_ms | dequant_layer_ms | dequant_byte_cost | rows |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, v in fitted.items():
        md.append(f"| {k} | {v['bandwidth_efficiency']} | {v['token_ms']} | {v['layer_ms']} | "
                  f"{v['dequant_layer_ms']} | {v['dequant_byte_cost']} | {v['rows']} |")
    return {
        "title": "estimator vs published checkpoint sizes and decode speeds",
        "ratios": {
            "size_median_abs_err": ratio(sa["median_abs"], "<= 0.03", f"{sa['n']} published sizes"),
            "size_p90_abs_err": ratio(sa["p90_abs"], "<= 0.08", ""),
            "decode_median_abs_err": ratio(sh["median_abs"], "<= 0.2",
                                           f"{sh['n']} held-out decode speeds"),
            "decode_lowest_class_bias": ratio(lo_bias, ">= 0.7", "median predicted/published, "
                                              "lowest device class (held out)"),
            "decode_highest_class_bias": ratio(hi_bias, "<= 1.4", "median predicted/published, "
                                               "highest device class (held out)"),
        },
        "sizes": size_stats, "speeds": speed_stats, "fitted_profiles": fitted,
        "size_rows": size_rows, "speed_rows": speed_rows,
        "markdown": "\n".join(md),
    }


def write_kb_fits(path: Path | None = None) -> None:
    """Rewrite the `fits:` of each runtime in kb/runtimes.yaml with this bench's fitted constants
    (`python -m bench.estimator_accuracy`); comments and other fields are kept."""
    from slmrec.kb import load_kb

    kb = load_kb()
    _, _, fitted = speeds(kb, _archs(kb))
    path = path or Path(__file__).resolve().parent.parent / "kb" / "runtimes.yaml"
    text = path.read_text(encoding="utf-8")
    by_rt: dict[str, list[str]] = {}
    for key, v in fitted.items():
        rt, klass = key.split("@")
        extra = "".join(f", {k}: {v[k]}" for k in ("token_ms", "layer_ms", "dequant_layer_ms",
                                                    "dequant_byte_cost") if v[k])
        by_rt.setdefault(rt, []).append(
            f"      - {{hardware_class: {klass}, bandwidth_efficiency: "
            f"{v['bandwidth_efficiency']}{extra}, rows: {v['rows']}}}")
    for rt, lines in by_rt.items():
        start = text.index(f"  - id: {rt}\n")
        i = text.index("    fits:\n", start) + len("    fits:\n")
        j = text.index("    sources:", i)
        lines.sort(key=lambda ln: "default" in ln)
        text = text[:i] + "\n".join(lines) + "\n" + text[j:]
    path.write_text(text, encoding="utf-8")
    print(f"wrote fitted runtime constants to {path}")


if __name__ == "__main__":
    write_kb_fits()
