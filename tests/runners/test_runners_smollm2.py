"""The runners on the bundled SmolLM2-135M (a Q4_1 GGUF dequantised to fp32: the "fp32" baseline is
already a 4-bit model held in fp32). These tests check direction on a declared fixed slice,
validation[0:2048] (8x256 tokens; run with -s to see each figure with the spread of its 4
parts); the KB's figures come from bench/kb_figures.py on the whole validation split, which
tests/runners/test_runners_kb_figures.py compares with the KB. Short training runs, small batches."""

from __future__ import annotations

import os
import time

import pytest
import torch

from runners.evaluate import perplexity_report
from runners.registry import get_runner

pytestmark = [pytest.mark.real_model,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")]

EVAL = dict(seq_len=256, n_blocks=8, batch_size=4)  # validation[0:2048]


def perplexity(model, corpus, **kw):
    rep = perplexity_report(model, corpus, **kw)
    lo, hi = rep.spread
    print(f"\n[smollm2]   ppl {rep.ppl:.2f} on {rep.slice}, parts {lo:.2f}-{hi:.2f}")
    return rep.ppl


def run(rid, ctx, **params):
    runner = get_runner(rid)
    start = time.perf_counter()
    res = runner.run(ctx, runner.Params(**params))
    res.metrics.setdefault("wall_s", time.perf_counter() - start)
    return res


@pytest.fixture(scope="module")
def base(smol_folder, smol_corpus):
    from runners.models import load_checkpoint, model_stats
    model, _ = load_checkpoint(smol_folder)
    out = {"ppl": perplexity(model, smol_corpus, **EVAL), **model_stats(model)}
    print(f"\n[smollm2] fp32: ppl {out['ppl']:.2f}, size {out['size_mb']:.1f} MB, params {out['params']:.0f}")
    return out


def test_bundled_reload_is_fast(smol_folder):
    from runners.models import load_model
    start = time.perf_counter()
    model, tok = load_model("smollm2-135m")
    elapsed = time.perf_counter() - start
    print(f"\n[smollm2] reload from the converted cache: {elapsed:.2f} s")
    assert model.config.num_hidden_layers == 30 and len(tok) == 49152
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert elapsed < 10  # under 1 s on an idle machine; generous for shared cores


def test_int8_weight_only(smol, make_ctx, smol_corpus, base):
    model, tok = smol
    res = run("weight-only-quant", make_ctx(model, tok, smol_corpus), bits=8)
    ppl = perplexity(res.model, smol_corpus, **EVAL)
    ratio = res.metrics["size_mb"] / base["size_mb"]
    print(f"\n[smollm2] int8 RTN g128: ppl {ppl:.2f} ({ppl / base['ppl']:.3f}x), "
          f"size {res.metrics['size_mb']:.1f} MB ({ratio:.3f}x)")
    assert ratio <= 0.30 and ppl <= 1.05 * base["ppl"]


def test_int4_rtn_and_gptq(smol_folder, make_ctx, smol_corpus, base):
    from runners.models import load_checkpoint
    results = {}
    for rid, extra in (("weight-only-quant", {}), ("gptq", {"samples": 8, "seq_len": 128})):
        model, tok = load_checkpoint(smol_folder)
        res = run(rid, make_ctx(model, tok, smol_corpus), bits=4, group_size=128, **extra)
        ppl = perplexity(res.model, smol_corpus, **EVAL)
        results[rid] = ppl
        print(f"\n[smollm2] int4 {rid} g128: ppl {ppl:.2f} ({ppl / base['ppl']:.3f}x), size "
              f"{res.metrics['size_mb']:.1f} MB ({res.metrics['size_mb'] / base['size_mb']:.3f}x), "
              f"{res.metrics['wall_s']:.0f} s")
        assert res.metrics["size_mb"] <= 0.20 * base["size_mb"]
        del model, res
    assert results["gptq"] < 0.95 * results["weight-only-quant"]  # GPTQ clearly better than RTN


def test_magnitude_prune_30_layerwise(smol, make_ctx, smol_corpus, base):
    model, tok = smol
    res = run("magnitude-prune", make_ctx(model, tok, smol_corpus), sparsity=0.3, scope="layer")
    ppl = perplexity(res.model, smol_corpus, **EVAL)
    print(f"\n[smollm2] magnitude 30% layer-wise: ppl {ppl:.2f} ({ppl / base['ppl']:.2f}x), "
          f"block-linear sparsity {res.metrics['pruned_fraction']:.3f}, model sparsity {res.metrics['sparsity']:.3f}")
    assert res.metrics["pruned_fraction"] == pytest.approx(0.3, abs=0.005)
    assert base["ppl"] < ppl < 5 * base["ppl"]


def test_lora_20_steps_lowers_perplexity(smol, make_ctx, smol_corpus, base):
    model, tok = smol
    res = run("lora", make_ctx(model, tok, smol_corpus), rank=8, steps=20, lr=2e-3, batch_size=2, seq_len=32)
    ppl = perplexity(res.model, smol_corpus, **EVAL)
    print(f"\n[smollm2] LoRA r8 q/k/v/o, 20 steps of 2x32 tokens: ppl {base['ppl']:.2f} -> {ppl:.2f}, "
          f"{res.metrics['trainable_fraction']:.2%} trainable, {res.metrics['wall_s']:.0f} s")
    assert ppl < base["ppl"]


def test_layer_drop_then_logit_distill_recovers(smol_folder, make_ctx, smol_corpus, base):
    from runners.models import load_checkpoint
    student, tok = load_checkpoint(smol_folder)
    teacher, t_tok = load_checkpoint(smol_folder)  # the unpruned model
    ctx = make_ctx(student, tok, smol_corpus, teacher=(teacher, t_tok))
    drop = run("layer-drop", ctx, fraction=0.2, samples=4, seq_len=128)
    ctx.model = drop.model
    dropped = perplexity(ctx.model, smol_corpus, **EVAL)
    res = run("logit-distill", ctx, steps=12, lr=3e-4, batch_size=2, seq_len=32)
    healed = perplexity(res.model, smol_corpus, **EVAL)
    print(f"\n[smollm2] layer-drop 20% (30 -> {ctx.model.config.num_hidden_layers} blocks): ppl {base['ppl']:.2f} "
          f"-> {dropped:.2f}; logit-distill 12 steps of 2x32: -> {healed:.2f} "
          f"(KL {res.metrics['kl_start']:.3f} -> {res.metrics['kl_end']:.3f}, {res.metrics['wall_s']:.0f} s)")
    assert healed < dropped and res.metrics["kl_end"] < res.metrics["kl_start"]


def test_evaluate_runner_on_smollm2(smol, make_ctx, smol_corpus):
    model, tok = smol
    res = run("evaluate", make_ctx(model, tok, smol_corpus), seq_len=128, ppl_blocks=2, repeats=1,
              decode_tokens=8, serialise=False)
    m = res.metrics
    print(f"\n[smollm2] evaluate fp32 ({torch.get_num_threads()} threads): "
          f"prefill {m['prefill_ms']:.0f} ms / 64 tokens, "
          f"decode {m['decode_ms_per_token']:.0f} ms/token, peak {m['peak_memory_mb']:.0f} MB")
    assert m["prefill_ms"] > 0 and m["decode_ms_per_token"] > 0 and m["peak_memory_mb"] > 500


@pytest.fixture(autouse=True)
def _threads():
    """One thread unless SLMREC_TEST_THREADS says otherwise: on 2 shared cores a second torch
    thread stalls whenever another process holds a core (whole file: 81 s on 1 thread; the GPTQ
    test alone 193 s on 2, measured with one other busy process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("SLMREC_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)
