"""TRL runners: every KB method they run, with the KB's own parameters, on a tiny Llama; the
measurement (preference accuracy on validation pairs) and the reward model's artifact."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from runners.registry import get_runner

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")

FAST = dict(steps=2, batch_size=2, max_length=64, examples=8, eval_examples=4, lr=1e-3)


def kb_methods(*runner_ids: str) -> dict[str, tuple[str, dict]]:
    from slmrec.kb import load_kb
    kb = load_kb()
    return {m.id: (m.runner, {n: s.default for n, s in m.params.items() if s.default is not None and n != "steps"})
            for m in kb.methods.values() if m.runner in runner_ids}


KB_TRL = kb_methods("trl", "trl-distill")


def test_the_kb_has_trl_methods():
    assert {"dpo", "orpo", "kto", "simpo", "grpo", "neftune", "on-policy-distillation",
            "reverse-kl-distillation", "ipo", "reward-modelling", "warmup-stable-decay-schedule"} <= set(KB_TRL)


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("method", sorted(KB_TRL))
def test_kb_method_trains_the_policy(method, tiny, make_ctx):
    from runners.models import tiny_model
    runner_id, params = KB_TRL[method]
    model, tok = tiny
    teacher = None
    if runner_id == "trl-distill":  # a fresh student of the same shape learns from the trained tiny teacher
        teacher = (model, tok)
        model = tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)[0]
    before = weights(model).clone()
    runner = get_runner(runner_id)
    res = runner.run(make_ctx(model, tok, teacher=teacher), runner.Params(**{**params, **FAST}))
    m = res.metrics
    if params.get("trainer") == "reward":  # a reward model beside the unchanged policy
        assert 0 <= m["reward_acc"] <= 1 and "reward_model" in res.artifacts
        assert torch.equal(weights(res.model), before)
        return
    assert 0 <= m["pref_acc_before"] <= 1 and 0 <= m["pref_acc_after"] <= 1
    assert torch.isfinite(torch.tensor([m["first_loss"], m["train_loss"], m["pref_margin_after"]])).all()
    assert not torch.equal(weights(res.model), before), "the trainer did not update the policy"
    assert m["pref_margin_after"] != m["pref_margin_before"]


def test_dpo_raises_the_preference_margin_on_its_training_pairs(tiny, make_ctx):
    from runners.alignment import preference_accuracy
    from runners.preference_data import preference_pairs
    model, tok = tiny
    ctx = make_ctx(model, tok)
    pairs = preference_pairs(ctx.corpus, "train", 8)
    before = preference_accuracy(model, tok, pairs)[1]
    runner = get_runner("trl")
    res = runner.run(ctx, runner.Params(trainer="dpo", steps=8, batch_size=4, max_length=64, examples=8,
                                        eval_examples=4, lr=2e-3))
    assert preference_accuracy(res.model, tok, pairs)[1] > before


def test_reward_model_is_an_artifact_and_the_policy_is_unchanged(tiny, make_ctx, tmp_path):
    from transformers import AutoModelForSequenceClassification
    model, tok = tiny
    before = weights(model).clone()
    runner = get_runner("trl")
    res = runner.run(make_ctx(model, tok), runner.Params(trainer="reward", **FAST))
    assert torch.equal(weights(res.model), before)
    assert 0 <= res.metrics["reward_acc"] <= 1
    rm = AutoModelForSequenceClassification.from_pretrained(res.artifacts["reward_model"])
    assert rm.config.num_labels == 1


def test_gkd_refuses_a_teacher_with_another_tokenizer(tiny, make_ctx):
    from runners.base import StepFailed
    from runners.models import tiny_model
    model, tok = tiny
    other = tiny_model(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, vocab=300)
    runner = get_runner("trl-distill")
    with pytest.raises(StepFailed, match="same tokenizer"):
        runner.run(make_ctx(model, tok, teacher=other), runner.Params(trainer="gkd", **FAST))


@pytest.mark.parametrize("params, field", [
    ({"trainer": "ppo"}, "trainer"),
    ({"trainer": "dpo", "options": "betta=0.1"}, "beta"),
])
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ValidationError, match=field):
        get_runner("trl").Params(**params)


def test_galore_trains_through_the_galore_optimizer(tiny, make_ctx):
    """The KB's galore options reach transformers, which builds galore-torch's optimizer."""
    runner_id, params = KB_TRL["galore"]
    model, tok = tiny
    runner = get_runner(runner_id)
    res = runner.run(make_ctx(model, tok), runner.Params(**{**params, **FAST}))
    assert "optimizer galore_torch." in " ".join(res.notes)
