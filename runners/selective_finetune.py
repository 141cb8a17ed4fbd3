"""Full-weight fine-tuning of a chosen subset of layers: Spectrum (by signal-to-noise ratio) and
LISA (randomly sampled layers per interval, embeddings and head always trained)."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import torch
from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.finetune import _batches, _refuse_packed
from runners.models import model_stats
from runners.peft_methods import validation_loss
from runners.prune import block_linears, decoder_layers
from runners.training import set_seed, train


class SelectiveParams(RunnerParams):
    steps: int = Field(20, ge=1, le=1_000_000)
    lr: float = Field(5e-5, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=32768)


def snr_ratio(weight: torch.Tensor) -> float:
    """Spectrum's score: singular values above the Marchenko-Pastur bound (noise level from the
    interquartile range) over those below, divided by the largest singular value."""
    s = torch.linalg.svdvals(weight.detach().float())
    q1, q3 = torch.quantile(s, 0.25), torch.quantile(s, 0.75)
    sigma = float(q3 - q1) / 1.349
    n, m = weight.shape
    bound = sigma * (1 + math.sqrt(min(n, m) / max(n, m)))
    signal, noise = float(s[s > bound].sum()), float(s[s <= bound].sum())
    return (signal / max(noise, 1e-12)) / float(s[0])


def _finish(model, ctx, params, what, loss_fn, trainable_note) -> StepResult:
    before = validation_loss(model, ctx, params.seq_len)
    metrics = train(model, ctx, params.steps, params.lr, loss_fn, what, keep_sparsity=False)
    metrics.update(val_loss_before=before, val_loss_after=validation_loss(model, ctx, params.seq_len))
    stats = model_stats(model)
    metrics.update({k: stats[k] for k in ("params", "size_mb", "sparsity", "bits_per_weight")})
    for p in model.parameters():
        p.requires_grad_(False)
    return StepResult(model=model.eval(), metrics=metrics, notes=[trainable_note])


class SpectrumParams(SelectiveParams):
    fraction: float = Field(0.25, gt=0, le=1.0, description="share of each kind of matrix (q, k, ..., down) trained")


class Spectrum(Runner):
    id = "spectrum"
    Params = SpectrumParams
    summary = "train only the highest signal-to-noise weight matrices of each kind"

    def run(self, ctx: StepContext, params: SpectrumParams) -> StepResult:
        model = ctx.model.merge_and_unload() if hasattr(ctx.model, "peft_config") else ctx.model
        _refuse_packed(model, self.id)
        kinds: dict[str, list] = defaultdict(list)
        for name, lin in block_linears(model):
            kinds[name.rsplit(".", 1)[-1]].append((snr_ratio(lin.weight), name, lin))
        for p in model.parameters():
            p.requires_grad_(False)
        chosen = []
        for entries in kinds.values():
            keep = max(1, math.ceil(params.fraction * len(entries)))
            for _, name, lin in sorted(entries, key=lambda e: -e[0])[:keep]:
                lin.weight.requires_grad_(True)
                chosen.append(name)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        batch, source = _batches(ctx, params.seq_len, params.batch_size, set_seed(ctx.seed))

        def loss(step):
            ids, labels = batch(step)
            return model(input_ids=ids, labels=labels).loss

        res = _finish(model, ctx, params, self.id, loss,
                      f"trained {len(chosen)} matrices with the highest SNR ({trainable / total:.1%} of the weights), data: {source}")
        res.metrics["trainable_fraction"] = trainable / total
        return res


class LISAParams(SelectiveParams):
    active_layers: int = Field(2, ge=1, le=1024, description="decoder layers unfrozen at a time")
    interval: int = Field(5, ge=1, le=1_000_000, description="steps between re-sampling the active layers")


class LISA(Runner):
    id = "lisa"
    Params = LISAParams
    summary = "full-weight training of a few randomly sampled layers per interval; embeddings and head always"

    def run(self, ctx: StepContext, params: LISAParams) -> StepResult:
        model = ctx.model.merge_and_unload() if hasattr(ctx.model, "peft_config") else ctx.model
        _refuse_packed(model, self.id)
        owner, attr = decoder_layers(model)
        layers = list(getattr(owner, attr))
        if params.active_layers > len(layers):
            raise StepFailed(f"{self.id}: active_layers {params.active_layers} > the model's {len(layers)} layers")
        for p in model.parameters():  # the optimizer sees every weight; frozen ones get no gradient
            p.requires_grad_(True)
        rng = random.Random(ctx.seed)
        sampled: list[list[int]] = []
        batch, source = _batches(ctx, params.seq_len, params.batch_size, set_seed(ctx.seed))

        def loss(step):
            if step % params.interval == 0:
                active = sorted(rng.sample(range(len(layers)), params.active_layers))
                sampled.append(active)
                for i, layer in enumerate(layers):
                    for p in layer.parameters():
                        p.requires_grad_(i in active)
                        if i not in active:
                            p.grad = None
            ids, labels = batch(step)
            return model(input_ids=ids, labels=labels).loss

        res = _finish(model, ctx, params, self.id, loss, "")
        res.notes = [f"{params.active_layers} of {len(layers)} layers active per {params.interval} steps "
                     f"(sampled: {sampled}), embeddings and head always; data: {source}"]
        res.metrics["periods"] = float(len(sampled))
        return res
