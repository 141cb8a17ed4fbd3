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

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from slmrec.kb import KB
from slmrec.plan import Prediction
from slmrec.schema import BaseModelCard, ComputeScale, Evidence, EvidenceBasis, Hardware, Method

# ---- constants (documented in docs/estimator.md; calibration corrects what they miss) -------
MB = 1e6                      # sizes and memory are reported in MB = 10^6 bytes
BANDWIDTH_EFFICIENCY = 0.7    # share of peak memory bandwidth a decode step reaches
COMPUTE_EFFICIENCY = 0.5      # share of peak FLOP/s a prefill (or a training step) reaches
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
# Which hardware precisions give native speed to weights of a given bit width.
BITS_PRECISIONS = {32: ("fp32", "tf32"), 16: ("fp16", "bf16"), 8: ("int8", "fp8"),
                   4: ("int4", "fp4")}
# Capabilities that mean native arithmetic at a precision (kb/capabilities.yaml).
CAPABILITY_PRECISION = {"fp16-compute": "fp16", "bf16-compute": "bf16", "int8-kernels": "int8",
                        "fp8-tensor-cores": "fp8"}
# Index overhead when a sparse kernel stores only the kept weights (bits per weight).
SPARSE_INDEX_BITS = {"semi-structured": 2.0, "unstructured": 1.0}

MODEL_METRICS = ("params", "bits_per_weight", "sparsity", "size_mb", "inference_memory_mb",
                 "decode_ms_per_token", "prefill_ms", "quality_loss_pct")
STEP_METRICS = ("step_peak_memory_mb", "step_tflop", "step_hours")
UNITS = {"params": "count", "bits_per_weight": "bits", "sparsity": "fraction", "size_mb": "MB",
         "inference_memory_mb": "MB", "decode_ms_per_token": "ms", "prefill_ms": "ms",
         "quality_loss_pct": "%", "step_peak_memory_mb": "MB", "step_tflop": "TFLOP",
         "step_hours": "h", "throughput_tok_s": "tokens/s"}
STRUCTURE_FIELDS = ("params_fraction_removed", "mlp_fraction_removed", "layers_fraction_removed",
                    "heads_fraction_removed", "kv_heads", "vocab_size", "rank_fraction")
TRANSFORM_FIELDS = ("weight_bits", "embedding_bits", "activation_bits", "kv_cache_bits", "sparsity",
                    *STRUCTURE_FIELDS, "adds_params_fraction")


# --------------------------------------------------------------------------------------------
# Evidence ranges
# --------------------------------------------------------------------------------------------


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


def _combine(evs: list[Evidence]) -> Range:
    lows = [e.low for e in evs]
    highs = [e.high for e in evs]
    mids = sorted((e.low + e.high) / 2 for e in evs)
    n = len(mids)
    mid = mids[n // 2] if n % 2 else (mids[n // 2 - 1] + mids[n // 2]) / 2
    basis = "measured" if all(e.basis is EvidenceBasis.measured for e in evs) else "evidence"
    return Range(mid, min(lows), max(highs), tuple(dict.fromkeys(e.source for e in evs)), basis)


def match_evidence(evidence: list[Evidence], params: dict[str, Any]) -> Range | None | str:
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
        return _combine([e for e in applying if len(e.when) == best])
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
            a = _combine([e for e in below if e.when[key] == lo_x])
            b = _combine([e for e in above if e.when[key] == hi_x])
            t = (x - lo_x) / (hi_x - lo_x)
            lerp = lambda u, v: u + t * (v - u)  # noqa: E731
            return Range(lerp(a.value, b.value), min(a.low, b.low, lerp(a.low, b.low)),
                         max(a.high, b.high, lerp(a.high, b.high)), a.sources + b.sources,
                         a.basis, f"interpolated in {key} between {lo_x} and {hi_x}")
    return "uncovered"


# --------------------------------------------------------------------------------------------
# Options: one method with concrete parameter values, resolved once per KB
# --------------------------------------------------------------------------------------------


@dataclass
class Option:
    method: str
    params: dict[str, Any]
    t: dict[str, float]                      # resolved transform numbers
    structure: str | None
    group_overhead_bits: float
    fields: frozenset[str]                   # transform fields this option sets
    quality: Range | None                    # None: quality unknown (see quality_status)
    quality_status: str                      # ok | lossless | missing | unpublished | uncovered
    recovery: Range | None
    speedup: Range | None
    cost: dict[str, Any]
    lossy: bool
    int_quant: bool                          # sets integer weight bits (< 16)
    edits_structure: bool                    # removes structure or zeroes weights
    trains_all: bool                         # updates every weight with a full optimizer
    from_scratch: bool = False               # leaves random weights (a design choice)
    sources: tuple[str, ...] = ()
    key: tuple = ()

    def __post_init__(self) -> None:
        self.key = (self.method, tuple(sorted((k, str(v)) for k, v in self.params.items())))

    def label(self) -> str:
        if not self.params:
            return self.method
        return self.method + "(" + ", ".join(f"{k}={v}" for k, v in self.params.items()) + ")"


def _resolve(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return params.get(value[1:])
    return value


def default_params(m: Method) -> dict[str, Any]:
    return {k: s.default for k, s in m.params.items() if s.default is not None}


def param_grid(m: Method, limit: int = 64) -> list[dict[str, Any]]:
    """Defaults, with every parameter that declares `search` values varied over them."""
    base = default_params(m)
    searched = [(k, list(s.search)) for k, s in m.params.items() if s.search]
    if not searched:
        return [base]
    out = []
    for combo in itertools.product(*(vals for _, vals in searched)):
        p = dict(base)
        p.update({k: v for (k, _), v in zip(searched, combo)})
        out.append(p)
        if len(out) >= limit:
            break
    return out


def compile_option(m: Method, params: dict[str, Any]) -> Option:
    tr = m.effects.transform_for(params)
    t: dict[str, float] = {}
    for name in TRANSFORM_FIELDS:
        v = _resolve(getattr(tr, name), params)
        if v is not None and not isinstance(v, bool):
            try:
                t[name] = float(v)
            except (TypeError, ValueError):
                continue
    gs = _resolve(tr.group_size, params)
    if gs is not None:
        try:
            t["group_size"] = float(gs)
        except (TypeError, ValueError):
            pass
    fields = frozenset(k for k in t if k != "group_size")
    wb = t.get("weight_bits")
    int_quant = wb is not None and wb < 16
    edits = bool(t.get("sparsity")) or any(
        t.get(f) for f in ("params_fraction_removed", "mlp_fraction_removed",
                           "layers_fraction_removed", "heads_fraction_removed")) or "kv_heads" in t or "rank_fraction" in t \
        or "vocab_size" in t
    lossy = (int_quant or edits or tr.init_from_scratch
             or ("activation_bits" in t and t["activation_bits"] < 16)
             or ("kv_cache_bits" in t and t["kv_cache_bits"] < 16))
    # A figure against another baseline (full fine-tuning, LoRA, another system) is not a change of
    # the step's input model; speed figures count only when they time decoding.
    q = match_evidence([e for e in m.effects.quality if not e.baseline], params)
    if isinstance(q, Range):
        quality, status = q, "ok"
    elif lossy:
        quality, status = None, (q or "missing")
    else:
        quality, status = ZERO, "lossless"
    rec = match_evidence([e for e in m.effects.recovery if not e.baseline], params)
    spd = match_evidence([e for e in m.effects.speedup
                          if e.scope in (None, "decode", "end-to-end")], params)
    c = m.cost
    cost = {
        "passes": c.passes,
        "tokens": _num(_resolve(c.tokens, params)),
        "optimizer": c.optimizer,
        "trainable_fraction": _num(_resolve(c.trainable_fraction, params)),
        "teacher_resident": c.teacher_resident,
        "hessian": c.hessian,
        "bits_during": _num(_resolve(c.weight_bits_during, params)),
    }
    if m.requires.training and cost["passes"] == "none":
        cost["passes"] = "train"
    return Option(
        method=m.id, params=params, t=t, structure=tr.sparsity_structure,
        group_overhead_bits=tr.group_overhead_bits, fields=fields, quality=quality,
        quality_status=status, recovery=rec if isinstance(rec, Range) else None,
        speedup=spd if isinstance(spd, Range) else None, cost=cost, lossy=lossy,
        int_quant=int_quant, edits_structure=edits, trains_all=(cost["optimizer"] == "full"),
        from_scratch=tr.init_from_scratch, sources=tuple(m.sources))


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Model state
# --------------------------------------------------------------------------------------------


class ModelState:
    """The model after some steps: parameter groups, architecture, storage and quality."""

    __slots__ = ("embed", "qo", "kvp", "mlp", "other", "extra", "layers", "hidden", "heads",
                 "kv_heads", "head_dim", "intermediate", "vocab", "tied", "bits", "read_bits",
                 "embed_bits", "embed_read_bits", "sparsity", "structure", "sparse_credit",
                 "kv_bits", "act_bits", "speedup", "q", "q_lo", "q_hi", "int_quant")

    def copy(self) -> "ModelState":
        new = ModelState.__new__(ModelState)
        new.embed = self.embed
        new.qo = self.qo
        new.kvp = self.kvp
        new.mlp = self.mlp
        new.other = self.other
        new.extra = self.extra
        new.layers = self.layers
        new.hidden = self.hidden
        new.heads = self.heads
        new.kv_heads = self.kv_heads
        new.head_dim = self.head_dim
        new.intermediate = self.intermediate
        new.vocab = self.vocab
        new.tied = self.tied
        new.bits = self.bits
        new.read_bits = self.read_bits
        new.embed_bits = self.embed_bits
        new.embed_read_bits = self.embed_read_bits
        new.sparsity = self.sparsity
        new.structure = self.structure
        new.sparse_credit = self.sparse_credit
        new.kv_bits = self.kv_bits
        new.act_bits = self.act_bits
        new.speedup = self.speedup
        new.q = self.q
        new.q_lo = self.q_lo
        new.q_hi = self.q_hi
        new.int_quant = self.int_quant
        return new

    @property
    def nonembed(self) -> float:
        return self.qo + self.kvp + self.mlp + self.other

    @property
    def params(self) -> float:
        return self.embed + self.nonembed + self.extra


@dataclass
class Arch:
    """Architecture figures of a base model (a catalog card or a local config.json)."""

    id: str
    params: float
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int
    tied: bool
    tokenizer: str | None = None
    sources: tuple[str, ...] = ()

    @classmethod
    def from_card(cls, card: BaseModelCard) -> "Arch":
        return cls(card.id, card.params, card.layers, card.hidden, card.intermediate, card.heads,
                   card.kv_heads, card.dim_head, card.vocab, card.context, card.tied_embeddings,
                   card.tokenizer, tuple(card.sources))

    @classmethod
    def from_config(cls, path: Path, name: str | None = None) -> "Arch":
        """Read a Hugging Face config.json (JSON only; nothing is executed)."""
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        cfg = cfg.get("text_config", cfg)
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads") or heads)
        hd = int(cfg.get("head_dim") or hidden // heads)
        layers = int(cfg["num_hidden_layers"])
        inter = int(cfg.get("intermediate_size") or 4 * hidden)
        vocab = int(cfg["vocab_size"])
        tied = bool(cfg.get("tie_word_embeddings", False))
        per_layer = 2 * hidden * heads * hd + 2 * hidden * kv * hd + 3 * hidden * inter + 2 * hidden
        params = layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden
        return cls(name or path.name, float(params), layers, hidden, inter, heads, kv, hd, vocab,
                   int(cfg.get("max_position_embeddings") or 2048), tied,
                   f"local:{path.name}", ())


@dataclass(frozen=True)
class Workload:
    context: int = 2048        # tokens held in the KV cache (prompt plus generation)
    prompt_tokens: int = 512   # tokens processed by one prefill
    batch: int = 1             # sequences decoded together


def _precision_ok(bits: float, hw: Hardware) -> bool:
    names = {p.value for p in hw.precisions} | {CAPABILITY_PRECISION[c] for c in hw.capabilities
                                                 if c in CAPABILITY_PRECISION}
    key = min(BITS_PRECISIONS, key=lambda b: abs(b - bits))
    return any(n in names for n in BITS_PRECISIONS[key])


def _peak(hw: Hardware, names: Iterable[str]) -> float:
    vals = [v for p, v in hw.peak_tflops.items() if p.value in names]
    return max(vals) if vals else 0.0


def _float_peak(hw: Hardware, bits: float) -> float:
    """Peak TFLOP/s for float work at `bits`; without a published figure, the lowest figure the
    profile gives (a conservative stand-in)."""
    return _peak(hw, BITS_PRECISIONS[16]) if bits <= 16 and _peak(hw, BITS_PRECISIONS[16]) \
        else _peak(hw, BITS_PRECISIONS[32]) or min(hw.peak_tflops.values())


def compose_quality(n: ModelState, s: ModelState, opt: Option) -> None:
    """Losses compound multiplicatively; recovery takes back a share of what was lost so far."""
    q = opt.quality or ZERO
    n.q = ((1 + s.q / 100) * (1 + q.value / 100) - 1) * 100
    n.q_lo = ((1 + s.q_lo / 100) * (1 + q.low / 100) - 1) * 100
    n.q_hi = ((1 + s.q_hi / 100) * (1 + q.high / 100) - 1) * 100
    r = opt.recovery
    if r is not None:
        if n.q > 0:
            n.q *= 1 - min(max(r.value, 0.0), 1.0)
        if n.q_lo > 0:
            n.q_lo *= 1 - min(max(r.high, 0.0), 1.0)
        if n.q_hi > 0:
            n.q_hi *= 1 - min(max(r.low, 0.0), 1.0)


@dataclass
class StepCost:
    peak_memory_mb: float
    tflop: float
    hours: float


class Estimator:
    """Predictions for one base model, target hardware and workload (plus where steps run)."""

    def __init__(self, kb: KB, arch: Arch, hardware: Hardware, workload: Workload | None = None,
                 *, compute_hardware: Hardware | None = None, teacher: Arch | None = None,
                 base_bits: float = 16.0, calibration: Any = None,
                 data_tokens: dict[str, float] | None = None):
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
        self.overhead_mb = RUNTIME_OVERHEAD_MB.get(hardware.kind, 50.0)
        self.compute_overhead_mb = RUNTIME_OVERHEAD_MB.get(self.chw.kind, 50.0)
        self.compute_peak = _float_peak(self.chw, 16)
        self.sources_hw = tuple(hardware.sources)
        self._accel: dict[tuple, tuple[bool, bool, bool]] = {}

    # ---- the starting point ---------------------------------------------------------------

    def initial_state(self) -> ModelState:
        a = self.arch
        s = ModelState.__new__(ModelState)
        embed = float(a.vocab * a.hidden * (1 if a.tied else 2))
        nonembed = max(a.params - embed, 0.0)
        qo = 2.0 * a.hidden * a.heads * a.head_dim * a.layers
        kvp = 2.0 * a.hidden * a.kv_heads * a.head_dim * a.layers
        mlp = 3.0 * a.hidden * a.intermediate * a.layers
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

    # ---- metrics of a state ---------------------------------------------------------------

    def weight_bytes(self, s: ModelState, *, read: bool) -> float:
        bits = s.read_bits if read else s.bits
        lin = s.nonembed * bits
        if s.sparsity and s.sparse_credit:
            idx = SPARSE_INDEX_BITS.get(s.structure or "unstructured", 1.0)
            lin = s.nonembed * ((1 - s.sparsity) * bits + idx)
        if read:
            head = s.vocab * s.hidden * s.embed_read_bits  # the output projection, read per token
            return (lin + head + s.extra * self.float_bits) / 8
        return (lin + s.embed * s.embed_bits + s.extra * 16) / 8

    def kv_bytes(self, s: ModelState) -> float:
        return (2 * s.layers * s.kv_heads * s.head_dim * self.wl.context * self.wl.batch
                * s.kv_bits / 8)

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
        flops_tok = 2 * active + 4 * s.layers * s.heads * s.head_dim * wl.context
        t_mem = (self.weight_bytes(s, read=True) + kv) / self.bw
        t_cmp = flops_tok * wl.batch / (peak * 1e12 * COMPUTE_EFFICIENCY)
        decode = max(t_mem, t_cmp) * 1000 / s.speedup
        p = wl.prompt_tokens
        pf_flops = wl.batch * (2 * active * p + 2 * s.layers * s.heads * s.head_dim * p * p)
        prefill = max(pf_flops / (peak * 1e12 * COMPUTE_EFFICIENCY),
                      self.weight_bytes(s, read=True) / self.bw) * 1000
        bpw = size * 8 / params if params else 0.0
        return params, bpw, s.sparsity, size / MB, memory, decode, prefill

    # ---- the cost of running a step -------------------------------------------------------

    def step_tokens(self, opt: Option) -> float:
        if opt.cost["tokens"]:
            return opt.cost["tokens"]
        m = self.kb.methods[opt.method]
        amount = m.requires.data_amount
        if amount is not None:
            need = amount.count * TOKENS_PER_UNIT[amount.unit]
            have = self.data_tokens.get(m.requires.data.value)
            return min(need, have) if have else need
        scale = m.requires.compute
        if scale is ComputeScale.pretraining:
            return PRETRAIN_TOKENS_PER_PARAM * self.arch.params
        return DEFAULT_STEP_TOKENS.get(scale, 0.0) if opt.cost["passes"] != "none" else 0.0

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
                                             sources=list(opt.sources))
            preds["step_hours"] = Prediction(value=_r(cost.hours), low=_r(cost.hours),
                                             high=_r(cost.hours), unit="h", basis="analytic",
                                             sources=list(self.chw.sources))
            self._calibrate(preds, opt.method)
            steps.append(preds)
            s = s2
        return ChainPrediction(base, steps, s)

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
                v, lo, hi = got
                preds[name] = p.model_copy(update={"value": _r(v), "low": _r(lo), "high": _r(hi),
                                                   "basis": "calibrated",
                                                   "note": f"corrected by calibration on measured "
                                                           f"runs (analytic {p.value:g})"})


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

