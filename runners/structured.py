"""Structural surgery on Llama-style blocks (Llama, Qwen2, Mistral: gate/up/down MLP and q/k/v/o
attention): remove MLP channels, attention heads or whole blocks, and update the config so the
smaller model saves, reloads and runs. Counts stay uniform across blocks (one config for all);
which channels/heads go is chosen per block.
"""

from __future__ import annotations

import torch
from torch import nn

from runners.base import StepFailed
from runners.models import decoder_layers


def _layers(model):
    owner, attr = decoder_layers(model)
    return getattr(owner, attr)


def _slice_linear(lin: nn.Linear, rows=None, cols=None) -> nn.Linear:
    w = lin.weight.data
    w = w[rows] if rows is not None else w
    w = w[:, cols] if cols is not None else w
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, dtype=w.dtype)
    new.weight.data = w.contiguous()
    if lin.bias is not None:
        new.bias.data = (lin.bias.data[rows] if rows is not None else lin.bias.data).contiguous()
    return new


def _require(module, names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if not isinstance(getattr(module, n, None), nn.Linear)]
    if missing:
        raise StepFailed(f"structured-prune ({what}) supports Llama-style blocks with float nn.Linear "
                         f"{', '.join(names)}; this model lacks {', '.join(missing)}")


@torch.no_grad()
def input_sq_norms(model, calib: torch.Tensor, names: list[str], batch_size: int = 4) -> dict[str, torch.Tensor]:
    """Sum over calibration tokens of x_j^2 for each input feature j of the named modules."""
    norms: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(mod, args, out):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            norms[name] = norms.get(name, 0) + (x * x).sum(0)
        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        for i in range(0, len(calib), batch_size):
            model(input_ids=calib[i: i + batch_size], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return norms


def _input_norms(model, calib, modules: list[nn.Module], batch_size: int = 4) -> list[torch.Tensor]:
    """input_sq_norms for modules given as objects rather than names."""
    name_of = {id(m): n for n, m in model.named_modules()}
    names = [name_of[id(m)] for m in modules]
    norms = input_sq_norms(model, calib, names, batch_size)
    return [norms[n] for n in names]


@torch.no_grad()
def prune_mlp(model, calib, amount: float) -> str:
    """Keep the intermediate channels with the largest ||activation|| * ||down column||."""
    layers = _layers(model)
    for layer in layers:
        _require(layer.mlp, ("gate_proj", "up_proj", "down_proj"), "mlp")
    width = layers[0].mlp.down_proj.in_features
    keep = max(1, int(round(width * (1 - amount))))
    norms = _input_norms(model, calib, [layer.mlp.down_proj for layer in layers])
    for layer, act in zip(layers, norms):
        mlp = layer.mlp
        score = act.sqrt() * mlp.down_proj.weight.float().norm(dim=0)
        idx = score.topk(keep).indices.sort().values
        mlp.gate_proj = _slice_linear(mlp.gate_proj, rows=idx)
        mlp.up_proj = _slice_linear(mlp.up_proj, rows=idx)
        mlp.down_proj = _slice_linear(mlp.down_proj, cols=idx)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = keep
    model.config.intermediate_size = keep
    return f"MLP width {width} -> {keep} in each of {len(layers)} blocks (activation x down-norm importance)"


@torch.no_grad()
def prune_heads(model, calib, amount: float) -> str:
    """Remove query heads by ||head output|| * ||o_proj columns||, the same number from every KV
    group so grouped-query attention stays uniform; with one query head per group (plain
    multi-head attention) whole groups (query with its key/value head) go instead."""
    cfg = model.config
    layers = _layers(model)
    for layer in layers:
        _require(layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj"), "heads")
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    group = heads // kv
    if group > 1:
        drop_per_group = min(group - 1, max(1, int(round(group * amount))))
        new_heads, new_kv = kv * (group - drop_per_group), kv
    else:
        drop_groups = min(kv - 1, max(1, int(round(kv * amount))))
        new_heads = new_kv = kv - drop_groups
    norms = _input_norms(model, calib, [layer.self_attn.o_proj for layer in layers])
    for layer, act in zip(layers, norms):
        attn = layer.self_attn
        o_norm = attn.o_proj.weight.float().norm(dim=0) ** 2
        score = (act * o_norm).view(heads, dim).sum(1).sqrt()  # one importance per query head
        if group > 1:
            per_group = score.view(kv, group)
            keep_in = per_group.topk(group - drop_per_group, dim=1).indices.sort(dim=1).values
            q_heads = (keep_in + torch.arange(kv)[:, None] * group).flatten()
            kv_heads = torch.arange(kv)
        else:
            kv_heads = score.topk(new_kv).indices.sort().values
            q_heads = kv_heads
        q_rows = (q_heads[:, None] * dim + torch.arange(dim)).flatten()
        kv_rows = (kv_heads[:, None] * dim + torch.arange(dim)).flatten()
        attn.q_proj = _slice_linear(attn.q_proj, rows=q_rows)
        attn.o_proj = _slice_linear(attn.o_proj, cols=q_rows)
        if group == 1:
            attn.k_proj = _slice_linear(attn.k_proj, rows=kv_rows)
            attn.v_proj = _slice_linear(attn.v_proj, rows=kv_rows)
        attn.head_dim = dim
        attn.num_key_value_groups = new_heads // new_kv
        for name, value in (("num_heads", new_heads), ("num_key_value_heads", new_kv)):
            if hasattr(attn, name):
                setattr(attn, name, value)
    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = new_heads, new_kv, dim
    return f"attention heads {heads}/{kv} kv -> {new_heads}/{new_kv} kv in each of {len(layers)} blocks"


@torch.no_grad()
def drop_layers(model, calib, fraction: float, batch_size: int = 4) -> str:
    """Remove the blocks whose output is most similar to their input (cosine over calib tokens)."""
    owner, attr = decoder_layers(model)
    layers = getattr(owner, attr)
    n = len(layers)
    drop = min(n - 1, max(1, int(round(n * fraction))))
    sims = torch.zeros(n)
    counts = torch.zeros(n)

    def hook(i):
        def fn(mod, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, (tuple, list)) else out
            cos = nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
            sims[i] += cos.sum()
            counts[i] += cos.numel()
        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for i in range(0, len(calib), batch_size):
            model(input_ids=calib[i: i + batch_size], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    sims /= counts.clamp(min=1)
    gone = set(sims.topk(drop).indices.tolist())
    kept = [layer for i, layer in enumerate(layers) if i not in gone]
    setattr(owner, attr, nn.ModuleList(kept))
    for new_idx, layer in enumerate(kept):  # the KV cache is keyed by these indices
        for m in layer.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = new_idx
    cfg = model.config
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = [t for i, t in enumerate(cfg.layer_types) if i not in gone]
    if hasattr(cfg, "n_layer"):
        cfg.n_layer = len(kept)
    else:
        cfg.num_hidden_layers = len(kept)
    return (f"dropped blocks {sorted(gone)} of {n} (highest input/output cosine: "
            f"{', '.join(f'{sims[i]:.3f}' for i in sorted(gone))})")
