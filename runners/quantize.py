"""Quantization runners: dynamic int8 (torch.ao), dtype cast, weight-only RTN int8/int4, GPTQ.

The quantizers themselves live in runners/quant/ (packed modules, RTN, GPTQ).
"""

from __future__ import annotations

import time
import warnings
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.models import model_stats
from runners.quant.qlinear import QuantEmbedding, QuantLinear
from runners.quant.rtn import linear_names, quantize_embeddings, quantize_rtn
from runners.training import oom_guard

STAT_KEYS = ("params", "size_mb", "sparsity", "bits_per_weight")


def _stats(model) -> dict[str, float]:
    s = model_stats(model)
    return {k: s[k] for k in STAT_KEYS}


def _plain(model, what: str):
    """Quantizers work on a plain transformers model, not on a peft wrapper or a dynamic-int8 one."""
    if hasattr(model, "peft_config"):
        raise StepFailed(f"{what}: the model still carries unmerged LoRA adapters; run lora with merge: true first")
    if any("quantized" in type(m).__module__ for m in model.modules()):
        raise StepFailed(f"{what}: the model is already dynamic-int8 quantized")


class DynamicInt8(Runner):
    id = "dynamic-int8"
    summary = "torch.ao dynamic quantization: nn.Linear weights int8 per channel, activations quantized at run time"

    def run(self, ctx: StepContext, params) -> StepResult:
        model = ctx.model
        _plain(model, self.id)
        if any(p.dtype != torch.float32 for p in model.parameters()):
            raise StepFailed(f"{self.id}: needs a float32 model (torch.ao dynamic kernels compute in fp32); "
                             "it does not combine with an fp16/bf16 cast")
        names = linear_names(model)  # a head tied to the embeddings stays float and tied
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        with warnings.catch_warnings():
            # torch.ao is deprecated in favour of torchao but still works on 2.13 (see runtime notes)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantized tensor creation.*", category=UserWarning)
            model = torch.ao.quantization.quantize_dynamic(model, {n: qconfig for n in names},
                                                           dtype=torch.qint8, inplace=True)
        notes = [f"{len(names)} nn.Linear -> int8 weights per output channel, activations int8 per tensor "
                 "at run time; embeddings stay float"]
        if any(type(m) is nn.Linear for m in model.modules()):
            notes.append("the lm_head tied to the embeddings stays float (an int8 copy would add size and error)")
        return StepResult(model=model, metrics=_stats(model), notes=notes)


class CastParams(RunnerParams):
    dtype: Literal["fp16", "bf16", "fp32"] = Field("bf16", description="target floating-point type")


class Cast(Runner):
    id = "cast"
    Params = CastParams
    summary = "cast floating-point weights to fp16/bf16 (packed quantized weights stay as they are)"

    def run(self, ctx: StepContext, params: CastParams) -> StepResult:
        model = ctx.model
        if any("quantized" in type(m).__module__ for m in model.modules()):
            raise StepFailed(f"{self.id}: dynamic-int8 modules compute in fp32 only; cast before dynamic-int8")
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[params.dtype]
        for m in model.modules():
            if isinstance(m, QuantLinear):  # keep fp16 scales and integer codes; cast the bias only
                if m.bias is not None:
                    m.bias.data = m.bias.data.to(dtype)
                continue
            if isinstance(m, QuantEmbedding):
                m.compute_dtype = dtype
            for p in m.parameters(recurse=False):
                if p.is_floating_point():
                    p.data = p.data.to(dtype)
            for name, b in m.named_buffers(recurse=False):
                if b.is_floating_point() and "inv_freq" not in name:  # rotary tables stay fp32
                    setattr(m, name, b.to(dtype))
        return StepResult(model=model, metrics=_stats(model), notes=[f"weights cast to {params.dtype}"])


class WeightOnlyParams(RunnerParams):
    bits: Literal[4, 8] = Field(8, description="bits per linear weight")
    group_size: int = Field(128, ge=8, le=4096, description="weights sharing one scale and zero point")
    embedding_bits: Literal[4, 8] | None = Field(
        8, description="bits for the embedding table (and a head tied to it); null keeps it float")

    @field_validator("group_size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 8:
            raise ValueError("group_size must be a multiple of 8")
        return v


class WeightOnlyQuant(Runner):
    id = "weight-only-quant"
    Params = WeightOnlyParams
    summary = "round-to-nearest group-wise int8/int4 weights, packed, dequantised on the fly"

    def run(self, ctx: StepContext, params: WeightOnlyParams) -> StepResult:
        model = ctx.model
        _plain(model, self.id)
        start = time.perf_counter()
        with oom_guard(self.id):
            n = quantize_rtn(model, params.bits, params.group_size, ctx.progress)
            note = quantize_embeddings(model, params.embedding_bits, params.group_size)
        metrics = {**_stats(model), "wall_s": time.perf_counter() - start}
        return StepResult(model=model, metrics=metrics,
                          notes=[f"{n} linears -> int{params.bits} RTN, group {params.group_size}", note,
                                 "dequantised on the fly: smaller, not faster on CPU"])


class GPTQParams(WeightOnlyParams):
    bits: Literal[4, 8] = Field(4, description="bits per linear weight")
    samples: int = Field(16, ge=1, le=4096, description="calibration blocks")
    seq_len: int = Field(256, ge=8, le=8192, description="tokens per calibration block")
    damp: float = Field(0.01, gt=0, le=1.0, description="Hessian damping, fraction of its mean diagonal")
    act_order: bool = Field(True, description="quantize columns with the largest Hessian diagonal first")


def calibration_shortfall(calib, samples: int, seq_len: int, available: int) -> str | None:
    """A warning when the calibration split cannot supply the requested blocks, else None."""
    got, length = calib.shape
    if got >= samples and length >= seq_len:
        return None
    return (f"asked for {samples} calibration blocks of {seq_len} tokens; the calibration split holds "
            f"{available} tokens, so {got} block(s) of {length} were used. Lower samples or seq_len, "
            "or give a larger corpus")


class GPTQ(Runner):
    id = "gptq"
    Params = GPTQParams
    summary = "GPTQ: column-wise quantization with Hessian error feedback, layer by layer, on calibration text"

    def run(self, ctx: StepContext, params: GPTQParams) -> StepResult:
        from runners.quant.gptq import quantize_gptq
        model = ctx.model
        _plain(model, self.id)
        calib = ctx.corpus.blocks("calibration", params.seq_len, params.samples)
        short = calibration_shortfall(calib, params.samples, params.seq_len, len(ctx.corpus.calibration))
        if short:
            ctx.log(f"warning: {short}")
        start = time.perf_counter()
        with oom_guard(self.id):
            n = quantize_gptq(model, calib, params.bits, params.group_size, params.damp, params.act_order,
                              progress=ctx.progress)
            rest = quantize_rtn(model, params.bits, params.group_size)  # an untied head, if any
            note = quantize_embeddings(model, params.embedding_bits, params.group_size)
        metrics = {**_stats(model), "wall_s": time.perf_counter() - start}
        notes = [f"{n} block linears -> int{params.bits} GPTQ on {calib.numel()} calibration tokens", note]
        if short:
            notes.append(f"warning: {short}")
        if rest:
            notes.append(f"{rest} linear(s) outside the blocks (untied lm_head) -> round-to-nearest")
        return StepResult(model=model, metrics=metrics, notes=notes)
