"""AppTest: the run store's runs, opening a run (predicted against measured), launch checks."""

from __future__ import annotations

from tests.app.conftest import frame, new_app
from tests.app.test_recommend import keyed


def test_no_store_yet_says_how_to_make_one():
    at = new_app("Runs")
    assert not at.exception
    assert any("No runs recorded yet" in i.value for i in at.info)


def test_open_a_run_shows_steps_and_predicted_against_measured(store_with_run):
    store, rid, failed = store_with_run
    at = new_app("Runs")
    runs = frame(at, "steps done")
    assert set(runs["id"]) == {rid, failed}
    at.selectbox(key="runs_selected").set_value(rid).run()
    assert not at.exception
    md = "\n".join(m.value for m in at.markdown)
    assert f"### Run {rid}: app-test-plan :green-badge[completed]" in md
    steps = frame(at, "runner")
    assert list(steps["method"]) == ["magnitude-pruning", "dynamic-int8"]
    meas = frame(at, "measured / predicted")
    row = meas[(meas["step"] == "1. magnitude-pruning") & (meas["metric"] == "ppl")].iloc[0]
    assert row["predicted"] == 13.8 and row["measured"] == 14.1 and row["range"] == "13 … 16"
    assert abs(row["measured / predicted"] - 14.1 / 13.8) < 1e-9
    assert at.get("vega_lite_chart"), "predicted-vs-measured chart"
    # Quality, latency and size by default, not bookkeeping (checkpoint_s, measure_s).
    assert at.multiselect(key=f"runs_metrics_{rid}").value == ["ppl", "decode_ms_per_token",
                                                               "size_mb"]
    assert at.get("download_button")


def test_a_failed_run_shows_its_reason(store_with_run):
    store, rid, failed = store_with_run
    at = new_app("Runs")
    at.selectbox(key="runs_selected").set_value(failed).run()
    assert not at.exception
    assert any("out of memory: test" in e.value for e in at.error)


def test_launch_rejects_bad_plans_inline(kb):
    at = new_app("Runs")
    at.selectbox(key="runs_plan_pick").set_value("paste or upload a plan YAML").run()
    at.text_area(key="runs_paste").input("steps: [unclosed").run()
    assert not at.exception
    assert any("invalid YAML" in e.value for e in at.error)
    at.text_area(key="runs_paste").input(
        "base_model: smollm2-135m\nsteps:\n- method: no-such-method\n  params: {}\n").run()
    assert not at.exception
    assert any("unknown method 'no-such-method'" in e.value for e in at.error)
    assert all(b.key != "runs_launch" for b in at.button)  # nothing to launch


def test_launch_shows_the_exact_command_for_a_valid_plan(kb):
    method = next(m for m in kb.methods.values() if m.runner and m.plannable)
    at = new_app("Runs")
    at.selectbox(key="runs_plan_pick").set_value("paste or upload a plan YAML").run()
    at.text_area(key="runs_paste").input(
        f"name: app-launch\nbase_model: smollm2-135m\nsteps:\n- method: {method.id}\n").run()
    assert not at.exception and not at.error
    commands = [c.value for c in at.code if c.value.startswith("slmrec run")]
    assert commands and "slmrec run PLAN.yaml --out " in commands[0]  # the plan's base model
    assert "--store " in commands[0]
    assert any(b.key == "runs_launch" for b in at.button)


def test_launch_a_plan_here_and_follow_it_to_the_store(tmp_path):
    """'Run here' runs `slmrec run` in a child process on a tiny model; the page follows it and
    then opens the new run."""
    import os

    from runners.models import save_checkpoint, tiny_model
    from slmrec.evidence import RunStore

    model, tok = tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)
    ckpt = save_checkpoint(model, tok, tmp_path / "tiny")
    at = new_app("Runs")
    at.selectbox(key="runs_plan_pick").set_value("paste or upload a plan YAML").run()
    at.text_area(key="runs_paste").input(
        f"name: app-launch\nbase_model: {ckpt}\nsteps:\n- method: dynamic-int8\n").run()
    assert not at.error
    assert keyed(at.selectbox, "runs_model_").value.startswith("the plan's base model")
    at.button(key="runs_launch").click().run(timeout=240)
    assert not at.exception
    runs = RunStore(os.environ["SLMREC_STORE"]).runs()
    assert len(runs) == 1 and runs[0]["status"] == "completed", runs
    assert any(f"run {runs[0]['id']} completed" in s.value for s in at.success)
    assert at.selectbox(key="runs_selected").value == runs[0]["id"]
    steps = frame(at, "runner")
    assert list(steps["method"]) == ["dynamic-int8"] and list(steps["status"]) == ["completed"]


def test_launch_offers_the_top_plan_of_each_named_scenario(kb):
    from slmrec.recommend import recommend
    from slmrec.scenario import list_scenarios

    names = sorted(list_scenarios(kb))
    if not names:
        return
    at = new_app("Runs")
    pick = at.selectbox(key="runs_plan_pick")
    assert pick.value == f"the top plan for scenario '{names[0]}'"
    assert not at.exception and not at.error
    top = recommend(names[0], kb, top_k=1).top
    assert any(c.value == top.to_yaml().rstrip("\n") for c in at.code)
    command = next(c.value for c in at.code if c.value.startswith("slmrec run"))
    assert "--model" not in command  # the plan's own base model, by default


def test_run_chart_puts_every_metric_on_one_log_axis(store_with_run):
    """Found: each metric had its own non-zero axis, so a 0.004% miss looked as bad as a 174x
    one. Now: measured / predicted on one log scale, the predicted range as a band."""
    from slmrec.ui.runs import comparison_chart, default_metrics, measurement_frame, ratio_frame

    store, rid, _ = store_with_run
    frame = measurement_frame(store.run(rid))
    metrics = default_metrics(frame)
    assert "checkpoint_s" not in metrics and "measure_s" not in metrics
    data = ratio_frame(frame, metrics)
    latency = data[data["metric"] == "decode_ms_per_token"].iloc[0]
    assert latency["ratio"] == 41.0 / 0.25 and latency["miss"] == "164×"
    assert (latency["band_low"], latency["band_high"]) == (0.2 / 0.25, 0.3 / 0.25)
    spec = comparison_chart(frame, metrics).to_dict()
    scales = [layer["encoding"]["x"].get("scale") for layer in spec["layer"]
              if "scale" in layer["encoding"].get("x", {})]
    assert scales and all(s["type"] == "log" for s in scales)
    assert not spec.get("facet") and not spec.get("resolve")  # one axis, not one per metric


def test_quality_loss_is_charted_as_a_perplexity_factor():
    import pandas as pd

    from slmrec.ui.runs import ratio_frame

    frame = pd.DataFrame([{"step": "final model", "order": 1, "metric": "quality_loss_pct",
                           "predicted": 5.0, "low": 2.0, "high": 8.0, "measured": 6.4}])
    row = ratio_frame(frame, ["quality_loss_pct"]).iloc[0]
    assert abs(row["ratio"] - 1.064 / 1.05) < 1e-12 and row["miss"] == "+1.40 pp"


def test_run_it_on_defaults_to_the_plans_base_model(kb):
    """Found: 'Run it on' defaulted to smollm2-135m for a plan built for gemma-3-1b."""
    other = next(m for m in sorted(kb.models) if m != "smollm2-135m")
    method = next(m for m in kb.methods.values() if m.runner and m.plannable)
    at = new_app("Runs")
    at.selectbox(key="runs_plan_pick").set_value("paste or upload a plan YAML").run()
    at.text_area(key="runs_paste").input(
        f"name: app-other\nbase_model: {other}\nsteps:\n- method: {method.id}\n").run()
    assert not at.exception
    pick = keyed(at.selectbox, "runs_model_")
    assert pick.value == f"the plan's base model ({other})"
    command = next(c.value for c in at.code if c.value.startswith("slmrec run"))
    assert "--model" not in command
