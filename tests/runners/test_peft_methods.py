"""The generic PEFT runner: every KB method it runs, with the KB's own parameters, on a tiny Llama;
plus adapter types the KB has no method for yet (LoHa, LoKr, PiSSA/OLoRA init, ...)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from runners.registry import get_runner

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

FAST = dict(steps=3, batch_size=2, seq_len=32, lr=1e-2)


def kb_methods(runner_id: str) -> dict[str, dict]:
    from slmrec.kb import load_kb
    kb = load_kb()
    return {m.id: {n: s.default for n, s in m.params.items() if s.default is not None}
            for m in kb.methods.values() if m.runner == runner_id}


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits[:, -ids.shape[1]:]


def check_adapter(res, base_logits, ids, merged_expected: bool):
    m = res.metrics
    assert 0 < m["trainable_fraction"] < 0.5
    assert torch.isfinite(torch.tensor([m["val_loss_before"], m["val_loss_after"], m["train_loss"]])).all()
    if merged_expected:  # a plain transformers model again, same parameter count, different outputs
        assert not hasattr(res.model, "peft_config")
        assert type(res.model).__name__ == "LlamaForCausalLM"
    else:
        assert hasattr(res.model, "peft_config")
    assert not torch.allclose(logits(res.model, ids), base_logits, atol=1e-5), "training changed nothing"


KB_PEFT = kb_methods("peft")


def test_the_kb_has_peft_methods():
    assert {"dora", "rslora", "ia3", "adalora", "vera", "prompt-tuning", "prefix-tuning"} <= set(KB_PEFT)


@pytest.mark.parametrize("method", sorted(KB_PEFT))
def test_kb_method_runs_on_tiny_model(method, tiny, make_ctx):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    ids = ctx.corpus.blocks("validation", 32, 2)
    base = logits(model, ids)
    runner = get_runner("peft")
    params = runner.Params(**{**KB_PEFT[method], **FAST})
    res = runner.run(ctx, params)
    check_adapter(res, base, ids, merged_expected=params.merge)


@pytest.mark.parametrize("adapter, options", [
    ("lora", "init_lora_weights=pissa"),
    ("lora", "init_lora_weights=olora"),
    ("loha", ""),
    ("lokr", ""),
    ("boft", ""),
    ("hra", ""),
    ("ln_tuning", ""),
    ("oft", "r=0, oft_block_size=16"),
    ("p_tuning", ""),
])
def test_more_adapter_types(adapter, options, tiny, make_ctx):
    model, tok = tiny
    ctx = make_ctx(model, tok)
    ids = ctx.corpus.blocks("validation", 32, 2)
    base = logits(model, ids)
    runner = get_runner("peft")
    params = runner.Params(adapter=adapter, options=options, targets="attention+mlp", **FAST)
    check_adapter(runner.run(ctx, params), base, ids, merged_expected=adapter != "p_tuning")


def test_dora_trains_towards_the_data(tiny, make_ctx):
    model, tok = tiny
    runner = get_runner("peft")
    res = runner.run(make_ctx(model, tok), runner.Params(options="use_dora=true", rank=4, steps=25,
                                                         batch_size=8, seq_len=64, lr=5e-3))
    assert res.metrics["val_loss_after"] < res.metrics["val_loss_before"]


@pytest.mark.parametrize("params, field", [
    ({"adapter": "lorra"}, "adapter"),
    ({"options": "use_dorra=true"}, "use_dora"),      # did-you-mean names the right field
    ({"options": "use_dora"}, "key=value"),
])
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ValidationError, match=field):
        get_runner("peft").Params(**params)
