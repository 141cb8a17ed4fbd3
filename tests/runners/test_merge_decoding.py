"""Merging and decoding-time runners: every KB method they run, on a tiny Llama, plus the merge
arithmetic checked on small tensors."""

from __future__ import annotations

import pytest
import torch

from runners.registry import get_runner

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")


def kb_methods(*runner_ids: str) -> dict[str, tuple[str, dict]]:
    from slmrec.kb import load_kb
    kb = load_kb()
    return {m.id: (m.runner, {n: s.default for n, s in m.params.items() if s.default is not None})
            for m in kb.methods.values() if m.runner in runner_ids}


KB_MERGE = kb_methods("merge")
KB_DECODE = kb_methods("kv-cache-quant", "speculative-decoding", "prompt-caching", "torch-compile",
                       "prompt-lookup-decoding")
DECODE_FAST = dict(prompts=2, prompt_tokens=16, new_tokens=8)


def test_the_kb_has_these_methods():
    assert {"model-soup-averaging", "task-arithmetic-merging", "ties-merging", "slerp-merging"} <= set(KB_MERGE)
    assert {"kv-cache-quantization", "speculative-decoding", "prompt-caching", "torch-compile",
            "self-speculative-decoding", "prompt-lookup-decoding"} <= set(KB_DECODE)


@pytest.mark.parametrize("method", sorted(KB_MERGE))
def test_kb_merge_method(method, tiny, make_ctx):
    from runners.models import model_stats
    runner_id, params = KB_MERGE[method]
    model, tok = tiny
    n_params = model_stats(model)["params"]
    base = {k: v.clone() for k, v in model.state_dict().items()}
    runner = get_runner(runner_id)
    res = runner.run(make_ctx(model, tok), runner.Params(**{**params, "steps": 4, "batch_size": 2,
                                                            "seq_len": 32, "lr": 5e-3}))
    m = res.metrics
    assert all(torch.isfinite(torch.tensor(v)) for v in m.values())
    changed = [k for k, v in res.model.state_dict().items() if not torch.equal(v, base[k])]
    assert changed, "the merge left every weight as it was"
    assert type(res.model).__name__ == "LlamaForCausalLM" and m["params"] == n_params


def test_merge_arithmetic():
    from runners.merge import MergeParams, combine, slerp
    base = torch.zeros(4, 4)
    a, b = base + 1.0, base + 3.0
    assert torch.allclose(combine(MergeParams(combination="soup"), base, [a, b]), base + 2.0)
    assert torch.allclose(combine(MergeParams(combination="task_arithmetic", scale=0.5), base, [a, b]), base + 2.0)
    ties = combine(MergeParams(combination="ties", density=1.0, scale=1.0), base, [a, b])
    assert torch.allclose(ties, base + 2.0)  # same signs, nothing trimmed: the disjoint mean
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(slerp(0.0, x, y), x) and torch.allclose(slerp(1.0, x, y), y)
    assert torch.allclose(slerp(0.5, x, y).norm(), torch.tensor(1.0))  # stays on the sphere


@pytest.mark.parametrize("method", sorted(KB_DECODE))
def test_kb_decoding_method(method, make_ctx):
    from runners.models import tiny_model
    runner_id, params = KB_DECODE[method]
    model, tok = tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = get_runner(runner_id)
    extra = {"backend": "eager"} if runner_id == "torch-compile" else {}
    res = runner.run(make_ctx(model, tok), runner.Params(**{**params, **DECODE_FAST, **extra}))
    m = res.metrics
    assert m["tokens_per_s_plain"] > 0 and m["tokens_per_s_method"] > 0 and m["speedup"] > 0
    if runner_id != "kv-cache-quant":  # exact methods: greedy output unchanged
        assert m["greedy_agreement"] == 1.0
    else:
        assert 0 <= m["greedy_agreement"] <= 1 and m["kv_bytes_per_token_quant"] < m["kv_bytes_per_token_fp"]
        # the cache's own perplexity change is measured by decoding through it
        assert m["decoded_ppl_plain_cache"] > 1 and m["decoded_ppl_quantized_cache"] > 1
        assert m["decoded_ppl_change_pct"] == pytest.approx(
            100 * (m["decoded_ppl_quantized_cache"] / m["decoded_ppl_plain_cache"] - 1))
    assert all(torch.equal(v, before[k]) for k, v in res.model.state_dict().items())


def test_layer_dropped_draft_shares_the_vocabulary():
    from runners.decoding import layer_dropped_draft
    from runners.models import tiny_model
    model, _ = tiny_model(layers=4, hidden=32, heads=2, kv_heads=1, intermediate=64)
    draft, kept, total = layer_dropped_draft(model, 0.5)
    assert (kept, total) == (2, 4) and draft.config.vocab_size == model.config.vocab_size
    assert len(draft.model.layers) == 2 and len(model.model.layers) == 4


def test_chunked_prefill_matches_one_pass(make_ctx):
    from runners.models import tiny_model
    model, tok = tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)
    runner = get_runner("chunked-prefill")
    res = runner.run(make_ctx(model, tok), runner.Params(prompt_tokens=48, chunk=16))
    m = res.metrics
    assert m["chunks"] == 3 and m["max_logit_diff"] < 1e-4 and m["prefill_ms_chunked"] > 0


@pytest.mark.parametrize("teacher_vocab", [512, 300])  # same tokenizer; another one (universal assisted generation)
def test_slm_drafts_for_the_teacher(teacher_vocab, make_ctx):
    from runners.models import tiny_model
    assert "slm-draft-model" in kb_methods("slm-draft")
    small, tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, vocab=512)
    teacher = tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=teacher_vocab)
    runner = get_runner("slm-draft")
    res = runner.run(make_ctx(small, tok, teacher=teacher), runner.Params(prompts=2, prompt_tokens=12, new_tokens=6))
    assert res.metrics["greedy_agreement"] == 1.0 and res.metrics["same_tokenizer"] == float(teacher_vocab == 512)
