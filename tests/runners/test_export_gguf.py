"""GGUF export of packed GPTQ/RTN models: codes carried into Q4_0/Q4_1/Q8_0 blocks as they are
(the gguf reader's dequantisation equals slmrec's), `auto` follows the model's bits, grids no
block type holds are re-quantized and said so; in llama.cpp (when the `deploy` extra is
installed) the carried file and llama.cpp's k-quants run with the source model's logits."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from runners.models import tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")
IDS = [5, 17, 42, 99, 7, 250, 3, 11, 64, 128]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)


def _packed(tiny, bits, group, embedding_bits=8, symmetric=False):
    from runners.quant.qlinear import QuantLinear
    from runners.quant.rtn import linear_names, quantize_embeddings, quantize_rtn
    m = copy.deepcopy(tiny[0])
    if symmetric:  # a symmetric 4-bit grid (zero point 8), the one Q4_0 holds
        from runners.models import replace_module
        for name in linear_names(m):
            w = m.get_submodule(name).weight.detach()
            scale = (w.abs().view(w.shape[0], -1, group).amax(-1) / 7).half().float().clamp(min=1e-6)
            codes = (w / scale.repeat_interleave(group, 1) + 8).round().clamp(0, 15).to(torch.uint8)
            replace_module(m, name, QuantLinear.from_codes(codes, scale, torch.full_like(scale, 8), 4, group))
    else:
        quantize_rtn(m, bits, group)
    quantize_embeddings(m, embedding_bits, group)
    return m


def _read(path):
    import gguf
    r = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, gguf.quants.dequantize(t.data, t.tensor_type)) for t in r.tensors}


def _reference(model, gname):
    """slmrec's own dequantised weight of a GGUF tensor, q/k rows in llama.cpp's order."""
    from runners.export.gguf import _permute
    layer = model.model.layers[int(gname.split(".")[1])]
    part = {"attn_q": layer.self_attn.q_proj, "attn_k": layer.self_attn.k_proj,
            "ffn_down": layer.mlp.down_proj, "ffn_up": layer.mlp.up_proj}[gname.split(".")[2]]
    w = part.dequantize().numpy()
    cfg = model.config
    heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}.get(gname.split(".")[2])
    return _permute(w, heads) if heads else w


MATRICES = ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.ffn_down.weight", "blk.1.ffn_up.weight"]


# (bits, group, symmetric, requested type) -> type written, max |diff| allowed as a fraction of the
# largest scale: 0 = bit-exact; Q4_1 stores its min (-scale * zero) in fp16 (<= 2^-11 * 15 * scale)
@pytest.mark.parametrize("bits,group,symmetric,qtype,written,tol", [
    (4, 32, False, "auto", "Q4_1", 15 * 2**-11),
    (4, 64, False, "Q4_1", "Q4_1", 15 * 2**-11),
    (4, 32, False, "Q8_0", "Q8_0", 0.0),   # every 4-bit grid fits int8
    (4, 32, True, "auto", "Q4_0", 0.0),
    (4, 64, True, "Q4_0", "Q4_0", 0.0),
])
def test_packed_codes_are_carried_into_gguf_blocks_unchanged(tiny, tmp_path, bits, group, symmetric,
                                                             qtype, written, tol):
    from runners.export.gguf import export_gguf
    model = _packed(tiny, bits, group, symmetric=symmetric)
    log: dict = {}
    tensors = _read(export_gguf(model, tiny[1], tmp_path / "m.gguf", qtype, log=log))
    assert log["type"] == written and log["carried"] == 14   # 2 layers x 7 linears
    assert set(log["requantized"]) == {"token_embd.weight"}  # the 8-bit asymmetric table
    for name in MATRICES:
        ttype, got = tensors[name]
        ref = _reference(model, name)
        assert ttype == written and got.shape == ref.shape
        scale = max(float(m.scales.float().max()) for m in model.modules() if hasattr(m, "scales"))
        assert np.abs(got - ref).max() <= tol * scale, name
    if tol == 0.0:
        assert all(np.array_equal(tensors[n][1], _reference(model, n)) for n in MATRICES)


def test_requantizing_instead_of_carrying_is_measurably_worse(tiny, tmp_path):
    """Q4_0 of an asymmetric 4-bit model cannot hold its codes: re-quantized, and said why."""
    from runners.export.gguf import export_gguf
    model = _packed(tiny, 4, 32)
    log: dict = {}
    tensors = _read(export_gguf(model, tiny[1], tmp_path / "m.gguf", "Q4_0", log=log))
    assert log["carried"] == 0 and "symmetric" in log["requantized"]["blk.1.ffn_down.weight"]
    err = np.abs(tensors["blk.1.ffn_down.weight"][1] - _reference(model, "blk.1.ffn_down.weight")).max()
    assert err > 10 * 15 * 2**-11 * float(model.model.layers[1].mlp.down_proj.scales.float().max())


@pytest.mark.parametrize("bits,group,embedding_bits,written,carried", [
    (None, None, None, "F16", 0),   # a float model: format change only
    (8, 32, 8, "Q8_0", 0),          # 8-bit asymmetric codes leave int8: re-quantized to Q8_0
    (4, 16, 8, "Q4_1", 0),          # groups of 16 do not fill a 32-wide block: re-quantized
    (4, 64, None, "Q4_1", 14),      # float table: only the matrices are packed
])
def test_auto_follows_the_bits_of_the_model_it_receives(tiny, tmp_path, bits, group, embedding_bits,
                                                        written, carried):
    from runners.export.gguf import export_gguf
    model = tiny[0] if bits is None else _packed(tiny, bits, group, embedding_bits)
    log: dict = {}
    tensors = _read(export_gguf(model, tiny[1], tmp_path / "m.gguf", "auto", log=log))
    assert log["type"] == written and log["carried"] == carried
    assert tensors["blk.0.ffn_up.weight"][0] == written
    if bits and not carried:
        assert "blk.0.ffn_up.weight" in log["requantized"]


def test_untied_packed_table_and_head_are_written_once_each(tmp_path):
    from runners.export.gguf import export_gguf
    tiny = tiny_model(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512,
                      tie_embeddings=False)
    model = _packed(tiny, 4, 32)  # the head is quantized with the linears, the table on its own
    log: dict = {}
    tensors = _read(export_gguf(model, tiny[1], tmp_path / "m.gguf", "auto", log=log))
    assert tensors["output.weight"][0] == "Q8_0" and tensors["token_embd.weight"][0] == "Q8_0"
    assert log["carried"] == 8 and set(log["requantized"]) == {"token_embd.weight"}  # 7 linears + head
    table = model.get_input_embeddings().table.dequantize().numpy()
    assert np.abs(tensors["token_embd.weight"][1] - table).max() < 0.01 * np.abs(table).max()


def test_k_quant_without_llama_cpp_is_a_one_line_error_naming_the_extra(tiny, tmp_path, monkeypatch):
    from runners.export.gguf import export_gguf
    from slmrec.errors import SlmrecError
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(SlmrecError, match=r"deploy.*extra") as e:
        export_gguf(tiny[0], tiny[1], tmp_path / "m.gguf", "Q4_K_M")
    assert "\n" not in str(e.value)
    with pytest.raises(SlmrecError, match="valid: auto, F32"):
        export_gguf(tiny[0], tiny[1], tmp_path / "m.gguf", "Q4_K_X")


def _logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor([IDS])).logits[0].numpy()


def test_carried_gptq_file_runs_in_llama_cpp_with_the_packed_models_logits(tiny, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is the optional `deploy` extra")
    from runners.export.gguf import export_gguf
    from runners.quant.gptq import quantize_gptq
    from runners.quant.rtn import quantize_embeddings
    from runners.runtime import open_session
    model = copy.deepcopy(tiny[0])
    calib = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    quantize_gptq(model, calib, 4, 32, 0.01, True)
    quantize_embeddings(model, 8, 32)
    ref = _logits(model)
    log: dict = {}
    path = export_gguf(model, tiny[1], tmp_path / "gptq.gguf", "auto", log=log)
    assert log["type"] == "Q4_1" and log["carried"] == 14
    got = open_session("llama.cpp", path).logits(IDS)
    # llama.cpp quantizes activations to 8 bits for Q4_1 matmuls: small, not zero, differences
    assert np.abs(got - ref).max() < 1.5e-2 * np.abs(ref).max()   # measured 0.6%; re-quantized Q4_0: 3.9%


def test_k_quants_from_llama_cpp_run_with_the_source_logits(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is the optional `deploy` extra")
    import gguf

    from runners.export.gguf import export_gguf
    from runners.runtime import open_session
    model, tok = tiny_model(layers=1, hidden=256, heads=4, kv_heads=2, intermediate=512, vocab=512)
    ref = _logits(model)
    errors = {}
    for qtype in ("Q4_K_M", "Q6_K"):
        log: dict = {}
        path = export_gguf(model, tok, tmp_path / f"m.{qtype}.gguf", qtype, log=log)
        types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
        assert types["blk.0.ffn_up.weight"] == qtype[:4] and log["type"] == qtype
        got = open_session("llama.cpp", path).logits(IDS)
        errors[qtype] = np.abs(got - ref).max() / np.abs(ref).max()
    assert errors["Q6_K"] < errors["Q4_K_M"] < 0.15
