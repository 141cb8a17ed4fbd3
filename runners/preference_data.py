"""Preference, unpaired-feedback and multiple-choice examples built from a corpus split, offline.

A prompt is a document's opening; the chosen completion is what the document really says next,
the rejected one is the same stretch of another document. The same construction serves the
alignment trainers (train split) and the local lm-eval tasks (validation split only), so the
examples of one split never contain text of another.
"""

from __future__ import annotations


def _word_windows(texts: list[str], prompt_words: int, completion_words: int) -> list[tuple[str, str]]:
    span = prompt_words + completion_words
    out = []
    for text in texts:
        words = text.split()
        for start in range(0, len(words) - span + 1, span):
            w = words[start: start + span]
            out.append((" ".join(w[:prompt_words]), " " + " ".join(w[prompt_words:])))
    return out


def continuations(corpus, split: str, n: int, prompt_words: int = 8,
                  completion_words: int = 8) -> list[tuple[str, str]]:
    """(prompt, true completion) pairs of one split: instruction pairs when the corpus has them,
    else consecutive word windows of its documents. Validation examples that share an n-gram with
    the train or calibration split are left out (runners/decontaminate.py)."""
    if corpus.pair_splits.get(split):
        out = [(p.rstrip() + "\n", r) for p, r in corpus.pair_splits[split]]
    else:
        out = _word_windows(corpus.texts[split], prompt_words, completion_words)
    if split == "validation":
        from runners.decontaminate import clean, seen_ngrams
        seen = seen_ngrams(corpus)
        out = [(p, c) for p, c in out if clean([p + " " + c], seen)]
    return out[:n]


def preference_pairs(corpus, split: str, n: int, **kw) -> list[dict[str, str]]:
    """{"prompt", "chosen", "rejected"}: the rejected completion is the next example's completion."""
    base = continuations(corpus, split, n, **kw)
    if len(base) < 2:
        raise ValueError(f"the {split} split has too little text for preference pairs ({len(base)} examples)")
    return [{"prompt": p, "chosen": c, "rejected": base[(i + 1) % len(base)][1]}
            for i, (p, c) in enumerate(base)]


def unpaired_feedback(corpus, split: str, n: int, **kw) -> list[dict]:
    """{"prompt", "completion", "label"}: each preference pair as one desirable and one undesirable example."""
    out = []
    for ex in preference_pairs(corpus, split, max(1, n // 2), **kw):
        out.append({"prompt": ex["prompt"], "completion": ex["chosen"], "label": True})
        out.append({"prompt": ex["prompt"], "completion": ex["rejected"], "label": False})
    return out[:n]


def multiple_choice(corpus, split: str, n: int, choices: int = 4, **kw) -> list[dict]:
    """{"context", "choices", "gold"}: the true completion among completions of other examples;
    the gold position rotates so that always answering one slot scores 1/choices."""
    base = continuations(corpus, split, n + choices, **kw)
    if len(base) <= choices:
        raise ValueError(f"the {split} split has too little text for {choices}-way choices ({len(base)} examples)")
    out = []
    for i, (p, c) in enumerate(base[:n]):
        others = [base[(i + k) % len(base)][1] for k in range(1, choices)]
        gold = i % choices
        out.append({"context": p, "choices": others[:gold] + [c] + others[gold:], "gold": gold})
    return out
