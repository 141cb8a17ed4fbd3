"""Predict what a chain of methods does to a base model on a hardware target.

Analytic where physics decides (parameters, bits, size, memory, roofline latency, step cost),
evidence ranges from the KB where only measurements can tell (quality, recovery, speed-ups the
transform cannot express), and corrected by a fitted calibration when one is given. Every formula
is written out in docs/estimator.md; this module holds no method-specific knowledge: it reads each
method's `effects.transform`, `effects.quality|recovery|speedup`, `cost` and `requires`.

The hot path (the recommender calls `apply` and `metrics` thousands of times per search) uses
plain floats on a slotted `ModelState`; `predict_chain` wraps the same arithmetic into
`slmrec.plan.Prediction` records with units, bases and sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from slmrec.estimate.arch import (BITS_PRECISIONS, Arch, Workload, _float_peak, _peak,
                                  _precision_ok, hardware_class)
from slmrec.estimate.evidence import ZERO
from slmrec.estimate.formats import Shape, formats_of
from slmrec.estimate.options import Option
from slmrec.estimate.runtimes import profile, runtime_for_methods
from slmrec.estimate.state import ModelState, StepCost, compose_quality
from slmrec.kb import KB
from slmrec.plan import Prediction
from slmrec.schema import ComputeScale, Hardware

# ---- constants (documented in docs/estimator.md; calibration corrects what they miss) -------
MB = 1e6                      # sizes and memory are reported in MB = 10^6 bytes
BANDWIDTH_EFFICIENCY = 0.7    # without runtime profiles in the KB: share of peak bandwidth
COMPUTE_EFFICIENCY = 0.5      # share of peak FLOP/s a training step reaches
RUNTIME_OVERHEAD_MB = {"cpu": 50.0, "soc": 50.0, "npu": 50.0, "gpu": 500.0}
PREFILL_CHUNK = 512           # tokens whose activations are live at once during prefill
TRAIN_MICRO_TOKENS = 2048     # tokens per micro-batch when a step trains
ACT_BYTES_PER_TOKEN_LAYER_HIDDEN = 34.0   # training activations, bytes per token*layer*hidden
ADAPTER_TRAINABLE_DEFAULT = 0.01          # trainable share when a step trains adapters
# Tokens a step processes when its method gives neither cost.tokens nor requires.data_amount.
DEFAULT_STEP_TOKENS = {ComputeScale.none: 0.0, ComputeScale.calibration: 128 * 512.0,
                       ComputeScale.fine_tune: 1e7, ComputeScale.continued_pretraining: 1e9}
PRETRAIN_TOKENS_PER_PARAM = 20.0          # Chinchilla compute-optimal
# Tokens one unit of a data amount stands for (shared with slmrec.scenario).
TOKENS_PER_UNIT = {"tokens": 1.0, "samples": 512.0, "examples": 256.0, "pairs": 512.0}
SPARSE_INDEX_BITS = {"semi-structured": 2.0, "unstructured": 1.0}

MODEL_METRICS = ("params", "bits_per_weight", "sparsity", "size_mb", "inference_memory_mb",
                 "decode_ms_per_token", "prefill_ms", "quality_loss_pct")
STEP_METRICS = ("step_peak_memory_mb", "step_tflop", "step_hours")
UNITS = {"params": "count", "bits_per_weight": "bits", "sparsity": "fraction", "size_mb": "MB",
         "inference_memory_mb": "MB", "decode_ms_per_token": "ms", "prefill_ms": "ms",
         "quality_loss_pct": "%", "step_peak_memory_mb": "MB", "step_tflop": "TFLOP",
         "step_hours": "h", "throughput_tok_s": "tokens/s"}


class Estimator:
    """Predictions for one base model, target hardware and workload (plus where steps run)."""

    def __init__(self, kb: KB, arch: Arch, hardware: Hardware, workload: Workload | None = None,
                 *, compute_hardware: Hardware | None = None, teacher: Arch | None = None,
                 base_bits: float = 16.0, calibration: Any = None,
                 data_tokens: dict[str, float] | None = None, runtime: str | None = None):
        self.kb = kb
        self.arch = arch
        self.hw = hardware
        self.wl = workload or Workload()
        self.chw = compute_hardware or hardware
        self.teacher = teacher
        self.base_bits = float(base_bits)
        self.calibration = calibration
        self.data_tokens = data_tokens or {}
        caps = set(hardware.capabilities)
        self.caps = caps
        has16 = _precision_ok(16, hardware)
        self.float_bits = 16.0 if has16 else 32.0
        self.peak_float = _float_peak(hardware, self.float_bits)
        self.bw = hardware.memory_bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY
        self.bw_peak = hardware.memory_bandwidth_gbs * 1e9
        self.overhead_mb = RUNTIME_OVERHEAD_MB.get(hardware.kind, 50.0)
        self.compute_overhead_mb = RUNTIME_OVERHEAD_MB.get(self.chw.kind, 50.0)
        self.compute_peak = _float_peak(self.chw, 16)
        self.sources_hw = tuple(hardware.sources)
        self._accel: dict[tuple, tuple[bool, bool, bool]] = {}
        self.hw_class = hardware_class(hardware)
        self.runtime = runtime
        self.profile = profile(kb, runtime, self.hw_class)
        self.formats = formats_of(kb)
        self._bind_calibration()

    def _bind_calibration(self) -> None:
        """Calibration offsets depend on hardware class, runtime and model size: bind them."""
        if hasattr(self.calibration, "bind"):
            self.calibration = self.calibration.bind(self.kb, self.hw_class,
                                                     self.profile.runtime, self.arch.params)

    def use_runtime(self, runtime: str | None) -> None:
        """Price decode and prefill with this runtime's profile (None: the default runtime)."""
        self.runtime = runtime
        self.profile = profile(self.kb, runtime, self.hw_class)
        self._bind_calibration()

    # ---- the starting point ---------------------------------------------------------------

    def initial_state(self) -> ModelState:
        a = self.arch
        s = ModelState.__new__(ModelState)
        embed = float(a.vocab * a.hidden * (1 if a.tied else 2))
        nonembed = max(a.params - embed, 0.0)
        qo = 2.0 * a.hidden * a.heads * a.head_dim * a.layers
        kvp = 2.0 * a.hidden * a.kv_heads * a.head_dim * a.layers
        mlp = float(a.mlp_matrices) * a.hidden * a.intermediate * a.layers
        s.experts, s.active_share = 1.0, 1.0
        if a.active_params and a.active_params < a.params:   # MoE: experts fill the remainder
            total_mlp = max(nonembed - qo - kvp, mlp)
            s.experts = total_mlp / mlp if mlp else 1.0
            s.active_share = max(min((a.active_params - embed - qo - kvp) / total_mlp, 1.0), 0.0) \
                if total_mlp else 1.0
            mlp = total_mlp
        s.mlp_mats = a.mlp_matrices
        s.format = None
        arch_sum = qo + kvp + mlp
        if arch_sum > nonembed > 0:  # the card's total wins; keep the shares of the groups
            f = nonembed / arch_sum
            qo, kvp, mlp = qo * f, kvp * f, mlp * f
        s.embed, s.qo, s.kvp, s.mlp = embed, qo, kvp, mlp
        s.other = max(nonembed - qo - kvp - mlp, 0.0)
        s.extra = 0.0
        s.layers, s.hidden, s.heads, s.kv_heads = float(a.layers), a.hidden, float(a.heads), float(a.kv_heads)
        s.head_dim, s.intermediate, s.vocab, s.tied = a.head_dim, float(a.intermediate), float(a.vocab), a.tied
        s.bits = s.embed_bits = self.base_bits
        s.read_bits = s.embed_read_bits = max(self.base_bits, self.float_bits) \
            if not _precision_ok(self.base_bits, self.hw) else self.base_bits
        s.sparsity, s.structure, s.sparse_credit = 0.0, None, False
        s.kv_bits = self.float_bits
        s.act_bits = None
        s.speedup = 1.0
        s.q = s.q_lo = s.q_hi = 0.0
        s.int_quant = False
        return s

    # ---- hardware credit ------------------------------------------------------------------

    def credit(self, opt: Option) -> tuple[bool, bool, bool]:
        """(precision speed credit, sparsity credit, speed-up credit) for this option here."""
        got = self._accel.get(opt.key)
        if got is not None:
            return got
        m = self.kb.methods[opt.method]
        benefit = m.requires.hardware_to_benefit
        caps_ok = all(c in self.caps for c in benefit)
        wb = opt.t.get("weight_bits")
        if benefit:  # the listed capabilities, or native compute at that precision
            precision = caps_ok or (wb is not None and _precision_ok(wb, self.hw))
        else:
            precision = wb is None or _precision_ok(wb, self.hw)
        sparse = caps_ok if benefit else False
        got = (precision, sparse, caps_ok)
        self._accel[opt.key] = got
        return got

    # ---- applying one step ----------------------------------------------------------------

    def apply(self, s: ModelState, opt: Option) -> tuple[ModelState, StepCost]:
        """The state after `opt`, and the memory and compute of running the step on `s`."""
        cost = self.step_cost(s, opt)
        n = self.transform(s, opt)
        compose_quality(n, s, opt)
        return n, cost

    def transform(self, s: ModelState, opt: Option) -> ModelState:
        """The state after `opt`'s transform and speed-up (quality untouched)."""
        n = s.copy()
        t = opt.t
        precision_ok, sparse_ok, speed_ok = self.credit(opt)
        # structure first: it changes what later fields apply to
        keep = 1.0
        if "params_fraction_removed" in t:
            keep *= 1.0 - t["params_fraction_removed"]
        if "layers_fraction_removed" in t:
            f = 1.0 - t["layers_fraction_removed"]
            keep *= f
            n.layers = max(1.0, round(s.layers * f))
        if "rank_fraction" in t:
            keep *= min(1.0, 2.0 * t["rank_fraction"])
        if keep != 1.0:
            n.qo, n.kvp, n.mlp, n.other = s.qo * keep, s.kvp * keep, s.mlp * keep, s.other * keep
            if "params_fraction_removed" in t:
                n.intermediate = s.intermediate * (1.0 - t["params_fraction_removed"])
        if "mlp_fraction_removed" in t:  # MLP channels only: gate, up and down shrink together
            f = 1.0 - t["mlp_fraction_removed"]
            n.mlp *= f
            n.intermediate = n.intermediate * f
        if "heads_fraction_removed" in t:
            f = 1.0 - t["heads_fraction_removed"]
            n.heads = max(1.0, round(s.heads * f))
            n.kv_heads = max(1.0, round(s.kv_heads * f))
            n.qo *= n.heads / s.heads
            n.kvp *= n.kv_heads / s.kv_heads
        if "kv_heads" in t and t["kv_heads"] > 0:
            new_kv = min(t["kv_heads"], n.heads)
            n.kvp *= new_kv / n.kv_heads
            n.kv_heads = new_kv
        if "vocab_size" in t and t["vocab_size"] > 0:
            n.embed = s.embed * t["vocab_size"] / s.vocab
            n.vocab = t["vocab_size"]
        if "adds_params_fraction" in t:
            n.extra = s.extra + t["adds_params_fraction"] * (s.embed + s.nonembed)
        # precision
        wb = t.get("weight_bits")
        if wb is not None:
            gs = t.get("group_size")
            over = 0.0
            if wb < 16:
                over = opt.group_overhead_bits / gs if gs else opt.group_overhead_bits / s.hidden
            store = wb + over
            n.bits = store
            n.read_bits = store if precision_ok else max(s.read_bits, store)
            if wb >= 16:  # float casts apply to every tensor; integer formats to linear layers
                n.embed_bits = wb
                n.embed_read_bits = wb if precision_ok else max(s.embed_read_bits, wb)
            elif t.get("embedding_bits") is not None:  # the method also packs the embedding table
                eb = t["embedding_bits"] + (opt.group_overhead_bits / gs if gs else 0.0)
                n.embed_bits = eb
                n.embed_read_bits = eb if precision_ok else max(s.embed_read_bits, eb)
            n.int_quant = wb < 16 or s.int_quant
        if opt.format:
            self._apply_format(n, opt.format)
        if "activation_bits" in t and precision_ok:
            n.act_bits = t["activation_bits"]
        if "kv_cache_bits" in t:
            n.kv_bits = t["kv_cache_bits"]
        if "sparsity" in t:
            n.sparsity = t["sparsity"]
            n.structure = opt.structure or "unstructured"
            n.sparse_credit = sparse_ok
        if opt.speedup is not None and speed_ok:
            n.speedup = s.speedup * opt.speedup.value
        return n

    def shape(self, s: ModelState) -> Shape:
        """The tensor shapes of a state (what a storage format prices)."""
        per_layer = (2 * s.hidden * (s.heads + s.kv_heads) * s.head_dim
                     + s.mlp_mats * s.hidden * s.intermediate * s.experts)
        matrices = s.layers * per_layer + s.vocab * s.hidden * (1 if s.tied else 2)
        return Shape(int(round(s.layers)), int(s.hidden), max(int(round(s.intermediate)), 1),
                     int(round(s.heads)), int(round(s.kv_heads)), int(s.head_dim),
                     int(round(s.vocab)), bool(s.tied), int(s.mlp_mats), s.experts,
                     max(s.params - matrices, 0.0))

    def _apply_format(self, n: ModelState, fmt: str) -> None:
        """Store the state in a KB format: bits come from its per-tensor layout."""
        f = self.formats.get(fmt)
        n.format = f.id
        by = self.formats.bits_by_class(f.id, self.shape(n))
        lin = [k for k in by if k not in ("embed", "output")]
        w = {k: 1.0 for k in lin}
        n.bits = sum(by[k] * w[k] for k in lin) / len(lin) if lin else n.bits
        n.embed_bits = by.get("embed", by.get("output", n.embed_bits))
        deq = self.formats.dequantizes(f.id)
        n.read_bits = n.bits
        n.embed_read_bits = by.get("output", n.embed_bits)
        n.int_quant = n.int_quant or deq

    # ---- metrics of a state ---------------------------------------------------------------

    def weight_bytes(self, s: ModelState, *, read: bool) -> float:
        if s.format:
            shape = self.shape(s)
            extra = s.extra * (self.float_bits if read else 16) / 8
            if read:
                return self.formats.read_bytes(s.format, shape, s.active_share) + extra
            return self.formats.size_bytes(s.format, shape) + extra
        bits = s.read_bits if read else s.bits
        lin = s.nonembed * bits
        if s.sparsity and s.sparse_credit:
            idx = SPARSE_INDEX_BITS.get(s.structure or "unstructured", 1.0)
            lin = s.nonembed * ((1 - s.sparsity) * bits + idx)
        if read:
            head = s.vocab * s.hidden * s.embed_read_bits  # the output projection, read per token
            if s.active_share < 1.0:   # MoE: only the routed experts are read per token
                lin -= s.mlp * (1 - s.active_share) * bits
            return (lin + head + s.extra * self.float_bits) / 8
        return (lin + s.embed * s.embed_bits + s.extra * 16) / 8

    def kv_bytes(self, s: ModelState) -> float:
        """KV cache: sliding-window layers hold at most their window."""
        positions = self.arch.kv_positions(self.wl.context) * (s.layers / self.arch.layers)
        return 2 * positions * s.kv_heads * s.head_dim * self.wl.batch * s.kv_bits / 8

    def metrics(self, s: ModelState) -> tuple[float, float, float, float, float, float, float]:
        """(params, bits_per_weight, sparsity, size_mb, inference_memory_mb, decode_ms, prefill_ms)"""
        params = s.params
        size = self.weight_bytes(s, read=False)
        kv = self.kv_bytes(s)
        wl = self.wl
        act_bytes = self.float_bits / 8
        chunk = min(wl.prompt_tokens, PREFILL_CHUNK)
        acts = wl.batch * chunk * (4 * s.hidden + 2 * s.intermediate) * act_bytes \
            + wl.batch * s.vocab * 4
        memory = (size + kv + acts) / MB + self.overhead_mb
        # decode: every weight and the whole KV cache are read once per generated token
        active = s.nonembed * ((1 - s.sparsity) if (s.sparsity and s.sparse_credit) else 1.0) \
            + s.vocab * s.hidden + s.extra
        peak = self.peak_float
        if s.act_bits is not None:
            peak = _peak(self.hw, BITS_PRECISIONS[min(BITS_PRECISIONS, key=lambda b: abs(b - s.act_bits))]) \
                or peak
        if s.active_share < 1.0:
            active -= s.mlp * (1 - s.active_share)
        attn_positions = self.arch.kv_positions(wl.context) / self.arch.layers
        flops_tok = 2 * active + 4 * s.layers * s.heads * s.head_dim * attn_positions
        read = self.weight_bytes(s, read=True)
        prof = self.profile
        deq = s.int_quant and not (s.format is None and s.read_bits >= 16)
        decode = prof.decode_s(read + kv, self.bw_peak, s.layers, deq,
                               flops_tok * wl.batch, peak * 1e12) * 1000 / s.speedup
        p = wl.prompt_tokens
        pf_flops = wl.batch * (2 * active * p + 2 * s.layers * s.heads * s.head_dim * p * p)
        prefill = prof.prefill_s(pf_flops, peak * 1e12, read, self.bw_peak, s.layers) * 1000
        bpw = size * 8 / params if params else 0.0
        return params, bpw, s.sparsity, size / MB, memory, decode, prefill

    # ---- the cost of running a step -------------------------------------------------------

    def step_tokens(self, opt: Option) -> float:
        return self.step_amount(opt)[0]

    def step_amount(self, opt: Option) -> tuple[float, str]:
        """Tokens the step processes, and where that figure comes from. The scenario's amount
        for the method's data tier wins when it is smaller than what the method would use."""
        m = self.kb.methods[opt.method]
        tier = m.requires.data.value
        have = self.data_tokens.get(tier)
        amount = m.requires.data_amount
        if opt.cost["tokens"]:
            need, why = opt.cost["tokens"], "the method's cost.tokens"
        elif amount is not None:
            need = amount.count * TOKENS_PER_UNIT[amount.unit]
            why = f"the method's {amount.count:g} {amount.unit}"
        else:
            scale = m.requires.compute
            if scale is ComputeScale.pretraining:
                return PRETRAIN_TOKENS_PER_PARAM * self.arch.params, \
                    "pre-training budget (20 tokens per parameter)"
            if opt.cost["passes"] == "none":
                return 0.0, "no model passes"
            need, why = DEFAULT_STEP_TOKENS.get(scale, 0.0), f"default for {scale.value} compute"
        if tier == "none":
            return need, why
        if have:
            if have < need:
                return have, f"the scenario's {tier} data ({have:,.0f} tokens; {why}: {need:,.0f})"
            return need, f"{why} ({need:,.0f} tokens; the scenario has {have:,.0f})"
        return need, f"{why} ({need:,.0f} tokens): the scenario gives no {tier} amount"

    def step_cost(self, s: ModelState, opt: Option) -> StepCost:
        c = opt.cost
        n = s.params
        tokens = self.step_tokens(opt)
        float_bytes = 2.0
        mem = n * max(s.bits, 16.0) / 8  # the step loads the model in a float format
        flops = 0.0
        if c["passes"] == "forward":
            flops = 2 * n * tokens
            mem += tokens * s.hidden * 4 * 2  # layer inputs and outputs of the calibration set
            if c["hessian"]:
                mem += max(s.hidden, s.intermediate) ** 2 * 4
        elif c["passes"] == "train":
            if c["optimizer"] == "full":
                mem = n * 16.0  # bf16 weights and gradients, fp32 master copy and Adam moments
                flops = 6 * n * tokens
            else:
                bits = c["bits_during"] or (min(s.bits, 16.0) if s.int_quant else 16.0)
                frac = c["trainable_fraction"] or ADAPTER_TRAINABLE_DEFAULT
                mem = n * bits / 8 + frac * n * 16.0
                flops = 4 * n * tokens + 6 * frac * n * tokens
            mem += (ACT_BYTES_PER_TOKEN_LAYER_HIDDEN * TRAIN_MICRO_TOKENS * s.layers * s.hidden
                    + TRAIN_MICRO_TOKENS * s.vocab * 4 * 2)
        m = self.kb.methods[opt.method]
        t = self.teacher
        if t is not None and m.requires.teacher.value != "none":
            teacher_w = t.params * float_bytes
            teacher_act = TRAIN_MICRO_TOKENS * (t.hidden * float_bytes * 4 + t.vocab * 4)
            flops += 2 * t.params * tokens
            if c["teacher_resident"]:
                mem += teacher_w + teacher_act
            else:  # the teacher generates first, then leaves memory
                mem = max(mem, teacher_w + teacher_act)
        mem_mb = mem / MB + (self.compute_overhead_mb if (c["passes"] != "none" or mem) else 0.0)
        tflop = flops / 1e12
        hours = tflop / (self.compute_peak * COMPUTE_EFFICIENCY) / 3600 if self.compute_peak else 0.0
        return StepCost(mem_mb, tflop, hours)

    # ---- full predictions with units and sources ------------------------------------------

    def predict_chain(self, options: list[Option]) -> "ChainPrediction":
        """Predictions after every step. The runtime is the plan's deployment step when it has
        one (for this call only; the estimator's own runtime is restored afterwards)."""
        kept = (self.profile, self.calibration)
        try:
            if self.runtime is None:
                found = runtime_for_methods(self.kb, [o.method for o in options])
                if found:
                    self.profile = profile(self.kb, found, self.hw_class)
                    self._bind_calibration()
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
            self._calibrate(preds, opt.method)
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

        new = compile_option(m, opt.params, self.arch.params)
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

    def _calibrate(self, preds: dict[str, Prediction], method: str) -> None:
        cal = self.calibration
        if cal is None:
            return
        for name, p in preds.items():
            if p.value is None:
                continue
            got = cal.correct(name, p.value, method, low=p.low, high=p.high)
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


