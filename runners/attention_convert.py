"""Multi-head (or grouped) attention to fewer key/value heads by mean-pooling each group of K/V
heads, then uptraining (Ainslie et al., GQA). The result is a standard checkpoint of the same
architecture with a smaller `num_key_value_heads`, so the KV cache shrinks by the same factor."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.models import model_stats
from runners.peft_methods import validation_loss
from runners.prune import decoder_layers
from runners.training import set_seed, train


class GQAParams(RunnerParams):
    kv_heads: int = Field(2, ge=1, le=1024, description="key/value heads after pooling")
    steps: int = Field(20, ge=0, le=1_000_000, description="uptraining steps after pooling (0: none)")
    lr: float = Field(5e-4, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=32768)


def _pool(linear: nn.Linear, kv: int, target: int, head_dim: int) -> nn.Linear:
    group = kv // target
    w = linear.weight.detach().view(target, group, head_dim, -1).mean(1).reshape(target * head_dim, -1)
    out = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach().view(target, group, head_dim).mean(1).reshape(-1))
    return out


def pool_kv_heads(model, target: int) -> tuple[int, int]:
    """Mean-pool each layer's K/V projections to `target` heads in place; (heads, kv before)."""
    cfg = model.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    if target > kv or kv % target or heads % target:
        raise StepFailed(f"mha-to-gqa: kv_heads {target} must divide both the {kv} key/value heads and the "
                         f"{heads} query heads; valid: {[d for d in range(1, kv + 1) if kv % d == 0 and heads % d == 0]}")
    owner, attr = decoder_layers(model)
    for layer in getattr(owner, attr):
        attn = getattr(layer, "self_attn", None)
        if attn is None or not hasattr(attn, "k_proj"):
            raise StepFailed(f"mha-to-gqa: {type(layer).__name__} has no k_proj/v_proj to pool")
        attn.k_proj = _pool(attn.k_proj, kv, target, head_dim)
        attn.v_proj = _pool(attn.v_proj, kv, target, head_dim)
        if hasattr(attn, "num_key_value_groups"):
            attn.num_key_value_groups = heads // target
    cfg.num_key_value_heads = target
    return heads, kv


class MHAToGQA(Runner):
    id = "mha-to-gqa"
    Params = GQAParams
    summary = "pool key/value heads into groups (GQA/MQA) and uptrain"

    def run(self, ctx: StepContext, params: GQAParams) -> StepResult:
        model = ctx.model.merge_and_unload() if hasattr(ctx.model, "peft_config") else ctx.model
        before = validation_loss(model, ctx, params.seq_len)
        heads, kv = pool_kv_heads(model, params.kv_heads)
        pooled = validation_loss(model, ctx, params.seq_len)
        metrics = {"val_loss_before": before, "val_loss_pooled": pooled, "kv_heads": float(params.kv_heads),
                   "kv_cache_ratio": params.kv_heads / kv}
        if params.steps:
            gen = set_seed(ctx.seed)
            for p in model.parameters():
                p.requires_grad_(True)

            def loss(step):
                ids = ctx.corpus.sample("train", params.seq_len, params.batch_size, gen)
                return model(input_ids=ids, labels=ids).loss

            metrics.update(train(model, ctx, params.steps, params.lr, loss, self.id, keep_sparsity=False))
        metrics["val_loss_after"] = validation_loss(model, ctx, params.seq_len)
        stats = model_stats(model)
        metrics.update({k: stats[k] for k in ("params", "size_mb", "sparsity", "bits_per_weight")})
        notes = [f"{kv} -> {params.kv_heads} key/value heads for {heads} query heads (KV cache x{params.kv_heads / kv:.2f}); "
                 f"validation loss {before:.3f} -> {pooled:.3f} pooled -> {metrics['val_loss_after']:.3f} after "
                 f"{params.steps} uptraining steps"]
        return StepResult(model=model.eval(), metrics=metrics, notes=notes)
