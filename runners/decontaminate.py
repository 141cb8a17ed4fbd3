"""Keep evaluation examples free of training and calibration text, at the n-gram level.

The corpus splits are disjoint by document (runners/data.py), but a corpus can repeat a sentence in
two documents (the bundled pydoc topics do), so an evaluation example is dropped when it shares any
word n-gram with the train or calibration split. lm-evaluation-harness's decontamination uses
13-grams; 8 is stricter.
"""

from __future__ import annotations

N = 8


def ngrams(text: str, n: int = N) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def seen_ngrams(corpus, splits=("train", "calibration"), n: int = N) -> set[tuple[str, ...]]:
    seen: set[tuple[str, ...]] = set()
    for split in splits:
        for text in corpus.texts[split]:
            seen |= ngrams(text, n)
    pairs = getattr(corpus, "pair_splits", {}) or {}
    for split in splits:
        for prompt, response in pairs.get(split, []):
            seen |= ngrams(f"{prompt} {response}", n)
    return seen


def clean(texts: list[str], seen: set[tuple[str, ...]], n: int = N) -> bool:
    """True when none of the texts shares an n-gram with the seen set."""
    return not any(ngrams(t, n) & seen for t in texts)


# ---- the runner: how much of the evaluation split the training text contains -----------------

from pydantic import Field  # noqa: E402

from runners.base import Runner, RunnerParams, StepContext, StepResult  # noqa: E402


class DecontaminationParams(RunnerParams):
    ngram: int = Field(13, ge=4, le=64, description="words in the overlap window (lm-eval and GPT-3 use 13)")


class DecontaminationCheck(Runner):
    id = "decontamination-check"
    Params = DecontaminationParams
    summary = "n-gram overlap of the validation split with the train and calibration text"

    def run(self, ctx: StepContext, params: DecontaminationParams) -> StepResult:
        seen = seen_ngrams(ctx.corpus, n=params.ngram)
        docs = [t for t in ctx.corpus.texts["validation"] if t.strip()]
        dirty = [t for t in docs if not clean([t], seen, params.ngram)]
        grams = [g for t in docs for g in ngrams(t, params.ngram)]
        shared = sum(g in seen for g in grams)
        metrics = {"validation_docs": float(len(docs)), "contaminated_docs": float(len(dirty)),
                   "contaminated_doc_fraction": len(dirty) / max(1, len(docs)),
                   "contaminated_ngram_fraction": shared / max(1, len(grams))}
        notes = [f"{len(dirty)} of {len(docs)} validation documents share a {params.ngram}-word window with the "
                 f"train or calibration text ({metrics['contaminated_ngram_fraction']:.1%} of their windows); "
                 "lm-eval tasks drop such examples (runners/lmeval.py)"]
        return StepResult(model=ctx.model, metrics=metrics, notes=notes)
