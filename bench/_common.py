"""Helpers shared by the bench modules: ratios against targets, timing, machine facts."""

from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager
from typing import Iterator

OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
       ">": lambda a, b: a > b}


def ratio(value: float | None, target: str | None = None, note: str = "") -> dict:
    """A ratio entry: `target` like '<= 1.15' decides `ok` (None when there is no target)."""
    ok = None
    if target and value is not None:
        op, _, bound = target.partition(" ")
        ok = bool(OPS[op](value, float(bound)))
    return {"value": None if value is None else round(float(value), 4), "target": target,
            "ok": ok, "note": note}


@contextmanager
def timed(into: dict, key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        into[key] = time.perf_counter() - t0


def machine() -> dict:
    from runners.execute import machine_info

    return {**machine_info(), "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def md_table(rows: list[list], header: list[str]) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) >= 1e4 or (v and abs(v) < 1e-2) else f"{v:.3f}".rstrip("0").rstrip(".")
        return "–" if v is None else str(v)
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
