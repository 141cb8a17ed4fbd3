"""Packed group-wise integer weights that dequantise on the fly, so a quantized model still runs.

Layout: a weight (out, in) is split along `in` into groups of `group_size` columns; each group of
each row has an fp16 scale and a uint8 zero point (asymmetric min/max grid). int8 codes are stored
one per byte, int4 codes two per byte (even column in the low nibble), so the serialised size is
the real packed size. An embedding table (vocab, hidden) has the same layout as a linear weight.

Forward: a call with at most KERNEL_MAX_ROWS token rows (decoding) runs torch's packed CPU
kernels on a copy of the codes repacked once at first use (see runners/quant/kernels.py): that is
what makes packed weights faster than fp32 to decode. Longer inputs (prefill) dequantise the
weight and call F.linear, which is faster there. The stored format is unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_BITS = (4, 8)


def _expand(groups: torch.Tensor, group_size: int, cols: int) -> torch.Tensor:
    """Per-group values (rows, G) -> per-column values (rows, cols)."""
    return groups.repeat_interleave(group_size, dim=1)[:, :cols]


def group_params(w: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 scale and integer-valued zero point per (row, group) from the min/max of each group.

    A partial last group uses only its real columns (padding with +-inf keeps it out of min/max).
    """
    rows, cols = w.shape
    groups = math.ceil(cols / group_size)
    pad = groups * group_size - cols
    w = w.float()
    lo = F.pad(w, (0, pad), value=float("inf")).view(rows, groups, group_size).amin(-1)
    hi = F.pad(w, (0, pad), value=float("-inf")).view(rows, groups, group_size).amax(-1)
    # The grid must contain 0 so that zero weights (pruned ones) stay exactly zero.
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    qmax = 2**bits - 1
    scale = ((hi - lo) / qmax).clamp(min=1e-8)
    scale = scale.half().float()  # stored as fp16: quantize against the scale that will be stored
    zero = (-lo / scale).round().clamp(0, qmax)
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                   group_size: int) -> torch.Tensor:
    """Integer codes (uint8, same shape as w) on the given per-group grid."""
    cols = w.shape[1]
    s, z = _expand(scale, group_size, cols), _expand(zero, group_size, cols)
    return (w.float() / s + z).round().clamp(0, 2**bits - 1).to(torch.uint8)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return codes.contiguous()
    if codes.shape[1] % 2:
        codes = F.pad(codes, (0, 1))
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def unpack(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    if bits == 8:
        return packed
    out = torch.stack((packed & 0x0F, packed >> 4), dim=-1).view(packed.shape[0], -1)
    return out[:, :cols]


class QuantLinear(nn.Module):
    """A linear layer with packed int4/int8 group-wise weights; forward dequantises to x's dtype."""

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int,
                 bias: bool = False, device=None):
        super().__init__()
        if bits not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        groups = math.ceil(in_features / group_size)
        packed_cols = in_features if bits == 8 else math.ceil(in_features / 2)
        self.register_buffer("qweight", torch.zeros(out_features, packed_cols, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=torch.float16, device=device))
        self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=torch.uint8, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_codes(cls, codes, scale, zero, bits, group_size, bias=None) -> "QuantLinear":
        out_features, in_features = codes.shape
        m = cls(in_features, out_features, bits, group_size, bias is not None)
        m.qweight.copy_(pack(codes, bits))
        m.scales.copy_(scale.half())
        m.zeros.copy_(zero.to(torch.uint8))
        if bias is not None:
            m.bias.data = bias.detach().float().clone()
        return m

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bits: int, group_size: int, bias=None) -> "QuantLinear":
        """Round-to-nearest quantization of a float weight (out, in)."""
        w = weight.detach().float()
        scale, zero = group_params(w, bits, group_size)
        return cls.from_codes(quantize_codes(w, scale, zero, bits, group_size), scale, zero,
                              bits, group_size, bias)

    def _dequant(self, packed, scales, zeros, dtype) -> torch.Tensor:
        rows, groups = scales.shape
        codes = unpack(packed, self.bits, self.in_features).to(torch.float32)
        pad = groups * self.group_size - self.in_features
        if pad:
            codes = F.pad(codes, (0, pad))
        # A (rows, groups, group_size) view broadcasts scales and zeros without copying them.
        w = (codes.view(rows, groups, self.group_size) - zeros.float()[..., None]) * scales.float()[..., None]
        return w.view(rows, -1)[:, : self.in_features].to(dtype)

    def dequantize(self, dtype=torch.float32) -> torch.Tensor:
        return self._dequant(self.qweight, self.scales, self.zeros, dtype)

    def dequantize_rows(self, ids: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Rows `ids` only: an embedding lookup must not dequantise the whole table."""
        flat = ids.reshape(-1)
        rows = self._dequant(self.qweight[flat], self.scales[flat], self.zeros[flat], dtype)
        return rows.view(*ids.shape, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from runners.quant import kernels
        bias = None if self.bias is None else self.bias.to(x.dtype)
        rows = x.numel() // max(1, x.shape[-1])
        if rows <= kernels.KERNEL_MAX_ROWS and x.device.type == "cpu":
            kernel = kernels.packed_kernel(self)
            if kernel is not None:
                y = kernel(x.reshape(rows, self.in_features)).view(*x.shape[:-1], self.out_features)
                return y if bias is None else y + bias
        return F.linear(x, self.dequantize(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, group_size={self.group_size}, bias={self.bias is not None}")


class QuantEmbedding(nn.Module):
    """An embedding lookup over a QuantLinear-layout table (vocab, hidden).

    Tied to the lm_head: the table is the head's QuantLinear, held unregistered so the state
    holds it once (under the head's name). Untied: the table is registered here as `q`.
    """

    def __init__(self, table: QuantLinear, tied: bool, compute_dtype=torch.float32):
        super().__init__()
        if tied:
            self.__dict__["_table"] = table
        else:
            self.q = table
        self.tied = tied
        self.num_embeddings, self.embedding_dim = table.out_features, table.in_features
        self.compute_dtype = compute_dtype
        self.padding_idx = None

    @property
    def table(self) -> QuantLinear:
        return self.__dict__["_table"] if self.tied else self.q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table.dequantize_rows(ids, self.compute_dtype)

    def extra_repr(self) -> str:
        t = self.table
        return f"{t.out_features}, {t.in_features}, bits={t.bits}, tied={self.tied}"


def packed_bytes(m: QuantLinear) -> int:
    return sum(b.numel() * b.element_size() for b in (m.qweight, m.scales, m.zeros))
