"""AppTest: the Recommend page (named scenario, form, inline errors, plan choice, to Runs)."""

from __future__ import annotations

from slmrec.ui.common import md_text
from tests.app.conftest import frame, new_app


def _recommend(scenario_name: str):
    from slmrec.kb import load_kb
    from slmrec.recommend import recommend
    from slmrec.ui.rec_result import TOP_K

    kb = load_kb()
    return kb, recommend(scenario_name, kb, top_k=TOP_K)


def keyed(widgets, prefix: str):
    """The one widget whose key starts with `prefix` (widgets keyed to one answer)."""
    found = [w for w in widgets if (w.key or "").startswith(prefix)]
    assert len(found) == 1, [w.key for w in widgets]
    return found[0]


def _headers(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("#### Step ")]


def test_named_scenario_recommendation(scenario_overlay):
    kb, rec = _recommend("app-test")
    assert rec.plans and rec.plans[0].steps, "the test scenario needs at least one step"
    at = new_app("Recommend")
    at.selectbox(key="rec_scenario").set_value("app-test").run()
    assert "Press Recommend" in at.main.caption[-1].value
    at.button(key="rec_go").click().run()
    assert not at.exception and not at.error
    top = rec.plans[0]
    expect = [f"#### Step {i}: {md_text(kb.methods[s.method].name)}"
              for i, s in enumerate(top.steps, 1)]
    assert _headers(at) == expect
    plans = frame(at, "quality range")
    assert list(plans["plan"]) == [p.name for p in rec.plans]
    assert at.get("vega_lite_chart"), "the Pareto chart"
    assert [c.value for c in at.code if c.language == "yaml"][-1] == top.to_yaml().rstrip("\n")
    if rec.rejected:
        rejected = frame(at, "why not")
        assert set(rejected["method"]) == {r.method for r in rec.rejected}
    if rec.counterfactuals:
        assert list(frame(at, "then")["relax"]) == [c.relax for c in rec.counterfactuals]
    assert at.get("download_button")

    # Another ranked plan, then hand the chosen plan to the Runs page.
    if len(rec.plans) > 1:
        keyed(at.selectbox, "rec_plan_").set_value(1).run()
        second = rec.plans[1]
        assert _headers(at) == [f"#### Step {i}: {md_text(kb.methods[s.method].name)}"
                                for i, s in enumerate(second.steps, 1)]
    keyed(at.button, "rec_to_runs_").click().run()
    assert not at.exception
    assert at.sidebar.radio(key="page").value == "Runs"
    assert at.selectbox(key="runs_plan_pick").value == "the plan chosen on the Recommend page"
    chosen = rec.plans[1] if len(rec.plans) > 1 else top
    assert any(c.value == chosen.to_yaml().rstrip("\n") for c in at.code)


def test_rejected_methods_filter_by_kind(scenario_overlay):
    kb, rec = _recommend("app-test")
    if not rec.rejected:
        return
    at = new_app("Recommend")
    at.selectbox(key="rec_scenario").set_value("app-test").run()
    at.button(key="rec_go").click().run()
    kind = rec.rejected[0].kind
    keyed(at.multiselect, "rec_reject_kinds_").set_value([kind]).run()
    assert set(frame(at, "why not")["kind"]) == {kind}


def test_form_reports_bad_input_inline(scenario_overlay):
    at = new_app("Recommend")
    at.radio(key="rec_mode").set_value("the form").run()
    at.text_input(key="rf_task").input("")
    at.button(key="rf_go").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("Task is required") for e in errors), errors
    assert not _headers(at)
    at.text_input(key="rf_task").input("a task")
    at.selectbox(key="rf_teacher").set_value("logits")
    at.button(key="rf_go").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("teacher.model is required" in e for e in errors), errors
    at.selectbox(key="rf_teacher").set_value("none")
    at.selectbox(key="rf_hw").set_value("custom figures…")
    at.multiselect(key="rf_hw_prec").set_value([])
    at.button(key="rf_go").click().run()
    assert not at.exception
    assert any("precisions" in e.value for e in at.error), [e.value for e in at.error]
    assert not _headers(at)


def test_form_started_from_a_named_scenario(scenario_overlay):
    kb, rec = _recommend("app-test")
    at = new_app("Recommend")
    at.radio(key="rec_mode").set_value("the form").run()
    at.selectbox(key="rf_from").set_value("app-test").run()
    assert at.text_input(key="rf_task").value == scenario_overlay["task"]
    assert at.number_input(key="rf_memory_mb").value == scenario_overlay["budgets"]["memory_mb"]
    at.button(key="rf_go").click().run()
    assert not at.exception and not at.error
    assert _headers(at) == [f"#### Step {i}: {md_text(kb.methods[s.method].name)}"
                            for i, s in enumerate(rec.plans[0].steps, 1)]
    # Loosen the budget in the form: the page recomputes from the form's values.
    at.number_input(key="rf_memory_mb").set_value(None)
    at.number_input(key="rf_tol").set_value(0.0)
    at.button(key="rf_go").click().run()
    assert not at.exception and not at.error


def test_form_defaults_to_the_bundled_model_on_this_machines_cpu(kb):
    """Found: the empty form started on Gemma 3 1B and an A100."""
    import os

    at = new_app("Recommend")
    at.radio(key="rec_mode").set_value("the form").run()
    assert at.selectbox(key="rf_base").value == "smollm2-135m"
    hw = kb.hardware[at.selectbox(key="rf_hw").value]
    assert hw.kind == "cpu"
    cores = os.cpu_count()
    assert all(abs((h.cores or cores) - cores) >= abs((hw.cores or cores) - cores)
               for h in kb.hardware.values() if h.kind == "cpu")
    assert at.text_input(key="rf_task").label == "Task (required)"


def test_a_local_model_folder_is_used_without_moving_the_base_model_switch(tmp_path):
    """Found: 'Local model folder' was ignored unless the base-model switch was moved too."""
    from slmrec.ui.recommend import form_to_scenario

    ss = {"rf_base": "smollm2-135m", "rf_base_path": str(tmp_path), "rf_task": "t",
          "rf_hw": "laptop-2core-avx2"}
    assert form_to_scenario(ss)["base_model"] == str(tmp_path)
    ss["rf_base_path"] = "  "
    assert form_to_scenario(ss)["base_model"] == "smollm2-135m"


def test_switching_scenario_hides_the_previous_answer_and_its_widgets(kb):
    """Found: after switching scenario, 'Show plan' still read the previous scenario's plan."""
    from slmrec.scenario import list_scenarios

    names = sorted(list_scenarios(kb))
    assert len(names) >= 2
    at = new_app("Recommend")
    at.selectbox(key="rec_scenario").set_value(names[0]).run()
    at.button(key="rec_go").click().run()
    first = keyed(at.selectbox, "rec_plan_").key
    at.selectbox(key="rec_scenario").set_value(names[1]).run()
    assert not at.exception
    assert not [w for w in at.selectbox if (w.key or "").startswith("rec_plan_")]
    assert not _headers(at)
    assert "Press Recommend" in at.main.caption[-1].value
    at.button(key="rec_go").click().run()
    assert keyed(at.selectbox, "rec_plan_").key != first
    # Back to the first scenario: its answer (computed for it) is shown again.
    at.selectbox(key="rec_scenario").set_value(names[0]).run()
    assert keyed(at.selectbox, "rec_plan_").key == first


def test_every_point_of_the_pareto_chart_is_named():
    """Found: a blue 'front' point that was none of the listed plans, unnamed."""
    from slmrec.kb import load_kb
    from slmrec.recommend import recommend
    from slmrec.scenario import list_scenarios
    from slmrec.ui.rec_result import TOP_K, pareto_frame

    kb = load_kb()
    seen_front_only = False
    for name in sorted(list_scenarios(kb)):
        rec = recommend(name, kb, top_k=TOP_K)
        frame = pareto_frame(kb, rec)
        assert frame["label"].str.len().gt(0).all(), name
        assert frame["label"].is_unique, name
        ranked = frame[frame["series"] != "front only"]
        assert list(ranked["label"]) == [f"#{i}" for i in range(1, len(rec.plans) + 1)]
        assert len(frame) - len(ranked) == len(rec.pareto or []) - sum(
            frame["series"] == "ranked plan, on the front")
        seen_front_only |= (frame["series"] == "front only").any()
    assert seen_front_only, "no shipped scenario has a front point outside the ranked plans"
