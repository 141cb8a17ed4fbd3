"""causal-lm-train: (continued) pre-training with next-token cross-entropy on corpus.train."""

from __future__ import annotations

from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepResult
from runners.training import causal_lm_loss, set_seed, train


class TrainParams(RunnerParams):
    steps: int = Field(100, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=1.0)
    batch_size: int = Field(8, ge=1, le=4096)
    seq_len: int = Field(128, ge=8, le=32768)
    weight_decay: float = Field(0.0, ge=0, le=1.0)


class CausalLMTrain(Runner):
    id = "causal-lm-train"
    Params = TrainParams
    summary = "next-token cross-entropy training of every weight on the corpus' train split"

    def run(self, ctx: StepContext, params: TrainParams) -> StepResult:
        gen = set_seed(ctx.seed)
        model = ctx.model
        for p in model.parameters():
            p.requires_grad_(True)

        def loss(step):
            return causal_lm_loss(model, ctx.corpus.sample("train", params.seq_len, params.batch_size, gen))

        metrics = train(model, ctx, params.steps, params.lr, loss, self.id, params.weight_decay)
        return StepResult(model=model, metrics=metrics,
                          notes=[f"loss {metrics['first_loss']:.3f} -> {metrics['train_loss']:.3f} "
                                 f"over {params.steps} steps"])
