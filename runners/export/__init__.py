"""export: write the current model as a deployable file in the step's folder and measure it.

Formats (`format:`):
  safetensors  slmrec's checkpoint folder, which is also a standard transformers folder wherever
               one exists (weight-only quantized weights in the compressed-tensors layout, see
               runners/quant/layout.py), plus the unmerged LoRA adapter folder
  gguf         one .gguf file for llama.cpp (runners/export/gguf.py), of GGUF type `gguf_type`;
               `auto` follows the model it receives: packed GPTQ/RTN codes are carried into the
               GGUF block type that holds their grid (no second rounding), F16 for a float model
  onnx         model.onnx for ONNX Runtime (runners/export/onnx.py): weights packed by an earlier
               RTN/GPTQ step are carried as MatMulNBits from their integer codes; float weights
               optionally get onnxruntime's int8/int4 round-to-nearest MatMulNBits (`onnx_quant`)
  executorch   model.pte for ExecuTorch with XNNPACK (runners/export/executorch.py), static KV cache
               of `max_seq_len` positions, optionally torchao's 8da4w / 8da8w (`executorch_quant`);
               needs the `executorch` extra
The artifact's path is returned under `artifacts["model"]`, with its runtime under
`artifacts["runtime"]`, so a following measurement can run it where it will be deployed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.checkpoint import ADAPTER, save_checkpoint
from slmrec.errors import SlmrecError

RUNTIME = {"safetensors": "pytorch", "gguf": "llama.cpp", "onnx": "onnxruntime", "executorch": "executorch"}


class ExportParams(RunnerParams):
    name: str = Field("model", description="folder (or file stem) name inside the step's folder")
    format: Literal["safetensors", "gguf", "onnx", "executorch"] = Field("safetensors", description="artifact format")
    gguf_type: Literal["auto", "F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                       "Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q3_K_M"] = Field(
        "auto", description="GGUF tensor type for the weight matrices (format: gguf); auto: the type "
        "that carries the model's packed codes, F16 for a float model; k-quants need the deploy extra")
    onnx_quant: Literal["none", "int8", "int4"] = Field(
        "none", description="ONNX Runtime weight-only quantization of MatMul weights (format: onnx)")
    block_size: int = Field(32, ge=16, le=256, description="MatMulNBits block size (format: onnx)")
    accuracy_level: Literal[0, 4] = Field(
        4, description="MatMulNBits compute (format: onnx): 4 int8 activations and onnxruntime's int8 "
                       "kernels (fast), 0 fp32 (exactly the dequantised weights, slow for int8)")
    executorch_quant: Literal["none", "8da4w", "8da8w"] = Field(
        "none", description="torchao XNNPACK quantization of the linears (format: executorch): int8 dynamic "
                            "activations with int4 weights per group of 32, or int8 weights per channel")
    max_seq_len: int = Field(512, ge=8, le=8192, description="static KV cache positions (format: executorch)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError("must be a plain folder name (letters, digits, . _ -)")
        return v

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("block_size must be a power of two (16, 32, 64, 128 or 256)")
        return v


def file_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


class Export(Runner):
    id = "export"
    Params = ExportParams
    summary = "write a deployable artifact (safetensors folder, GGUF file, ONNX model, ExecuTorch program) and measure its size"

    def run(self, ctx: StepContext, params: ExportParams) -> StepResult:
        try:
            if params.format == "gguf":
                return self._gguf(ctx, params)
            if params.format == "onnx":
                return self._onnx(ctx, params)
            if params.format == "executorch":
                return self._executorch(ctx, params)
        except SlmrecError as e:
            raise StepFailed("; ".join(p.message for p in e.problems)) from None
        return self._safetensors(ctx, params)

    def _safetensors(self, ctx, params) -> StepResult:
        folder = save_checkpoint(ctx.model, ctx.tokenizer, ctx.workdir / params.name)
        weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
        artifacts = {"model": str(folder), "runtime": RUNTIME["safetensors"]}
        notes = [f"safetensors checkpoint at {folder}; reload with runners.models.load_model"]
        from runners.checkpoint import OWN_WEIGHTS
        if (folder / OWN_WEIGHTS).is_file():
            notes.append("no standard transformers layout for this state: plain transformers refuses "
                         "the folder; export format gguf or onnx for a deployable file")
        else:
            notes.append("plain transformers.AutoModelForCausalLM.from_pretrained loads this folder")
        if (folder / ADAPTER).is_dir():
            artifacts["adapter"] = str(folder / ADAPTER)
            notes.append(f"unmerged LoRA adapter (peft format) at {folder / ADAPTER}")
        return StepResult(model=ctx.model, metrics={"size_mb": weights / 1e6}, artifacts=artifacts, notes=notes)

    def _gguf(self, ctx, params) -> StepResult:
        from runners.export.gguf import export_gguf
        log: dict = {}
        path = export_gguf(ctx.model, ctx.tokenizer, ctx.workdir / f"{params.name}.gguf",
                           params.gguf_type, params.name, log=log)
        path = path.rename(path.with_suffix(f".{log['type']}.gguf"))  # the type written, `auto` resolved
        notes = [f"GGUF {log['type']} for llama.cpp at {path}"]
        if log["carried"]:
            notes.append(f"{log['carried']} packed weights carried into {log['type']} blocks as they are "
                         "(no second rounding)")
        if log["requantized"]:
            why = "; ".join(sorted(set(log["requantized"].values())))
            notes.append(f"{len(log['requantized'])} packed weights re-quantized ({why})")
        return StepResult(model=ctx.model, metrics={"size_mb": file_mb(path)},
                          artifacts={"model": str(path), "runtime": RUNTIME["gguf"]}, notes=notes)

    def _onnx(self, ctx, params) -> StepResult:
        from runners.export.codes import quantized_weights
        from runners.export.onnx import export_onnx
        carried = quantized_weights(ctx.model)
        path = export_onnx(ctx.model, ctx.workdir / params.name, params.onnx_quant, params.block_size,
                           params.accuracy_level)
        notes = [f"ONNX model for ONNX Runtime at {path}"]
        if carried:
            kinds = sorted({f"int{q.bits} group {q.group_size}" for q in carried})
            notes.append(f"{len(carried)} packed weight(s) ({', '.join(kinds)}) carried from their integer "
                         "codes into MatMulNBits/GatherBlockQuantized, not quantized again")
        if params.onnx_quant != "none":
            notes.append(f"float MatMul weights -> {params.onnx_quant} MatMulNBits (onnxruntime round-to-nearest, "
                         f"block {params.block_size})")
        if carried or params.onnx_quant != "none":
            notes.append(f"MatMulNBits accuracy_level {params.accuracy_level} "
                         f"({'int8 activations' if params.accuracy_level == 4 else 'fp32 compute'})")
        return StepResult(model=ctx.model, metrics={"size_mb": file_mb(path.parent)},
                          artifacts={"model": str(path), "runtime": RUNTIME["onnx"]}, notes=notes)

    def _executorch(self, ctx, params) -> StepResult:
        from runners.export.executorch import export_executorch
        path = export_executorch(ctx.model, ctx.workdir / f"{params.name}.pte", params.executorch_quant,
                                 params.max_seq_len)
        notes = [f"ExecuTorch program (XNNPACK) at {path}, static KV cache of {params.max_seq_len} positions"]
        if params.executorch_quant != "none":
            notes.append(f"linears quantized with torchao {params.executorch_quant} (int8 dynamic activations)")
        return StepResult(model=ctx.model, metrics={"size_mb": file_mb(path)},
                          artifacts={"model": str(path), "runtime": RUNTIME["executorch"]}, notes=notes)
