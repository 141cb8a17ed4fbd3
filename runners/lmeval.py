"""Evaluation through lm-evaluation-harness, offline, on the step's model.

The tasks are local YAML files (runners/lmeval_tasks/) whose data are written from the corpus's
validation split only (disjoint from train and calibration by document, runners/data.py), less
any example sharing a word 8-gram with train or calibration text (runners/decontaminate.py). The model is wrapped in lm-eval's HFLM, so the
figures are lm-eval's own metrics (accuracy, word/byte perplexity, bits per byte).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import yaml
from pydantic import Field, field_validator

from runners.base import Runner, RunnerParams, StepContext, StepFailed, StepResult
from runners.preference_data import multiple_choice

TASK_DIR = Path(__file__).parent / "lmeval_tasks"


def local_tasks() -> list[str]:
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


class LMEvalParams(RunnerParams):
    tasks: str = Field("slmrec_pydoc_continuation, slmrec_pydoc_rolling", description="comma-separated local lm-eval tasks")
    examples: int = Field(64, ge=2, le=100_000, description="examples per task (validation split only)")
    batch_size: int = Field(8, ge=1, le=1024)
    max_length: int = Field(512, ge=16, le=32768, description="context window lm-eval may use")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: str) -> str:
        from slmrec.errors import did_you_mean
        known = local_tasks()
        for name in task_names(value):
            if name not in known:
                raise ValueError(f"unknown lm-eval task {name!r}{did_you_mean(name, known)}; local tasks: {', '.join(known)}")
        return value


def task_names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def task_rows(corpus, name: str, n: int) -> list[dict]:
    """The data of one local task, from the validation split."""
    from runners.decontaminate import clean, seen_ngrams
    if name == "slmrec_pydoc_continuation":
        return multiple_choice(corpus, "validation", n)  # decontaminated in preference_data
    seen = seen_ngrams(corpus)
    return [{"text": t} for t in corpus.texts["validation"] if t.strip() and clean([t], seen)][:n]


def task_configs(corpus, names: list[str], n: int, folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    configs = []
    for name in names:
        rows = task_rows(corpus, name, n)
        if not rows:
            raise StepFailed(f"lm-eval: the validation split has no text for task {name}")
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cfg = yaml.safe_load((TASK_DIR / f"{name}.yaml").read_text())
        cfg["dataset_kwargs"]["data_files"]["validation"] = str(data)
        configs.append(cfg)
    return configs


def evaluate(model, tokenizer, corpus, params: LMEvalParams, folder: Path) -> dict[str, float]:
    """lm-eval metrics of the model on the local tasks: {'<task>/<metric>': value}."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from datasets.utils.logging import disable_progress_bar
    if hasattr(model, "peft_config") and model.peft_config[next(iter(model.peft_config))].is_prompt_learning:
        raise StepFailed("lm-eval: a soft-prompt adapter cannot be scored through lm-eval's HF wrapper")
    disable_progress_bar()
    configs = task_configs(corpus, task_names(params.tasks), params.examples, folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # lm-eval's per-request progress bars
    try:
        out = _run(model, tokenizer, configs, params)
    finally:
        if quiet is None:
            os.environ.pop("TQDM_DISABLE", None)
    metrics = {}
    for task, res in out["results"].items():
        for key, value in res.items():
            metric = key.partition(",")[0]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "stderr" not in metric and metric != "sample_len":
                metrics[f"{task}/{metric}"] = float(value)
    return metrics


def _run(model, tokenizer, configs, params):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # HFLM re-ties the embeddings, which fails on packed quantized embeddings (no .weight
        # parameter); the step's model is already tied as it should be, so skip that call.
        model.tie_weights = lambda *a, **k: None
        try:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=params.batch_size, device="cpu",
                      max_length=min(params.max_length, getattr(model.config, "max_position_embeddings", params.max_length)))
        finally:
            del model.tie_weights
        return simple_evaluate(model=lm, tasks=configs, bootstrap_iters=0, log_samples=False, verbosity="ERROR")


class LMEval(Runner):
    id = "lm-eval"
    Params = LMEvalParams
    summary = "lm-evaluation-harness tasks built from the held-out validation split, through lm-eval's HF wrapper"

    def run(self, ctx: StepContext, params: LMEvalParams) -> StepResult:
        metrics = evaluate(ctx.model, ctx.tokenizer, ctx.corpus, params, ctx.workdir / "lm_eval")
        names = task_names(params.tasks)
        notes = [f"lm-eval {', '.join(names)} on up to {params.examples} examples of the validation split: "
                 + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)
