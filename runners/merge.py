"""Model merging: fine-tune a few ingredients from the step's model, then combine them.

Each ingredient is the step's model fine-tuned (LoRA through peft, merged; or all weights) on its
own shard of the train split. Their task vectors (ingredient minus base) are combined with PEFT's
merge utilities (task arithmetic, TIES, DARE), averaged (model soup) or spherically interpolated
(SLERP, two ingredients), and added back to the base. The runner measures the validation loss of
the base, of each ingredient and of the merged model, so the merge is judged against its parts.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.models import model_stats
from runners.peft_methods import validation_loss
from runners.training import set_seed, train


class MergeParams(RunnerParams):
    combination: Literal["soup", "task_arithmetic", "ties", "dare_ties", "dare_linear", "slerp"] = "task_arithmetic"
    ingredients: int = Field(2, ge=2, le=16, description="fine-tuned variants to merge")
    scale: float = Field(1.0, gt=0, le=4.0, description="weight of each task vector (task arithmetic, TIES, DARE)")
    density: float = Field(0.5, gt=0, le=1.0, description="fraction of each task vector kept (TIES, DARE)")
    t: float = Field(0.5, ge=0, le=1.0, description="interpolation point between the two ingredients (SLERP)")
    rank: int = Field(8, ge=0, le=1024, description="LoRA rank of the ingredients' fine-tuning; 0 trains all weights")
    steps: int = Field(20, ge=1, le=1_000_000, description="fine-tuning steps per ingredient")
    lr: float = Field(1e-3, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=32768)
    rounds: int = Field(1, ge=1, le=1000, description="repeat train-then-merge from the merged model (federated averaging)")

    @model_validator(mode="after")
    def _slerp_takes_two(self) -> "MergeParams":
        if self.combination == "slerp" and self.ingredients != 2:
            raise ValueError("ingredients: SLERP interpolates exactly 2 models")
        return self


def shard_sampler(stream: torch.Tensor, k: int, n: int, seq_len: int, batch_size: int, gen):
    """Random windows from the k-th of n contiguous shards of a token stream."""
    size = len(stream) // n
    shard = stream[k * size:(k + 1) * size]
    if len(shard) <= seq_len + 1:
        raise StepFailed(f"merge: the train split is too short for {n} shards of {seq_len} tokens")

    def batch(step):
        starts = torch.randint(0, len(shard) - seq_len, (batch_size,), generator=gen)
        return torch.stack([shard[s: s + seq_len] for s in starts.tolist()])
    return batch


def fine_tune(base, ctx: StepContext, params: MergeParams, k: int, round_: int = 0):
    from peft import LoraConfig, get_peft_model

    from runners.prune import block_linears
    model = copy.deepcopy(base)
    gen = set_seed(ctx.seed + k + 1000 * round_)
    if params.rank:
        names = [n for n, _ in block_linears(model)]
        model = get_peft_model(model, LoraConfig(r=params.rank, lora_alpha=2 * params.rank,
                                                 target_modules=names, task_type="CAUSAL_LM"))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    batch = shard_sampler(ctx.corpus.train, k, params.ingredients, params.seq_len, params.batch_size, gen)

    def loss(step):
        ids = batch(step)
        return model(input_ids=ids, labels=ids).loss

    train(model, ctx, params.steps, params.lr, loss, f"merge ingredient {k}", keep_sparsity=False)
    return model.merge_and_unload() if params.rank else model


def slerp(t: float, a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation of two weight tensors (linear when they are nearly parallel)."""
    fa, fb = a.flatten().double(), b.flatten().double()
    cos = torch.dot(fa / (fa.norm() + eps), fb / (fb.norm() + eps)).clamp(-1, 1)
    omega = math.acos(float(cos))
    if abs(math.sin(omega)) < 1e-6:
        return ((1 - t) * a + t * b).to(a.dtype)
    out = (math.sin((1 - t) * omega) * fa + math.sin(t * omega) * fb) / math.sin(omega)
    return out.view_as(a).to(a.dtype)


def combine(params: MergeParams, base: torch.Tensor, tuned: list[torch.Tensor]) -> torch.Tensor:
    from peft.utils import merge_utils
    if params.combination == "slerp":
        return slerp(params.t, tuned[0], tuned[1])
    if params.combination == "soup":
        return torch.stack(tuned).mean(0)
    deltas = [w - base for w in tuned]
    weights = torch.full((len(deltas),), params.scale)
    if params.combination == "task_arithmetic":
        return base + merge_utils.task_arithmetic(deltas, weights)
    fn = getattr(merge_utils, params.combination)
    return base + fn(deltas, weights, params.density)


def merge_into(base, ingredients, params: MergeParams):
    """A copy of base whose changed float tensors are the combination of the ingredients'."""
    states = [m.state_dict() for m in ingredients]
    merged = copy.deepcopy(base)
    with torch.no_grad():
        for name, w in merged.state_dict().items():
            if w.is_floating_point() and any(not torch.equal(s[name], w) for s in states):
                w.copy_(combine(params, w.clone(), [s[name] for s in states]))
    return merged


class Merge(Runner):
    id = "merge"
    Params = MergeParams
    summary = "fine-tune several ingredients and merge them (soup, task arithmetic, TIES, DARE, SLERP)"

    def run(self, ctx: StepContext, params: MergeParams) -> StepResult:
        base = ctx.model.merge_and_unload() if hasattr(ctx.model, "peft_config") else ctx.model
        base.eval()
        torch.manual_seed(ctx.seed)
        base_loss = validation_loss(base, ctx, params.seq_len)
        merged = base
        for r in range(params.rounds):
            ingredients = [fine_tune(merged, ctx, params, k, r) for k in range(params.ingredients)]
            losses = [validation_loss(m, ctx, params.seq_len) for m in ingredients]
            merged = merge_into(merged, ingredients, params)
            del ingredients
        merged_loss = validation_loss(merged, ctx, params.seq_len)
        metrics = {"val_loss_base": base_loss, "val_loss_ingredients_mean": sum(losses) / len(losses),
                   "val_loss_ingredients_best": min(losses), "val_loss_merged": merged_loss}
        stats = model_stats(merged)
        metrics.update({k: stats[k] for k in ("params", "size_mb", "sparsity", "bits_per_weight")})
        how = f"LoRA r={params.rank}" if params.rank else "all weights"
        rounds = f", {params.rounds} rounds" if params.rounds > 1 else ""
        notes = [f"{params.combination} of {params.ingredients} ingredients{rounds} ({how}, {params.steps} steps each on "
                 f"disjoint train shards); validation loss base {base_loss:.3f}, ingredients "
                 f"{', '.join(f'{x:.3f}' for x in losses)}, merged {merged_loss:.3f}"]
        return StepResult(model=merged, metrics=metrics, notes=notes)
