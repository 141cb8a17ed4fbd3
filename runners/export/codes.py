"""The integer codes of a model quantized by slmrec's RTN or GPTQ runners, in a neutral form that an
exporter can write into another format without quantizing again (no second rounding).

    for q in quantized_weights(model):
        q.name        module name in model.named_modules() ("model.layers.0.mlp.up_proj", "lm_head")
        q.kind        "linear" (an nn.Linear-like weight, rows = out features, columns = in features)
                      or "embedding" (the table, rows = vocabulary, columns = hidden size)
        q.codes       uint8 (rows, cols), values 0 .. 2**bits - 1, unpacked, original column order
        q.scale       float32 (rows, groups); q.zero uint8 (rows, groups), an integer zero point
        q.bits        4 or 8; q.group_size: columns per group (the last group may be partial)
        q.bias        float32 (rows,) or None
        q.tied_to     for an embedding tied to the head: the head's name (same codes), else None
        q.dequantize()  the float weight, bit-identical to slmrec's own dequantisation

The grid is asymmetric and group-wise along the columns (the input dimension K of a linear):
w[r, c] = (codes[r, c] - zero[r, c // group_size]) * scale[r, c // group_size]. GPTQ with act-order
keeps contiguous groups (static groups), so no column permutation is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QuantizedWeight:
    name: str
    kind: str
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group_size: int
    bias: torch.Tensor | None = None
    tied_to: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    @property
    def groups(self) -> int:
        return self.scale.shape[1]

    def dequantize(self) -> torch.Tensor:
        """float32 (rows, cols), computed as runners/quant/qlinear.py computes it."""
        import torch.nn.functional as F
        rows, cols = self.codes.shape
        pad = self.groups * self.group_size - cols
        codes = self.codes.to(torch.float32)
        if pad:
            codes = F.pad(codes, (0, pad))
        w = (codes.view(rows, self.groups, self.group_size) - self.zero.float()[..., None]) * self.scale[..., None]
        return w.view(rows, -1)[:, :cols]


def _from_module(name: str, kind: str, m, tied_to: str | None = None) -> QuantizedWeight:
    from runners.quant.qlinear import unpack
    bias = getattr(m, "bias", None)
    return QuantizedWeight(
        name=name, kind=kind, codes=unpack(m.qweight, m.bits, m.in_features).contiguous(),
        scale=m.scales.float(), zero=m.zeros.clone(), bits=m.bits, group_size=m.group_size,
        bias=None if bias is None else bias.detach().float(), tied_to=tied_to)


def quantized_weights(model) -> list[QuantizedWeight]:
    """Every packed weight of `model` (QuantLinear layers and QuantEmbedding tables), in module
    order; empty for a float model. A tied embedding is listed once as the head's linear and once
    as an embedding with tied_to naming the head."""
    from runners.quant.qlinear import QuantEmbedding, QuantLinear
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for name, m in model.named_modules():
        if isinstance(m, QuantEmbedding):
            if m.tied:
                out.append(_from_module(name, "embedding", m.table, tied_to=names.get(id(m.table))))
            continue
        if isinstance(m, QuantLinear):
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            owner = model.get_submodule(parent) if parent else model
            kind = "embedding" if isinstance(owner, QuantEmbedding) else "linear"
            out.append(_from_module(parent if kind == "embedding" else name, kind, m))
    return out
