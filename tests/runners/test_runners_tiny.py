"""Every runner on a tiny model, with its effect checked."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from runners.base import StepFailed
from runners.evaluate import perplexity
from runners.models import model_stats, tiny_model
from runners.registry import RUNNERS, get_runner

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def run(rid, ctx, **params):
    runner = get_runner(rid)
    return runner.run(ctx, runner.Params(**params))


def test_every_registered_runner_imports():
    # Test runners (tests/execute) registered by other tests need their own parameters.
    for rid in [r for r in RUNNERS if RUNNERS[r].startswith("runners.")]:
        runner = get_runner(rid)
        assert runner.id == rid and runner.Params().model_dump() is not None


@pytest.mark.parametrize("rid, params, field", [
    ("magnitude-prune", {"sparsity": 1.5}, "sparsity"),
    ("magnitude-prune", {"sparcity": 0.5}, "sparcity"),
    ("weight-only-quant", {"bits": 3}, "bits"),
    ("lora", {"rank": 0}, "rank"),
    ("cast", {"dtype": "int8"}, "dtype"),
    ("init-from-config", {"hidden": 30, "heads": 4}, "heads"),
    ("export", {"name": "../escape"}, "name"),
])
def test_params_errors_name_the_field(rid, params, field):
    with pytest.raises(ValidationError) as err:
        get_runner(rid).Params(**params)
    assert field in str(err.value)


def test_load_pretrained_records_stats(tiny, make_ctx):
    model, tok = tiny
    res = run("load-pretrained", make_ctx(model, tok))
    assert res.model is model and res.metrics["params"] == model_stats(model)["params"]


def test_init_from_config_builds_requested_shape(tiny, make_ctx):
    model, tok = tiny
    res = run("init-from-config", make_ctx(model, tok), layers=3, hidden=32, heads=4, kv_heads=1,
              intermediate=64, tie_embeddings=False)
    cfg = res.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_key_value_heads, cfg.vocab_size) == (3, 32, 1, len(tok))
    assert res.model.lm_head.weight is not res.model.model.embed_tokens.weight


def test_causal_lm_train_lowers_loss(make_ctx):
    model, tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64)
    ctx = make_ctx(model, tok)
    before = perplexity(model, ctx.corpus, 64, 4)
    res = run("causal-lm-train", ctx, steps=30, lr=3e-3, batch_size=8, seq_len=64)
    assert perplexity(res.model, ctx.corpus, 64, 4) < 0.7 * before
    assert res.metrics["train_loss"] < res.metrics["first_loss"]


def test_nan_loss_fails_the_step(make_ctx):
    model, tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(StepFailed, match="loss became nan"):
        run("causal-lm-train", make_ctx(model, tok), steps=2, batch_size=2, seq_len=16)


@pytest.mark.parametrize("rid, params, expected", [
    ("magnitude-prune", {"sparsity": 0.5, "scope": "layer"}, 0.5),
    ("magnitude-prune", {"sparsity": 0.3, "scope": "global"}, 0.3),
    ("wanda-prune", {"sparsity": 0.5, "samples": 4, "seq_len": 64}, 0.5),
    ("wanda-prune", {"sparsity": 0.4, "scope": "global", "samples": 4, "seq_len": 64}, 0.4),
])
def test_unstructured_pruning_hits_sparsity(tiny, make_ctx, rid, params, expected):
    model, tok = tiny
    size = model_stats(model)["size_mb"]
    res = run(rid, make_ctx(model, tok), **params)
    assert res.metrics["pruned_fraction"] == pytest.approx(expected, abs=0.01)
    assert 0 < res.metrics["sparsity"] < expected
    assert res.metrics["size_mb"] == pytest.approx(size)  # dense tensors: no smaller


@pytest.mark.parametrize("params, check", [
    ({"target": "mlp", "fraction": 0.5}, lambda c: c.intermediate_size == 64),
    ({"target": "heads", "fraction": 0.5}, lambda c: (c.num_attention_heads, c.num_key_value_heads) == (2, 2)),
])
def test_structured_pruning_shrinks_and_runs(tiny, make_ctx, params, check):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    before = model_stats(model)
    res = run("structured-prune", ctx, samples=4, seq_len=64, **params)
    assert check(res.model.config)
    assert res.metrics["params"] < before["params"] and res.metrics["size_mb"] < before["size_mb"]
    assert torch.isfinite(torch.tensor(perplexity(res.model, ctx.corpus, 64, 2)))


def test_head_pruning_on_multi_head_attention_removes_kv_heads_too(make_ctx):
    model, tok = tiny_model(layers=1, hidden=64, heads=4, kv_heads=4, intermediate=64)
    res = run("structured-prune", make_ctx(model, tok), target="heads", fraction=0.5, samples=2, seq_len=32)
    assert (res.model.config.num_attention_heads, res.model.config.num_key_value_heads) == (2, 2)
    res.model(input_ids=torch.tensor([[1, 2, 3]]))


def test_layer_drop_removes_blocks_and_generates(tiny, make_ctx):
    model, tok = tiny
    res = run("layer-drop", make_ctx(model, tok), fraction=0.5, samples=2, seq_len=64)
    assert res.model.config.num_hidden_layers == 1 and len(res.model.model.layers) == 1
    out = res.model.generate(input_ids=torch.tensor([[1, 5, 9]]), max_new_tokens=4, do_sample=False)
    assert out.shape[1] == 7


def test_quantized_sizes_order(make_ctx, tiny_trained):
    from runners.models import load_checkpoint
    sizes = {}
    for name, rid, params in [("fp32", "load-pretrained", {}), ("int8", "weight-only-quant", {"bits": 8}),
                              ("int4", "weight-only-quant", {"bits": 4, "group_size": 32}),
                              ("gptq4", "gptq", {"bits": 4, "group_size": 32, "samples": 4, "seq_len": 64})]:
        model, tok = load_checkpoint(tiny_trained)
        res = run(rid, make_ctx(model, tok), **params)
        sizes[name] = res.metrics["size_mb"]
        assert torch.isfinite(torch.tensor(perplexity(res.model, make_ctx(model, tok).corpus, 64, 2)))
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"] and sizes["gptq4"] == sizes["int4"]


def test_weight_only_keeps_embeddings_when_asked(tiny, make_ctx):
    model, tok = tiny
    res = run("weight-only-quant", make_ctx(model, tok), bits=8, embedding_bits=None)
    assert isinstance(res.model.model.embed_tokens, torch.nn.Embedding)
    assert any("kept" in n for n in res.notes)


def test_gptq_beats_rtn_on_output_error(tiny, make_ctx, tiny_trained):
    from runners.models import load_checkpoint
    ref, tok = tiny
    ids = make_ctx(ref, tok).corpus.blocks("validation", 64, 4)
    with torch.no_grad():
        target = ref(input_ids=ids).logits
    errs = {}
    for rid in ("weight-only-quant", "gptq"):
        model, _ = load_checkpoint(tiny_trained)
        extra = {"samples": 16, "seq_len": 64} if rid == "gptq" else {}
        res = run(rid, make_ctx(model, tok), bits=4, group_size=32, embedding_bits=None, **extra)
        with torch.no_grad():
            errs[rid] = float((res.model(input_ids=ids).logits - target).pow(2).mean())
    assert errs["gptq"] < errs["weight-only-quant"]


@pytest.mark.parametrize("dtype, torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_cast(tiny, make_ctx, dtype, torch_dtype):
    model, tok = tiny
    size = model_stats(model)["size_mb"]
    res = run("cast", make_ctx(model, tok), dtype=dtype)
    assert res.model.lm_head.weight.dtype == torch_dtype
    assert res.metrics["size_mb"] == pytest.approx(size / 2, rel=0.01)


def test_dynamic_int8_shrinks_and_runs(tiny, make_ctx):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    before = perplexity(model, ctx.corpus, 64, 2)
    res = run("dynamic-int8", ctx)
    assert perplexity(res.model, ctx.corpus, 64, 2) < 1.2 * before
    assert res.metrics["size_mb"] < model_stats(tiny_model(**_tiny_cfg())[0])["size_mb"]


def _tiny_cfg():
    from tests.runners.conftest import TINY
    return TINY


@pytest.mark.parametrize("merge", [True, False])
def test_lora_lowers_loss(tiny, make_ctx, merge):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    before = perplexity(model, ctx.corpus, 64, 4)
    res = run("lora", ctx, rank=4, steps=25, lr=5e-3, batch_size=8, seq_len=64, merge=merge)
    assert perplexity(res.model, ctx.corpus, 64, 4) < before
    assert 0 < res.metrics["trainable_fraction"] < 0.5
    assert hasattr(res.model, "peft_config") is (not merge)


def test_lora_on_prompt_response_pairs(tiny, make_ctx, tmp_path):
    from runners.data import load_corpus
    model, tok = tiny
    lines = [f'{{"prompt": "Question {i}: what is {i} plus one?", "response": "It is {i + 1}."}}' for i in range(40)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines))
    corpus = load_corpus(tok, str(tmp_path / "pairs.jsonl"))
    res = run("lora", make_ctx(model, tok, corpus), rank=4, steps=20, lr=1e-2, batch_size=8, seq_len=32)
    assert res.metrics["train_loss"] < res.metrics["first_loss"]
    assert any("pairs" in n for n in res.notes)


def test_full_finetune_keeps_pruned_zeros(tiny, make_ctx):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    pruned = run("magnitude-prune", ctx, sparsity=0.5)
    ctx.model = pruned.model
    res = run("full-finetune", ctx, steps=5, lr=1e-3, batch_size=4, seq_len=32)
    assert res.model.model.layers[0].mlp.up_proj.weight.eq(0).float().mean() >= 0.49


def test_logit_distill_lowers_kl(tiny, make_ctx, tiny_trained):
    from runners.models import load_checkpoint
    teacher, tok = load_checkpoint(tiny_trained)
    student, _ = tiny
    ctx = make_ctx(student, tok, teacher=(teacher, tok))
    ctx.model = run("layer-drop", ctx, fraction=0.5, samples=2, seq_len=64).model
    res = run("logit-distill", ctx, steps=30, lr=3e-3, batch_size=8, seq_len=64)
    assert res.metrics["kl_end"] < res.metrics["kl_start"]


def test_logit_distill_refuses_other_tokenizer(tiny, make_ctx):
    student, tok = tiny
    teacher, t_tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, vocab=300)
    with pytest.raises(StepFailed, match="sequence-distill"):
        run("logit-distill", make_ctx(student, tok, teacher=(teacher, t_tok)), steps=1)


def test_sequence_distill_works_across_tokenizers(tiny, make_ctx, tiny_trained):
    teacher, t_tok = tiny  # vocabulary 512
    student, s_tok = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, vocab=300)
    from runners.data import load_corpus
    ctx = make_ctx(student, s_tok, load_corpus(s_tok), teacher=(teacher, t_tok))
    res = run("sequence-distill", ctx, prompts=4, new_tokens=16, steps=15, lr=3e-3, batch_size=4, seq_len=32)
    assert res.metrics["train_loss"] < res.metrics["first_loss"]


def test_distill_without_teacher_fails(tiny, make_ctx):
    model, tok = tiny
    with pytest.raises(StepFailed, match="teacher"):
        run("logit-distill", make_ctx(model, tok), steps=1)


def test_evaluate_reports_stable_metric_names(tiny, make_ctx):
    model, tok = tiny
    res = run("evaluate", make_ctx(model, tok), seq_len=64, ppl_blocks=2, repeats=1, decode_tokens=4)
    for key in ("ppl", "size_mb", "params", "sparsity", "bits_per_weight", "prefill_ms",
                "decode_ms_per_token", "peak_memory_mb"):
        assert res.metrics[key] >= 0, key
    assert 1 < res.metrics["ppl"] < 512


@pytest.mark.parametrize("merge", [True, False])
def test_export_writes_checkpoint_and_adapter(tiny, make_ctx, merge):
    from runners.models import load_model
    model, tok = tiny
    ctx = make_ctx(model, tok)
    ctx.model = run("lora", ctx, rank=2, steps=2, seq_len=16, batch_size=2, merge=merge).model
    res = run("export", ctx)
    assert ("adapter" in res.artifacts) is (not merge) and res.metrics["size_mb"] > 0
    loaded, _ = load_model(res.artifacts["model"])
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, ctx.model(input_ids=ids).logits, atol=1e-5)


def test_quantized_model_refuses_training(tiny, make_ctx):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    ctx.model = run("weight-only-quant", ctx, bits=8).model
    with pytest.raises(StepFailed, match="quantiz"):
        run("lora", ctx, steps=1)
