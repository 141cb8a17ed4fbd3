"""Full predictions with units, bases and sources: the model after every step of a chain, the
step's own cost, scale-weighted evidence and calibration. A mixin of `Estimator`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from slmrec.estimate.constants import MODEL_METRICS, STEP_METRICS, UNITS
from slmrec.estimate.evidence import ZERO
from slmrec.estimate.options import Option
from slmrec.estimate.state import ModelState
from slmrec.plan import Prediction


_SCALED: dict[tuple, tuple] = {}   # (option key, model params) -> (method, scaled option)


class ChainPredictor:
    """Prediction records for a chain; expects the Estimator's state and metric methods."""

    def predict_chain(self, options: list[Option]) -> "ChainPrediction":
        """Predictions after every step. The runtime is the plan's deployment step when it has
        one (for this call only; the estimator's own runtime is restored afterwards)."""
        kept = (self.profile, self.calibration)
        try:
            rt = self.chain_runtime(o.method for o in options)
            self.profile, self.calibration = self.profile_for(rt), self.calibration_for(rt)
            return self._predict_chain(options)
        finally:
            self.profile, self.calibration = kept

    def _predict_chain(self, options: list[Option]) -> "ChainPrediction":
        options = [self.at_scale(o) for o in options]
        s = self.initial_state()
        base = self._model_predictions(s, None, ())
        steps = []
        srcs: tuple[str, ...] = tuple(self.arch.sources) + self.sources_hw
        q_sources: tuple[str, ...] = ()
        for opt in options:
            s2, cost = self.apply(s, opt)
            if opt.quality is not None and opt.quality is not ZERO:
                q_sources += opt.quality.sources
            if opt.recovery is not None:
                q_sources += opt.recovery.sources
            srcs += opt.sources
            preds = self._model_predictions(s2, opt, srcs, q_sources)
            preds["step_peak_memory_mb"] = Prediction(
                value=round(cost.peak_memory_mb, 3), low=round(cost.peak_memory_mb, 3),
                high=round(cost.peak_memory_mb, 3), unit="MB", basis="analytic",
                sources=list(dict.fromkeys(opt.sources + tuple(self.chw.sources))))
            preds["step_tflop"] = Prediction(value=_r(cost.tflop), low=_r(cost.tflop),
                                             high=_r(cost.tflop), unit="TFLOP", basis="analytic",
                                             sources=list(opt.sources),
                                             note="tokens: " + self.step_amount(opt)[1])
            preds["step_hours"] = Prediction(value=_r(cost.hours), low=_r(cost.hours),
                                             high=_r(cost.hours), unit="h", basis="analytic",
                                             sources=list(self.chw.sources))
            self._calibrate(preds, opt.method, opt.params)
            steps.append(preds)
            s = s2
        return ChainPrediction(base, steps, s)

    def at_scale(self, opt: Option) -> Option:
        """The option with its evidence weighted by this model's scale (Evidence.model_params);
        anything the caller set that the evidence does not give (a prior) is kept."""
        m = self.kb.methods.get(opt.method)
        if m is None or not any(e.model_params for e in (*m.effects.quality, *m.effects.recovery,
                                                          *m.effects.speedup)):
            return opt
        import dataclasses  # noqa: PLC0415

        from slmrec.estimate.options import compile_option  # noqa: PLC0415

        key = (opt.key, self.arch.params)
        got = _SCALED.get(key)
        if got is None or got[0] is not m:
            if len(_SCALED) > 50000:
                _SCALED.clear()
            got = _SCALED[key] = (m, compile_option(m, opt.params, self.arch.params))
        new = got[1]
        upd = {}
        if new.quality is not None and opt.quality_status == "ok":
            upd["quality"] = new.quality
        if new.recovery is not None and opt.recovery is not None:
            upd["recovery"] = new.recovery
        if new.speedup is not None and opt.speedup is not None:
            upd["speedup"] = new.speedup
        return dataclasses.replace(opt, **upd) if upd else opt

    def _model_predictions(self, s: ModelState, opt: Option | None, srcs: tuple[str, ...],
                           q_sources: tuple[str, ...] = ()) -> dict[str, Prediction]:
        vals = self.metrics(s)
        out: dict[str, Prediction] = {}
        src = list(dict.fromkeys(srcs or (tuple(self.arch.sources) + self.sources_hw)))
        for name, v in zip(MODEL_METRICS[:7], vals):
            out[name] = Prediction(value=_r(v), low=_r(v), high=_r(v), unit=UNITS[name],
                                   basis="analytic", sources=src)
        q_basis = "evidence" if q_sources else "analytic"
        note = None
        if opt is not None and opt.quality is not None and opt.quality.note:
            note = opt.quality.note
        out["quality_loss_pct"] = Prediction(value=_r(s.q), low=_r(min(s.q_lo, s.q)),
                                             high=_r(max(s.q_hi, s.q)), unit="%", basis=q_basis,
                                             sources=list(dict.fromkeys(q_sources)), note=note)
        out["throughput_tok_s"] = Prediction(
            value=_r(self.wl.batch * 1000 / vals[5]) if vals[5] else None, unit="tokens/s",
            basis="analytic", sources=src)
        return out

    def _calibrate(self, preds: dict[str, Prediction], method: str, params: dict) -> None:
        cal = self.calibration
        if cal is None:
            return
        for name, p in preds.items():
            if p.value is None:
                continue
            got = cal.correct(name, p.value, method, low=p.low, high=p.high, params=params)
            if got is not None:
                v, lo, hi = got[0], got[1], got[2]
                note = getattr(got, "note", "corrected by calibration on measured runs")
                preds[name] = p.model_copy(update={"value": _r(v), "low": _r(lo), "high": _r(hi),
                                                   "basis": "calibrated",
                                                   "note": f"{note} (analytic {p.value:g})"})


def _r(v: float | None) -> float | None:
    if v is None:
        return None
    if v == 0 or not math.isfinite(v):
        return float(v)
    return float(f"{v:.5g}")


@dataclass
class ChainPrediction:
    base: dict[str, Prediction]                   # the base model before any step
    steps: list[dict[str, Prediction]]            # after each step (plus the step's own cost)
    state: ModelState = field(repr=False)

    @property
    def final(self) -> dict[str, Prediction]:
        """The model after the chain, plus the chain's peak step memory and total step compute."""
        if not self.steps:
            return dict(self.base)
        out = {k: v for k, v in self.steps[-1].items() if k not in STEP_METRICS}
        mems = [s["step_peak_memory_mb"] for s in self.steps]
        peak = max(mems, key=lambda p: p.value or 0.0)
        out["step_peak_memory_mb"] = peak
        total = sum(s["step_tflop"].value or 0.0 for s in self.steps)
        hours = sum(s["step_hours"].value or 0.0 for s in self.steps)
        srcs = list(dict.fromkeys(x for s in self.steps for x in s["step_tflop"].sources))
        out["step_tflop"] = Prediction(value=_r(total), low=_r(total), high=_r(total),
                                       unit="TFLOP", basis="analytic", sources=srcs)
        out["step_hours"] = Prediction(value=_r(hours), low=_r(hours), high=_r(hours), unit="h",
                                       basis="analytic", sources=srcs)
        return out


