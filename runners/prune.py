"""Pruning runners: unstructured (magnitude, Wanda) zero weights in place and report sparsity;
structured (MLP channels, attention heads, whole layers) make a genuinely smaller dense model.

Unstructured targets are the linears inside the decoder blocks; embeddings and lm_head are kept.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.models import decoder_layers, model_stats
from runners.structured import input_sq_norms
from runners.training import oom_guard

STAT_KEYS = ("params", "size_mb", "sparsity", "bits_per_weight")


def block_linears(model) -> list[tuple[str, nn.Linear]]:
    owner, attr = decoder_layers(model)
    prefix = next(n for n, m in model.named_modules() if m is owner)
    layers = f"{prefix}.{attr}" if prefix else attr
    return [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear and n.startswith(layers + ".")]


def _check_plain(model, what: str) -> None:
    if hasattr(model, "peft_config"):
        raise StepFailed(f"{what}: the model carries unmerged LoRA adapters; run lora with merge: true first")
    if not any(type(m) is nn.Linear for m in model.modules()):
        raise StepFailed(f"{what}: no float nn.Linear weights to prune (prune before quantizing)")


def _result(model, targets, start: float, notes: list[str]) -> StepResult:
    stats = model_stats(model)
    zeros = sum(int((m.weight == 0).sum()) for _, m in targets)
    total = sum(m.weight.numel() for _, m in targets)
    metrics = {**{k: stats[k] for k in STAT_KEYS}, "pruned_fraction": zeros / max(1, total),
               "wall_s": time.perf_counter() - start}
    notes = notes + [f"{zeros / max(1, total):.1%} of the block linears' weights are zero "
                     f"({stats['sparsity']:.1%} of all parameters); tensors stay dense, so size is unchanged"]
    return StepResult(model=model, metrics=metrics, notes=notes)


Pattern = Literal["unstructured", "2:4"]
PATTERN_DOC = "unstructured, or 2:4 (two of every four consecutive input weights of a row zeroed: sparsity 0.5)"


class MagnitudeParams(RunnerParams):
    sparsity: float = Field(0.5, ge=0.0, le=0.99, description="fraction of block-linear weights set to zero")
    scope: Literal["global", "layer"] = Field("layer", description="one threshold for all, or one per linear")
    pattern: Pattern = Field("unstructured", description=PATTERN_DOC)


class MagnitudePrune(Runner):
    id = "magnitude-prune"
    Params = MagnitudeParams
    summary = "zero the smallest-magnitude weights (unstructured), globally or per linear"

    @torch.no_grad()
    def run(self, ctx: StepContext, params: MagnitudeParams) -> StepResult:
        start = time.perf_counter()
        model = ctx.model
        _check_plain(model, self.id)
        targets = block_linears(model)
        if params.pattern == "2:4":
            prune_n_m(targets, {n: m.weight.abs().float() for n, m in targets}, ctx)
            return _result(model, targets, start, ["magnitude pruning, 2:4 semi-structured"])
        if params.scope == "global":
            scores = torch.cat([m.weight.abs().flatten().float() for _, m in targets])
            k = int(params.sparsity * scores.numel())
            threshold = scores.kthvalue(k).values if k else torch.tensor(-1.0)
            del scores
            for _, m in targets:
                m.weight[m.weight.abs().float() <= threshold] = 0
        else:
            for i, (_, m) in enumerate(targets):
                _prune_lowest(m.weight, m.weight.abs().float(), params.sparsity, per_row=False)
                ctx.progress(i + 1, len(targets))
        return _result(model, targets, start, [f"magnitude pruning, {params.scope} scope"])


def prune_n_m(targets, scores: dict, ctx: StepContext, n: int = 2, m: int = 4) -> None:
    """Zero the n lowest-scoring of every m consecutive input weights of each row (N:M sparsity)."""
    for i, (name, lin) in enumerate(targets):
        rows, cols = lin.weight.shape
        if cols % m:
            raise StepFailed(f"{n}:{m} sparsity: {name} has {cols} input features, not a multiple of {m}")
        idx = scores[name].reshape(rows, cols // m, m).topk(n, dim=-1, largest=False).indices
        lin.weight.view(rows, cols // m, m).scatter_(-1, idx, 0)
        ctx.progress(i + 1, len(targets))


def _prune_lowest(weight: torch.Tensor, score: torch.Tensor, sparsity: float, per_row: bool) -> None:
    """Zero the exactly-k lowest-scoring entries (per row, or over the whole tensor)."""
    if per_row:
        k = int(sparsity * weight.shape[1])
        if k:
            idx = score.topk(k, dim=1, largest=False).indices
            weight.scatter_(1, idx, 0)
    else:
        k = int(sparsity * weight.numel())
        if k:
            idx = score.flatten().topk(k, largest=False).indices
            weight.view(-1)[idx] = 0


class WandaParams(RunnerParams):
    sparsity: float = Field(0.5, ge=0.0, le=0.99, description="fraction of weights set to zero")
    scope: Literal["layer", "global"] = Field(
        "layer", description="layer: the lowest scores of each output row (Wanda's choice); global: one threshold")
    samples: int = Field(16, ge=1, le=4096, description="calibration blocks")
    seq_len: int = Field(256, ge=8, le=8192)
    pattern: Pattern = Field("unstructured", description=PATTERN_DOC)


class WandaPrune(Runner):
    id = "wanda-prune"
    Params = WandaParams
    summary = "Wanda: zero weights with the lowest |W|*||X|| per output row, X from calibration text"

    @torch.no_grad()
    def run(self, ctx: StepContext, params: WandaParams) -> StepResult:
        start = time.perf_counter()
        model = ctx.model
        _check_plain(model, self.id)
        targets = block_linears(model)
        calib = ctx.corpus.blocks("calibration", params.seq_len, params.samples)
        with oom_guard(self.id):
            norms = input_sq_norms(model, calib, [n for n, _ in targets])
        scores = {n: m.weight.abs().float() * norms[n].sqrt()[None, :] for n, m in targets}
        if params.pattern == "2:4":
            prune_n_m(targets, scores, ctx)
            return _result(model, targets, start, [f"Wanda on {calib.numel()} calibration tokens, 2:4 semi-structured"])
        if params.scope == "global":
            flat = torch.cat([s.flatten() for s in scores.values()])
            k = int(params.sparsity * flat.numel())
            threshold = flat.kthvalue(k).values if k else torch.tensor(-1.0)
            del flat
            for n, m in targets:
                m.weight[scores[n] <= threshold] = 0
        else:
            for i, (n, m) in enumerate(targets):
                _prune_lowest(m.weight, scores[n], params.sparsity, per_row=True)
                ctx.progress(i + 1, len(targets))
        where = "per output row" if params.scope == "layer" else "one global threshold"
        return _result(model, targets, start, [f"Wanda on {calib.numel()} calibration tokens, {where}"])


class SparseGPTParams(RunnerParams):
    sparsity: float = Field(0.5, ge=0.0, le=0.99, description="fraction of weights set to zero (unstructured)")
    pattern: Pattern = Field("unstructured", description=PATTERN_DOC)
    samples: int = Field(16, ge=1, le=4096, description="calibration blocks")
    seq_len: int = Field(256, ge=8, le=8192)
    damp: float = Field(0.01, gt=0, le=1.0, description="Hessian damping, fraction of its mean diagonal")


class SparseGPTPrune(Runner):
    id = "sparsegpt-prune"
    Params = SparseGPTParams
    summary = "SparseGPT: prune column by column with inverse-Hessian updates of the remaining weights"

    @torch.no_grad()
    def run(self, ctx: StepContext, params: SparseGPTParams) -> StepResult:
        from runners.sparsegpt import prune_sparsegpt
        start = time.perf_counter()
        model = ctx.model
        _check_plain(model, self.id)
        targets = block_linears(model)
        n_m = (2, 4) if params.pattern == "2:4" else (0, 0)
        bad = [n for n, m in targets if n_m[1] and m.in_features % 4]
        if bad:
            raise StepFailed(f"2:4 sparsity: {bad[0]} has {model.get_submodule(bad[0]).in_features} input features, "
                             "not a multiple of 4")
        calib = ctx.corpus.blocks("calibration", params.seq_len, params.samples)
        with oom_guard(self.id):
            prune_sparsegpt(model, calib, 0.5 if n_m[0] else params.sparsity, *n_m, params.damp, progress=ctx.progress)
        what = "2:4 semi-structured" if n_m[0] else f"{params.sparsity:.0%} unstructured"
        return _result(model, targets, start, [f"SparseGPT {what} on {calib.numel()} calibration tokens"])


def _shrink(ctx: StepContext, what: str, params, edit) -> tuple[str, dict, float]:
    """Run a structural edit (`edit(model, calib, fraction)`) on calibration blocks; return its
    note, the model's statistics with the parameters removed, and the parameter count before."""
    start = time.perf_counter()
    model = ctx.model
    before = model_stats(model)["params"]
    calib = ctx.corpus.blocks("calibration", params.seq_len, params.samples)
    with oom_guard(what):
        note = edit(model, calib, params.fraction)
    stats = model_stats(model)
    metrics = {**{k: stats[k] for k in STAT_KEYS}, "params_removed": before - stats["params"],
               "wall_s": time.perf_counter() - start}
    return note, metrics, before


class StructuredParams(RunnerParams):
    target: Literal["mlp", "heads"] = Field("mlp", description="MLP intermediate channels or attention heads")
    fraction: float = Field(0.25, gt=0.0, le=0.9, description="fraction of channels / query heads to remove")
    samples: int = Field(8, ge=1, le=4096, description="calibration blocks for importance")
    seq_len: int = Field(256, ge=8, le=8192)


class StructuredPrune(Runner):
    id = "structured-prune"
    Params = StructuredParams
    summary = "remove MLP channels or attention heads by calibrated importance: a smaller dense model"

    @torch.no_grad()
    def run(self, ctx: StepContext, params: StructuredParams) -> StepResult:
        from runners.structured import prune_heads, prune_mlp
        model = ctx.model
        _check_plain(model, self.id)
        edit = prune_mlp if params.target == "mlp" else prune_heads
        note, metrics, before = _shrink(ctx, self.id, params, edit)
        return StepResult(model=model, metrics=metrics,
                          notes=[note, f"params {before / 1e6:.2f} M -> {metrics['params'] / 1e6:.2f} M; "
                                       "quality usually needs recovery (distillation or LoRA)"])


class LayerDropParams(RunnerParams):
    fraction: float = Field(0.25, gt=0.0, le=0.9, description="fraction of decoder blocks to remove")
    samples: int = Field(8, ge=1, le=4096, description="calibration blocks for importance")
    seq_len: int = Field(256, ge=8, le=8192)


class LayerDrop(Runner):
    id = "layer-drop"
    Params = LayerDropParams
    summary = "remove the decoder blocks that change their input least (highest input/output cosine)"

    @torch.no_grad()
    def run(self, ctx: StepContext, params: LayerDropParams) -> StepResult:
        from runners.structured import drop_layers
        model = ctx.model
        if hasattr(model, "peft_config"):
            raise StepFailed(f"{self.id}: the model carries unmerged LoRA adapters; run lora with merge: true first")
        note, metrics, _ = _shrink(ctx, self.id, params, drop_layers)
        metrics["layers"] = float(model.config.num_hidden_layers)
        return StepResult(model=model, metrics=metrics, notes=[note])
