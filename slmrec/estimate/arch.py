"""Architecture cards and hardware helpers the estimator reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from slmrec.schema import BaseModelCard, Hardware

# Which hardware precisions give native speed to weights of a given bit width.
BITS_PRECISIONS = {32: ("fp32", "tf32"), 16: ("fp16", "bf16"), 8: ("int8", "fp8"),
                   4: ("int4", "fp4")}
# Capabilities that mean native arithmetic at a precision (kb/capabilities.yaml).
CAPABILITY_PRECISION = {"fp16-compute": "fp16", "bf16-compute": "bf16", "int8-kernels": "int8",
                        "fp8-tensor-cores": "fp8"}
# Index overhead when a sparse kernel stores only the kept weights (bits per weight).


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
    mlp: str = "gated"                   # gated (3 matrices) or plain (2)
    sliding_window: int | None = None    # local attention window of the non-global layers
    global_every: int | None = None      # one global layer every N (None: all global)
    active_params: float | None = None   # parameters used per token (mixture of experts)

    @classmethod
    def from_card(cls, card: BaseModelCard) -> "Arch":
        # Layer-wise scaled cards (OpenELM) give per-layer widths: every count the estimator
        # makes from them is linear in the width, so the per-layer mean is exact.
        return cls(card.id, card.params, card.layers, card.hidden, card.mean_intermediate,
                   card.mean_heads, card.mean_kv_heads, card.dim_head, card.vocab, card.context, card.tied_embeddings,
                   card.tokenizer, tuple(card.sources), card.mlp, card.sliding_window,
                   card.global_every, card.active_params)

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.mlp == "gated" else 2

    def kv_positions(self, context: int) -> float:
        """Positions held in the KV cache summed over layers (sliding-window layers hold at
        most their window)."""
        if not self.sliding_window or self.sliding_window >= context:
            return float(self.layers * context)
        n_global = self.layers // self.global_every if self.global_every else 0
        return float(n_global * context + (self.layers - n_global) * self.sliding_window)

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
        act = str(cfg.get("hidden_act") or cfg.get("activation_function") or "silu")
        gated = "gelu_new" not in act and cfg.get("model_type") not in ("phi", "gpt2", "gpt_neox")
        mats = 3 if gated else 2
        per_layer = 2 * hidden * heads * hd + 2 * hidden * kv * hd + mats * hidden * inter + 2 * hidden
        params = layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden
        window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
        every = cfg.get("sliding_window_pattern")
        return cls(name or path.name, float(params), layers, hidden, inter, heads, kv, hd, vocab,
                   int(cfg.get("max_position_embeddings") or 2048), tied,
                   f"local:{path.name}", (), "gated" if gated else "plain",
                   int(window) if window else None, int(every) if every else None)


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



def hardware_class(hw: Hardware) -> str:
    """The class a runtime profile is fitted per: datacenter-gpu, consumer-gpu, apple-silicon,
    mobile-soc or cpu (from the profile's kind, capabilities and memory)."""
    caps = set(hw.capabilities)
    if hw.kind == "gpu":
        return "datacenter-gpu" if hw.memory_gb >= 40 and "unified-memory" not in caps \
            else "consumer-gpu"
    if "apple-silicon" in caps and hw.kind != "cpu":
        return "apple-silicon"
    if hw.kind in ("soc", "npu"):
        return "mobile-soc"
    return "cpu"
