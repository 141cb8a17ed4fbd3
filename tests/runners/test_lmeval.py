"""lm-eval runner on a tiny model, and the held-out guarantee: evaluation text never overlaps the
training or calibration text."""

from __future__ import annotations

import json

import pytest

from runners.registry import get_runner

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")


def test_lm_eval_reports_its_own_metrics(make_ctx, tmp_path):
    from runners.models import tiny_model
    # a tied model whose embeddings are packed int8: lm-eval's wrapper must not try to re-tie them
    model, tok = tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512, tie_embeddings=True)
    quant = get_runner("weight-only-quant")
    ctx = make_ctx(model, tok)
    ctx.model = quant.run(ctx, quant.Params(bits=4, group_size=32, embedding_bits=8)).model
    runner = get_runner("lm-eval")
    res = runner.run(ctx, runner.Params(examples=8, batch_size=8))
    m = res.metrics
    assert 0 <= m["slmrec_pydoc_continuation/acc"] <= 1
    assert m["slmrec_pydoc_rolling/byte_perplexity"] > 1 and m["slmrec_pydoc_rolling/bits_per_byte"] > 0
    rows = [json.loads(line) for line in (tmp_path / "lm_eval" / "slmrec_pydoc_continuation.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["gold"] for r in rows} == {0, 1, 2, 3}  # the answer slot rotates


def test_eval_text_never_overlaps_training_or_calibration(tiny_corpus, tmp_path):
    from runners.lmeval import local_tasks, task_configs
    from runners.preference_data import preference_pairs
    configs = task_configs(tiny_corpus, local_tasks(), 10_000, tmp_path)
    eval_text = []
    for cfg in configs:
        for line in open(cfg["dataset_kwargs"]["data_files"]["validation"]):
            row = json.loads(line)
            eval_text += [row.get("text", ""), row.get("context", "")] + row.get("choices", [])
    pairs = preference_pairs(tiny_corpus, "validation", 10_000)
    eval_text += [p["prompt"] + p["chosen"] for p in pairs]
    held_out = " ".join(tiny_corpus.texts["validation"])
    seen = set()
    for split in ("train", "calibration"):  # every 8-word window of the text the model learns from
        for text in tiny_corpus.texts[split]:
            w = text.lower().split()
            seen |= {" ".join(w[i:i + 8]) for i in range(len(w) - 7)}
    shared = [t for t in eval_text if any(" ".join(t.lower().split()[i:i + 8]) in seen
                                          for i in range(len(t.split()) - 7))]
    assert len(eval_text) > 50 and not shared, shared[:2]
    for row_text in eval_text:  # every evaluation snippet comes from the validation split itself
        assert " ".join(row_text.split()[:6]) in " ".join(held_out.split())


def test_unknown_task_is_named():
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="slmrec_pydoc_rolling"):
        get_runner("lm-eval").Params(tasks="slmrec_pydoc_rollin")
