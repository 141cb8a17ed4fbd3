"""Calibration with context: learn from measured runs how far the estimator is off, and where.

Input rows are the run store's measurements (`slmrec.evidence.RunStore.measurements()`): dicts
with `method`, `metric`, `predicted`, `measured` and a `context` (hardware, base model size,
runtime). For each metric the error is regressed on one-hot context features with a ridge model
(scikit-learn), without an intercept:

- positive metrics (size, memory, latency, step cost): `log(measured / predicted)`;
- quality loss (percent): the ratio of the perplexity increases,
  `log(log(1 + measured/100) / log(1 + predicted/100))`, so a correction scales the predicted
  loss (a near-lossless prediction stays near-lossless; rows predicted within 1% of lossless, or
  measured on the other side of zero, carry no scale and are left out).

Features, each a named offset: the method's family, the method itself (so a method's offset
moves only methods of its own family, through the family offset, never across families), each
of the step's parameter values and the whole option (RTN at group 32 and at group 128 are told
apart; a value every row of the method shares is left to the method's offset), and for time
and memory metrics the hardware class and the runtime (shared by every method on that machine),
plus a scale term (log10 of the model's parameters, held inside the range the rows cover: no
extrapolation to smaller or larger models than were measured). The ridge penalty shrinks every
offset towards zero, i.e. towards the uncorrected prediction, the more so the fewer rows support
it; its strength is chosen by leave-one-out cross-validation when there are enough rows, and the
leave-one-out error before and after correction is kept with the fit. Rows measured on a loaded
machine (1-minute load average above the core count) are flagged and weighted down.

A prediction is corrected only when at least one of its offsets was fitted on rows; the
correction says on how many. A fitted calibration is plain JSON (no pickle).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from slmrec.errors import SlmrecError
from slmrec.safeyaml import clip

LOG_METRICS = ("size_mb", "inference_memory_mb", "decode_ms_per_token", "prefill_ms",
               "step_peak_memory_mb", "step_tflop", "step_hours")
LINEAR_METRICS = ("quality_loss_pct",)
CONTEXT_METRICS = ("inference_memory_mb", "decode_ms_per_token", "prefill_ms",
                   "step_peak_memory_mb", "step_hours")   # hardware and runtime matter
SCALE_METRICS = ("quality_loss_pct", "decode_ms_per_token", "prefill_ms")
MIN_ROWS = 1                      # shrinkage, not a row threshold, protects thin fits
PRIOR_ROWS = 2.0                  # ridge strength: rows an offset needs to move half-way
ALPHAS = (0.5, 1.0, 2.0, 4.0, 8.0)
CV_MIN_ROWS = 5                   # rows before the strength is cross-validated
LOADED_WEIGHT = 0.25              # weight of a row measured on a loaded machine
PPL_MIN_LOG = math.log1p(0.01)    # quality rows predicted within 1% of lossless carry no scale
FORMAT = 2
DEFAULT_RUNTIME = "runtime-hf-transformers"


class Correction(tuple):
    """(value, low, high), with `rows` (rows behind the offsets that applied) and `note`."""

    def __new__(cls, value: float, low: float, high: float, rows: int, note: str):
        self = super().__new__(cls, (value, low, high))
        self.rows, self.note = rows, note
        return self

    value = property(lambda self: self[0])
    low = property(lambda self: self[1])
    high = property(lambda self: self[2])


def settings_of(params: dict | None) -> tuple[tuple[str, str], ...]:
    """A step's parameter values as sorted (name, value) pairs (what option offsets key on)."""
    if not isinstance(params, dict):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in params.items()
                        if isinstance(v, (int, float, str, bool)) and not str(k).startswith("_")))


@dataclass
class Context:
    method: str
    family: str
    hardware: str | None = None
    runtime: str | None = None
    params: float | None = None                  # the base model's parameters (scale term)
    settings: tuple[tuple[str, str], ...] = ()   # the step's parameter values (settings_of)

    def keys(self, metric: str) -> list[str]:
        """Offsets from the most general to the most specific: the family, the method, each of
        the method's parameter values (bits, group size...) and the whole option; for time and
        memory also the hardware class and the runtime."""
        out = [f"family:{self.family}", f"method:{self.method}"]
        out += [f"param:{self.method}.{k}={v}" for k, v in self.settings]
        if len(self.settings) > 1:
            out.append(f"option:{self.method}(" + ",".join(f"{k}={v}" for k, v in self.settings)
                       + ")")
        if metric in CONTEXT_METRICS:
            out += [f"hardware:{self.hardware or '?'}", f"runtime:{self.runtime or '?'}"]
        return out

    def scale(self) -> float:
        return math.log10(self.params) - 8.5 if self.params else 0.0


@dataclass
class MetricFit:
    kind: str                                   # "log", "ppl" (quality) or "linear"
    offsets: dict[str, float] = field(default_factory=dict)
    rows: dict[str, float] = field(default_factory=dict)    # weighted rows behind each offset
    raw: dict[str, float] = field(default_factory=dict)     # unshrunk mean error per offset
    scale: float = 0.0                          # per decade of parameters around 10^8.5
    alpha: float = PRIOR_ROWS
    resid: float = 0.0                          # leave-one-out residual spread after correction
    n: int = 0
    loaded: int = 0                             # rows flagged as measured on a loaded machine
    cv_before: float | None = None              # median |error| leave-one-out, uncorrected
    cv_after: float | None = None               # ... and corrected
    scale_lo: float = 0.0                       # the scale term's fitted range (log10 params
    scale_hi: float = 0.0                       # - 8.5): no extrapolation beyond the rows

    def offset(self, ctx: Context, metric: str) -> tuple[float, int, list[str]]:
        keys = [k for k in ctx.keys(metric) if k in self.offsets]
        if not keys:
            return 0.0, 0, []
        r = sum(self.offsets[k] for k in keys)
        if metric in SCALE_METRICS and self.scale and ctx.params:
            r += self.scale * min(max(ctx.scale(), self.scale_lo), self.scale_hi)
        return r, int(round(max(self.rows[k] for k in keys))), keys

    def raw_offset(self, ctx: Context, metric: str) -> float | None:
        """The unshrunk mean error of the most specific offset that has rows (method, family,
        runtime, hardware): where the measurements alone would put the prediction."""
        order = [k for k in ctx.keys(metric) if k in self.raw]
        for prefix in ("option:", "param:", "method:", "family:", "runtime:", "hardware:"):
            for k in order:
                if k.startswith(prefix):
                    return self.raw[k]
        return None

    def apply(self, value: float, r: float) -> float:
        if self.kind == "log":
            return value * math.exp(r)
        if self.kind == "ppl":
            return (math.exp(math.log(max(1 + value / 100, 1e-9)) * math.exp(r)) - 1) * 100
        return value + r


def _loaded(row: dict) -> bool:
    if row.get("loaded") is not None:
        return bool(row["loaded"])
    hw = (row.get("context") or {}).get("hardware") or {}
    load, cores = hw.get("load_avg_1m"), hw.get("cores")
    return bool(load and cores and float(load) > float(cores))


def row_context(row: dict, kb=None) -> Context:
    """The context of one measurement row (family, hardware class, runtime from the KB)."""
    method = str(row.get("method") or "")
    ctx = row.get("context") or {}
    family = method
    hw_class, runtime = ctx.get("hardware_class"), ctx.get("runtime")
    if kb is not None:
        m = kb.methods.get(method)
        family = m.family if m else method
        prof = (ctx.get("hardware") or {}).get("profile")
        if hw_class is None and prof in kb.hardware:
            from slmrec.estimate.arch import hardware_class  # noqa: PLC0415

            hw_class = hardware_class(kb.hardware[prof])
    params = ctx.get("base_params") or (ctx.get("base_metrics") or {}).get("params")
    return Context(method, family, hw_class or "cpu", runtime or DEFAULT_RUNTIME,
                   float(params) if params else None, settings_of(ctx.get("params")))


def _distinct_keys(items: list, metric: str) -> list[str]:
    """The offsets a fit can tell apart: a parameter or option key present on exactly the same
    rows as its method's or a more general parameter's key (a value every row of the method
    shares) adds nothing but a weaker penalty, so it is left out and the general offset speaks
    for it. Family, method and context offsets are always kept (a method's own offset must not
    move the rest of its family as far as itself)."""
    keys = list(dict.fromkeys(k for c, *_ in items for k in c.keys(metric)))
    rows = {k: frozenset(i for i, (c, *_) in enumerate(items) if k in c.keys(metric))
            for k in keys}
    out, seen = [], set()
    for k in keys:
        if k.startswith(("param:", "option:")) and rows[k] in seen:
            continue
        if k.startswith(("method:", "param:", "option:")):
            seen.add(rows[k])
        out.append(k)
    return sorted(out)


def _ridge(x, y, w, alpha):
    from sklearn.linear_model import Ridge  # noqa: PLC0415

    return Ridge(alpha=alpha, fit_intercept=False).fit(x, y, sample_weight=w)


def _loo(x, y, w, alpha) -> tuple[list[float], list[float]]:
    """Leave-one-out residuals: uncorrected and corrected."""
    import numpy as np  # noqa: PLC0415

    before, after = [], []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        if not keep.any():
            break
        pred = _ridge(x[keep], y[keep], w[keep], alpha).predict(x[i:i + 1])[0]
        before.append(abs(y[i]))
        after.append(abs(y[i] - pred))
    return before, after


@dataclass
class Calibration:
    fits: dict[str, MetricFit] = field(default_factory=dict)
    rows_used: int = 0

    @classmethod
    def fit(cls, rows: Iterable[dict[str, Any]], *, kb=None, min_rows: int = MIN_ROWS,
            alpha: float | None = None) -> "Calibration":
        import numpy as np  # noqa: PLC0415

        by_metric: dict[str, list[tuple[Context, float, float, bool]]] = {}
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
            if metric in LINEAR_METRICS:
                lp, lm = math.log1p(max(pred, -99.0) / 100), math.log1p(max(meas, -99.0) / 100)
                if abs(lp) < PPL_MIN_LOG or lm / lp <= 0:
                    continue   # no scale to learn from a lossless prediction or a sign flip
            by_metric.setdefault(metric, []).append((row_context(r, kb), pred, meas, _loaded(r)))
        cal = cls()
        for metric, items in by_metric.items():
            if len(items) < max(min_rows, 1):
                continue
            kind = "log" if metric in LOG_METRICS else "ppl"
            keys = _distinct_keys(items, metric)
            col = {k: i for i, k in enumerate(keys)}
            use_scale = metric in SCALE_METRICS and \
                len({round(c.scale(), 2) for c, _, _, _ in items}) > 1
            x = np.zeros((len(items), len(keys) + 1))
            y = np.zeros(len(items))
            w = np.ones(len(items))
            for i, (c, pred, meas, loaded) in enumerate(items):
                for k in c.keys(metric):
                    if k in col:
                        x[i, col[k]] = 1.0
                x[i, -1] = c.scale() if use_scale else 0.0
                y[i] = math.log(meas / pred) if kind == "log" else \
                    math.log(math.log1p(meas / 100) / math.log1p(pred / 100))
                w[i] = LOADED_WEIGHT if loaded else 1.0
            a = alpha or PRIOR_ROWS
            if alpha is None and len(items) >= CV_MIN_ROWS:
                a = min(ALPHAS, key=lambda al: float(np.median(_loo(x, y, w, al)[1])))
            model = _ridge(x, y, w, a)
            before, after = _loo(x, y, w, a) if len(items) >= 2 else ([], [])
            counts = {k: float(w[x[:, col[k]] > 0].sum()) for k in keys}
            raw = {k: float(np.average(y[x[:, col[k]] > 0], weights=w[x[:, col[k]] > 0]))
                   for k in keys}
            fit = MetricFit(kind, {k: float(model.coef_[col[k]]) for k in keys}, counts, raw,
                            float(model.coef_[-1]), a, 0.0, len(items),
                            sum(1 for *_, ld in items if ld),
                            float(np.median(before)) if before else None,
                            float(np.median(after)) if after else None,
                            float(x[:, -1].min()), float(x[:, -1].max()))
            spread = after or [abs(v) for v in y - model.predict(x)]
            fit.resid = float(np.sqrt(np.mean(np.square(spread)))) if spread else 0.0
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
                low: float | None = None, high: float | None = None,
                context: Context | None = None, params: dict | None = None) -> Correction | None:
        """The corrected (value, low, high, rows, note), or None when no fitted offset applies
        to this method (at these parameter values), family, hardware or runtime."""
        fit = self.fits.get(metric)
        if fit is None or value is None:
            return None
        ctx = context or Context(method or "", method or "", settings=settings_of(params))
        r, rows, keys = fit.offset(ctx, metric)
        if not keys:
            return None
        v = fit.apply(value, r)
        lo_in = fit.apply(low, r) if low is not None else v
        hi_in = fit.apply(high, r) if high is not None else v
        r_raw = fit.raw_offset(ctx, metric)
        if r_raw is not None:   # the range spans the shrunk and the unshrunk correction
            v_raw = fit.apply(value, r_raw)
            lo_in, hi_in = min(lo_in, v_raw), max(hi_in, v_raw)
        if fit.kind == "linear":
            lo, hi = min(lo_in, v) - fit.resid, max(hi_in, v) + fit.resid
        else:   # the spread is in log units: widen multiplicatively (perplexity for quality)
            lo, hi = fit.apply(min(lo_in, v), -fit.resid), fit.apply(max(hi_in, v), fit.resid)
        names = ", ".join(f"{k} ({fit.rows[k]:g} rows)" for k in keys)
        return Correction(v, lo, hi, rows, f"corrected on {rows} measured row(s): {names}")

    def bind(self, kb, hardware: str | None, runtime: str | None,
             params: float | None) -> "BoundCalibration":
        """This calibration with an estimator's context (hardware class, runtime, model size),
        so callers that pass only a method get the same correction as full predictions."""
        return BoundCalibration(self, kb, hardware, runtime, params)

    def lower(self, metric: str, value: float) -> float:
        """A lower bound of the corrected value over every context (for search bounds)."""
        fit = self.fits.get(metric)
        if fit is None:
            return value
        neg = sum(min(0.0, o) for o in fit.offsets.values()) \
            - abs(fit.scale) * max(abs(fit.scale_lo), abs(fit.scale_hi))
        return min(value, fit.apply(value, neg))

    # ---- storage ----------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {"format": FORMAT, "rows_used": self.rows_used,
                "fits": {k: vars(v) for k, v in sorted(self.fits.items())}}

    def save(self, path: str | Path) -> Path:
        from slmrec.safeio import write_text  # noqa: PLC0415

        return write_text(Path(path), json.dumps(self.to_json(), indent=2) + "\n")

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
                                             "with a 'fits' mapping; refit with `slmrec calibrate`")
        fits = {str(m): _fit_from_json(str(path), str(m), f) for m, f in data["fits"].items()}
        rows = data.get("rows_used", 0)
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise SlmrecError.one(str(path), f"must be a non-negative integer, got {clip(rows)}",
                                  None, "rows_used")
        return cls(fits, rows)


def _finite(v: object, bound: float = 1e12) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
        and abs(v) < bound


_FIT_NUMBERS = ("scale", "alpha", "resid", "scale_lo", "scale_hi")
_FIT_MAPS = ("offsets", "rows", "raw")


def _fit_from_json(file: str, metric: str, f: object) -> MetricFit:
    """One fit of a calibration file, every field type- and range-checked (a string where a
    number belongs is one error line naming the field, never a crash later)."""
    where = f"fits.{metric}"
    if not isinstance(f, dict):
        raise SlmrecError.one(file, f"expected a mapping, got {type(f).__name__}", None, where)
    valid = {"kind", "n", "loaded", "cv_before", "cv_after", *_FIT_NUMBERS, *_FIT_MAPS}
    extra = sorted(set(f) - valid)
    if extra:
        raise SlmrecError.one(file, f"unknown field {clip(extra[0])}; valid: "
                              f"{', '.join(sorted(valid))}", None, where)
    if f.get("kind") not in ("log", "ppl", "linear"):
        raise SlmrecError.one(file, f"must be 'log', 'ppl' or 'linear', got "
                              f"{clip(f.get('kind'))}", None, f"{where}.kind")
    bound = 50.0 if f["kind"] in ("log", "ppl") else 1e12   # larger log offsets overflow
    too_big = "a log fit's coefficients must lie within +-50 (larger ones overflow)"
    for k in _FIT_NUMBERS:
        if k in f and not _finite(f[k]):
            raise SlmrecError.one(file, f"must be a finite number, got {clip(f[k])}", None,
                                  f"{where}.{k}")
        if k in f and k != "alpha" and abs(f[k]) >= bound:
            raise SlmrecError.one(file, too_big, None, f"{where}.{k}")
    if f.get("resid", 0) < 0:
        raise SlmrecError.one(file, f"must be a finite number >= 0, got {clip(f['resid'])}",
                              None, f"{where}.resid")
    for k in _FIT_MAPS:
        m = f.get(k, {})
        if not isinstance(m, dict):
            raise SlmrecError.one(file, f"must be a mapping of name to number, got "
                                  f"{type(m).__name__}", None, f"{where}.{k}")
        for name, v in m.items():
            if not _finite(v):
                raise SlmrecError.one(file, f"must be a finite number, got {clip(v)}", None,
                                      f"{where}.{k}.{name}")
            if k != "rows" and abs(v) >= bound:
                raise SlmrecError.one(file, too_big, None, f"{where}.{k}.{name}")
    for k in ("n", "loaded"):
        v = f.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise SlmrecError.one(file, f"must be a non-negative integer, got {clip(v)}", None,
                                  f"{where}.{k}")
    for k in ("cv_before", "cv_after"):
        if f.get(k) is not None and not _finite(f[k]):
            raise SlmrecError.one(file, f"must be a finite number, got {clip(f[k])}", None,
                                  f"{where}.{k}")
    return MetricFit(kind=f["kind"], **{k: {str(a): float(b) for a, b in f.get(k, {}).items()}
                                        for k in _FIT_MAPS},
                     **{k: float(f[k]) for k in _FIT_NUMBERS if k in f},
                     n=f.get("n", 0), loaded=f.get("loaded", 0), cv_before=f.get("cv_before"),
                     cv_after=f.get("cv_after"))


class BoundCalibration:
    """A Calibration bound to one estimator's context (see Calibration.bind)."""

    def __init__(self, cal: Calibration, kb, hardware, runtime, params):
        self.cal, self.kb = cal, kb
        self.hardware, self.runtime, self.params = hardware, runtime, params

    def context(self, method: str | None, params: dict | None = None) -> Context:
        m = self.kb.methods.get(method or "") if self.kb is not None else None
        return Context(method or "", m.family if m else (method or ""), self.hardware,
                       self.runtime, self.params, settings_of(params))

    def correct(self, metric: str, value: float, method: str | None = None, *,
                low: float | None = None, high: float | None = None,
                context: Context | None = None, params: dict | None = None) -> Correction | None:
        return self.cal.correct(metric, value, method, low=low, high=high,
                                context=context or self.context(method, params))

    def lower(self, metric: str, value: float) -> float:
        return self.cal.lower(metric, value)

    def bind(self, kb, hardware, runtime, params) -> "BoundCalibration":
        return self.cal.bind(kb, hardware, runtime, params)

    def __getattr__(self, name: str):
        return getattr(self.cal, name)
