"""QLoRA / LoftQ on CPU through bitsandbytes' NF4 Linear4bit and PEFT, on a tiny Llama; every KB
method bound to the qlora runner runs with the KB's own parameters."""

from __future__ import annotations

import logging

import pytest
import torch

from runners.base import StepFailed
from runners.registry import get_runner

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning",
                                        "ignore:.*torch.jit.script_method.*:DeprecationWarning")

FAST = dict(steps=2, batch_size=2, seq_len=32, lr=1e-2, rank=4)


def kb_methods(runner_id: str) -> dict[str, dict]:
    from slmrec.kb import load_kb
    kb = load_kb()
    return {m.id: {n: s.default for n, s in m.params.items() if s.default is not None}
            for m in kb.methods.values() if m.runner == runner_id}


def _loss(model, ids) -> float:
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


@pytest.mark.parametrize("method", sorted(kb_methods("qlora")))
def test_kb_method_runs_and_merges_to_a_float_model(method, tiny, make_ctx, tmp_path):
    from runners.checkpoint import load_checkpoint, save_checkpoint
    model, tok = tiny
    ctx = make_ctx(model, tok)
    ids = ctx.corpus.blocks("validation", 32, 2)
    with torch.no_grad():
        base = model(input_ids=ids).logits
    runner = get_runner("qlora")
    res = runner.run(ctx, runner.Params(**{**kb_methods("qlora")[method], **FAST}))
    m = res.metrics
    assert 0 < m["trainable_fraction"] < 0.2
    assert 0 < m["base_rel_error"] < 0.5  # 4-bit rounding happened, the weights are still the model's
    assert type(res.model).__name__ == "LlamaForCausalLM" and not hasattr(res.model, "peft_config")
    assert all(type(mod).__name__ != "Linear4bit" for mod in res.model.modules())
    with torch.no_grad():
        out = res.model(input_ids=ids).logits
    assert torch.isfinite(out).all() and not torch.allclose(out, base, atol=1e-4)
    back, _ = load_checkpoint(save_checkpoint(res.model, tok, tmp_path / "ck"))
    with torch.no_grad():
        assert torch.allclose(back(input_ids=ids).logits, out, atol=1e-5)


def test_loftq_starts_closer_to_the_float_model_than_plain_qlora(tiny_trained, make_ctx):
    """LoftQ's point: NF4(base) + BA approximates W better than NF4(W) with B = 0, so the initial
    weights err less (relative Frobenius error over the target linears)."""
    from runners.models import load_checkpoint
    runner = get_runner("qlora")
    out = {}
    for init in ("gaussian", "loftq"):
        model, tok = load_checkpoint(tiny_trained)
        res = runner.run(make_ctx(model, tok), runner.Params(**{**FAST, "steps": 1, "lr": 1e-9, "rank": 8}, init=init))
        out[init] = res.metrics
    assert out["loftq"]["base_rel_error"] < 0.9 * out["gaussian"]["base_rel_error"]


def test_unmerged_keeps_the_4bit_base_with_the_adapter(tiny, make_ctx):
    model, tok = tiny
    runner = get_runner("qlora")
    res = runner.run(make_ctx(model, tok), runner.Params(**FAST, merge=False))
    assert hasattr(res.model, "peft_config")
    assert any(type(mod).__name__ == "Linear4bit" for mod in res.model.modules())


def test_refuses_a_bf16_model(tiny, make_ctx):
    model, tok = tiny
    runner = get_runner("qlora")
    with pytest.raises(StepFailed, match="float32"):
        runner.run(make_ctx(model.to(torch.bfloat16), tok), runner.Params(**FAST))


def test_bitsandbytes_hub_kernel_notice_is_the_only_message_dropped():
    import runners  # noqa: F401  (installs the filter)
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    make = lambda msg: log.makeRecord(log.name, logging.WARNING, __file__, 1, msg, (), None)  # noqa: E731
    assert not log.filter(make("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ..."))
    assert log.filter(make("some other bitsandbytes warning"))
