"""GPTQ details on tiny weights and a tiny model: group scales from the error-updated weights
without act-order (checked against a line-by-line port of the reference algorithm), static groups
with it, one Hessian per shared input, and a warning when calibration text runs short."""

from __future__ import annotations

import pytest
import torch

from runners.quant import gptq as gptq_mod
from runners.quant.gptq import gptq_weight
from runners.quant.qlinear import group_params


def _reference_gptq(W, H, bits, groupsize, percdamp=0.01, blocksize=128):
    """The reference fasterquant (IST-DASLab/gptq, static_groups=False, no act-order), with
    our group_params as the quantizer's find_params. Returns the dequantised weight."""
    W, H = W.clone().float(), H.clone()
    maxq = 2**bits - 1
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(len(H))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, W.shape[1], blocksize):
        i2 = min(i1 + blocksize, W.shape[1])
        W1, Q1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros_like(W[:, i1:i2]), torch.zeros_like(W[:, i1:i2]), \
            Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if (i1 + i) % groupsize == 0:
                scale, zero = group_params(W[:, i1 + i: i1 + i + groupsize], bits, groupsize)
                scale, zero = scale[:, 0], zero[:, 0]
            q = scale * (torch.clamp(torch.round(w / scale) + zero, 0, maxq) - zero)
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q


def _problem(rows=24, cols=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, cols, generator=g) @ (torch.eye(cols) + 0.3 * torch.randn(cols, cols, generator=g))
    return 0.1 * torch.randn(rows, cols, generator=g), x.T @ x / len(x)


def _dequant(codes, scale, zero, group):
    cols = codes.shape[1]
    s, z = (t.repeat_interleave(group, dim=1)[:, :cols] for t in (scale, zero))
    return (codes.float() - z) * s


@pytest.mark.parametrize("bits, group", [(4, 32), (4, 64), (4, 128), (8, 32)])
def test_without_act_order_matches_the_reference(bits, group):
    w, h = _problem()
    codes, scale, zero = gptq_weight(w, h, bits, group, act_order=False)
    ours, ref = _dequant(codes, scale, zero, group), _reference_gptq(w, h, bits, group)
    assert (ours - ref).abs().le(1e-5).float().mean() >= 0.999  # float ties may round apart
    static, _ = group_params(w, bits, group)
    assert not torch.equal(scale[:, 1:], static[:, 1:])  # later groups see the updated weights
    assert torch.equal(scale[:, 0], static[:, 0])  # the first group has had no update yet


def test_act_order_keeps_static_groups_from_the_original_weight():
    w, h = _problem(seed=1)
    codes, scale, zero = gptq_weight(w, h, 4, 32, act_order=True)
    assert torch.equal(scale, group_params(w, 4, 32)[0]) and torch.equal(zero, group_params(w, 4, 32)[1])
    assert codes.max() <= 15


def test_shared_inputs_share_one_hessian(tiny, tiny_corpus, monkeypatch):
    from runners.quant.gptq import quantize_gptq
    model, _ = tiny
    seen = []
    real = gptq_mod.gptq_weight

    def spy(w, h, *a, **k):
        seen.append(h)
        return real(w, h, *a, **k)
    monkeypatch.setattr(gptq_mod, "gptq_weight", spy)
    calib = tiny_corpus.blocks("calibration", 64, 4)
    n = quantize_gptq(model, calib, 4, 32, 0.01, act_order=False)
    assert n == 14 and len(seen) == 14  # 2 blocks x (q, k, v, o, gate, up, down)
    per_layer = [seen[i: i + 7] for i in (0, 7)]
    for q, k, v, o, gate, up, down in per_layer:
        assert q is k is v and gate is up  # one Hessian each, built once
        assert o is not q and down is not gate and q.shape == (64, 64) and down.shape == (128, 128)


def test_short_calibration_text_warns(tiny_trained, make_ctx):
    from runners.models import load_checkpoint
    from runners.registry import get_runner
    runner = get_runner("gptq")
    for samples, warns in ((4096, True), (2, False)):
        ctx = make_ctx(*load_checkpoint(tiny_trained))
        logged = []
        ctx.log = logged.append
        res = runner.run(ctx, runner.Params(bits=4, group_size=32, samples=samples, seq_len=64))
        warning = [n for n in res.notes if n.startswith("warning:")]
        assert bool(warning) == warns and bool(logged) == warns
        if warns:
            assert "asked for 4096" in warning[0] and f"holds {len(ctx.corpus.calibration)} tokens" in warning[0]
            assert logged == warning
