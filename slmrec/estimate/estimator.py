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
from typing import Any

from slmrec.estimate.arch import (BITS_PRECISIONS, Arch, Workload, _float_peak, _peak,
                                  _precision_ok, hardware_class)
from slmrec.estimate.formats import Shape, formats_of
from slmrec.estimate.options import Option
from slmrec.estimate.runtimes import profile, runtime_for_methods
from slmrec.estimate.state import ModelState, StepCost, compose_quality
from slmrec.kb import KB
from slmrec.schema import Hardware
from slmrec.estimate.constants import (BANDWIDTH_EFFICIENCY, MB, PREFILL_CHUNK,
                                       RUNTIME_OVERHEAD_MB, SPARSE_INDEX_BITS)
from slmrec.estimate.predict import ChainPredictor
from slmrec.estimate.steps import StepCosts

class Estimator(StepCosts, ChainPredictor):
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
        self._profiles: dict[str | None, Any] = {}
        self._cals: dict[str | None, Any] = {}
        self.profile = self.profile_for(runtime)
        self.formats = formats_of(kb)
        self._bind_calibration()

    def _bind_calibration(self) -> None:
        """Calibration offsets depend on hardware class, runtime and model size: bind them."""
        self._cals = {}
        self.calibration = self.calibration_for(self.profile.runtime)

    def profile_for(self, runtime: str | None):
        """The runtime's profile on this hardware class (None: the default runtime), cached."""
        got = self._profiles.get(runtime)
        if got is None:
            got = self._profiles[runtime] = profile(self.kb, runtime, self.hw_class)
        return got

    def calibration_for(self, runtime: str | None):
        """The calibration bound to this hardware class, runtime and model size, cached."""
        if runtime not in self._cals:
            cal = self.calibration
            if hasattr(cal, "bind"):
                cal = cal.bind(self.kb, self.hw_class, self.profile_for(runtime).runtime,
                               self.arch.params)
            self._cals[runtime] = cal
        return self._cals[runtime]

    def chain_runtime(self, methods) -> str | None:
        """The runtime a chain is priced with: the estimator's own when it was given one, else
        the chain's deployment step (kb/runtimes.yaml), else None (the default runtime)."""
        if self.runtime is not None:
            return self.runtime
        return runtime_for_methods(self.kb, list(methods))

    def use_runtime(self, runtime: str | None) -> None:
        """Price decode and prefill with this runtime's profile (None: the default runtime)."""
        self.runtime = runtime
        self.profile = self.profile_for(runtime)
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
        fmt = next((f for bound, f in opt.formats_by_bits if s.bits <= bound), opt.format)
        if fmt:
            self._apply_format(n, fmt)
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

    def metrics(self, s: ModelState, prof=None) -> tuple[float, float, float, float, float, float,
                                                          float]:
        """(params, bits_per_weight, sparsity, size_mb, inference_memory_mb, decode_ms, prefill_ms)
        priced with runtime profile `prof` (default: the estimator's own; a list of profiles:
        the least decode and prefill over them, for lower bounds)."""
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
        deq = s.int_quant and not (s.format is None and s.read_bits >= 16)
        p = wl.prompt_tokens
        pf_flops = wl.batch * (2 * active * p + 2 * s.layers * s.heads * s.head_dim * p * p)
        decode = prefill = math.inf
        for pr in (prof if isinstance(prof, (list, tuple)) else (prof or self.profile,)):
            decode = min(decode, pr.decode_s(read + kv, self.bw_peak, s.layers, deq,
                                             flops_tok * wl.batch, peak * 1e12,
                                             dequant_bytes=read) * 1000 / s.speedup)
            prefill = min(prefill, pr.prefill_s(pf_flops, peak * 1e12, read, self.bw_peak,
                                                s.layers) * 1000)
        bpw = size * 8 / params if params else 0.0
        return params, bpw, s.sparsity, size / MB, memory, decode, prefill

    # ---- the cost of running a step -------------------------------------------------------

