"""export: write the current model as an slmrec safetensors checkpoint (plus the LoRA adapter
folder when adapters are unmerged) into the step's folder, and measure it on disk."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from runners.base import Runner, RunnerParams, StepContext, StepResult
from runners.checkpoint import ADAPTER, save_checkpoint


class ExportParams(RunnerParams):
    name: str = Field("model", description="folder name inside the step's folder")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v):
            raise ValueError("must be a plain folder name (letters, digits, . _ -)")
        return v


class Export(Runner):
    id = "export"
    Params = ExportParams
    summary = "save the model as safetensors (and the unmerged LoRA adapter) and measure its size"

    def run(self, ctx: StepContext, params: ExportParams) -> StepResult:
        folder = save_checkpoint(ctx.model, ctx.tokenizer, ctx.workdir / params.name)
        weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
        artifacts = {"model": str(folder)}
        notes = [f"safetensors checkpoint at {folder}; reload with runners.models.load_model"]
        if (folder / ADAPTER).is_dir():
            artifacts["adapter"] = str(folder / ADAPTER)
            notes.append(f"unmerged LoRA adapter (peft format) at {folder / ADAPTER}")
        return StepResult(model=ctx.model, metrics={"size_mb": weights / 1e6}, artifacts=artifacts, notes=notes)
