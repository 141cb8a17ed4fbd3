"""Exported files, opened by their standard consumers and compared with the source model:
GGUF through the gguf reader, transformers' GGUF loader and llama.cpp; ONNX (fp32, int8, int4
MatMulNBits) through ONNX Runtime, prefill and KV-cache decode; the runtime sessions' latency and
perplexity measurements name the runtime they measured."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runners.models import tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")
IDS = [5, 17, 42, 99, 7, 250, 3, 11, 64, 128]
# GGUF type -> max |logit difference| allowed against the float model, as a fraction of max |logit|
GGUF_TOL = {"F16": 2e-3, "Q8_0": 2e-2, "Q4_0": 0.15}


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)


@pytest.fixture(scope="module")
def ref(tiny):
    with torch.no_grad():
        return tiny[0](input_ids=torch.tensor([IDS])).logits[0].numpy()


@pytest.fixture(scope="module")
def ggufs(tiny, tmp_path_factory):
    from runners.export.gguf import export_gguf
    folder = tmp_path_factory.mktemp("gguf")
    return {q: export_gguf(tiny[0], tiny[1], folder / f"tiny.{q}.gguf", q) for q in GGUF_TOL}


def test_gguf_reads_back_with_llama_names_metadata_and_tokenizer(ggufs, tiny):
    import gguf
    model, tok = tiny
    r = gguf.GGUFReader(str(ggufs["Q4_0"]))
    kv = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}
    assert kv["general.architecture"] == "llama"
    assert kv["llama.block_count"] == 2 and kv["llama.embedding_length"] == 64
    assert kv["llama.attention.head_count"] == 4 and kv["llama.attention.head_count_kv"] == 2
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["blk.1.ffn_down.weight"] == "Q4_0"
    assert types["token_embd.weight"] == "Q8_0" and types["output_norm.weight"] == "F32"
    assert "output.weight" not in types  # tied head: llama.cpp reuses token_embd
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == model.config.vocab_size
    assert tokens[tok.convert_tokens_to_ids("the")] == "the" or "the" not in tok.get_vocab()
    assert len(r.fields["tokenizer.ggml.merges"].data) > 0


@pytest.mark.parametrize("qtype", list(GGUF_TOL))
def test_gguf_loads_in_transformers_with_the_source_logits(qtype, ggufs, ref):
    from transformers import AutoModelForCausalLM
    path = ggufs[qtype]
    m = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        got = m(input_ids=torch.tensor([IDS])).logits[0].numpy()
    assert np.abs(got - ref).max() < GGUF_TOL[qtype] * np.abs(ref).max()


def test_gguf_runs_in_llama_cpp_with_the_source_logits(ggufs, ref, tiny):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is the optional `deploy` extra")
    from runners.runtime import open_session
    from runners.runtime.measure import latency
    for qtype, tol in GGUF_TOL.items():
        sess = open_session("llama.cpp", ggufs[qtype])
        got = sess.logits(IDS)
        assert np.abs(got - ref).max() < tol * np.abs(ref).max(), qtype
        step = sess.prefill(IDS[:6])  # KV-cache decode gives the full-sequence logits
        for i in range(6, len(IDS)):
            step = sess.step(IDS[i])
        assert np.abs(step - ref[-1]).max() < tol * np.abs(ref).max(), qtype
    lat = latency(sess, tiny[0].config.vocab_size, prompt_len=8, new_tokens=4, repeats=1)
    assert lat["runtime"] == "llama.cpp" and lat["decode_ms_per_token"] > 0


@pytest.fixture(scope="module")
def onnx_models(tiny, tmp_path_factory):
    from runners.export.onnx import export_onnx, quantize_onnx
    folder = tmp_path_factory.mktemp("onnx")
    base = export_onnx(tiny[0], folder / "fp32")
    return {"none": base, **{q: quantize_onnx(base, folder / q / "model.onnx", q, 32) for q in ("int8", "int4")}}


# ONNX variant -> max |logit difference| allowed against the float model, as a fraction of max |logit|
ONNX_TOL = {"none": 1e-5, "int8": 1e-2, "int4": 0.15}


@pytest.mark.parametrize("quant", list(ONNX_TOL))
def test_onnx_runs_in_onnxruntime_with_the_source_logits(quant, onnx_models, ref):
    import onnx

    from runners.runtime import open_session
    graph = onnx.load(str(onnx_models[quant]), load_external_data=False).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    if quant == "none":
        assert not nbits
    else:  # every projection (2 layers x 7) quantized, with the requested bits
        assert len(nbits) >= 14
        assert {a.i for n in nbits for a in n.attribute if a.name == "bits"} == {int(quant[-1])}
    sess = open_session("onnxruntime", onnx_models[quant])
    tol = ONNX_TOL[quant] * np.abs(ref).max()
    assert np.abs(sess.logits(IDS) - ref).max() < tol
    step = sess.prefill(IDS[:6])
    for i in range(6, len(IDS)):
        step = sess.step(IDS[i])
    assert np.abs(step - ref[-1]).max() < tol


def test_int4_error_exceeds_int8_error(onnx_models, ref):
    """The tolerances above are not loose enough to hide a quantizer that did nothing."""
    from runners.runtime import open_session
    err = {q: np.abs(open_session("onnxruntime", onnx_models[q]).logits(IDS) - ref).max() for q in ONNX_TOL}
    assert err["none"] < err["int8"] < err["int4"]


def test_sessions_measure_latency_and_perplexity_in_their_runtime(onnx_models, tiny):
    from runners.runtime import open_session
    from runners.runtime.measure import latency, perplexity
    blocks = [IDS, IDS[::-1]]
    torch_s, ort_s = open_session("pytorch", tiny[0]), open_session("onnxruntime", onnx_models["none"])
    assert perplexity(ort_s, blocks) == pytest.approx(perplexity(torch_s, blocks), rel=1e-4)
    for s, name in ((torch_s, "pytorch"), (ort_s, "onnxruntime")):
        lat = latency(s, tiny[0].config.vocab_size, prompt_len=8, new_tokens=4, repeats=1)
        assert lat["runtime"] == name and lat["prefill_ms"] > 0 and lat["decode_ms_per_token"] > 0


def test_unknown_runtime_is_one_line_with_a_suggestion():
    from runners.runtime import open_session
    from slmrec.errors import SlmrecError
    with pytest.raises(SlmrecError, match="did you mean 'onnxruntime'"):
        open_session("onnxruntim", None)


def test_greedy_generation_matches_between_pytorch_and_onnxruntime(onnx_models, tiny):
    from runners.runtime import open_session
    from runners.runtime.measure import generate
    model, tok = tiny
    ours = generate(open_session("pytorch", model), tok, "The module", new_tokens=6)
    assert ours  # the untrained tiny model does not stop at once
    theirs = generate(open_session("onnxruntime", onnx_models["none"]), tok, "The module", new_tokens=6)
    assert ours == theirs
