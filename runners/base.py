"""The runner contract: one class per method family, parameters declared and validated first.

The executor binds each plan step to a runner, validates the step's parameters against the
runner's `Params` model for every step before any model is loaded, then calls `run` in order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict


class RunnerParams(BaseModel):
    """Base of every runner's parameters: unknown names are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class NoParams(RunnerParams):
    pass


class StepFailed(RuntimeError):
    """A step could not complete (NaN loss, out of memory, incompatible input): the run fails
    with this reason; earlier checkpoints stay intact."""


@dataclass
class StepContext:
    model: Any                      # torch.nn.Module (a transformers causal LM or a converted one)
    tokenizer: Any                  # transformers tokenizer
    corpus: Any                     # runners.data.Corpus: train / validation / calibration splits
    workdir: Path                   # this step's scratch and artifact folder
    seed: int = 0
    load_teacher: Callable[[], tuple[Any, Any]] | None = None  # lazy: (model, tokenizer)
    progress: Callable[[int, int], None] = lambda done, total: None
    log: Callable[[str], None] = print


@dataclass
class StepResult:
    model: Any
    tokenizer: Any = None           # None: unchanged
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Runner(ABC):
    id: ClassVar[str]
    Params: ClassVar[type[RunnerParams]] = NoParams
    needs_teacher: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    @abstractmethod
    def run(self, ctx: StepContext, params: RunnerParams) -> StepResult:
        """Transform ctx.model; return the new model and what was measured on the way."""
