"""What may serve a goal, tokenizer requirements, baseline-relative figures and stage
counterfactuals: all read from KB data (table-driven)."""

from __future__ import annotations

import copy

import pytest
import yaml

from slmrec.errors import SlmrecError
from slmrec.kb import load_kb, serve_problem
from slmrec.plan import Plan, Step, validate_plan
from slmrec.recommend import recommend
from slmrec.recommend.goals import serves
from slmrec.recommend.value import gain_evidence, quality_prior
from tests.recommend.lifecycle_scenario import sc
from slmrec.schema import Goal, Method


@pytest.fixture(scope="module")
def kb():
    return load_kb()


# ---- goals say what may serve them ------------------------------------------------------------

def test_every_shipped_serves_meets_its_goal(kb):
    bad = [(m.id, g, serve_problem(m, kb.goals[g])) for m in kb.methods.values()
           for g in m.serves if serve_problem(m, kb.goals[g])]
    assert bad == []


SERVE_CASES = [
    # (method fields, goal served_by, problem expected)
    ({"yields": ["runtime"]}, {"yields": ["artifact", "runtime"]}, False),
    ({"yields": ["artifact"]}, {"yields": ["artifact", "runtime"]}, False),
    ({}, {"yields": ["artifact", "runtime"]}, True),                  # a decoding technique
    ({"cost": {"passes": "train"}}, {"training": True}, False),
    ({"requires": {"training": True}}, {"training": True}, False),
    ({"cost": {"passes": "none"}}, {"training": True}, True),          # data curation alone
    ({}, {}, False),
]


@pytest.mark.parametrize("mfields,served_by,problem", SERVE_CASES)
def test_serve_problem(mfields, served_by, problem):
    m = Method(id="m", name="m", component="deployment", family="f", summary="s",
               sources=["x"], **mfields)
    g = Goal(id="deploy-runtime", name="g", summary="s", sources=["x"], served_by=served_by)
    assert (serve_problem(m, g) is not None) == problem


def test_the_loader_refuses_a_decoding_step_that_claims_to_deploy(tmp_path):
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "kb"
    for f in root.rglob("*.yaml"):
        dst = tmp_path / f.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    path = tmp_path / "methods" / "deployment-extra.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    med = next(m for m in data["methods"] if m["id"] == "medusa-heads")
    med["serves"] = ["fit-target", "deploy-runtime"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SlmrecError) as info:
        load_kb([tmp_path], shipped=False)
    lines = [str(p) for p in info.value.problems]
    assert any("medusa-heads" in x and "serves[1]" in x and "deploy-runtime" in x for x in lines), \
        lines


@pytest.mark.parametrize("name", ["laptop-teacher", "domain-adaptation", "pi-classifier"])
def test_every_plan_ends_in_an_artifact_or_a_runtime(kb, name):
    rec = recommend(name, kb, counterfactuals=False, pareto=False)
    deploy = [s.method for s in rec.top.steps if "deploy-runtime" in serves(kb, s.method)]
    assert deploy and all(kb.methods[m].yields for m in deploy)


# ---- tokenizers -------------------------------------------------------------------------------

TOKENIZER_CASES = [
    ("logits:smollm2-1.7b", False),    # same tokenizer as the SmolLM2 student
    ("logits:llama-3.1-8b", True),     # a different tokenizer
]


@pytest.mark.parametrize("teacher,allowed", TOKENIZER_CASES)
def test_cross_tokenizer_distillation_only_when_tokenizers_differ(kb, teacher, allowed):
    mids = [m.id for m in kb.methods.values() if m.requires.tokenizer_mismatch]
    assert mids
    s = sc(kb, teacher=teacher, data={"unlabeled": 5e7}, compute={"hardware": "a100-80gb-sxm"},
           preferences={"include": mids[:1]})
    rec = recommend(s, kb, counterfactuals=False, pareto=False, explain=False)
    if allowed:
        assert rec.feasible and mids[0] in [st.method for st in rec.top.steps]
    else:
        assert not rec.feasible and any("tokenizers differ" in b for b in rec.binding), rec.binding


def test_plan_validation_flags_a_cross_tokenizer_step_with_a_shared_tokenizer(kb):
    mid = next(m.id for m in kb.methods.values() if m.requires.tokenizer_mismatch)
    plan = Plan(base_model="smollm2-360m", teacher="smollm2-1.7b", steps=[Step(method=mid)])
    problems = validate_plan(plan, kb, file="<test>")
    assert any("tokenizers differ" in str(p) for p in problems), [str(p) for p in problems]


def test_mismatch_and_match_cannot_both_be_required():
    with pytest.raises(ValueError):
        Method(id="m", name="m", component="compression", family="f", summary="s", sources=["x"],
               requires={"teacher": "logits", "tokenizer_match": True, "tokenizer_mismatch": True})


# ---- figures against another method are neither gains nor priors -----------------------------

def _numeric(evs):
    return [e for e in evs if e.low is not None]


@pytest.mark.parametrize("attr", ["task_gain", "quality"])
def test_baseline_relative_figures_feed_no_prior(kb, attr):
    """A source cited only for figures against another method (LoRA against full fine-tuning,
    PiSSA against LoRA) never shows up in a prior or a gain."""
    rel_only = {e.source for m in kb.methods.values() for e in _numeric(getattr(m.effects, attr))
                if e.versus} - {e.source for m in kb.methods.values()
                                  for e in _numeric(getattr(m.effects, attr)) if not e.versus}
    assert rel_only
    for m in kb.methods.values():
        if attr == "task_gain":
            got, _, _ = gain_evidence(kb, m, {})
        else:
            if _numeric(m.effects.quality):
                continue
            got = quality_prior(kb, m, type("O", (), {"t": dict(m.effects.transform)})())
        if got is not None:
            assert not set(got.sources) & rel_only, (m.id, got.sources)


# ---- counterfactuals cover the stages ---------------------------------------------------------

def test_with_labeled_data_a_tuning_step_joins_the_plan(kb):
    rec = recommend("laptop-teacher", kb, pareto=False)
    lines = [c for c in rec.counterfactuals if c.relax == "data.labeled"]
    assert lines and "joins the plan" in lines[0].change and "Specialise" in lines[0].change


def test_with_a_larger_training_device_a_full_preference_step_fits(kb):
    s = sc(kb, base_model="smollm2-1.7b", budgets={"memory_mb": 2600},
           data={"preference": 20000}, compute={"hardware": "raspberry-pi-5-8gb"})
    rec = recommend(s, kb, pareto=False)
    assert any("align-preferences" in serves(kb, st.method) for st in rec.top.steps)
    dev = [c for c in rec.counterfactuals if c.relax == "compute.hardware"]
    assert dev and "Align to preferences" in dev[0].change, [c.change for c in rec.counterfactuals]


def test_max_steps_bounds_the_stages_too(kb):
    s = sc(kb, base_model="smollm2-1.7b", hardware="rtx-4090", budgets={"memory_mb": 8000},
           data={"unlabeled": 2e9, "labeled": 5000, "preference": 5000},
           compute={"hardware": "h100-sxm-80gb", "scale": "continued-pretraining"},
           preferences={"max_steps": 2})
    rec = recommend(s, kb, pareto=False)
    changing = [st.method for st in rec.top.steps
                if not serves(kb, st.method) & {"evaluate-objective", "deploy-runtime"}]
    assert len(changing) <= 2, changing
    assert any(c.relax == "preferences.max_steps" for c in rec.counterfactuals), \
        [c.change for c in rec.counterfactuals]


def test_measured_figures_against_the_bundled_base_are_read(kb):
    """`baseline` describes the reference (our measured figures name the bundled Q4_1 base); only
    `versus` (another method) keeps a figure out of the estimate."""
    from slmrec.estimate.options import compile_option, default_params

    measured = [(m, e) for m in kb.methods.values() for e in m.effects.quality
                if e.basis.value == "measured" and e.baseline and not e.versus and not e.when]
    assert measured
    for m, _ in measured:
        opt = compile_option(m, default_params(m), 134_515_008)
        assert opt.quality is not None, m.id
