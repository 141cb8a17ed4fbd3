"""Depth of the shipped KB: catalogue, method families, sourced figures, corroborated relations."""

from __future__ import annotations

import pytest

from slmrec.kb import load_kb
from slmrec.kb_coverage import coverage
from slmrec.schema import EvidenceBasis, RelationKind

EFFECT_KINDS = ("quality", "recovery", "speedup", "task_gain")


@pytest.fixture(scope="module")
def kb():
    return load_kb()


def test_goals_of_the_depth_issue(kb):
    assert len(kb.methods) >= 200
    assert len(kb.models) >= 30
    assert len(kb.relations) >= 800
    # at least 60% of effects carry a published or measured figure; a not-transferable note or
    # an unpublished one does not count
    assert coverage(kb)["effects"]["share_with_figure"] >= 0.6


def _shape_params(b) -> float:
    """Parameters the card's shapes give: per-layer means where layers differ (layer-wise
    scaling), per-layer embedding tables counted where the card has them."""
    hd = b.dim_head
    attn = 2 * b.hidden * b.mean_heads * hd + 2 * b.hidden * b.mean_kv_heads * hd
    mlp = (3 if b.mlp == "gated" else 2) * b.hidden * b.mean_intermediate
    return (b.vocab * b.hidden * (1 if b.tied_embeddings else 2) + b.layers * (attn + mlp)
            + (b.per_layer_embedding_params or 0))


def test_catalogue_counts_agree_with_shapes(kb):
    """A typo in a config field shows as a parameter count the shapes cannot produce (biases and
    norms are well under 1%); hybrid models with non-attention blocks are exempt. Gemma 3n's
    AltUp, LAuReL and per-layer projections (about 1.4% of E2B) are not in the shapes: 2% there."""
    for b in kb.models.values():
        if b.attention_layers:
            continue
        tol = 0.02 if b.per_layer_embedding_params else 0.01
        assert abs(_shape_params(b) / b.params - 1) < tol, (b.id, b.params, _shape_params(b))


# Published sizes of the layer-wise scaled OpenELM family (paper and model names): the cards'
# counts from their per-layer widths must round to them.
OPENELM = {"openelm-270m": 0.27e9, "openelm-450m": 0.45e9, "openelm-1.1b": 1.1e9,
           "openelm-3b": 3.0e9}


@pytest.mark.parametrize("model,published", sorted(OPENELM.items()))
def test_layer_wise_scaled_cards_match_published_sizes(kb, model, published):
    b = kb.models[model]
    assert b.layer_widths is not None
    # the uniform fields alone (the widest layer everywhere) would overshoot by far
    uniform = (b.vocab * b.hidden + b.layers * (2 * b.hidden * (b.heads + b.kv_heads) * b.dim_head
                                                + 3 * b.hidden * b.intermediate))
    assert uniform > 1.4 * b.params
    assert abs(_shape_params(b) / published - 1) < 0.03, (model, _shape_params(b))
    assert abs(b.params / published - 1) < 0.03, (model, b.params)


def test_gemma_3n_total_and_effective_params(kb):
    for model, effective in (("gemma-3n-e2b", 1.91e9), ("gemma-3n-e4b", 3.98e9)):
        b = kb.models[model]
        assert b.effective_params == effective
        assert b.params - b.per_layer_embedding_params > b.effective_params
        assert b.kv_shared_layers and b.kv_shared_layers < b.layers


@pytest.mark.parametrize("family", [
    "qwen3", "smollm3", "gemma-2", "gemma-3", "phi-4", "mobilellm", "minicpm", "stablelm-2", "olmo-2",
    "granite-3", "lfm2", "deepseek-r1-distill", "gemma-3n", "openelm"])
def test_current_families_in_catalogue(kb, family):
    assert any(b.family == family for b in kb.models.values())


def test_sliding_window_patterns_recorded(kb):
    gemma2 = kb.models["gemma-2-2b"]
    assert (gemma2.sliding_window, gemma2.global_every) == (4096, 2)
    gemma3 = kb.models["gemma-3-4b"]
    assert (gemma3.sliding_window, gemma3.global_every) == (1024, 6)
    assert all(b.attention_layers < b.layers for b in kb.models.values() if b.attention_layers)


# Families the depth issue names, and one method id that must stand for each.
FAMILIES = {
    "GGUF i-quants": "gguf-i-quants", "rotation W4A4": "quarot", "learned rotations": "spinquant",
    "MXFP4": "mxfp4", "NVFP4": "nvfp4", "EXL2": "exl2", "LoftQ": "loftq", "PV-Tuning": "pv-tuning",
    "OWL": "owl-sparsity", "FLAP": "flap-pruning", "vocabulary trimming": "vocabulary-trimming",
    "DistiLLM": "distillm", "ULD": "uld-cross-tokenizer-distillation",
    "reasoning traces": "reasoning-trace-distillation", "PiSSA": "pissa", "ReFT": "reft",
    "LISA": "lisa", "Spectrum": "spectrum", "IPO": "ipo", "reward modelling": "reward-modelling",
    "RLAIF": "rlaif", "Constitutional AI": "constitutional-ai",
    "rejection sampling": "rejection-sampling-finetuning", "STaR": "star-self-taught-reasoner",
    "best-of-N": "best-of-n-sampling", "LIMA": "lima-data-curation", "DEITA": "deita-data-selection",
    "IFD": "ifd-data-selection", "Evol-Instruct": "evol-instruct", "LLM judge": "llm-as-a-judge",
    "IFEval": "ifeval", "RULER": "ruler-long-context-eval", "NIAH": "needle-in-a-haystack-eval",
    "hallucination": "hallucination-eval", "calibration": "calibration-eval",
    "Medusa": "medusa-heads", "EAGLE": "eagle-speculative", "prompt lookup": "prompt-lookup-decoding",
    "self-speculative": "self-speculative-decoding", "lookahead": "lookahead-decoding",
    "StreamingLLM": "streaming-llm-attention-sinks", "H2O": "h2o-kv-eviction", "SnapKV": "snapkv",
    "constrained output": "constrained-decoding", "chunked prefill": "chunked-prefill",
    "MLX": "mlx-runtime", "LiteRT": "litert-mediapipe-runtime", "SGLang": "sglang-serving",
    "Ollama": "ollama-runtime", "llamafile": "llamafile-runtime", "QNN": "qnn-npu-runtime",
    "WebLLM": "webllm-runtime", "transformers.js": "transformers-js-runtime",
    "bitnet.cpp": "bitnet-cpp-runtime", "T-MAC": "t-mac-runtime", "RWKV": "rwkv-architecture",
}


@pytest.mark.parametrize("family,method", sorted(FAMILIES.items()))
def test_named_family_is_a_complete_method(kb, family, method):
    m = kb.methods[method]
    assert all(g in kb.goals for g in m.serves), method  # empty: a supporting step (goals.yaml)
    assert m.sources and m.summary
    linked = kb.relations_from(method) + kb.relations_to(method)
    assert linked, f"{method} has no relations"


def test_methods_added_for_depth_serve_goals(kb):
    added = [m for m in kb.methods.values() if kb.where(m.id).split(":")[0].endswith("-extra.yaml")]
    assert len(added) >= 50
    # kb/goals.yaml says which kinds of step may serve a goal; supporting steps (data selection,
    # evaluation helpers) serve none, the rest must name one.
    assert sum(1 for m in added if m.serves) >= 40


def test_speed_figures_say_what_they_time(kb):
    """Every speed-up the depth work added names its scope; prefill/throughput/training figures
    are there for people, and the estimator reads decode ones only."""
    for m in kb.methods.values():
        if not kb.where(m.id).split(":")[0].endswith("-extra.yaml"):
            continue
        for ev in m.effects.speedup:
            assert ev.scope is not None, (m.id, ev.source)


def test_figures_against_another_baseline_say_so(kb):
    """A figure against full fine-tuning, LoRA or another system names it in `versus`; the
    estimator reads only input-relative quality (tests/kb/test_schema_fields.py)."""
    for m in kb.methods.values():
        for kind in EFFECT_KINDS:
            for ev in getattr(m.effects, kind):
                text = f"{ev.setting or ''} {ev.note or ''}".lower()
                if ev.low is not None and " vs full fine-tuning" in text:
                    assert ev.versus, (m.id, kind, ev.source)


def test_relation_corrections(kb):
    spec = kb.relations[("speculative-decoding", "requires", "slm-draft-model")]
    assert spec.condition and "universal assisted generation" in spec.condition
    assert ("task-benchmark-eval", "requires", "benchmark-decontamination") not in kb.relations
    assert ("benchmark-decontamination", "precedes", "task-benchmark-eval") in kb.relations
    for r in kb.relations.values():
        if r.kind is RelationKind.recovers and r.dst in ("magnitude-pruning", "wanda", "sparsegpt") \
                and "distillation" in r.src:
            assert r.condition and "mask" in r.condition, r.id
        if r.kind is RelationKind.precedes and "quantize last" in r.note:
            assert r.condition and "post-training" in r.condition, r.id


def test_ordering_relations_are_corroborated(kb):
    alone = [r.id for r in kb.relations.values()
             if r.sources == ["chhawri2025-compression-ordering"]]
    assert not alone, alone[:5]


def test_coverage_report_counts_agree_with_the_kb(kb):
    data = coverage(kb)
    evs = [ev for m in kb.methods.values() for k in EFFECT_KINDS for ev in getattr(m.effects, k)]
    figures = [ev for ev in evs if ev.low is not None]
    assert data["effects"]["total"] == len(evs)
    assert data["effects"]["with_figure"] == len(figures)
    assert data["effects"]["by_basis"].get("not-transferable", 0) == sum(
        1 for ev in evs if ev.basis is EvidenceBasis.not_transferable)
    assert data["relations"]["two_or_more_sources"] == sum(
        1 for r in kb.relations.values() if len(set(r.sources)) >= 2)
    assert data["catalogue"]["models"] == len(kb.models)
    runnable = {m.family for m in kb.methods.values() if m.runner}
    assert not set(data["families_without_runner"]) & runnable
