"""The small training loop that pre-training, distillation and fine-tuning share."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import torch

from runners.base import StepFailed


@contextlib.contextmanager
def oom_guard(what: str):
    """Out-of-memory becomes a StepFailed that says what ran out, not a traceback."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        raise StepFailed(f"{what}: out of memory ({str(e).splitlines()[0]}); lower batch_size or seq_len") from None
    except RuntimeError as e:
        if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
            raise StepFailed(f"{what}: out of memory; lower batch_size or seq_len") from None
        raise


def check_finite(loss: torch.Tensor, what: str, step: int) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise StepFailed(f"{what}: loss became {value} at step {step}; lower lr")
    return value


def base_model(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def sparsity_masks(model, min_zero_fraction: float = 0.01) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Masks of the trainable matrices that are noticeably sparse (pruned), to keep zeros zero."""
    masks = {}
    for p in model.parameters():
        if p.requires_grad and p.dim() == 2:
            nz = p.detach() != 0
            if 1 - nz.float().mean() >= min_zero_fraction:
                masks[p] = nz
    return masks


def _adamw(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Fused AdamW: on CPU its step is ~3x faster than the default loop (134 M params: 1.0 s vs
    2.9 s, measured), which dominates short full-weight training runs."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device/dtype without a fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def train(model, ctx, steps: int, lr: float, loss_fn: Callable[[int], torch.Tensor], what: str,
          weight_decay: float = 0.0, grad_clip: float = 1.0, keep_sparsity: bool = True) -> dict[str, float]:
    """AdamW with linear warm-up (10%) and cosine decay; returns train_loss (mean of the last
    quarter of steps), first_loss and wall_s. `loss_fn(step)` builds the batch and the loss.
    keep_sparsity: pruned (zero) weights stay zero, so training after pruning keeps the sparsity."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise StepFailed(f"{what}: the model has no trainable parameters")
    if any(b.dtype == torch.uint8 for b in model.buffers()) or \
            any("quantized" in type(m).__module__ for m in model.modules()):
        raise StepFailed(f"{what}: cannot train packed quantized weights; train before quantizing")
    masks = sparsity_masks(model) if keep_sparsity else {}
    opt = _adamw(params, lr, weight_decay)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))))
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    with oom_guard(what):
        for step in range(steps):
            loss = loss_fn(step)
            losses.append(check_finite(loss, what, step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            with torch.no_grad():
                for p, mask in masks.items():
                    p.mul_(mask)
            ctx.progress(step + 1, steps)
    model.eval()
    tail = losses[-max(1, len(losses) // 4):]
    return {"train_loss": sum(tail) / len(tail), "first_loss": losses[0],
            "wall_s": time.perf_counter() - start}


def causal_lm_loss(model, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    return model(input_ids=ids, labels=ids if labels is None else labels).loss
