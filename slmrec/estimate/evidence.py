"""Evidence ranges: which KB figures apply to a step's parameters, weighted by model scale.

A figure measured near the planned model's size (Evidence.model_params within SCALE_NEAR) sets
the central value; figures from far larger or smaller models only widen the range. Evidence
without a recorded scale counts as far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from slmrec.schema import Evidence, EvidenceBasis

SCALE_NEAR = 4.0   # a figure measured within 4x of the model's parameters is "near"


@dataclass(frozen=True)
class Range:
    value: float
    low: float
    high: float
    sources: tuple[str, ...] = ()
    basis: str = "evidence"
    note: str | None = None


ZERO = Range(0.0, 0.0, 0.0, (), "analytic")


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def near_scale(e: Evidence, model_params: float | None) -> bool:
    """Whether a figure was measured within SCALE_NEAR of the model's parameter count."""
    if not model_params or not e.model_params:
        return False
    return abs(math.log(e.model_params / model_params)) <= math.log(SCALE_NEAR)


def _combine(evs: list[Evidence], model_params: float | None = None) -> Range:
    lows = [e.low for e in evs]
    highs = [e.high for e in evs]
    near = [e for e in evs if near_scale(e, model_params)]
    centre = near or evs   # figures at the model's scale decide the value; others widen
    mids = sorted((e.low + e.high) / 2 for e in centre)
    n = len(mids)
    mid = mids[n // 2] if n % 2 else (mids[n // 2 - 1] + mids[n // 2]) / 2
    basis = "measured" if all(e.basis is EvidenceBasis.measured for e in centre) else "evidence"
    note = None
    if near and len(near) < len(evs):
        note = (f"value from {len(near)} figure(s) measured near this model's scale; "
                f"{len(evs) - len(near)} at other scales widen the range")
    return Range(mid, min(lows), max(highs), tuple(dict.fromkeys(e.source for e in evs)), basis,
                 note)




def match_evidence(evidence: list[Evidence], params: dict[str, Any],
                   model_params: float | None = None) -> Range | None | str:
    """The range the KB gives for these parameter values.

    Entries whose `when` equals the parameters on every key they name apply (the most specific
    ones win; several are combined: union of ranges, median of midpoints). With none applying, a
    single numeric parameter is interpolated linearly between the two nearest entries that agree
    on everything else. Returns None when there is no evidence at all, the string
    'unpublished' when only unpublished notes exist, and 'uncovered' when evidence exists but
    none covers these values.
    """
    numeric = [e for e in evidence if e.low is not None]  # unpublished, not-transferable: none
    if not numeric:
        return "unpublished" if evidence else None
    applying = [e for e in numeric if all(k in params and _same(params[k], v)
                                          for k, v in e.when.items())]
    if applying:
        best = max(len(e.when) for e in applying)
        return _combine([e for e in applying if len(e.when) == best], model_params)
    # Interpolate along one numeric parameter.
    for key, x in params.items():
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            continue
        line = [e for e in numeric if isinstance(e.when.get(key), (int, float))
                and not isinstance(e.when.get(key), bool)
                and all(k == key or (k in params and _same(params[k], v)) for k, v in e.when.items())]
        below = [e for e in line if e.when[key] < x]
        above = [e for e in line if e.when[key] > x]
        if below and above:
            lo_x = max(e.when[key] for e in below)
            hi_x = min(e.when[key] for e in above)
            a = _combine([e for e in below if e.when[key] == lo_x], model_params)
            b = _combine([e for e in above if e.when[key] == hi_x], model_params)
            t = (x - lo_x) / (hi_x - lo_x)
            lerp = lambda u, v: u + t * (v - u)  # noqa: E731
            return Range(lerp(a.value, b.value), min(a.low, b.low, lerp(a.low, b.low)),
                         max(a.high, b.high, lerp(a.high, b.high)), a.sources + b.sources,
                         a.basis, f"interpolated in {key} between {lo_x} and {hi_x}")
    return "uncovered"
