"""GQA conversion, decontamination check and on-device profiling: every KB method these runners
execute, with the KB's parameters, on a tiny Llama."""

from __future__ import annotations

import pytest
import torch

from runners.registry import get_runner

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def kb_methods(*runner_ids: str) -> dict[str, tuple[str, dict]]:
    from slmrec.kb import load_kb
    kb = load_kb()
    return {m.id: (m.runner, {n: s.default for n, s in m.params.items() if s.default is not None})
            for m in kb.methods.values() if m.runner in runner_ids}


def test_mha_to_gqa_pools_heads_and_reloads(tiny, make_ctx, tmp_path):
    from runners.checkpoint import save_checkpoint
    from runners.models import load_checkpoint
    _, params = kb_methods("mha-to-gqa")["mha-to-gqa-uptraining"]
    model, tok = tiny  # 4 query heads, 2 key/value heads
    runner = get_runner("mha-to-gqa")
    res = runner.run(make_ctx(model, tok), runner.Params(**{**params, "kv_heads": 1, "steps": 3,
                                                            "batch_size": 2, "seq_len": 32}))
    assert res.model.config.num_key_value_heads == 1 and res.metrics["kv_cache_ratio"] == 0.5
    assert res.model.model.layers[0].self_attn.k_proj.weight.shape == (16, 64)
    ids = torch.randint(0, len(tok), (1, 12))
    again, _ = load_checkpoint(save_checkpoint(res.model, tok, tmp_path / "gqa"))
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, res.model(input_ids=ids).logits, atol=1e-5)


def test_mha_to_gqa_pooling_is_the_group_mean():
    from runners.attention_convert import _pool
    lin = torch.nn.Linear(3, 4 * 2, bias=True)  # 4 heads of dim 2
    out = _pool(lin, kv=4, target=2, head_dim=2)
    w = lin.weight.detach().view(4, 2, 3)
    assert torch.allclose(out.weight.view(2, 2, 3)[0], (w[0] + w[1]) / 2)
    assert torch.allclose(out.bias.view(2, 2)[1], lin.bias.detach().view(4, 2)[2:].mean(0))


def test_mha_to_gqa_refuses_a_non_divisor(tiny, make_ctx):
    from runners.base import StepFailed
    model, tok = tiny
    runner = get_runner("mha-to-gqa")
    with pytest.raises(StepFailed, match="valid: \\[1, 2\\]"):
        runner.run(make_ctx(model, tok), runner.Params(kv_heads=3, steps=0))


def test_decontamination_check_finds_the_shared_text(tiny, make_ctx):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    res = get_runner("decontamination-check").run(ctx, get_runner("decontamination-check").Params(ngram=8))
    m = res.metrics
    assert m["validation_docs"] == len([t for t in ctx.corpus.texts["validation"] if t.strip()])
    assert 0 <= m["contaminated_ngram_fraction"] <= m["contaminated_doc_fraction"] <= 1
    from runners.decontaminate import clean, seen_ngrams
    seen = seen_ngrams(ctx.corpus, n=8)
    assert m["contaminated_docs"] == sum(not clean([t], seen, 8) for t in ctx.corpus.texts["validation"] if t.strip())


def test_profile_reports_each_context_length(make_ctx):
    from runners.models import tiny_model
    model, tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64)
    runner = get_runner("profile")
    res = runner.run(make_ctx(model, tok), runner.Params(contexts="8, 32", new_tokens=2, repeats=1, top_ops=3))
    m = res.metrics
    assert all(m[f"prefill_ms@{n}"] > 0 and m[f"decode_ms_per_token@{n}"] > 0 for n in (8, 32))
    shares = [v for k, v in m.items() if k.startswith("op_share.")]
    assert len(shares) == 3 and 0 < sum(shares) <= 1.0001


def test_kb_methods_of_these_runners():
    assert {"mha-to-gqa-uptraining", "benchmark-decontamination", "on-device-profiling", "calibration-eval",
            "best-of-n-sampling"} <= set(kb_methods("mha-to-gqa", "decontamination-check", "profile",
                                                    "calibration-eval", "best-of-n"))


def test_calibration_error_of_known_bins():
    from runners.calibration_eval import expected_calibration_error
    conf = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.3, 0.3])
    correct = torch.tensor([1, 1, 1, 0, 0, 0])
    ece, table = expected_calibration_error(conf, correct, 10)
    assert abs(ece - (4 / 6 * abs(0.75 - 0.9) + 2 / 6 * 0.3)) < 1e-6 and len(table) == 2


def test_calibration_eval_and_best_of_n_on_tiny_model(tiny, make_ctx):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    m = get_runner("calibration-eval").run(ctx, get_runner("calibration-eval").Params(seq_len=64, blocks=2)).metrics
    assert 0 <= m["ece"] <= 1 and m["tokens"] == 2 * 63
    r = get_runner("best-of-n")
    m = r.run(ctx, r.Params(n=3, prompts=3, new_tokens=6)).metrics
    assert m["reward_best_of_n"] >= m["reward_one_sample"] >= 0


def _changed(before, model):
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_spectrum_trains_only_the_top_snr_matrices(tiny, make_ctx):
    _, params = kb_methods("spectrum")["spectrum"]
    model, tok = tiny  # 2 layers x 7 kinds of matrix
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = get_runner("spectrum")
    res = runner.run(make_ctx(model, tok), runner.Params(**{**params, "fraction": 0.5, "steps": 3, "batch_size": 2,
                                                            "seq_len": 32, "lr": 1e-3}))
    changed = _changed(before, res.model)
    assert len(changed) == 7 and all(k.endswith("_proj.weight") for k in changed)  # one layer per kind
    assert {k.rsplit(".", 2)[-2] for k in changed} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_lisa_trains_the_sampled_layer_and_the_embeddings(tiny, make_ctx):
    assert "lisa" in kb_methods("lisa")
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = get_runner("lisa")
    res = runner.run(make_ctx(model, tok), runner.Params(active_layers=1, interval=3, steps=3, batch_size=2,
                                                         seq_len=32, lr=1e-3))
    changed = _changed(before, res.model)
    layers = {k.split(".")[2] for k in changed if k.startswith("model.layers.")}
    assert len(layers) == 1 and "model.embed_tokens.weight" in changed and res.metrics["periods"] == 1


def test_needle_eval_on_tiny_model(tiny, make_ctx):
    from runners.needle_eval import _logprob
    assert "needle-in-a-haystack-eval" in kb_methods("needle-eval")
    model, tok = tiny
    r = get_runner("needle-eval")
    m = r.run(make_ctx(model, tok), r.Params(context=64, depths="0.2, 0.8", trials=2)).metrics
    assert set(m) == {"retrieval_acc@0.2", "logprob_gain@0.2", "retrieval_acc@0.8", "logprob_gain@0.8",
                      "retrieval_acc", "logprob_gain"} and 0 <= m["retrieval_acc"] <= 1
    ids, target = [5, 6, 7], [8, 9]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids + target])).logits[0], -1)
    assert abs(_logprob(model, ids, target) - float(logp[2, 8] + logp[3, 9])) < 1e-4


def test_rejection_sampling_finetunes_on_the_kept_samples(tiny, make_ctx):
    assert "rejection-sampling-finetuning" in kb_methods("rejection-sampling-ft")
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = get_runner("rejection-sampling-ft")
    res = r.run(make_ctx(model, tok), r.Params(n=2, prompts=3, new_tokens=6, steps=2, batch_size=2, lr=1e-3))
    assert res.metrics["kept_examples"] == 3 and 0 <= res.metrics["kept_reward_mean"] <= 1
    assert _changed(before, res.model)
