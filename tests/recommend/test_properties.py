"""Property-based tests over random scenarios (hypothesis) on the fixture KB."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmrec.plan import validate_plan
from slmrec.recommend import recommend
from slmrec.recommend.search import Search, exhaustive
from slmrec.recommend.space import build_space, kb_index
from slmrec.scenario import parse_scenario
from tests.recommend.test_recommend import option_of

MODELS = ["smollm2-135m", "smollm2-360m", "smollm2-1.7b", "qwen2.5-0.5b", "llama-3.2-1b"]
HARDWARE = ["laptop-cpu", "raspberry-pi-5", "phone-soc", "rtx-4090", "a100"]


@st.composite
def scenarios(draw):
    model = draw(st.sampled_from(MODELS))
    data = {}
    for tier, amounts in (("calibration", [128, 512]), ("unlabeled", [1e6, 1e8]),
                          ("labeled", [500, 20000]), ("preference", [2000])):
        if draw(st.booleans()):
            data[tier] = draw(st.sampled_from(amounts))
    teacher = draw(st.sampled_from(["none", "text:smollm2-1.7b", "logits:smollm2-1.7b",
                                    "logits:llama-3.2-1b"]))
    budgets = {}
    if draw(st.booleans()):
        budgets["memory_mb"] = draw(st.floats(100, 6000))
    if draw(st.booleans()):
        budgets["decode_ms_per_token"] = draw(st.floats(2, 300))
    return {
        "task": "random", "base_model": model, "hardware": draw(st.sampled_from(HARDWARE)),
        "budgets": budgets, "tolerance_pct": draw(st.floats(0.5, 40)), "data": data,
        "teacher": teacher,
        "compute": {"hardware": draw(st.sampled_from(HARDWARE)),
                    "scale": draw(st.sampled_from(["none", "calibration", "fine-tune"]))},
        "preferences": {"objectives": draw(st.permutations(["quality", "memory", "latency"])),
                        "max_steps": draw(st.integers(1, 4)),
                        "privacy": draw(st.booleans())},
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=scenarios())
def test_every_returned_plan_obeys_the_graph_and_its_own_predictions(kb, data):
    sc = parse_scenario(data, "<random>", kb, "random")
    rec = recommend(sc, kb, top_k=3, explain=False, counterfactuals=False)
    assert rec.plans, "an answer is never empty"
    tiers = sc.available_tiers(kb)
    access, _ = sc.effective_teacher_access(kb)
    for plan in rec.plans:
        assert validate_plan(plan, kb) == [], plan.name
        # max_steps bounds the fit-the-target chain; goal stages (and what they require) add on
        stages = [s for s in plan.steps if set(kb.methods[s.method].serves)
                  - {"fit-target", "preserve-quality"}]
        assert len(plan.steps) <= sc.preferences.max_steps + len(stages) + 2
        quantized = False
        for step in plan.steps:
            m = kb.methods[step.method]
            assert m.requires.data.value in tiers
            assert {"none": 0, "text": 1, "logits": 2}[m.requires.teacher.value] <= \
                {"none": 0, "text": 1, "logits": 2}[access]
            o = option_of(kb, step)
            assert not (quantized and (o.edits_structure or o.trains_all))
            quantized = quantized or o.int_quant
        p = plan.predicted
        if rec.feasible:
            assert plan.feasible and not plan.violations
            assert p["inference_memory_mb"].value <= sc.memory_budget_mb(kb) * (1 + 1e-6)
            if sc.budgets.decode_ms_per_token:
                assert p["decode_ms_per_token"].value <= sc.budgets.decode_ms_per_token * (1 + 1e-6)
            assert p["quality_loss_pct"].value <= sc.tolerance_pct + 1e-6
            assert p["step_peak_memory_mb"].value <= sc.step_memory_budget_mb(kb) * (1 + 1e-6)
        else:
            assert rec.binding and not rec.top.feasible


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=scenarios())
def test_branch_and_bound_finds_the_exhaustive_optimum(kb, data):
    data["preferences"]["max_steps"] = min(data["preferences"]["max_steps"], 3)
    sc = parse_scenario(data, "<random>", kb, "random")
    idx = kb_index(kb)
    fast = Search(build_space(idx, sc, sc.base_model), k=1, pareto=False).run()
    slow = exhaustive(build_space(idx, sc, sc.base_model, dominance=False))
    assert bool(fast.top) == bool(slow.top)
    if fast.top:
        assert fast.top[0].score == pytest.approx(slow.top[0].score, abs=1e-9)
        assert fast.stats.evaluated <= slow.stats.evaluated
