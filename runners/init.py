"""Where a plan's model comes from: the loaded pretrained model as is, or a fresh one from a config."""

from __future__ import annotations

from pydantic import Field, model_validator

from runners.base import NoParams, Runner, RunnerParams, StepContext, StepResult
from runners.models import model_stats


class LoadPretrained(Runner):
    id = "load-pretrained"
    Params = NoParams
    summary = "keep the plan's base model as loaded; record its statistics"

    def run(self, ctx: StepContext, params: NoParams) -> StepResult:
        stats = model_stats(ctx.model)
        return StepResult(model=ctx.model, metrics={k: stats[k] for k in
                                                     ("params", "size_mb", "sparsity", "bits_per_weight")})


class InitParams(RunnerParams):
    layers: int = Field(4, ge=1, le=64, description="decoder blocks (depth)")
    hidden: int = Field(128, ge=8, le=8192, description="model width")
    heads: int = Field(4, ge=1, le=128, description="query heads")
    kv_heads: int = Field(2, ge=1, le=128, description="key/value heads: < heads is GQA, 1 is MQA")
    intermediate: int = Field(344, ge=8, le=32768, description="SwiGLU MLP width")
    tie_embeddings: bool = Field(True, description="share input embedding and lm_head")
    max_positions: int = Field(1024, ge=16, le=131072)

    @model_validator(mode="after")
    def _shapes(self) -> "InitParams":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        return self


class InitFromConfig(Runner):
    id = "init-from-config"
    Params = InitParams
    summary = "a fresh Llama-style model (RMSNorm, SwiGLU, RoPE, GQA) sized by the params; keeps the tokenizer"

    def run(self, ctx: StepContext, params: InitParams) -> StepResult:
        import torch
        from transformers import LlamaForCausalLM

        from runners.models import tiny_config
        tok = ctx.tokenizer
        cfg, _ = tiny_config(**params.model_dump(), vocab=max(260, len(tok)))
        cfg.vocab_size = len(tok)  # the kept tokenizer decides the vocabulary
        cfg.bos_token_id, cfg.eos_token_id = tok.bos_token_id, tok.eos_token_id
        cfg.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        torch.manual_seed(ctx.seed)
        model = LlamaForCausalLM(cfg).eval()
        stats = model_stats(model)
        notes = [f"fresh {params.layers}x{params.hidden} model, {params.heads} heads / "
                 f"{params.kv_heads} kv heads, vocabulary {len(tok)} from the kept tokenizer; untrained"]
        return StepResult(model=model, metrics={k: stats[k] for k in ("params", "size_mb", "sparsity",
                                                                      "bits_per_weight")}, notes=notes)
