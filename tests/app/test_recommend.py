"""AppTest: the Recommend page (named scenario, form, inline errors, plan choice, to Runs)."""

from __future__ import annotations

from tests.app.conftest import frame, new_app


def _recommend(scenario_name: str):
    from slmrec.kb import load_kb
    from slmrec.recommend import recommend
    from slmrec.ui.rec_result import TOP_K

    kb = load_kb()
    return kb, recommend(scenario_name, kb, top_k=TOP_K)


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
    expect = [f"#### Step {i}: {kb.methods[s.method].name}" for i, s in enumerate(top.steps, 1)]
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
        at.selectbox(key="rec_plan").set_value(1).run()
        second = rec.plans[1]
        assert _headers(at) == [f"#### Step {i}: {kb.methods[s.method].name}"
                                for i, s in enumerate(second.steps, 1)]
    at.button(key="rec_to_runs").click().run()
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
    at.multiselect(key="rec_reject_kinds").set_value([kind]).run()
    assert set(frame(at, "why not")["kind"]) == {kind}


def test_form_reports_bad_input_inline(scenario_overlay):
    at = new_app("Recommend")
    at.radio(key="rec_mode").set_value("the form").run()
    at.text_input(key="rf_task").input("")
    at.button(key="rf_go").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("<form>: ") and "field 'task'" in e for e in errors), errors
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
    assert _headers(at) == [f"#### Step {i}: {kb.methods[s.method].name}"
                            for i, s in enumerate(rec.plans[0].steps, 1)]
    # Loosen the budget in the form: the page recomputes from the form's values.
    at.number_input(key="rf_memory_mb").set_value(None)
    at.number_input(key="rf_tol").set_value(0.0)
    at.button(key="rf_go").click().run()
    assert not at.exception and not at.error
