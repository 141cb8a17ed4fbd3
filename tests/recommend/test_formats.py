"""Per-tensor checkpoint formats, architecture cards and runtime profiles (kb/formats.yaml,
kb/runtimes.yaml), table-driven over shapes built here."""

from __future__ import annotations

import pytest

from slmrec.estimate import Arch, Estimator, Shape, Workload, formats_of
from slmrec.estimate.runtimes import runtime_for_methods


@pytest.fixture(scope="module")
def kb():
    from slmrec.kb import load_kb

    return load_kb()   # the shipped KB: its formats and runtime profiles are under test


@pytest.fixture(scope="module")
def fm(kb):
    return formats_of(kb)


# Llama-3.2-1B: tied 128256 x 2048 table, 16 layers, GQA 4
LLAMA_1B = Shape(16, 2048, 8192, 32, 8, 64, 128256, True)
# Qwen2.5-0.5B: hidden 896 is not a multiple of 256 -> K-quants fall back on those rows
QWEN_05B = Shape(24, 896, 4864, 14, 2, 64, 151936, True)


@pytest.mark.parametrize("fmt,low,high", [
    ("gguf-q4-k-m", 0.79e9, 0.82e9),   # published 0.81 GB (bartowski)
    ("gguf-q4-k-s", 0.76e9, 0.79e9),   # 0.78 GB
    ("gguf-q4-k-l", 0.85e9, 0.88e9),   # 0.87 GB
    ("gguf-q8-0", 1.30e9, 1.33e9),     # 1.32 GB
    ("gguf-f16", 2.46e9, 2.49e9),      # 2.48 GB
])
def test_gguf_mixtures_match_published_sizes(fm, fmt, low, high):
    assert low <= fm.size_bytes(fmt, LLAMA_1B) <= high


def test_k_quant_mixes_differ_and_tied_table_takes_output_type(fm):
    s, m, l = (fm.size_bytes(f, LLAMA_1B) for f in ("gguf-q4-k-s", "gguf-q4-k-m", "gguf-q4-k-l"))
    assert s < m < l
    types = {t.cls: typ.id for t, typ in fm.layout("gguf-q4-k-m", LLAMA_1B)}
    assert types["output"] == "ggml-q6-k" and "embed" not in types   # one shared table, at Q6_K


def test_rows_not_multiple_of_256_fall_back(fm):
    types = {(t.cls, t.layer): typ.id for t, typ in fm.layout("gguf-q4-k-m", QWEN_05B)}
    assert types[("attn_q", 5)] == "ggml-q5-0"        # 896 columns: Q4_K -> Q5_0
    assert types[("ffn_down", 5)] in ("ggml-q4-k", "ggml-q6-k")   # 4864 = 19 * 256 columns: no fallback
    assert types[("output", None)] == "ggml-q8-0"     # Q6_K -> Q8_0


def test_untied_export_writes_the_table_twice(fm):
    layout = fm.layout("executorch-8da4w", LLAMA_1B)
    assert {t.cls for t, _ in layout} >= {"embed", "output"}
    assert fm.size_bytes("executorch-8da4w", LLAMA_1B) > fm.size_bytes("gguf-q4-0", LLAMA_1B)


def test_plain_mlp_counts_two_matrices(kb):
    # Phi-2-like: 2560 hidden, 10240 intermediate, plain fc1/fc2
    plain = Arch("p", 2.78e9, 32, 2560, 10240, 32, 32, 80, 51200, 2048, False, mlp="plain")
    gated = Arch("g", 2.78e9, 32, 2560, 10240, 32, 32, 80, 51200, 2048, False)
    hw = kb.hardware["laptop-2core-avx2"]
    s_plain = Estimator(kb, plain, hw).initial_state()
    s_gated = Estimator(kb, gated, hw).initial_state()
    assert s_plain.mlp == pytest.approx(2 * 2560 * 10240 * 32)
    assert s_gated.mlp < 3 * 2560 * 10240 * 32   # scaled down to the card's total


def test_sliding_window_layers_shrink_the_kv_cache(kb):
    hw = kb.hardware["laptop-2core-avx2"]
    full = Arch("f", 1e9, 26, 1152, 6912, 4, 1, 256, 262144, 32768, True)
    local = Arch("l", 1e9, 26, 1152, 6912, 4, 1, 256, 262144, 32768, True, sliding_window=512,
                 global_every=6)
    wl = Workload(context=8192)
    kv_full = Estimator(kb, full, hw, wl)
    kv_local = Estimator(kb, local, hw, wl)
    a, b = kv_full.kv_bytes(kv_full.initial_state()), kv_local.kv_bytes(kv_local.initial_state())
    assert b == pytest.approx(a * (4 * 8192 + 22 * 512) / (26 * 8192))


def test_moe_reads_only_active_experts(kb):
    hw = kb.hardware["laptop-2core-avx2"]
    dense = Arch("d", 3e9, 24, 2048, 8192, 16, 4, 128, 32000, 4096, False)
    moe = Arch("m", 3e9, 24, 2048, 8192, 16, 4, 128, 32000, 4096, False, active_params=1e9)
    ed, em = Estimator(kb, dense, hw), Estimator(kb, moe, hw)
    assert em.weight_bytes(em.initial_state(), read=True) < \
        0.6 * ed.weight_bytes(ed.initial_state(), read=True)


def test_runtime_profiles_differ_and_come_from_the_deployment_step(kb):
    hw = kb.hardware["a100-80gb-sxm"]
    arch = Arch.from_card(kb.models["qwen2.5-0.5b"])
    hf = Estimator(kb, arch, hw, runtime="runtime-hf-transformers")
    vl = Estimator(kb, arch, hw, runtime="runtime-vllm")
    d_hf, d_vl = hf.metrics(hf.initial_state())[5], vl.metrics(vl.initial_state())[5]
    assert d_hf > 3 * d_vl   # eager per-layer overhead vs CUDA graphs (published 47 vs 312 tok/s)
    assert runtime_for_methods(kb, ["gptq", "llama-cpp-runtime"]) == "runtime-llama-cpp"


def test_unknown_format_is_a_one_line_error(fm):
    from slmrec.errors import SlmrecError

    with pytest.raises(SlmrecError, match="gguf-q4-k-m"):
        fm.get("gguf-q4-km")


def test_a_plans_runtime_step_applies_to_that_plan_only(kb):
    from slmrec.estimate import compile_option, default_params

    hw = kb.hardware["a100-80gb-sxm"]
    est = Estimator(kb, Arch.from_card(kb.models["qwen2.5-0.5b"]), hw)
    rt = kb.methods["vllm-serving"]
    with_rt = est.predict_chain([compile_option(rt, default_params(rt))]).final
    plain = est.predict_chain([]).final
    assert with_rt["decode_ms_per_token"].value < plain["decode_ms_per_token"].value
    assert est.profile.runtime == "runtime-hf-transformers"   # restored after the call


def test_gguf_k_quants_step_writes_the_kb_mixture(kb):
    # the case: Llama-3.2-1B Q4_K_M was predicted at 1.07 GB; llama.cpp writes 0.81 GB
    from slmrec.estimate import compile_option

    est = Estimator(kb, Arch.from_card(kb.models["llama-3.2-1b"]), kb.hardware["laptop-2core-avx2"])
    opt = compile_option(kb.methods["gguf-k-quants"], {"bits": 4})
    assert opt.format == "gguf-q4-k-m"
    size = est.predict_chain([opt]).final["size_mb"].value
    assert 790 <= size <= 820


@pytest.mark.parametrize("gguf_type,low,high", [
    ("Q8_0", 141.0, 146.0),   # the export runner wrote a 144.8 MB Q8_0 file after 4-bit GPTQ
    ("Q4_0", 86.0, 93.0),     # Q4_0 matrices, table kept at Q8_0 (runners/export/gguf.py)
    ("F16", 265.0, 272.0),
])
def test_export_step_size_follows_the_format_it_writes(kb, gguf_type, low, high):
    # a 4-bit GPTQ model exported to GGUF is stored at the export's type, not at 4 bits
    from slmrec.estimate import compile_option, default_params

    est = Estimator(kb, Arch.from_card(kb.models["smollm2-135m"]), kb.hardware["laptop-2core-avx2"])
    g, e = kb.methods["gptq"], kb.methods["gguf-export"]
    chain = [compile_option(g, {**default_params(g), "bits": 4}),
             compile_option(e, {**default_params(e), "gguf_type": gguf_type})]
    steps = est.predict_chain(chain).steps
    assert steps[0]["size_mb"].value < 90
    assert low <= steps[1]["size_mb"].value <= high


@pytest.mark.parametrize("first,params,low,high", [
    # measured: GPTQ int4 carried into Q4_1 wrote 98.4 MB (README, Deploy), RTN/GPTQ int8 into
    # Q8_0 144.8 MB, a float model F16 270.9 MB (bench/results/deploy_formats.json)
    ("gptq", {"bits": 4}, 95.0, 101.0),
    ("gptq", {"bits": 8}, 141.0, 147.0),
    (None, {}, 265.0, 272.0),
])
def test_auto_export_follows_the_bits_it_receives(kb, first, params, low, high):
    from slmrec.estimate import compile_option, default_params

    est = Estimator(kb, Arch.from_card(kb.models["smollm2-135m"]), kb.hardware["laptop-2core-avx2"])
    e = kb.methods["gguf-export"]
    chain = [compile_option(e, default_params(e))]
    assert chain[0].params["gguf_type"] == "auto"
    if first:
        m = kb.methods[first]
        chain.insert(0, compile_option(m, {**default_params(m), **params}))
    assert low <= est.predict_chain(chain).steps[-1]["size_mb"].value <= high
