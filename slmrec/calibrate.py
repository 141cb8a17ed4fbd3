"""Calibration: learn from measured runs how far the estimator is off, and correct it.

Input rows are the run store's measurements (`slmrec.evidence.RunStore.measurements()`): dicts
with at least `method`, `metric`, `predicted` and `measured` (other keys are ignored). For each
metric with enough rows, one ridge regression (scikit-learn) is fitted:

- positive metrics (size, memory, latency, step cost): in log space,
  `log(measured) = a + b*log(predicted) + c[method]`, so a correction is a factor that may grow
  or shrink with the prediction and differ per method;
- quality loss (percent, may be negative): `measured = a + b*predicted + c[method]`.

The slope `b` is kept positive, so a correction never reverses an order: the recommender's lower
bounds stay valid through `lower()`. The residual spread widens the predicted range. A fitted
calibration is saved as plain JSON (no pickle) and passed to `recommend(..., calibration=)` or
`slmrec recommend --calibration FILE`; corrected predictions carry basis "calibrated".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from slmrec.safeyaml import clip
from slmrec.errors import SlmrecError

LOG_METRICS = ("size_mb", "inference_memory_mb", "decode_ms_per_token", "prefill_ms",
               "step_peak_memory_mb", "step_tflop", "step_hours")
LINEAR_METRICS = ("quality_loss_pct",)
MIN_ROWS = 3
FORMAT = 1


@dataclass
class MetricFit:
    kind: str                         # "log" or "linear"
    a: float
    b: float
    per_method: dict[str, float] = field(default_factory=dict)
    resid: float = 0.0                # residual standard deviation (log units or percent)
    n: int = 0

    def apply(self, value: float, method: str | None) -> float:
        c = self.per_method.get(method or "", 0.0)
        if self.kind == "log":
            return math.exp(self.a + self.b * math.log(max(value, 1e-12)) + c)
        return self.a + self.b * value + c

    def floor(self, value: float) -> float:
        """The smallest correction over every method (monotone in value: a valid lower bound)."""
        c = min([0.0, *self.per_method.values()])
        if self.kind == "log":
            return math.exp(self.a + self.b * math.log(max(value, 1e-12)) + c)
        return self.a + self.b * value + c


@dataclass
class Calibration:
    fits: dict[str, MetricFit] = field(default_factory=dict)
    rows_used: int = 0

    # ---- fitting ----------------------------------------------------------------------------

    @classmethod
    def fit(cls, rows: Iterable[dict[str, Any]], *, alpha: float = 0.1,
            min_rows: int = MIN_ROWS) -> "Calibration":
        import numpy as np  # noqa: PLC0415 (only when fitting)
        from sklearn.linear_model import Ridge  # noqa: PLC0415

        by_metric: dict[str, list[tuple[str, float, float]]] = {}
        for r in rows:
            if r.get("method") == "plan":  # a plan-level row repeats its last step's figures
                continue
            metric, pred, meas = r.get("metric"), r.get("predicted"), r.get("measured")
            if metric not in LOG_METRICS + LINEAR_METRICS or pred is None or meas is None:
                continue
            try:
                pred, meas = float(pred), float(meas)
            except (TypeError, ValueError):
                continue
            if not (math.isfinite(pred) and math.isfinite(meas)):
                continue
            if metric in LOG_METRICS and (pred <= 0 or meas <= 0):
                continue
            by_metric.setdefault(metric, []).append((str(r.get("method") or ""), pred, meas))
        cal = cls()
        for metric, items in by_metric.items():
            if len(items) < min_rows:
                continue
            kind = "log" if metric in LOG_METRICS else "linear"
            methods = sorted({m for m, _, _ in items})
            col = {m: i for i, m in enumerate(methods)}
            x = np.zeros((len(items), 1 + len(methods)))
            y = np.zeros(len(items))
            for i, (m, pred, meas) in enumerate(items):
                x[i, 0] = math.log(pred) if kind == "log" else pred
                x[i, 1 + col[m]] = 1.0
                y[i] = math.log(meas) if kind == "log" else meas
            # regress the error (measured - predicted, in log space for positive metrics): the
            # ridge penalty then shrinks towards "a constant correction", not towards zero
            model = Ridge(alpha=alpha).fit(x, y - x[:, 0])
            b = 1.0 + float(model.coef_[0])
            a = float(model.intercept_)
            per = {m: float(model.coef_[1 + col[m]]) for m in methods}
            if not math.isfinite(b) or b <= 0.05:
                # too flat to trust a slope: keep an offset only (order preserved)
                model = Ridge(alpha=alpha).fit(x[:, 1:], y - x[:, 0])
                b, a = 1.0, float(model.intercept_)
                per = {m: float(model.coef_[col[m]]) for m in methods}
            fit = MetricFit(kind, a, b, per, 0.0, len(items))
            resid = [yy - (math.log(fit.apply(math.exp(xx[0]), m)) if kind == "log"
                           else fit.apply(xx[0], m))
                     for (m, _, _), xx, yy in zip(items, x, y)]
            fit.resid = float(np.sqrt(np.mean(np.square(resid)))) if resid else 0.0
            cal.fits[metric] = fit
            cal.rows_used += len(items)
        return cal

    @classmethod
    def from_store(cls, path: str | Path | None = None, **kw) -> "Calibration":
        """Fit on every measurement of a run store (slmrec.evidence)."""
        from slmrec.evidence import RunStore  # noqa: PLC0415 (optional module)

        return cls.fit(RunStore(path).measurements(), **kw)

    # ---- use --------------------------------------------------------------------------------

    def correct(self, metric: str, value: float, method: str | None = None, *,
                low: float | None = None, high: float | None = None
                ) -> tuple[float, float, float] | None:
        """(value, low, high) corrected, or None when this metric has no fit."""
        fit = self.fits.get(metric)
        if fit is None or value is None:
            return None
        v = fit.apply(value, method)
        lo_in = fit.apply(low, method) if low is not None else v
        hi_in = fit.apply(high, method) if high is not None else v
        if fit.kind == "log":
            spread = math.exp(fit.resid)
            lo, hi = min(lo_in, v) / spread, max(hi_in, v) * spread
        else:
            lo, hi = min(lo_in, v) - fit.resid, max(hi_in, v) + fit.resid
        return v, lo, hi

    def lower(self, metric: str, value: float) -> float:
        """A lower bound of the corrected value over every method (for search bounds)."""
        fit = self.fits.get(metric)
        return value if fit is None else min(value, fit.floor(value))

    # ---- storage ----------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {"format": FORMAT, "rows_used": self.rows_used,
                "fits": {k: vars(v) for k, v in sorted(self.fits.items())}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        from slmrec.safeio import write_text

        return write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path)
        try:
            if path.is_file() and path.stat().st_size > 16 * 2**20:
                raise SlmrecError.one(str(path), "larger than 16 MB: not a calibration file")
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SlmrecError.one(str(path), "calibration file does not exist") from None
        except (OSError, ValueError) as exc:
            raise SlmrecError.one(str(path), f"not a calibration JSON file: "
                                  f"{str(exc).splitlines()[0][:120]}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or \
                not isinstance(data.get("fits"), dict):
            raise SlmrecError.one(str(path), f"expected a calibration JSON (format {FORMAT}) "
                                             "with a 'fits' mapping")
        fits = {}
        for metric, f in data["fits"].items():
            fits[metric] = _fit_from_json(str(path), str(metric), f)
        rows = data.get("rows_used", 0)
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise SlmrecError.one(str(path), f"must be a non-negative integer, got {clip(rows)}",
                                  None, "rows_used")
        return cls(fits, rows)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
        and abs(v) < 1e12


def _fit_from_json(file: str, metric: str, f: object) -> MetricFit:
    """One fit of a calibration file, every field type- and range-checked (a string or a list
    where a number belongs is one error line naming the field, never a crash later)."""
    where = f"fits.{metric}"
    if not isinstance(f, dict):
        raise SlmrecError.one(file, f"expected a mapping, got {type(f).__name__}", None, where)
    unknown_keys = sorted(set(f) - {"kind", "a", "b", "per_method", "resid", "n"})
    if unknown_keys:
        raise SlmrecError.one(file, f"unknown field {clip(unknown_keys[0])}; valid: kind, a, b, "
                              "per_method, resid, n", None, where)
    if f.get("kind") not in ("log", "linear"):
        raise SlmrecError.one(file, f"must be 'log' or 'linear', got {clip(f.get('kind'))}", None,
                              f"{where}.kind")
    for k in ("a", "b"):
        if not _finite(f.get(k)):
            raise SlmrecError.one(file, f"must be a finite number, got {clip(f.get(k))}", None,
                                  f"{where}.{k}")
    resid = f.get("resid", 0.0)
    if not _finite(resid) or resid < 0 or (f["kind"] == "log" and resid > 50):
        raise SlmrecError.one(file, f"must be a finite number >= 0, got {clip(resid)}", None,
                              f"{where}.resid")
    n = f.get("n", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SlmrecError.one(file, f"must be a non-negative integer, got {clip(n)}", None,
                              f"{where}.n")
    per = f.get("per_method", {})
    if not isinstance(per, dict):
        raise SlmrecError.one(file, f"must be a mapping of method to number, got "
                              f"{type(per).__name__}", None, f"{where}.per_method")
    for m, c in per.items():
        if not _finite(c):
            raise SlmrecError.one(file, f"must be a finite number, got {clip(c)}", None,
                                  f"{where}.per_method.{m}")
    if f["kind"] == "log" and (abs(f["a"]) > 50 or abs(f["b"]) > 50
                               or any(abs(c) > 50 for c in per.values())):
        raise SlmrecError.one(file, "a log fit's coefficients must lie within +-50 (larger ones "
                              "overflow)", None, where)
    return MetricFit(kind=f["kind"], a=float(f["a"]), b=float(f["b"]),
                     per_method={str(k): float(v) for k, v in per.items()},
                     resid=float(resid), n=n)
