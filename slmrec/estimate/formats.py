"""Checkpoint size, tensor by tensor, from a storage format in kb/formats.yaml.

A format gives a default tensor type and rules per tensor class (first match wins; a format that
`extends` another tries its own rules first). Each tensor's type then falls back, as llama.cpp
does, when its row is not a multiple of the type's block. A tied table is one tensor classed as
the output projection (llama.cpp quantizes a tied token_embd with the output's rule), unless the
format `unties_embeddings`, which writes it twice. 1-D tensors (norms, biases) take `norm_type`.

`Shape` is the part of an architecture the layout depends on; the estimator builds one from its
model state, so structural steps (fewer layers, narrower MLP) change the priced tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from slmrec.errors import SlmrecError, unknown
from slmrec.schema import Format, FormatRule, TensorType


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    mlp_matrices: int = 3          # gated MLPs hold gate, up and down; plain ones up and down
    experts: float = 1.0           # MLP copies (mixture of experts: total / active share)
    other_params: float = 0.0      # norms, biases and anything the matrices do not cover

    @property
    def gqa(self) -> float:
        return self.heads / max(self.kv_heads, 1)


@dataclass(frozen=True)
class Tensor:
    cls: str
    layer: int | None
    rows: int
    cols: int          # the row length (input features): what block sizes must divide
    copies: float = 1.0


def tensors(shape: Shape, untie: bool = False) -> list[Tensor]:
    """Every weight matrix of the model, with its class, layer and shape."""
    h, hd = shape.hidden, shape.head_dim
    out: list[Tensor] = []
    if shape.tied and not untie:
        out.append(Tensor("output", None, shape.vocab, h))          # one shared table
    else:
        out.append(Tensor("embed", None, shape.vocab, h))
        out.append(Tensor("output", None, shape.vocab, h))
    for i in range(shape.layers):
        out += [Tensor("attn_q", i, shape.heads * hd, h), Tensor("attn_k", i, shape.kv_heads * hd, h),
                Tensor("attn_v", i, shape.kv_heads * hd, h), Tensor("attn_o", i, h, shape.heads * hd)]
        if shape.mlp_matrices >= 3:
            out.append(Tensor("ffn_gate", i, shape.intermediate, h, shape.experts))
        out += [Tensor("ffn_up", i, shape.intermediate, h, shape.experts),
                Tensor("ffn_down", i, h, shape.intermediate, shape.experts)]
    return out


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _rule_applies(r: FormatRule, t: Tensor, shape: Shape) -> bool:
    if t.cls not in r.tensors:
        return False
    if r.min_gqa is not None and shape.gqa < r.min_gqa:
        return False
    if t.layer is None:
        return True
    n = shape.layers
    if r.layers == "more-bits" and not _use_more_bits(t.layer, n):
        return False
    if r.first is not None and t.layer >= r.first:
        return False
    if r.first_fraction is not None and t.layer >= int(n * r.first_fraction):
        return False
    return True


class Formats:
    """The KB's tensor types and formats, with the per-tensor size arithmetic."""

    def __init__(self, types: dict[str, TensorType], formats: dict[str, Format]):
        self.types = types
        self.formats = formats
        self._alias = {a.lower(): f.id for f in formats.values() for a in f.aliases}
        self._memo: dict[tuple, object] = {}   # layouts and sums per (what, format, shape)

    def _memoised(self, key: tuple, compute):
        """A search prices the same few shapes thousands of times: compute each once."""
        got = self._memo.get(key)
        if got is None:
            if len(self._memo) > 20000:
                self._memo.clear()
            got = self._memo[key] = compute()
        return got

    def get(self, fmt: str) -> Format:
        f = self.formats.get(fmt) or self.formats.get(self._alias.get(fmt.lower(), ""))
        if f is None:
            raise SlmrecError.one("kb/formats.yaml", unknown("format", fmt, self.formats))
        return f

    def _rules(self, f: Format) -> list[FormatRule]:
        rules = list(f.rules)
        seen = {f.id}
        while f.extends and f.extends not in seen:
            seen.add(f.extends)
            f = self.formats[f.extends]
            rules += f.rules
        return rules

    def type_of(self, f: Format, t: Tensor, shape: Shape, rules: list[FormatRule]) -> TensorType:
        chosen = next((r.type for r in rules if _rule_applies(r, t, shape)), f.default)
        typ = self.types[chosen]
        seen = set()
        while t.cols % typ.block and typ.id not in seen:   # llama.cpp's fallback chain
            seen.add(typ.id)
            typ = self.types[typ.fallback] if typ.fallback else self.types["ggml-f16"]
        return typ

    def layout(self, fmt: str, shape: Shape) -> list[tuple[Tensor, TensorType]]:
        return self._memoised(("layout", fmt, shape), lambda: self._layout(fmt, shape))

    def _layout(self, fmt: str, shape: Shape) -> list[tuple[Tensor, TensorType]]:
        f = self.get(fmt)
        rules = self._rules(f)
        return [(t, self.type_of(f, t, shape, rules)) for t in tensors(shape, f.unties_embeddings)]

    def tensor_bytes(self, t: Tensor, typ: TensorType) -> float:
        n = t.rows * t.cols
        b = n / typ.block * typ.bytes + (typ.column_bits * t.cols + typ.row_bits * t.rows) / 8
        return b * t.copies

    def size_bytes(self, fmt: str, shape: Shape) -> float:
        """Bytes of the checkpoint's tensors (metadata and tokenizer not counted)."""
        return sum(b for b in self.by_class(fmt, shape).values())

    def by_class(self, fmt: str, shape: Shape) -> dict[str, float]:
        return dict(self._memoised(("by_class", fmt, shape), lambda: self._by_class(fmt, shape)))

    def _by_class(self, fmt: str, shape: Shape) -> dict[str, float]:
        f = self.get(fmt)
        out: dict[str, float] = {}
        for t, typ in self.layout(fmt, shape):
            out[t.cls] = out.get(t.cls, 0.0) + self.tensor_bytes(t, typ)
        out["norm"] = shape.other_params * self.types[f.norm_type].bits / 8 + f.overhead_bytes
        return out

    def read_bytes(self, fmt: str, shape: Shape, active_share: float = 1.0) -> float:
        """Bytes a decode step reads: every matrix but the embedding lookup (MLP experts at the
        active share)."""
        return self._memoised(("read", fmt, shape, active_share),
                              lambda: self._read_bytes(fmt, shape, active_share))

    def _read_bytes(self, fmt: str, shape: Shape, active_share: float) -> float:
        total = 0.0
        for t, typ in self.layout(fmt, shape):
            if t.cls == "embed":
                continue
            b = self.tensor_bytes(t, typ)
            if t.cls.startswith("ffn_") and shape.experts > 1:
                b *= active_share
            total += b
        return total

    def dequantizes(self, fmt: str) -> bool:
        f = self.get(fmt)
        return self.types[f.default].dequantizes

    def bits_by_class(self, fmt: str, shape: Shape) -> dict[str, float]:
        """Mean stored bits per weight of each tensor class (for reports)."""
        return dict(self._memoised(("bits", fmt, shape), lambda: self._bits_by_class(fmt, shape)))

    def _bits_by_class(self, fmt: str, shape: Shape) -> dict[str, float]:
        count: dict[str, float] = {}
        bits: dict[str, float] = {}
        for t, typ in self.layout(fmt, shape):
            n = t.rows * t.cols * t.copies
            count[t.cls] = count.get(t.cls, 0.0) + n
            bits[t.cls] = bits.get(t.cls, 0.0) + self.tensor_bytes(t, typ) * 8
        return {k: bits[k] / count[k] for k in bits}


_BY_KB: dict[int, Formats] = {}


def formats_of(kb) -> Formats:
    """The Formats of a loaded KB (built once per KB object)."""
    got = _BY_KB.get(id(kb))
    if got is None or got.types is not kb.tensor_types:
        got = Formats(kb.tensor_types, kb.formats)
        _BY_KB[id(kb)] = got
    return got
