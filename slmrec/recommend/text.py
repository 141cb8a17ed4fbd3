"""Numbers and limits as the explanation prints them."""

from __future__ import annotations

from slmrec.recommend.search import Candidate

LIMIT_LABELS = {"memory_mb": ("inference memory", "MB"), "size_mb": ("size on disk", "MB"),
                "decode_ms_per_token": ("decode latency", "ms/token"),
                "prefill_ms": ("prefill latency", "ms"),
                "quality_loss_pct": ("quality loss", "%"),
                "step_peak_memory_mb": ("step peak memory", "MB"),
                "step_tflop": ("step compute", "TFLOP"), "step_hours": ("step time", "h")}
METRIC_FOR_LIMIT = {"memory_mb": "inference_memory_mb"}
SCENARIO_FIELD = {"memory_mb": "budgets.memory_mb", "size_mb": "budgets.size_mb",
                  "decode_ms_per_token": "budgets.decode_ms_per_token",
                  "prefill_ms": "budgets.prefill_ms", "quality_loss_pct": "tolerance_pct",
                  "step_peak_memory_mb": "compute.memory_mb", "step_tflop": "compute.tflop",
                  "step_hours": "compute.hours"}


def _violation_text(name: str, v: float, lim: float) -> str:
    label, unit = LIMIT_LABELS.get(name, (name, ""))
    return f"{label} {_fmt(v)} {unit} > {_fmt(lim)} {unit} ({SCENARIO_FIELD.get(name, name)})"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _metric(c: Candidate, limit: str) -> float:
    if limit == "quality_loss_pct":
        return c.q[0]
    return c.metrics.get(METRIC_FOR_LIMIT.get(limit, limit), 0.0)
