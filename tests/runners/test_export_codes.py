"""runners/export/codes.py: the integer codes of RTN/GPTQ-quantized models, read back in a neutral
form, dequantise to exactly the weights slmrec's own modules compute with."""

from __future__ import annotations

import pytest
import torch

from runners.export.codes import quantized_weights
from runners.models import tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _tiny():
    return tiny_model(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=96, vocab=320)[0]


def _rtn(bits, group, emb_bits):
    from runners.quant.rtn import quantize_embeddings, quantize_rtn
    m = _tiny()
    quantize_rtn(m, bits, group)
    quantize_embeddings(m, emb_bits, group)
    return m


def _gptq(bits, group, emb_bits):
    from runners.quant.gptq import quantize_gptq
    m = _tiny()
    calib = torch.randint(0, 320, (4, 16), generator=torch.Generator().manual_seed(0))
    quantize_gptq(m, calib, bits, group, 0.01, act_order=True)
    return m


# builder, bits, group, embedding bits -> expected kinds
CASES = [(_rtn, 4, 32, 8), (_rtn, 8, 64, None), (_rtn, 4, 48, 4), (_gptq, 4, 16, None)]


@pytest.mark.parametrize("build,bits,group,emb_bits", CASES)
def test_codes_dequantise_to_the_modules_own_weights(build, bits, group, emb_bits):
    m = build(bits, group, emb_bits)
    qs = quantized_weights(m)
    linears = [q for q in qs if q.kind == "linear"]
    tables = [q for q in qs if q.kind == "embedding"]
    assert len(linears) == 7 + (emb_bits is not None)  # q k v o gate up down (+ the tied head)
    assert len(tables) == (emb_bits is not None)
    for q in qs:
        mod = m.get_submodule(q.tied_to if q.tied_to else q.name)
        table = mod if q.kind == "linear" or q.tied_to else mod.table
        assert torch.equal(q.dequantize(), table.dequantize(torch.float32))
        assert q.codes.dtype == torch.uint8 and int(q.codes.max()) < 2**q.bits
        assert q.scale.shape == q.zero.shape == (q.shape[0], -(-q.shape[1] // q.group_size))
    if tables:
        assert tables[0].tied_to == "lm_head" and tables[0].name == "model.embed_tokens"


def test_a_float_model_has_no_codes():
    assert quantized_weights(_tiny()) == []
