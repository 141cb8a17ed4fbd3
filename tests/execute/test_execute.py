"""The executor end to end on a tiny model: validation, reports, failures, resume."""

from __future__ import annotations

import json
import math

import pytest

from runners.execute import execute
from runners.models import load_checkpoint
from runners.report import read_report
from slmrec.errors import SlmrecError
from slmrec.evidence import RunStore
from slmrec.plan import load_plan, parse_plan
from tests.execute.conftest import make_plan, write_plan

PLAN_YAML = """\
name: hand-written
base_model: {base}
steps:
  - method: train
    params: {{steps: 4, lr: 0.002}}
    predicted:
      train_loss: {{value: 6.0, low: 4.0, high: 8.0}}
  - method: rtn
    params: {{bits: 8, group_size: 32}}
    predicted:
      size_mb: {{value: 0.12, low: 0.1, high: 0.2, unit: MB}}
      bits_per_weight: {{value: 9.0}}
  - method: eval
predicted:
  size_mb: {{value: 0.12, low: 0.1, high: 0.2}}
  peak_memory_mb: {{value: 1.0}}
"""


def test_hand_written_plan_runs_end_to_end(tmp_path, tiny_kb, tiny_model_dir):
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(PLAN_YAML.format(base=tiny_model_dir))
    plan = load_plan(plan_file, tiny_kb)
    store = RunStore(tmp_path / "store.sqlite")
    out = tmp_path / "run"
    report = execute(plan, kb=tiny_kb, out_dir=out, store=store, progress=False,
                     plan_file=str(plan_file))

    assert report.status == "completed" and report.exit_code == 0, report.reason
    assert [s.status for s in report.steps] == ["completed"] * 3
    # measured after every step, checkpointed where the model changed
    for s in report.steps:
        assert {"params", "size_mb", "ppl", "wall_s", "decode_ms_per_token"} <= set(s.metrics)
    assert (out / "steps" / "01-train" / "model.safetensors").is_file()
    assert (out / "steps" / "02-rtn" / "model.safetensors").is_file()
    assert report.steps[2].checkpoint == report.steps[1].checkpoint  # evaluate changes nothing
    # the probe after rtn skipped latency: the evaluate step measured it on the same model
    assert report.steps[1].metrics["decode_ms_per_token"] == \
        report.steps[2].metrics["decode_ms_per_token"]
    assert report.steps[1].metrics["bits_per_weight"] < 12 < report.base_metrics["bits_per_weight"]
    model, _ = load_checkpoint(out / report.steps[1].checkpoint)
    assert any("Quant" in type(m).__name__ for m in model.modules())

    # reports: JSON and Markdown with predicted vs measured and the ratio
    data = json.loads((out / "report.json").read_text())
    assert data["status"] == "completed"
    row = next(r for r in data["comparison"] if r["scope"] == "step 2" and r["metric"] == "size_mb")
    assert row["predicted"] == 0.12 and row["ratio"] == pytest.approx(row["measured"] / 0.12)
    assert row["within_range"] == (0.1 <= row["measured"] <= 0.2)
    md = (out / "report.md").read_text()
    assert "Predicted vs measured" in md and "| step 2 | rtn | size_mb | – | 0.12 | 0.1–0.2 |" in md
    assert read_report(out).steps[0].metrics == report.steps[0].metrics
    state = json.loads((out / "state.json").read_text())
    assert state["plan_hash"] == report.plan_hash and state["report"]["status"] == "completed"

    # the store: one completed run, one row per measured or predicted metric
    run = store.run(report.run_id)
    assert run["status"] == "completed" and run["plan_hash"] == report.plan_hash
    assert [s["status"] for s in run["steps"]] == ["completed"] * 3
    rows = store.measurements(metric="size_mb", method="rtn")
    assert len(rows) == 1 and rows[0]["predicted"] == 0.12 and rows[0]["predicted_low"] == 0.1
    assert rows[0]["context"]["params"]["bits"] == 8 and rows[0]["context"]["runner"] == \
        "weight-only-quant"
    assert rows[0]["context"]["input_metrics"]["ppl"] == report.steps[0].metrics["ppl"]
    assert rows[0]["context"]["base_params"] == report.base_metrics["params"]
    plan_rows = store.measurements(metric="peak_memory_mb", method="plan")
    assert plan_rows and plan_rows[0]["step_index"] is None and plan_rows[0]["predicted"] == 1.0


def test_runnerless_method_is_named_clearly(tmp_path, tiny_kb, tiny_model_dir):
    plan = parse_plan(make_plan(tiny_model_dir, ["train", "awq"]))
    with pytest.raises(SlmrecError) as err:
        execute(plan, kb=tiny_kb, out_dir=tmp_path / "run", store=False, progress=False)
    (problem,) = err.value.problems
    assert "method 'awq' is not executable here (no runner); executable methods: " in str(problem)
    assert "rtn" in problem.message and "train" in problem.message
    assert problem.field == "steps[1].method"
    assert not (tmp_path / "run").exists()  # nothing was started


def test_all_plan_problems_are_reported_together(tmp_path, tiny_kb, tiny_model_dir):
    plan = parse_plan(make_plan("big-7b", [
        {"method": "rtn", "params": {"bits": 3}},           # KB: not a valid choice
        {"method": "trian"},                                 # unknown method
        {"method": "train", "params": {"lr": 5.0}},          # runner: lr must be <= 1
        {"method": "awq"},                                   # no runner
        {"method": "broken"},                                # unregistered runner
        {"method": "eval", "params": {"seq_lenn": 8}},       # unknown parameter
    ]))
    with pytest.raises(SlmrecError) as err:
        execute(plan, kb=tiny_kb, out_dir=tmp_path / "run", store=False, progress=False,
                data=tmp_path / "missing.txt")
    text = str(err.value)
    fields = {p.field for p in err.value.problems}
    assert {"steps[0].params.bits", "steps[1].method", "steps[2].params.lr", "steps[3].method",
            "steps[4].method", "steps[5].params.seq_lenn", "base_model"} <= fields, text
    assert "'train' must come before 'rtn'" in text                  # order, from the KB
    assert "did you mean 'train'" in text
    assert "catalog but has no weights" in text and "--data" in text
    assert all("\n" not in str(p) for p in err.value.problems)       # one line each


def test_kb_defaults_merge_and_runner_rejects(tmp_path, tiny_kb, tiny_model_dir):
    from runners.execute import bind_plan

    bound = bind_plan(parse_plan(make_plan(tiny_model_dir, ["train", "rtn"])), tiny_kb)
    assert bound[0].params.steps == 3 and bound[0].params.seq_len == 32   # KB defaults
    assert bound[1].params.bits == 8 and bound[1].params.group_size == 32
    with pytest.raises(SlmrecError, match=r"steps\[0\].params.steps.*greater than or equal to 1"):
        bind_plan(parse_plan(make_plan(tiny_model_dir, [{"method": "train",
                                                         "params": {"steps": 0}}])), tiny_kb)


def test_nan_loss_fails_the_run_and_keeps_earlier_checkpoints(tmp_path, tiny_kb, tiny_model_dir):
    plan = parse_plan(make_plan(tiny_model_dir, ["train", {"method": "nan-train",
                                                           "params": {"after": 1}}, "rtn"]))
    store = RunStore(tmp_path / "s.sqlite")
    out = tmp_path / "run"
    report = execute(plan, kb=tiny_kb, out_dir=out, store=store, progress=False)
    assert report.status == "failed" and report.exit_code == 1
    assert report.failed_step == 1 and "loss became nan" in report.reason
    assert [s.status for s in report.steps] == ["completed", "failed", "pending"]
    load_checkpoint(out / report.steps[0].checkpoint)        # intact
    assert not (out / "steps" / "02-nan-train").exists()
    run = store.run(report.run_id)
    assert run["status"] == "failed" and "step 2 (nan-train) failed" in run["reason"]
    assert run["steps"][1]["status"] == "failed"
    assert not store.measurements(method="plan")              # no final figures from a failed run
    assert "**failed**" in (out / "report.md").read_text()


def test_non_finite_model_is_caught_by_the_executor(tmp_path, tiny_kb, tiny_model_dir):
    plan = parse_plan(make_plan(tiny_model_dir, ["train", "nan-weights"]))
    report = execute(plan, kb=tiny_kb, out_dir=tmp_path / "run", store=False, progress=False)
    assert report.status == "failed" and "perplexity is nan" in report.reason


def test_corrupt_checkpoint_falls_back_on_resume(tmp_path, tiny_kb, tiny_model_dir):
    marker = tmp_path / "marker"
    plan = parse_plan(make_plan(tiny_model_dir, [
        "train", "rtn", {"method": "fail-once", "params": {"marker": str(marker)}}]))
    out = tmp_path / "run"
    first = execute(plan, kb=tiny_kb, out_dir=out, store=False, progress=False)
    assert first.status == "failed" and first.failed_step == 2
    # the last completed checkpoint is damaged while the run is stopped
    (out / "steps" / "02-rtn" / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(SlmrecError):
        load_checkpoint(out / "steps" / "02-rtn")
    logs = []
    second = execute(plan, kb=tiny_kb, out_dir=out, store=False, progress=False, resume=True,
                     log=logs.append)
    assert second.status == "completed", second.reason
    assert any("checkpoint of step 2 (rtn) is unusable" in m for m in logs)
    assert second.steps[0].resumed and not second.steps[1].resumed
    assert any("corrupt" in n for n in second.notes)
    load_checkpoint(out / "steps" / "02-rtn")                 # rewritten intact
    assert second.steps[0].metrics == first.steps[0].metrics


def test_resume_refuses_a_different_plan_and_fresh_run_refuses_a_used_folder(
        tmp_path, tiny_kb, tiny_model_dir):
    out = tmp_path / "run"
    plan = parse_plan(make_plan(tiny_model_dir, ["rtn"]))
    assert execute(plan, kb=tiny_kb, out_dir=out, store=False, progress=False).ok
    with pytest.raises(SlmrecError, match="already holds a run"):
        execute(plan, kb=tiny_kb, out_dir=out, store=False, progress=False)
    other = parse_plan(make_plan(tiny_model_dir, [{"method": "rtn", "params": {"bits": 4}}]))
    with pytest.raises(SlmrecError, match="cannot resume a different run: the plan's steps"):
        execute(other, kb=tiny_kb, out_dir=out, store=False, progress=False, resume=True)
    with pytest.raises(SlmrecError, match="nothing to resume"):
        execute(plan, kb=tiny_kb, out_dir=tmp_path / "empty", store=False, resume=True)


def test_memory_check_refuses_unless_allowed(tmp_path, tiny_kb, tiny_model_dir):
    plan = parse_plan(make_plan(tiny_model_dir, [{"method": "rtn", "predicted": {
        "step_peak_memory_mb": {"value": 1e12}}}]))
    with pytest.raises(SlmrecError, match="--allow-memory-overrun"):
        execute(plan, kb=tiny_kb, out_dir=tmp_path / "a", store=False, progress=False)
    assert not (tmp_path / "a").exists()
    report = execute(plan, kb=tiny_kb, out_dir=tmp_path / "b", store=False, progress=False,
                     allow_memory_overrun=True)
    assert report.ok and math.isfinite(report.final_metrics["step_peak_memory_mb"])
    # predictions for another model do not stop a run on the model given with --model
    big = parse_plan(make_plan("big-7b", ["rtn"], predicted={"inference_memory_mb": {
        "value": 1e12}}))
    report = execute(big, kb=tiny_kb, model=str(tiny_model_dir), out_dir=tmp_path / "c",
                     store=False, progress=False)
    assert report.ok and any("predictions are for 'big-7b'" in n for n in report.notes)


def test_plan_file_path_and_missing_model_folder(tmp_path, tiny_kb, tiny_model_dir):
    plan_file = write_plan(tmp_path / "p.yaml", make_plan(tmp_path / "nope", ["rtn"]))
    with pytest.raises(SlmrecError) as err:
        execute(plan_file, kb=tiny_kb, out_dir=tmp_path / "run", store=False, progress=False)
    assert err.value.problems[0].file == str(plan_file)


@pytest.mark.parametrize("kind, expect", [
    ("oom", "out of memory: cannot allocate 99 GB"),
    ("value", "bad parameter or input discovered while running: group_size 96"),
    ("bug", "RuntimeError: a bug in the runner (traceback in error.log)"),
])
def test_failing_step_reasons(tmp_path, tiny_kb, tiny_model_dir, kind, expect):
    plan = parse_plan(make_plan(tiny_model_dir, ["rtn", {"method": "raise",
                                                         "params": {"kind": kind}}]))
    store = RunStore(tmp_path / "s.sqlite")
    report = execute(plan, kb=tiny_kb, out_dir=tmp_path / "run", store=store, progress=False)
    assert report.status == "failed" and expect in report.reason
    assert expect in store.run(report.run_id)["reason"]
    assert (tmp_path / "run" / "steps" / "01-rtn" / "model.safetensors").is_file()
    if kind != "oom":
        assert "Traceback" in (tmp_path / "run" / "error.log").read_text()


def test_ctrl_c_records_an_interrupted_run_that_resumes(tmp_path, tiny_kb, tiny_model_dir):
    raw = make_plan(tiny_model_dir, ["rtn", {"method": "raise", "params": {"kind": "interrupt"}}])
    store = RunStore(tmp_path / "s.sqlite")
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        execute(parse_plan(raw), kb=tiny_kb, out_dir=out, store=store, progress=False)
    state = json.loads((out / "state.json").read_text())
    assert state["report"]["status"] == "interrupted"
    assert [s["status"] for s in state["report"]["steps"]] == ["completed", "pending"]
    assert store.runs()[0]["status"] == "interrupted"


def test_measured_names_match_the_estimator(tmp_path, tiny_kb, tiny_model_dir):
    """Every metric the estimator predicts per step has a measured counterpart (except FLOPs)."""
    plan = parse_plan(make_plan(tiny_model_dir, ["rtn", {"method": "half"}]))
    report = execute(plan, kb=tiny_kb, out_dir=tmp_path / "run", store=False, progress=False)
    assert report.ok, report.reason
    wanted = {"params", "bits_per_weight", "sparsity", "size_mb", "inference_memory_mb",
              "decode_ms_per_token", "prefill_ms", "quality_loss_pct", "throughput_tok_s",
              "step_peak_memory_mb", "step_hours"}
    for s in report.steps:
        assert wanted <= set(s.metrics), wanted - set(s.metrics)
    # quality change is cumulative against the input model of the plan, as predicted
    base, last = report.base_metrics["probe_ppl"], report.steps[1].metrics["probe_ppl"]
    assert report.steps[1].metrics["quality_loss_pct"] == pytest.approx(100 * (last / base - 1))
    assert report.final_metrics["quality_loss_pct"] == report.steps[1].metrics["quality_loss_pct"]


def test_teacher_defaults_to_the_base_model_and_is_checked(tmp_path, tiny_kb, tiny_model_dir):
    plan = parse_plan(make_plan(tiny_model_dir, ["distill"]))
    report = execute(plan, kb=tiny_kb, out_dir=tmp_path / "run", store=False, progress=False)
    assert report.ok, report.reason
    assert report.teacher == str(tiny_model_dir)
    assert any("names no teacher" in n and "step 1 (distill)" in n for n in report.notes)
    assert "names no teacher" in (tmp_path / "run" / "report.md").read_text()
    bad = parse_plan(make_plan(tiny_model_dir, ["distill"], teacher="no-such-teacher"))
    with pytest.raises(SlmrecError) as err:
        execute(bad, kb=tiny_kb, out_dir=tmp_path / "bad", store=False, progress=False)
    assert err.value.problems[0].field == "teacher"
