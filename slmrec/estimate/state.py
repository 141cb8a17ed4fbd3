"""The model state after some steps, and how quality losses compose."""

from __future__ import annotations

from dataclasses import dataclass

from slmrec.estimate.evidence import ZERO
from slmrec.estimate.options import Option


class ModelState:
    """The model after some steps: parameter groups, architecture, storage and quality."""

    __slots__ = ("embed", "qo", "kvp", "mlp", "other", "extra", "layers", "hidden", "heads",
                 "kv_heads", "head_dim", "intermediate", "vocab", "tied", "bits", "read_bits",
                 "embed_bits", "embed_read_bits", "sparsity", "structure", "sparse_credit",
                 "kv_bits", "act_bits", "speedup", "q", "q_lo", "q_hi", "int_quant", "format", "mlp_mats",
                 "experts", "active_share")

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
        new.format = self.format
        new.mlp_mats = self.mlp_mats
        new.experts = self.experts
        new.active_share = self.active_share
        return new

    @property
    def nonembed(self) -> float:
        return self.qo + self.kvp + self.mlp + self.other

    @property
    def params(self) -> float:
        return self.embed + self.nonembed + self.extra



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

