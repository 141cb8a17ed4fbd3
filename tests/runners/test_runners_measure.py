"""Perplexity reports: the whole held-out split by default, a named slice, the spread of its parts."""

from __future__ import annotations

import math

import pytest
import torch

from runners.evaluate import perplexity, perplexity_report


def test_whole_split_is_the_default_and_every_token_is_scored(tiny, tiny_corpus):
    model, _ = tiny
    rep = perplexity_report(model, tiny_corpus, seq_len=64)
    n = len(tiny_corpus.validation)
    assert rep.tokens == n and rep.slice == f"validation[0:{n}] (whole split)"
    assert sum(c for _, c in rep.part_nll) == n - math.ceil(n / 64)  # every block's first token has no context
    assert perplexity(model, tiny_corpus, 64) == pytest.approx(rep.ppl)
    lo, hi = rep.spread
    assert len(rep.parts) == 4 and lo < rep.ppl < hi  # parts of real text differ


def test_fixed_slice_is_named_and_the_ratio_carries_the_spread(tiny, tiny_corpus):
    model, _ = tiny
    a = perplexity_report(model, tiny_corpus, seq_len=64, n_blocks=8, batch_size=3)
    assert a.slice == "validation[0:512] (8x64)" and a.tokens == 512
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    b = perplexity_report(model, tiny_corpus, seq_len=64, n_blocks=8, batch_size=3)
    ratio, low, high = b.ratio(a)
    assert ratio == pytest.approx(b.ppl / a.ppl) and low <= ratio <= high and low < high
    whole = perplexity_report(model, tiny_corpus, seq_len=64)
    with pytest.raises(ValueError, match="different slices"):
        whole.ratio(a)


def test_evaluate_runner_reports_slice_and_spread(tiny, make_ctx):
    from runners.registry import get_runner
    model, tok = tiny
    runner = get_runner("evaluate")
    res = runner.run(make_ctx(model, tok), runner.Params(seq_len=64, latency=False, serialise=False))
    m = res.metrics
    assert m["ppl_low"] < m["ppl"] < m["ppl_high"] and m["ppl_tokens"] == len(make_ctx(model, tok).corpus.validation)
    assert any("(whole split)" in n for n in res.notes)


def test_latency_does_not_time_the_first_run(tiny, monkeypatch):
    # packed weights build their kernels on the first call: that call must not be the step's
    # latency. A fake clock advances 100 s during the first forward and 1 ms during every other.
    import runners.evaluate as ev

    model, _ = tiny
    clock, calls = [0.0], [0]

    def tick(_m, _a, _o):
        calls[0] += 1
        clock[0] += 100.0 if calls[0] == 1 else 0.001

    model.register_forward_hook(tick)
    monkeypatch.setattr(ev.time, "perf_counter", lambda: clock[0])
    lat = ev.latency(model, model.config.vocab_size, prompt_len=4, new_tokens=2, repeats=2)
    assert lat["prefill_ms"] == pytest.approx(1.0)
    assert lat["decode_ms_per_token"] == pytest.approx(1.0)


def test_decoding_through_a_plain_cache_scores_like_the_full_forward(tiny, tiny_corpus):
    # KV-cache figures decode token by token; through an unquantized cache that must equal the
    # teacher-forced perplexity, so a quantized cache's change is the cache's alone
    from transformers import DynamicCache

    from runners.evaluate import perplexity_report

    model, _ = tiny
    full = perplexity_report(model, tiny_corpus, seq_len=16, n_blocks=4)
    decoded = perplexity_report(model, tiny_corpus, seq_len=16, n_blocks=4,
                                decode_cache=lambda: DynamicCache(config=model.config))
    assert decoded.slice == full.slice
    assert decoded.ppl == pytest.approx(full.ppl, rel=1e-4)
    assert decoded.parts == pytest.approx(full.parts, rel=1e-4)
