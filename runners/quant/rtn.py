"""Which modules a weight-only quantizer touches, and round-to-nearest quantization of them."""

from __future__ import annotations

import torch
from torch import nn

from runners.models import replace_module
from runners.quant.qlinear import QuantEmbedding, QuantLinear


def head_is_tied(model) -> bool:
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    return (head is not None and emb is not None and isinstance(getattr(head, "weight", None), torch.Tensor)
            and head.weight is emb.weight)


def linear_names(model) -> list[str]:
    """Every nn.Linear except a head tied to the embeddings (quantized with the table instead)."""
    head = model.get_output_embeddings()
    skip_head = head_is_tied(model)
    return [n for n, m in model.named_modules()
            if type(m) is nn.Linear and not (skip_head and m is head)]


def quantize_embeddings(model, bits: int | None, group_size: int) -> str:
    """Quantize the input embedding table (and the head tied to it); returns a note."""
    emb = model.get_input_embeddings()
    if bits is None or not isinstance(emb, nn.Embedding):
        dtype = getattr(getattr(emb, "weight", None), "dtype", "their dtype")
        return "embeddings kept in " + str(dtype).removeprefix("torch.")
    names = {m: n for n, m in model.named_modules()}
    tied = head_is_tied(model)
    table = QuantLinear.from_weight(emb.weight.data, bits, group_size)
    dtype = emb.weight.dtype
    if tied:
        head = model.get_output_embeddings()
        replace_module(model, names[head], table)  # the head owns the packed table
        replace_module(model, names[emb], QuantEmbedding(table, tied=True, compute_dtype=dtype))
        return f"tied embedding table and lm_head quantized once to int{bits} (group {group_size})"
    replace_module(model, names[emb], QuantEmbedding(table, tied=False, compute_dtype=dtype))
    return f"embedding table quantized to int{bits} (group {group_size}); lm_head quantized with the linears"


@torch.no_grad()
def quantize_rtn(model, bits: int, group_size: int, progress=lambda d, t: None) -> int:
    """Every targeted linear -> QuantLinear by round-to-nearest; returns how many."""
    names = linear_names(model)
    for i, name in enumerate(names):
        lin = model.get_submodule(name)
        replace_module(model, name, QuantLinear.from_weight(lin.weight, bits, group_size, lin.bias))
        progress(i + 1, len(names))
    return len(names)
