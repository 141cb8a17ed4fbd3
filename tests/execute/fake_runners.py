"""Runners that fail on purpose, registered only inside tests (see conftest.py)."""

from __future__ import annotations

import torch
from pydantic import Field

from runners.base import Runner, RunnerParams, StepContext, StepResult
from runners.training import train


class NanParams(RunnerParams):
    after: int = Field(2, ge=0, description="finite steps before the loss becomes NaN")


class NanTrain(Runner):
    """The shared training loop with a loss that turns NaN after `after` steps."""

    id = "test-nan"
    Params = NanParams

    def run(self, ctx: StepContext, params: NanParams) -> StepResult:
        model = ctx.model
        for p in model.parameters():
            p.requires_grad_(True)
        ids = ctx.corpus.blocks("train", 16, 2)

        def loss(step):
            out = model(input_ids=ids, labels=ids).loss
            return out * float("nan") if step >= params.after else out

        metrics = train(model, ctx, params.after + 3, 1e-3, loss, self.id)
        return StepResult(model=model, metrics=metrics)


class NanWeights(Runner):
    """Silently breaks the model: the executor must notice the non-finite perplexity."""

    id = "test-nan-weights"

    def run(self, ctx: StepContext, params) -> StepResult:
        with torch.no_grad():
            for p in ctx.model.parameters():
                p.fill_(float("nan"))
        return StepResult(model=ctx.model, metrics={})


class FailOnceParams(RunnerParams):
    marker: str = Field(description="file created on the first (failing) call")


class FailOnce(Runner):
    """Fails the first time (creating `marker`), succeeds afterwards: an interrupted run."""

    id = "test-fail-once"
    Params = FailOnceParams

    def run(self, ctx: StepContext, params: FailOnceParams) -> StepResult:
        from pathlib import Path

        from runners.base import StepFailed

        marker = Path(params.marker)
        if not marker.exists():
            marker.write_text("failed once")
            raise StepFailed("deliberate first failure")
        return StepResult(model=ctx.model, metrics={})


class RaiseParams(RunnerParams):
    kind: str = Field(description="oom | value | bug | interrupt")


class Raise(Runner):
    """Raises what a real runner might: out of memory, a late parameter error, a bug, Ctrl-C."""

    id = "test-raise"
    Params = RaiseParams

    def run(self, ctx: StepContext, params: RaiseParams) -> StepResult:
        if params.kind == "oom":
            raise MemoryError("cannot allocate 99 GB")
        if params.kind == "value":
            raise ValueError("group_size 96 does not divide the hidden size 64")
        if params.kind == "interrupt":
            raise KeyboardInterrupt
        raise RuntimeError("a bug in the runner")
