"""2:4 semi-structured pruning (magnitude and Wanda scores) on a tiny Llama, and the KB method bound
to it run with the KB's own parameters."""

from __future__ import annotations

import pytest
import torch

from runners.base import StepFailed
from runners.prune import block_linears
from runners.registry import get_runner


def run(rid, ctx, **params):
    runner = get_runner(rid)
    return runner.run(ctx, runner.Params(**params))


def groups_of_four(model):
    for name, lin in block_linears(model):
        w = lin.weight.detach()
        yield name, w.view(w.shape[0], -1, 4)


@pytest.mark.parametrize("rid, extra", [("magnitude-prune", {}), ("wanda-prune", {"samples": 4, "seq_len": 64})])
def test_two_of_every_four_are_zero(tiny, make_ctx, rid, extra):
    model, tok = tiny
    before = {n: lin.weight.detach().clone() for n, lin in block_linears(model)}
    res = run(rid, make_ctx(model, tok), pattern="2:4", **extra)
    assert res.metrics["pruned_fraction"] == pytest.approx(0.5, abs=0.005)
    for name, g in groups_of_four(res.model):
        assert ((g == 0).sum(-1) >= 2).all(), name
        kept = g != 0
        orig = before[name].view_as(g)
        assert torch.equal(g[kept], orig[kept]), f"{name}: kept weights changed"
        if rid == "magnitude-prune":  # the two kept are the two largest |w| of their group
            dropped_max = orig.abs().masked_fill(kept, 0).amax(-1)
            kept_min = orig.abs().masked_fill(~kept, float("inf")).amin(-1)
            has_two = kept.sum(-1) == 2
            assert (kept_min[has_two] >= dropped_max[has_two]).all(), name


@pytest.mark.parametrize("method_id, note", [("semi-structured-2-4", "2:4"), ("sparsegpt", "SparseGPT 50%")])
def test_kb_sparsity_methods_run_with_their_kb_params(tiny, make_ctx, method_id, note):
    from slmrec.kb import load_kb
    method = load_kb().methods[method_id]
    params = {n: s.default for n, s in method.params.items() if s.default is not None}
    model, tok = tiny
    res = run(method.runner, make_ctx(model, tok), **params, samples=4, seq_len=64)
    assert res.metrics["pruned_fraction"] == pytest.approx(0.5, abs=0.01)
    assert note in " ".join(res.notes)


def test_refuses_widths_that_are_not_a_multiple_of_four(make_ctx):
    from runners.models import tiny_model
    model, tok = tiny_model(layers=1, hidden=30, heads=3, kv_heads=1, intermediate=62, vocab=300)
    with pytest.raises(StepFailed, match="not a multiple of 4"):
        run("magnitude-prune", make_ctx(model, tok), pattern="2:4")


def test_sparsegpt_reconstructs_the_layer_output_better_than_magnitude():
    """SparseGPT's point: with the same number of zeros, its updated weights reproduce X W^T on the
    calibration inputs better than dropping the smallest weights, unstructured and 2:4, when input
    features differ in scale (as LLM activations with outlier channels do)."""
    from runners.sparsegpt import sparsegpt_weight
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 64, generator=g) * torch.rand(64, generator=g).mul(3).exp()
    w = torch.randn(32, 64, generator=g)
    h = x.T @ x / len(x)
    for n_m in ((0, 0), (2, 4)):
        sparse = sparsegpt_weight(w, h, 0.5, *n_m)
        mag = w.clone()
        if n_m[0]:
            idx = w.abs().view(32, -1, 4).topk(2, dim=-1, largest=False).indices
            mag.view(32, -1, 4).scatter_(-1, idx, 0)
            assert ((sparse.view(32, -1, 4) == 0).sum(-1) >= 2).all()
        else:
            mag[w.abs() <= w.abs().flatten().kthvalue(w.numel() // 2).values] = 0
        assert (sparse == 0).float().mean() == pytest.approx(0.5, abs=0.02)
        err = lambda v: float((x @ (v - w).T).pow(2).mean())  # noqa: E731
        assert err(sparse) < 0.5 * err(mag), n_m


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_runner_prunes_half(tiny, make_ctx, pattern):
    model, tok = tiny
    res = run("sparsegpt-prune", make_ctx(model, tok), pattern=pattern, samples=4, seq_len=64)
    assert res.metrics["pruned_fraction"] == pytest.approx(0.5, abs=0.01)
    assert torch.isfinite(res.model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits).all()
    if pattern == "2:4":
        for name, g in groups_of_four(res.model):
            assert ((g == 0).sum(-1) >= 2).all(), name
