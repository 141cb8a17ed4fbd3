"""Fine-tuning runners: LoRA (peft) and full fine-tuning, on prompt/response pairs when the corpus
has them (prompt tokens masked out of the loss), else on the train text."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.models import model_stats
from runners.prune import block_linears
from runners.training import set_seed, train


def _batches(ctx: StepContext, seq_len: int, batch_size: int, gen):
    """loss(step) inputs: pairs (prompt masked) when present, else random train windows."""
    if ctx.corpus.pairs:
        ids, labels = ctx.corpus.pair_examples("train", seq_len)

        def pick(step):
            idx = torch.randint(0, len(ids), (batch_size,), generator=gen)
            return ids[idx], labels[idx]
        return pick, f"{len(ids)} prompt/response pairs (loss on responses only)"

    def window(step):
        x = ctx.corpus.sample("train", seq_len, batch_size, gen)
        return x, x
    return window, "train text"


def _refuse_packed(model, what: str) -> None:
    if any(b.dtype == torch.uint8 for b in model.buffers()) or \
            any("quantized" in type(m).__module__ for m in model.modules()):
        raise StepFailed(f"{what}: the model holds quantized weights, which cannot be trained here; "
                         "fine-tune before quantizing")


def adapter_targets(model, what: str, targets: str) -> tuple[object, list[str], list[str]]:
    """The model ready for new adapters (an earlier unmerged one merged in), the names of the
    block linears `targets` selects, and notes. Refuses packed weights and models with none."""
    notes = []
    if hasattr(model, "peft_config"):
        model = model.merge_and_unload()
        notes.append("merged the earlier unmerged adapter before adding a new one")
    _refuse_packed(model, what)
    names = [n for n, _ in block_linears(model)]
    if targets == "attention":
        names = [n for n in names if "attn" in n or "attention" in n]
    if not names:
        raise StepFailed(f"{what}: no {targets} linears found in {type(model).__name__}")
    return model, names, notes


class LoRAParams(RunnerParams):
    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0, le=4096)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: Literal["attention", "attention+mlp"] = Field("attention", description="which block linears get adapters")
    steps: int = Field(20, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=32768)
    merge: bool = Field(True, description="fold the adapters into the weights; false keeps them separate")


class LoRA(Runner):
    id = "lora"
    Params = LoRAParams
    summary = "low-rank adapters on the attention (and MLP) projections, trained with the base frozen"

    def run(self, ctx: StepContext, params: LoRAParams) -> StepResult:
        from peft import LoraConfig, get_peft_model
        model, names, notes = adapter_targets(ctx.model, self.id, params.targets)
        sparse = model_stats(model)["sparsity"] > 0.05
        gen = set_seed(ctx.seed)
        cfg = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                         target_modules=names, bias="none", task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, cfg)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        batch, source = _batches(ctx, params.seq_len, params.batch_size, gen)

        def loss(step):
            ids, labels = batch(step)
            return model(input_ids=ids, labels=labels).loss

        metrics = train(model, ctx, params.steps, params.lr, loss, self.id, keep_sparsity=False)
        metrics.update(trainable_params=float(trainable), trainable_fraction=trainable / total)
        notes.append(f"rank {params.rank} on {len(names)} linears ({trainable / total:.2%} trainable), data: {source}")
        if params.merge:
            model = model.merge_and_unload()
            if sparse:
                notes.append("merging dense LoRA deltas into pruned weights made them dense again")
        else:
            notes.append("adapters kept separate (export writes them to an adapter folder)")
        stats = model_stats(model)
        metrics.update({k: stats[k] for k in ("params", "size_mb", "sparsity", "bits_per_weight")})
        return StepResult(model=model.eval(), metrics=metrics, notes=notes)


class FullParams(RunnerParams):
    steps: int = Field(50, ge=1, le=1_000_000)
    lr: float = Field(5e-5, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=32768)
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    keep_sparsity: bool = Field(True, description="pruned (zero) weights stay zero")


class FullFinetune(Runner):
    id = "full-finetune"
    Params = FullParams
    summary = "train every weight on the task data (pairs or text)"

    def run(self, ctx: StepContext, params: FullParams) -> StepResult:
        model = ctx.model
        if hasattr(model, "peft_config"):
            model = model.merge_and_unload()
        _refuse_packed(model, self.id)
        gen = set_seed(ctx.seed)
        for p in model.parameters():
            p.requires_grad_(True)
        batch, source = _batches(ctx, params.seq_len, params.batch_size, gen)

        def loss(step):
            ids, labels = batch(step)
            return model(input_ids=ids, labels=labels).loss

        metrics = train(model, ctx, params.steps, params.lr, loss, self.id, params.weight_decay,
                        keep_sparsity=params.keep_sparsity)
        return StepResult(model=model, metrics=metrics, notes=[f"data: {source}"])
