"""Packed kernels in QuantLinear: same numbers as dequantise + F.linear (within bf16 rounding),
only for short inputs, rebuilt when the codes change, invisible in the state dict."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from runners.quant import kernels
from runners.quant.qlinear import QuantLinear


@pytest.fixture
def kernels_on(monkeypatch):
    monkeypatch.setattr(kernels, "KERNELS_ENABLED", True)


def _layer(bits, group, cols, rows=96, bias=True):
    gen = torch.Generator().manual_seed(bits * 1000 + group + cols)
    w = 0.05 * torch.randn(rows, cols, generator=gen)
    return QuantLinear.from_weight(w, bits, group, torch.randn(rows, generator=gen) if bias else None)


@pytest.mark.parametrize("bits, group, cols, uses_kernel", [
    (4, 128, 576, True),   # SmolLM2's width: kernel group 64 tiles our group 128
    (4, 64, 1536, True),
    (4, 32, 96, True),
    (4, 8, 64, False),     # no kernel group divides 8: dequantise
    (8, 128, 576, True),   # int8 as two nibbles through the int4 kernel, group 64 tiling 128
    (8, 32, 100, False),   # no kernel group divides a 100-wide input: dequantise
])
def test_kernel_matches_dequantise(kernels_on, bits, group, cols, uses_kernel):
    m = _layer(bits, group, cols)
    x = torch.randn(3, 1, cols, generator=torch.Generator().manual_seed(1))
    ref = F.linear(x, m.dequantize(), m.bias)
    y = m(x)
    assert (kernels.packed_kernel(m) is not None) == uses_kernel
    assert y.shape == ref.shape and y.dtype == x.dtype
    assert (y - ref).abs().max() <= (0.01 * ref.abs().max() if uses_kernel else 0)


def test_int8_is_one_kernel_call_whatever_the_group_count(kernels_on, monkeypatch):
    calls = []

    def counting(*args):
        calls.append(args[1].shape)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(*args)
    monkeypatch.setattr(kernels, "INT4_MM", counting)
    m = _layer(8, 64, 576)  # 9 groups: formerly 9 int8 calls plus a zero-point matmul
    x = torch.randn(1, 576, generator=torch.Generator().manual_seed(2))
    kernel = kernels.packed_kernel(m)
    calls.clear()
    y = kernel(x)
    assert len(calls) == 1
    ref = F.linear(x, m.dequantize())
    assert (y - ref).abs().max() <= 0.01 * ref.abs().max()


def test_long_inputs_dequantise_and_state_dict_is_unchanged(kernels_on):
    m = _layer(4, 128, 576)
    keys = set(m.state_dict())
    x = torch.randn(1, kernels.KERNEL_MAX_ROWS + 1, 576)
    assert torch.equal(m(x), F.linear(x, m.dequantize(), m.bias))  # prefill: exactly F.linear
    m(x[:, :1])
    assert set(m.state_dict()) == keys and "_kernel" in m.__dict__


def test_kernel_is_rebuilt_when_codes_are_loaded(kernels_on):
    a, b = _layer(4, 64, 192, bias=False), QuantLinear(192, 96, 4, 64)
    x = torch.randn(1, 192)
    before = b(x)  # kernel built on the all-zero codes
    b.load_state_dict(a.state_dict())
    assert not torch.allclose(before, b(x)) and torch.allclose(b(x), a(x))


@pytest.mark.parametrize("bits", [4, 8])
def test_greedy_tokens_equal_with_and_without_kernels(tiny, monkeypatch, bits):
    from runners.quant.rtn import quantize_embeddings, quantize_rtn
    model, _ = tiny
    quantize_rtn(model, bits, 32)
    quantize_embeddings(model, 8, 32)
    ids = torch.arange(2, 18)[None]
    out = {}
    for on in (False, True):
        monkeypatch.setattr(kernels, "KERNELS_ENABLED", on)
        with torch.no_grad():
            out[on] = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert any(kernels.packed_kernel(m) for m in model.modules() if isinstance(m, QuantLinear))
    assert torch.equal(out[True], out[False])
