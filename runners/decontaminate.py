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
