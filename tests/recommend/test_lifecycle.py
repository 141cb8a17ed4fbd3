"""The lifecycle recommender on the shipped KB: one rule checker, goals, soft data scaling,
risk-aware ranking and per-device placement (table-driven)."""

from __future__ import annotations

import itertools

import pytest

from slmrec.graph import LifecycleGraph
from slmrec.kb import load_kb
from slmrec.plan import Plan, Step, validate_plan
from slmrec.recommend import recommend
from slmrec.recommend.goals import implied_goals
from slmrec.recommend.lifecycle import _risk
from slmrec.recommend.rules import rules_for
from slmrec.recommend.value import Gain, task_gain
from tests.recommend.lifecycle_scenario import sc


@pytest.fixture(scope="module")
def kb():
    return load_kb()


# ---- one rule checker -----------------------------------------------------------------------

RULES = [
    (["lora", "rtn-weight-only"], None),
    (["torch-compile", "lora"], "order"),                 # stage order, transitive via stages
    (["gguf-export", "full-finetuning"], "order"),
    (["structured-width-pruning", "lora"], None),         # lora recovers pruning
    (["structured-width-pruning", "logit-distillation"], None),
    (["nf4", "qlora"], None),                             # QLoRA co-adapts with its NF4 base
    (["rtn-weight-only", "quantization-aware-training"], None),
    (["llama-cpp-runtime", "rtn-weight-only"], "order"),  # co-adapts, but the runtime changes no weights
    (["gptq", "rtn-weight-only"], "conflict"),
    (["dpo", "lora"], "order"),                           # supervised tuning before preferences
    (["lora", "lora"], "slot"),
    (["magnitude-pruning", "wanda"], "slot"),             # both set sparsity
    (["continued-pretraining", "lora", "rtn-weight-only"], None),
    (["qlora"], "requires"),
]


@pytest.mark.parametrize("chain,kind", RULES)
def test_rule_checker(kb, chain, kind):
    got = rules_for(kb).check(chain)
    if kind is None:
        assert got == [], [v.text for v in got]
    else:
        assert kind in {v.kind for v in got}, [v.text for v in got]


def _pairs(kb, n=60):
    plannable = sorted(m.id for m in kb.methods.values() if m.plannable)
    step = max(1, len(plannable) // 12)
    sample = plannable[::step]
    return list(itertools.permutations(sample, 2))[:n] + [tuple(c) for c, _ in RULES if len(c) == 2]


def test_plan_validation_search_and_graph_share_the_checker(kb):
    rules = rules_for(kb)
    g = LifecycleGraph(kb)
    follows = {}
    for a, b in _pairs(kb):
        ok = rules.may_follow(a, b)
        if a not in follows:
            follows[a] = set(g.may_follow(a))
        assert (b in follows[a]) == ok, (a, b)
        plan = Plan(base_model="smollm2-360m", steps=[Step(method=a), Step(method=b)])
        order = [p for p in validate_plan(plan, kb)
                 if any(w in p.message for w in ("must come before", "conflict", "both set",
                                                 "appears twice"))]
        assert (not order) == ok, (a, b, [p.message for p in order])


def test_checking_grows_linearly_with_the_plan(kb):
    rules = rules_for(kb)
    ids = sorted(m.id for m in kb.methods.values() if m.plannable)
    for n in (50, 500, 5000):
        chain = [ids[i % len(ids)] for i in range(n)]
        # every repeat is one slot violation: work per step is bounded by the KB, not the plan
        dupes = sum(1 for v in rules.check(chain, requires=False) if "appears twice" in v.text)
        assert dupes == n - len(set(chain))


# ---- goals ------------------------------------------------------------------------------------

GOALS = [
    ({}, {"fit-target", "preserve-quality", "evaluate-objective", "deploy-runtime"}),
    ({"data": {"labeled": 5000}}, {"specialise-task"}),
    ({"data": {"unlabeled": 2e9}}, {"adapt-domain"}),
    ({"data": {"preference": 3000}}, {"align-preferences"}),
    ({"teacher": "logits:smollm2-1.7b"}, {"specialise-task"}),
    ({"update_every_days": 30}, {"keep-current"}),
    ({"goals": ["keep-current"]}, {"keep-current"}),
]


@pytest.mark.parametrize("fields,expected", GOALS)
def test_goals_follow_from_the_scenario(kb, fields, expected):
    got = {n.goal for n in implied_goals(sc(kb, **fields), kb)}
    assert expected <= got
    if not fields:
        assert got == expected


@pytest.mark.parametrize("fields,stage_goal", [
    ({"data": {"labeled": 5000}, "compute": {"hardware": "rtx-4090"}}, "specialise-task"),
    ({"data": {"labeled": 2000, "preference": 1500}, "compute": {"hardware": "rtx-4090"}},
     "align-preferences"),
    ({"teacher": "logits:smollm2-1.7b", "data": {"unlabeled": 1e5},
      "compute": {"hardware": "rtx-4090"}}, "specialise-task"),
])
def test_plans_cover_the_goals_and_end_with_the_bookends(kb, fields, stage_goal):
    rec = recommend(sc(kb, **fields), kb, counterfactuals=False)
    top = rec.top
    assert not any(v.startswith("NOT") for v in top.goals.values()), top.goals
    serves = [set(kb.methods[s.method].serves) for s in top.steps]
    assert any(stage_goal in s for s in serves)
    assert "deploy-runtime" in serves[-1] or "keep-current" in serves[-1]
    assert any("evaluate-objective" in s for s in serves)
    assert len(top.steps) >= 3
    assert "task_gain_pct" in top.predicted and "quality_loss_pct" in top.predicted


def test_an_uncovered_goal_ranks_below_and_the_why_not_names_it(kb):
    # labeled data but no training allowed: the plan cannot specialise and says so
    s = sc(kb, data={"labeled": 5000}, compute={"scale": "calibration"})
    rec = recommend(s, kb, counterfactuals=False)
    assert rec.top.goals["specialise-task"].startswith("NOT COVERED")
    assert any("Specialise to the task" in n for n in rec.top.notes)
    lora = {r.method: r for r in rec.rejected}["lora"]
    assert "Specialise to the task" in lora.reason
    complete = recommend(sc(kb, data={"labeled": 5000}, compute={"hardware": "rtx-4090"}), kb,
                         counterfactuals=False)
    assert complete.top.score < rec.top.score


# ---- value of adaptation: soft data scaling ---------------------------------------------------

def test_task_gain_shrinks_softly_with_less_data(kb):
    m = kb.methods["lora"]
    gains = [task_gain(kb, m, {}, {"labeled": n * 256}) for n in (10, 100, 1000, 10_000, 100_000)]
    assert all(g is not None for g in gains)                # never a hard wall
    values = [g.value for g in gains]
    assert values == sorted(values) and values[0] > 0
    assert gains[0].confidence == "low" and gains[-1].confidence != "low"
    assert all(g.low <= g.value <= g.high for g in gains)
    widths = [(g.value - g.low) / g.value for g in gains]
    assert widths[0] >= widths[-1]                          # less data: a wider relative range


def test_a_method_without_its_own_figure_gets_a_low_confidence_prior(kb):
    g = task_gain(kb, kb.methods["kto"], {}, {"labeled": 1e6})
    assert g is not None and g.confidence == "low" and "no published figure" in g.note


# ---- risk-aware ranking -------------------------------------------------------------------------

@pytest.mark.parametrize("conf_a,conf_b", [("medium", "low"), ("high", "low")])
def test_a_prior_ranks_below_a_sourced_figure_with_the_same_range(conf_a, conf_b):
    a = Gain(10, 2, 20, (), conf_a, "")
    b = Gain(10, 2, 20, (), conf_b, "")
    assert _risk(a) > _risk(b)


def test_the_quality_term_leans_to_the_pessimistic_end(kb):
    from slmrec.recommend.search import Search
    from slmrec.recommend.space import build_space, kb_index

    s = sc(kb)
    run = Search(build_space(kb_index(kb), s, "smollm2-360m"))
    m = run._model_metrics(run.sp.base)
    assert run._score(m, 1.0, 1, 0.0, 1.0) < run._score(m, 1.0, 1, 0.0, 5.0)


def test_unpublished_lossy_methods_are_plannable_with_a_family_prior(kb):
    from slmrec.recommend.space import kb_index

    idx = kb_index(kb)
    for mid in ("awq", "hqq", "nf4", "smoothquant", "layer-dropping"):
        opts = idx.options[mid]
        assert opts and all(o.quality is not None for o in opts), mid
    assert any(o.params.get("fraction") == 0.25 or o.params.get("sparsity") == 0.25
               for o in idx.options["structured-width-pruning"])


# ---- devices per step ------------------------------------------------------------------------------

@pytest.mark.parametrize("compute,fits", [
    ({"hardware": "rtx-4090"}, True),                      # a 24 GB GPU trains the 360M student
    ({"hardware": "rtx-4090", "memory_mb": 1500}, False),  # 1.5 GB cannot hold the step
])
def test_training_steps_are_checked_on_the_device_where_they_run(kb, compute, fits):
    s = sc(kb, data={"labeled": 20000}, compute=compute)
    rec = recommend(s, kb, counterfactuals=False)
    trains = [st for st in rec.top.steps if kb.methods[st.method].requires.training]
    if fits:
        assert trains, [st.method for st in rec.top.steps]
        assert all(st.predicted["step_peak_memory_mb"].value <= 24_000 for st in trains)
    else:
        assert not trains
        why = rec.top.goals["specialise-task"]
        assert "MB" in why and "RTX 4090" in why, why   # the device where the step runs


def test_why_prices_a_step_with_the_plans_runtime(kb):
    # "decode a -> b ms/token" in a step's why is priced on the runtime the plan deploys with,
    # so b is the decode figure the plan's table shows for that step
    from slmrec.scenario import load_scenario

    rec = recommend(load_scenario("bundled-demo", kb), kb, counterfactuals=False)
    for step in rec.top.steps:
        said = [w for w in step.why if "ms/token" in w]
        if said:
            after = float(said[0].split("decode ")[1].split(" -> ")[1].split(" ms/token")[0])
            assert after == pytest.approx(step.predicted["decode_ms_per_token"].value, rel=0.01), (step.method, said)
            break
    else:
        pytest.fail("no step of the demo plan states its decode change")
