"""QLoRA and LoftQ on CPU: LoRA adapters trained on a frozen 4-bit NF4 base (bitsandbytes'
`Linear4bit`, whose CPU backend quantizes, dequantizes and back-propagates), through PEFT's LoRA
layer for bitsandbytes modules.

LoftQ (Li et al. 2023) initialises the adapters so that NF4(W - BA) + BA approximates W: it
alternates quantizing the residual and a rank-r SVD of what quantization lost. PEFT 0.21's own
LoftQ entry points (`init_lora_weights="loftq"`, `replace_lora_weights_loftq`) move the weight to
CUDA unconditionally, so the same alternation is written here with bitsandbytes' CPU quantizer and
PEFT's `_low_rank_decomposition`.

With `merge: true` the adapter is folded into the dequantized NF4 weights, giving a plain float
model (what a QLoRA checkpoint becomes when it is merged for deployment); `merge: false` keeps the
4-bit base with the adapter beside it for inspection, which slmrec checkpoints cannot store.
"""

from __future__ import annotations

import time
import warnings
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.finetune import _batches, adapter_targets
from runners.models import model_stats, replace_module
from runners.peft_methods import validation_loss
from runners.training import set_seed, train

STAT_KEYS = ("params", "size_mb", "sparsity", "bits_per_weight")


def nf4_roundtrip(w: torch.Tensor, quant_type: str, blocksize: int) -> torch.Tensor:
    """What bitsandbytes' 4-bit quantization keeps of w (dequantized, float32)."""
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit
    q, state = quantize_4bit(w.float().contiguous(), blocksize=blocksize, quant_type=quant_type)
    return dequantize_4bit(q, state).reshape(w.shape)


def to_linear4bit(lin: nn.Linear, weight: torch.Tensor, quant_type: str, blocksize: int) -> nn.Module:
    """A bitsandbytes Linear4bit holding `weight` quantized (bias kept float)."""
    import bitsandbytes as bnb
    new = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                            compute_dtype=torch.float32, quant_type=quant_type, device="meta")
    new.weight = bnb.nn.Params4bit(weight.detach().float().contiguous(), requires_grad=False,
                                   quant_type=quant_type, blocksize=blocksize).to("cpu")
    if lin.bias is not None:
        new.bias = nn.Parameter(lin.bias.detach().float().clone(), requires_grad=False)
    return new


@torch.no_grad()
def loftq_factors(w: torch.Tensor, rank: int, iters: int, quant_type: str, blocksize: int):
    """(base weight to quantize, A (rank, in), B (out, rank)) with Q(base) + B @ A close to w."""
    from peft.utils.loftq_utils import _low_rank_decomposition
    w = w.float()
    low_rank = torch.zeros_like(w)
    for _ in range(iters):
        dq = nf4_roundtrip(w - low_rank, quant_type, blocksize)
        out = _low_rank_decomposition(w - dq, reduced_rank=rank)
        low_rank = out["L"] @ out["R"]
    return w - low_rank, out["R"], out["L"]


class QLoRAParams(RunnerParams):
    bits: Literal[4] = Field(4, description="bits of the frozen base (bitsandbytes' 4-bit types)")
    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0, le=4096)
    targets: Literal["attention", "attention+mlp"] = Field("attention+mlp", description="which block linears get adapters")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="bitsandbytes 4-bit data type of the frozen base")
    blocksize: Literal[64, 128, 256] = Field(64, description="weights sharing one absmax scale")
    init: Literal["gaussian", "loftq"] = Field("gaussian", description="adapter initialisation: PEFT's default (B=0) or LoftQ")
    loftq_iter: int = Field(1, ge=1, le=20, description="LoftQ alternations of quantize / SVD")
    steps: int = Field(20, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=1.0)
    batch_size: int = Field(4, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=32768)
    merge: bool = Field(True, description="fold the adapter into the dequantized base (a float model)")


class QLoRA(Runner):
    id = "qlora"
    Params = QLoRAParams
    summary = "LoRA on a frozen NF4 (bitsandbytes) base through PEFT; LoftQ initialisation on request"

    def run(self, ctx: StepContext, params: QLoRAParams) -> StepResult:
        from peft import LoraConfig, get_peft_model
        start = time.perf_counter()
        model, names, notes = adapter_targets(ctx.model, self.id, params.targets)
        if any(p.dtype != torch.float32 for p in model.parameters()):
            raise StepFailed(f"{self.id}: needs a float32 model (bitsandbytes' CPU 4-bit path computes in fp32 here)")
        gen = set_seed(ctx.seed)
        originals = {n: model.get_submodule(n).weight.detach().clone() for n in names}
        factors = {}
        for i, n in enumerate(names):
            lin = model.get_submodule(n)
            if lin.in_features % params.blocksize and lin.weight.numel() % params.blocksize:
                raise StepFailed(f"{self.id}: {n} has {lin.weight.numel()} weights, not a multiple of blocksize {params.blocksize}")
            base = originals[n]
            if params.init == "loftq":
                base, a, b = loftq_factors(base, params.rank, params.loftq_iter, params.quant_type, params.blocksize)
                factors[n] = (a, b)
            replace_module(model, n, to_linear4bit(lin, base, params.quant_type, params.blocksize))
            ctx.progress(i + 1, len(names))
        quant_err = _rel_error(model, originals, factors)
        cfg = LoraConfig(r=params.rank, lora_alpha=params.alpha, target_modules=names, task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
            warnings.filterwarnings("ignore", category=FutureWarning)
            model = get_peft_model(model, cfg)
        scaling = params.alpha / params.rank
        for n, (a, b) in factors.items():  # LoftQ: B A * scaling = the rank-r part of W - Q(base)
            layer = model.base_model.model.get_submodule(n)
            layer.lora_A["default"].weight.data.copy_(a)
            layer.lora_B["default"].weight.data.copy_(b / scaling)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        before = validation_loss(model, ctx, params.seq_len)
        batch, source = _batches(ctx, params.seq_len, params.batch_size, gen)

        def loss(step):
            ids, labels = batch(step)
            return model(input_ids=ids, labels=labels).loss

        metrics = train(model, ctx, params.steps, params.lr, loss, self.id, keep_sparsity=False)
        after = validation_loss(model, ctx, params.seq_len)
        metrics.update(trainable_params=float(trainable), trainable_fraction=trainable / total,
                       val_loss_before=before, val_loss_after=after, base_rel_error=quant_err)
        notes.append(f"{len(names)} linears -> bitsandbytes {params.quant_type} (block {params.blocksize}), frozen; "
                     f"LoRA r={params.rank} ({params.init} init) trained, {trainable / total:.2%} trainable, data: {source}")
        if params.merge:
            inner = model.base_model.model
            deltas = {n: inner.get_submodule(n).get_delta_weight("default").detach() for n in names}
            model = dequantize_merged(model.unload(), deltas)
            notes.append("adapter merged in float into the dequantized 4-bit weights (not re-quantized): "
                         "the output is a float model carrying the base's 4-bit rounding")
        stats = model_stats(model)
        metrics.update({k: stats[k] for k in STAT_KEYS}, wall_s=time.perf_counter() - start)
        return StepResult(model=model.eval(), metrics=metrics, notes=notes)


def _rel_error(model, originals: dict, factors: dict) -> float:
    """Relative Frobenius error of the initial effective weights (dequantized base + B A) against
    the float weights, over all target linears: what LoftQ lowers."""
    from bitsandbytes.functional import dequantize_4bit
    num = den = 0.0
    for n, w in originals.items():
        mod = model.get_submodule(n)
        eff = dequantize_4bit(mod.weight.data, mod.weight.quant_state).reshape(w.shape)
        if n in factors:
            a, b = factors[n]
            eff = eff + b @ a
        num += float((eff - w).pow(2).sum())
        den += float(w.pow(2).sum())
    return (num / max(den, 1e-30)) ** 0.5


def dequantize_merged(model, deltas: dict[str, torch.Tensor]):
    """Replace each Linear4bit by a float nn.Linear holding its dequantized weight plus the adapter's
    delta (PEFT's own merge into a Linear4bit would re-quantize the sum, rounding the adapter away)."""
    from bitsandbytes.functional import dequantize_4bit
    for n, delta in deltas.items():
        mod = model.get_submodule(n)
        w = dequantize_4bit(mod.weight.data, mod.weight.quant_state).reshape(mod.out_features, mod.in_features)
        w = w.float() + delta.float()
        lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
        lin.weight = nn.Parameter(w.float().contiguous())
        if mod.bias is not None:
            lin.bias = nn.Parameter(mod.bias.detach().float().clone())
        replace_module(model, n, lin)
    return model
