"""Recommendations a practitioner would agree with, on the fixture KB."""

from __future__ import annotations

import json

import pytest

from slmrec.estimate import compile_option
from slmrec.plan import load_plan, validate_plan
from slmrec.recommend import recommend


def option_of(kb, step):
    m = kb.methods[step.method]
    p = {k: s.default for k, s in m.params.items() if s.default is not None}
    p.update(step.params)
    return compile_option(m, p)


def base_memory(kb, scenario, **fields):
    sc = scenario(**fields, budgets={})
    rec = recommend(sc, kb, explain=False, counterfactuals=False)
    return rec, sc


def test_no_data_and_no_teacher_means_no_distillation_and_no_calibrated_quantization(kb, scenario):
    sc = scenario(hardware="phone-soc", budgets={"memory_mb": 450}, tolerance_pct=8,
                  data="none", teacher="none")
    rec = recommend(sc, kb, top_k=5)
    assert rec.feasible
    for plan in rec.plans:
        for step in plan.steps:
            req = kb.methods[step.method].requires
            assert req.data.value == "none" and req.teacher.value == "none", step.method
    why = {r.method: r for r in rec.rejected}
    for m in ("gptq", "awq", "wanda"):
        assert why[m].kind == "requirement" and "calibration" in why[m].reason
    assert "teacher" in why["logit-distillation"].reason
    assert "teacher" in why["sequence-distillation"].reason


@pytest.mark.parametrize("model,hw", [("smollm2-360m", "phone-soc"), ("smollm2-1.7b", "rtx-4090"),
                                      ("qwen2.5-0.5b", "raspberry-pi-5"),
                                      ("llama-3.2-1b", "laptop-cpu")])
def test_a_memory_budget_below_the_16_bit_size_forces_an_8_bit_or_lower_step(kb, scenario, model, hw):
    card = kb.models[model]
    budget = card.params * 2 / 1e6 * 0.9   # below the bf16 weights alone
    sc = scenario(base_model=model, hardware=hw, budgets={"memory_mb": budget},
                  tolerance_pct=10, data={"calibration": 256})
    rec = recommend(sc, kb, counterfactuals=False)
    assert rec.feasible, rec.binding
    bits = [option_of(kb, s).t.get("weight_bits") for s in rec.top.steps]
    assert any(b is not None and b <= 8 for b in bits), [s.method for s in rec.top.steps]
    assert rec.top.predicted["inference_memory_mb"].value <= budget
    why = " ".join(w for s in rec.top.steps for w in s.why)
    assert "serves the inference memory budget" in why


SCENARIOS = [
    dict(hardware="phone-soc", budgets={"memory_mb": 300}, tolerance_pct=30,
         data={"calibration": 128, "labeled": 2000}, teacher="logits:smollm2-1.7b"),
    dict(base_model="smollm2-1.7b", hardware="rtx-4090", budgets={"memory_mb": 1200},
         tolerance_pct=40, data={"unlabeled": 1e7}, teacher="logits:smollm2-1.7b",
         preferences={"objectives": ["memory", "latency", "quality"]}),
    dict(base_model="llama-3.2-1b", hardware="laptop-cpu", budgets={"decode_ms_per_token": 40},
         tolerance_pct=60, data={"labeled": 5000}, compute={"hardware": "a100"}),
]


@pytest.mark.parametrize("fields", SCENARIOS)
def test_nothing_structural_after_quantization_and_every_plan_validates(kb, scenario, fields):
    rec = recommend(scenario(**fields), kb, top_k=5, counterfactuals=False)
    assert rec.plans
    for plan in rec.plans:
        assert validate_plan(plan, kb) == [], plan.name
        quantized = False
        for step in plan.steps:
            o = option_of(kb, step)
            if quantized:
                assert not o.edits_structure and not o.trains_all, (plan.name, step.method)
            quantized = quantized or o.int_quant


def test_a_tight_tolerance_brings_a_gentler_method(kb, scenario):
    fields = dict(hardware="phone-soc", budgets={"memory_mb": 600},
                  data={"calibration": 128, "unlabeled": 1e7}, teacher="logits:smollm2-1.7b",
                  compute={"hardware": "a100"}, preferences={"objectives": ["memory", "quality"]})
    loose = recommend(scenario(tolerance_pct=10, **fields), kb, counterfactuals=False).top
    tight_rec = recommend(scenario(tolerance_pct=1, **fields), kb, counterfactuals=False)
    tight = tight_rec.top
    assert tight_rec.feasible
    assert loose.predicted["quality_loss_pct"].value > 1
    assert tight.predicted["quality_loss_pct"].value <= 1
    bits = lambda plan: min(option_of(kb, s).t.get("weight_bits", 16) for s in plan.steps)  # noqa: E731
    assert bits(tight) > bits(loose)   # 8-bit instead of 4-bit


def test_loss_above_the_tolerance_inserts_a_recovery_step_the_scenario_allows(kb, scenario):
    fields = dict(base_model="smollm2-1.7b", hardware="rtx-4090", budgets={"memory_mb": 1500},
                  data={"calibration": 128, "unlabeled": 1e7}, compute={"hardware": "a100"})
    with_teacher = recommend(scenario(tolerance_pct=12, teacher="logits:smollm2-1.7b", **fields), kb,
                             counterfactuals=False)
    assert with_teacher.feasible
    plan = with_teacher.top
    steps = [s.method for s in plan.steps]
    recovery = [s for s in plan.steps if kb.methods[s.method].effects.recovery]
    assert recovery, steps
    assert any("serves the quality loss budget" in w for w in recovery[0].why)
    lossy = [i for i, s in enumerate(plan.steps) if option_of(kb, s).edits_structure]
    assert lossy and lossy[0] < steps.index(recovery[0].method)   # heals what came before it
    # without a teacher or data to recover with, the same budgets cannot be met at 12%
    alone = recommend(scenario(tolerance_pct=12, **{**fields, "data": "none"}), kb)
    assert not alone.feasible or alone.top.predicted["quality_loss_pct"].value <= 12
    assert not any(kb.methods[s.method].effects.recovery for s in alone.top.steps)


def test_logit_distillation_refused_across_tokenizers_and_sequence_distillation_offered(kb, scenario):
    sc = scenario(base_model="qwen2.5-0.5b", hardware="rtx-4090", teacher="logits:smollm2-1.7b",
                  data={"unlabeled": 1e7}, budgets={"memory_mb": 600}, tolerance_pct=3)
    rec = recommend(sc, kb)
    why = {r.method: r for r in rec.rejected}["logit-distillation"]
    assert why.kind == "requirement"
    assert "tokenizer" in why.reason and "qwen2.5" in why.reason and "smollm2" in why.reason
    assert "offered instead: sequence-distillation" in why.reason
    same = recommend(scenario(base_model="smollm2-360m", hardware="rtx-4090",
                              teacher="logits:smollm2-1.7b", data={"unlabeled": 1e7},
                              budgets={"memory_mb": 300}, tolerance_pct=3), kb)
    assert "logit-distillation" not in {r.method for r in same.rejected if r.kind == "requirement"}


def test_an_infeasible_scenario_names_the_binding_constraint_and_the_closest_plan(kb, scenario):
    sc = scenario(hardware="phone-soc", budgets={"memory_mb": 40}, tolerance_pct=5)
    rec = recommend(sc, kb)
    assert not rec.feasible and rec.plans
    assert any("inference memory" in b and "budgets.memory_mb" in b for b in rec.binding)
    top = rec.top
    assert not top.feasible and top.violations and "closest plan" in top.notes[0]
    assert any(c.relax == "budgets.memory_mb" and "becomes feasible" in c.change
               for c in rec.counterfactuals)


def test_counterfactual_more_tolerance_makes_int4_the_top_plan(kb, scenario):
    sc = scenario(hardware="phone-soc", budgets={"memory_mb": 560}, tolerance_pct=1,
                  data={"calibration": 128}, preferences={"objectives": ["memory", "quality"]})
    rec = recommend(sc, kb)
    assert rec.feasible
    assert 4 not in [option_of(kb, s).t.get("weight_bits") for s in rec.top.steps]
    cf = {c.relax: c for c in rec.counterfactuals}
    assert "tolerance_pct" in cf, rec.counterfactuals
    assert cf["tolerance_pct"].to > 1
    assert "awq" in cf["tolerance_pct"].change or "bits=4" in cf["tolerance_pct"].change
    assert "budgets.memory_mb" in cf


def test_every_method_of_a_relevant_component_has_a_reason(kb, scenario):
    rec = recommend(scenario(hardware="laptop-cpu", budgets={"memory_mb": 500},
                             data={"calibration": 128}), kb)
    in_plan = {s.method for s in rec.top.steps}
    relevant = {m.component for m in kb.methods.values() if m.plannable}
    expected = {m.id for m in kb.methods.values() if m.component in relevant} - in_plan
    got = {r.method for r in rec.rejected}
    assert expected == got
    assert all(r.reason and r.kind in {"requirement", "constraint", "relation", "dominated",
                                       "evidence", "other"} for r in rec.rejected)
    assert rec.top.rejected == rec.rejected


def test_choose_picks_a_catalog_model(kb, scenario):
    rec = recommend(scenario(base_model="choose", hardware="laptop-cpu",
                             budgets={"memory_mb": 900, "decode_ms_per_token": 60},
                             data={"calibration": 128}), kb)
    assert rec.feasible and rec.top.base_model in kb.models
    assert any("chosen from" in n for n in rec.top.notes)
    assert len(rec.stats["models"]) == len(kb.models)
    assert all(p.predicted["inference_memory_mb"].value <= 900 for p in rec.plans)


def test_privacy_keeps_steps_on_the_device_and_drops_a_remote_teacher(kb, scenario):
    sc = scenario(hardware="phone-soc", budgets={"memory_mb": 600},
                  data={"labeled": 5000}, teacher={"access": "text", "model": "cloud-llm",
                                                   "local": False},
                  compute={"hardware": "a100"}, preferences={"privacy": True})
    rec = recommend(sc, kb)
    why = {r.method: r for r in rec.rejected}
    assert "privacy" in why["sequence-distillation"].reason
    assert "Phone SoC" in why["full-finetuning"].reason and "privacy" in why["full-finetuning"].reason
    assert rec.feasible
    for plan in rec.plans:
        assert plan.predicted["step_peak_memory_mb"].value <= 3000
    off = recommend(scenario(hardware="phone-soc", budgets={"memory_mb": 600},
                             data={"labeled": 5000}, compute={"hardware": "a100"}), kb)
    assert "full-finetuning" not in {r.method for r in off.rejected if r.kind == "constraint"
                                     and "step needs" in r.reason}


def test_no_training_compute_means_no_training_step(kb, scenario):
    rec = recommend(scenario(hardware="phone-soc", budgets={"memory_mb": 450},
                             data={"labeled": 5000}, compute={"scale": "none"}), kb)
    assert all(not kb.methods[s.method].requires.training for p in rec.plans for s in p.steps)
    assert "compute.scale" in {r.method: r for r in rec.rejected}["lora"].reason


def test_include_forces_a_method_into_every_plan(kb, scenario):
    rec = recommend(scenario(hardware="phone-soc", budgets={"memory_mb": 450},
                             preferences={"include": ["perplexity-eval"]}), kb, top_k=3)
    assert all("perplexity-eval" in [s.method for s in p.steps] for p in rec.plans)


def test_plans_round_trip_and_json_is_stable(kb, scenario, tmp_path):
    rec = recommend(scenario(hardware="phone-soc", budgets={"memory_mb": 450},
                             data={"calibration": 128}), kb)
    path = rec.top.save(tmp_path / "plan.yaml", full=True)
    back = load_plan(path, kb)
    assert back == rec.top
    data = json.loads(json.dumps(rec.to_json()))
    assert list(data) == ["format", "scenario", "kb_version", "feasible", "binding", "plans",
                          "pareto", "rejected", "counterfactuals", "stats"]
    step = data["plans"][0]["steps"][0]
    assert set(step) == {"method", "params", "why", "sources", "predicted"}
    assert set(step["predicted"]["size_mb"]) == {"value", "low", "high", "unit", "basis",
                                                 "sources", "note"}
    for metric in ("params", "bits_per_weight", "sparsity", "size_mb", "inference_memory_mb",
                   "decode_ms_per_token", "prefill_ms", "step_peak_memory_mb", "step_tflop",
                   "quality_loss_pct"):
        assert metric in data["plans"][0]["predicted"], metric
    assert data["kb_version"] == kb.version == data["plans"][0]["kb_version"]


def test_pareto_front_is_non_dominated_and_holds_the_top_plan(kb, scenario):
    rec = recommend(scenario(hardware="phone-soc", budgets={"memory_mb": 600}, tolerance_pct=20,
                             data={"calibration": 128}), kb)
    pts = [(p["quality_loss_pct"], p["inference_memory_mb"], p["decode_ms_per_token"])
           for p in rec.pareto]
    assert len(pts) >= 2
    for i, a in enumerate(pts):
        assert not any(j != i and all(x <= y for x, y in zip(b, a)) and b != a
                       for j, b in enumerate(pts))


def test_a_method_without_quality_evidence_gets_its_familys_prior_not_a_gate(make_kb, scenario):
    def strip(data):
        for m in data["methods"]:
            if m["id"] == "awq":
                m["effects"].pop("quality")

    kb2 = make_kb(strip)
    from slmrec.recommend.space import kb_index

    opts = kb_index(kb2).options["awq"]
    assert opts and all(o.quality_status == "prior" for o in opts)
    assert all("no published figure: family prior from" in o.quality.note for o in opts)
    assert all(o.quality.high >= o.quality.value >= o.quality.low for o in opts)
    rec = recommend(scenario(kb_=kb2, hardware="phone-soc", budgets={"memory_mb": 450},
                             data={"calibration": 128}), kb2)
    why = {r.method: r for r in rec.rejected}.get("awq")
    assert why is None or why.kind != "evidence"


def test_an_effect_free_step_that_another_requires_is_added_with_its_reason(make_kb, scenario):
    def needs_export(data):
        data["relations"].append({"from": "rtn-weight-only", "to": "safetensors-export",
                                  "kind": "requires", "note": "the format lives in the export",
                                  "sources": ["t-deploy"]})

    kb2 = make_kb(needs_export)
    rec = recommend(scenario(kb_=kb2, hardware="phone-soc", budgets={"memory_mb": 560},
                             preferences={"objectives": ["memory", "quality"]}), kb2)
    steps = [s.method for s in rec.top.steps]
    assert "rtn-weight-only" in steps and "safetensors-export" in steps
    export = rec.top.steps[steps.index("safetensors-export")]
    assert any("required by rtn-weight-only" in w for w in export.why)
    assert validate_plan(rec.top, kb2) == []


def test_runnable_keeps_to_methods_with_a_registered_runner(kb, scenario):
    rec = recommend(scenario(hardware="phone-soc", budgets={"memory_mb": 450},
                             data={"calibration": 128}, preferences={"runnable": True}), kb)
    assert rec.plans
    for plan in rec.plans:
        assert all(kb.methods[s.method].runner for s in plan.steps)
    why = {r.method: r for r in rec.rejected}
    assert "preferences.runnable" in why["awq"].reason
