"""The estimator against arithmetic and architecture facts, and its evidence handling."""

from __future__ import annotations

import copy
import math

import pytest

from slmrec.calibrate import Calibration
from slmrec.estimate import (BANDWIDTH_EFFICIENCY, MB, Arch, Estimator, Workload, compile_option,
                             match_evidence)
from slmrec.schema import DataTier, Evidence, Hardware

pytestmark = pytest.mark.filterwarnings("error")


def est(kb, model="smollm2-360m", hw="rtx-4090", **kw):
    hardware = kw.pop("hardware", None) or kb.hardware[hw]
    return Estimator(kb, Arch.from_card(kb.models[model]), hardware, **kw)


def opt(kb, method, **params):
    m = kb.methods[method]
    p = {k: s.default for k, s in m.params.items() if s.default is not None}
    p.update(params)
    return compile_option(m, p)


def run(e, *options):
    return e.predict_chain(list(options)).final


@pytest.mark.parametrize("model", ["smollm2-135m", "smollm2-360m", "llama-3.2-1b", "qwen2.5-0.5b"])
def test_size_matches_the_arithmetic_at_fp32_bf16_int8_int4(kb, model):
    card = kb.models[model]
    embed = card.vocab * card.hidden * (1 if card.tied_embeddings else 2)
    linear = card.params - embed
    fp32 = run(est(kb, model, base_bits=32))["size_mb"].value
    bf16 = run(est(kb, model))["size_mb"].value
    assert fp32 == pytest.approx(card.params * 4 / MB, rel=1e-4)
    assert bf16 == pytest.approx(card.params * 2 / MB, rel=1e-4)
    # integer formats quantize the linear layers (plus a 32-bit scale+zero per group of 128);
    # embeddings stay at 16 bits
    for bits in (8, 4):
        got = run(est(kb, model), opt(kb, "rtn-weight-only", bits=bits, group_size=128))
        want = (linear * (bits + 32 / 128) + embed * 16) / 8 / MB
        assert got["size_mb"].value == pytest.approx(want, rel=1e-4)
        assert got["bits_per_weight"].value == pytest.approx(want * MB * 8 / card.params, rel=1e-4)
    assert got["params"].value == pytest.approx(card.params)


def test_kv_cache_matches_the_architecture_and_gqa_shrinks_it_by_the_head_ratio(kb):
    card = kb.models["smollm2-360m"]
    wl = Workload(context=4096, prompt_tokens=128, batch=2)
    e = est(kb, workload=wl)
    s = e.initial_state()
    want = 2 * card.layers * card.kv_heads * card.dim_head * 4096 * 2 * 2  # K and V, bf16
    assert e.kv_bytes(s) == want
    mha = Arch.from_card(card)
    mha.kv_heads = card.heads
    e_mha = Estimator(kb, mha, kb.hardware["rtx-4090"], wl)
    assert e_mha.kv_bytes(e_mha.initial_state()) / e.kv_bytes(s) == card.heads / card.kv_heads
    # memory = weights + KV + activations + runtime overhead
    m_gqa = e.metrics(s)[4]
    m_mha = e_mha.metrics(e_mha.initial_state())[4]
    assert m_mha - m_gqa == pytest.approx((e_mha.kv_bytes(e_mha.initial_state()) - want) / MB
                                          + (e_mha.weight_bytes(e_mha.initial_state(), read=False)
                                             - e.weight_bytes(s, read=False)) / MB, rel=1e-6)


def test_kv_cache_quantization_halves_and_quarters_the_cache(kb):
    e = est(kb)
    s = e.initial_state()
    s8 = e.transform(s, opt(kb, "kv-cache-quantization", bits=8))
    s4 = e.transform(s, opt(kb, "kv-cache-quantization", bits=4))
    assert e.kv_bytes(s8) * 2 == e.kv_bytes(s) and e.kv_bytes(s4) * 4 == e.kv_bytes(s)


def test_decode_is_a_bandwidth_roofline_on_a_cpu(kb):
    e = est(kb, "smollm2-360m", "laptop-cpu", workload=Workload(context=1, prompt_tokens=1))
    s = e.initial_state()
    decode = e.metrics(s)[5]
    bytes_read = e.weight_bytes(s, read=True) + e.kv_bytes(s)
    hw = kb.hardware["laptop-cpu"]
    assert decode == pytest.approx(bytes_read / (hw.memory_bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY) * 1000)


def test_unstructured_sparsity_gets_no_credit_without_sparse_kernels(kb):
    base = run(est(kb))
    pruned = run(est(kb), opt(kb, "magnitude-pruning", sparsity=0.5))
    assert pruned["sparsity"].value == 0.5
    assert pruned["size_mb"].value == base["size_mb"].value
    assert pruned["decode_ms_per_token"].value == base["decode_ms_per_token"].value
    sparse_hw = kb.hardware["rtx-4090"].model_copy(update={
        "capabilities": [*kb.hardware["rtx-4090"].capabilities, "unstructured-sparse-kernels"]})
    credited = run(est(kb, hardware=sparse_hw), opt(kb, "magnitude-pruning", sparsity=0.5))
    assert credited["size_mb"].value < base["size_mb"].value
    assert credited["decode_ms_per_token"].value < base["decode_ms_per_token"].value


def test_a_precision_the_hardware_cannot_accelerate_gets_memory_but_no_speed_credit(kb):
    plain = Hardware(id="plain", name="no int kernels", kind="gpu", memory_gb=24,
                     memory_bandwidth_gbs=1000, peak_tflops={"fp16": 100}, precisions=["fp16"],
                     capabilities=["cuda"], sources=["t-hw"])
    q4 = opt(kb, "rtn-weight-only", bits=4)
    base, slow = run(est(kb, hardware=plain)), run(est(kb, hardware=plain), q4)
    fast = run(est(kb), q4)
    assert slow["size_mb"].value < base["size_mb"].value / 2
    assert slow["inference_memory_mb"].value < base["inference_memory_mb"].value
    assert slow["decode_ms_per_token"].value == base["decode_ms_per_token"].value
    assert fast["decode_ms_per_token"].value < run(est(kb))["decode_ms_per_token"].value / 2


def test_structured_pruning_shrinks_params_and_layer_dropping_the_kv_cache(kb):
    e = est(kb)
    s = e.initial_state()
    w = e.transform(s, opt(kb, "structured-width-pruning", fraction=0.2))
    assert w.nonembed == pytest.approx(s.nonembed * 0.8)
    d = e.transform(s, opt(kb, "layer-dropping"))
    assert d.layers == round(s.layers * 0.75) and e.kv_bytes(d) < e.kv_bytes(s)


def test_step_memory_full_finetuning_vs_lora_vs_distillation_vs_gptq(kb):
    e = est(kb, teacher=Arch.from_card(kb.models["smollm2-1.7b"]))
    s = e.initial_state()
    full = e.step_cost(s, opt(kb, "full-finetuning"))
    lora = e.step_cost(s, opt(kb, "lora"))
    distil = e.step_cost(s, opt(kb, "logit-distillation"))
    gptq = e.step_cost(s, opt(kb, "gptq"))
    rtn = e.step_cost(s, opt(kb, "rtn-weight-only"))
    n = kb.models["smollm2-360m"].params
    assert full.peak_memory_mb - lora.peak_memory_mb == pytest.approx(
        (16 * n - (2 * n + 0.01 * n * 16)) / MB, rel=1e-6)   # Adam states vs frozen bf16 + adapters
    assert distil.peak_memory_mb > full.peak_memory_mb + kb.models["smollm2-1.7b"].params * 2 / MB
    assert gptq.peak_memory_mb > rtn.peak_memory_mb          # Hessians and calibration activations
    assert gptq.tflop > 0 == rtn.tflop
    assert full.tflop == pytest.approx(6 * n * 2e6 / 1e12)


def test_quality_compounds_and_recovery_takes_back_a_share(kb):
    e = est(kb, teacher=Arch.from_card(kb.models["smollm2-1.7b"]))
    prune = opt(kb, "structured-width-pruning", fraction=0.2)   # 8..25 %, midpoint 16.5
    q4 = opt(kb, "gptq", bits=4)                                 # 1..4 %, midpoint 2.5
    both = run(e, prune, q4)["quality_loss_pct"]
    assert both.value == pytest.approx((1.165 * 1.025 - 1) * 100, rel=1e-4)
    assert both.low == pytest.approx((1.08 * 1.01 - 1) * 100, rel=1e-4)
    assert both.high == pytest.approx((1.25 * 1.04 - 1) * 100, rel=1e-4)
    healed = run(e, prune, opt(kb, "logit-distillation"), q4)["quality_loss_pct"]   # r 0.4..0.8
    assert healed.value == pytest.approx(((1 + 0.165 * 0.4) * 1.025 - 1) * 100, rel=1e-4)
    assert healed.basis == "evidence" and "t-distill" in healed.sources and "t-prune" in healed.sources


def test_evidence_matching_interpolation_and_gaps():
    ev = [Evidence(low=2, high=10, source="s", when={"sparsity": 0.3}),
          Evidence(low=10, high=60, source="s", when={"sparsity": 0.5})]
    assert match_evidence(ev, {"sparsity": 0.3}).value == 6
    mid = match_evidence(ev, {"sparsity": 0.4})
    assert mid.value == pytest.approx(20.5) and mid.low == 2 and mid.high == 60 and "interpolated" in mid.note
    assert match_evidence(ev, {"sparsity": 0.7}) == "uncovered"
    assert match_evidence([], {}) is None
    assert match_evidence([Evidence(source="s", basis="unpublished", note="n")], {}) == "unpublished"
    general = [Evidence(low=1, high=3, source="a"), Evidence(low=0, high=1, source="b", when={"bits": 8})]
    assert match_evidence(general, {"bits": 8}).sources == ("b",)
    assert match_evidence(general, {"bits": 4}).sources == ("a",)


def test_lossy_method_without_evidence_has_unknown_quality(kb):
    o = opt(kb, "gptq", bits=4)
    assert o.quality_status == "ok"
    m = kb.methods["nf4"].model_copy(deep=True)
    m.effects.quality = []
    o = compile_option(m, {})
    assert o.quality is None and o.quality_status == "missing"
    assert compile_option(kb.methods["perplexity-eval"], {}).quality_status == "lossless"


def test_calibration_corrects_and_marks_the_basis(kb):
    rows = [{"method": "gptq", "metric": "size_mb", "predicted": p, "measured": p * 1.2}
            for p in (100.0, 200.0, 300.0, 400.0)]
    cal = Calibration.fit(rows)
    plain = run(est(kb), opt(kb, "gptq"))["size_mb"]
    got = run(est(kb, calibration=cal), opt(kb, "gptq"))["size_mb"]
    assert got.basis == "calibrated" and plain.basis == "analytic"
    # four rows: moved towards the measured 1.2x, shrunk towards the prior
    assert plain.value * 1.05 < got.value <= plain.value * 1.2 * 1.01
    assert "4 measured row" in got.note
    assert got.low < got.value < got.high or got.low <= got.value <= got.high
    assert math.isfinite(cal.lower("size_mb", 10.0))


def test_evidence_near_the_model_scale_sets_the_value():
    from slmrec.estimate import match_evidence

    evs = [Evidence(low=1.0, high=2.0, source="s", model_params=7e9),
           Evidence(low=1.5, high=1.5, source="s", model_params=13e9),
           Evidence(low=30.0, high=34.0, source="s", model_params=1.35e8, basis="measured")]
    small = match_evidence(evs, {}, model_params=1.35e8)
    big = match_evidence(evs, {}, model_params=7e9)
    assert small.value == pytest.approx(32.0) and small.low == 1.0 and small.high == 34.0
    assert "near this model's scale" in small.note
    assert big.value == pytest.approx(1.5)          # the 7B and 13B papers decide at 7B
    assert match_evidence(evs, {}).value == pytest.approx(1.5)   # no scale: plain median


@pytest.mark.parametrize("have,expect_tokens,says", [
    (None, 262144.0, "gives no calibration amount"),
    (128 * 512.0, 128 * 512.0, "the scenario's calibration data"),
    (1e7, 262144.0, "the scenario has"),
])
def test_steps_use_the_scenarios_amount_or_say_why_not(kb, have, expect_tokens, says):
    m = kb.methods["gptq"].model_copy(deep=True)
    m.cost.tokens = 262144.0
    m.requires.data = DataTier.calibration
    kb2 = copy.copy(kb)
    kb2.methods = {**kb.methods, "gptq": m}
    e = Estimator(kb2, Arch.from_card(kb.models[next(iter(kb.models))]),
                  kb.hardware[next(iter(kb.hardware))],
                  data_tokens={"calibration": have} if have else {})
    tokens, why = e.step_amount(compile_option(m, {"bits": 4}))
    assert tokens == expect_tokens and says in why
