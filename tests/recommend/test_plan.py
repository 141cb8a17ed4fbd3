"""Plans: YAML round trip and complete validation (every problem at once)."""

from __future__ import annotations

import pytest
import yaml

from slmrec.errors import SlmrecError
from slmrec.plan import Plan, Step, load_plan, validate_plan


def write(tmp_path, data):
    f = tmp_path / "plan.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return f


def test_loading_reports_every_problem_at_once(kb, tmp_path):
    f = write(tmp_path, {
        "base_model": "smollm2-360m",
        "teacher": "qwen2.5-0.5b",
        "steps": [
            {"method": "gptq", "params": {"bits": 5}},                        # bad parameter
            {"method": "structured-width-pruning", "params": {"fraction": 0.2}},  # after quant
            {"method": "gptqq"},                                              # unknown method
            {"method": "dpo"},                                                # requires missing
            {"method": "logit-distillation"},                                 # order + tokenizer
        ],
        "scenario": {"task": "t", "base_model": "smollm2-360m", "hardware": "rtx-4090",
                     "teacher": "logits:qwen2.5-0.5b"},
    })
    with pytest.raises(SlmrecError) as exc:
        load_plan(f, kb)
    text = "\n".join(str(p) for p in exc.value.problems)
    assert "field 'steps[0].params.bits': bad value 5: must be one of [3, 4]" in text
    assert "unknown method 'gptqq' (did you mean 'gptq'?)" in text
    assert "requires 'instruction-tuning' in the plan, which is missing" in text
    assert "'logit-distillation' must come before 'gptq'" in text
    assert "already quantized to integers" in text and "structured-width-pruning" in text
    assert "share a tokenizer" in text
    assert "needs data tier 'preference'" in text
    assert all(line.startswith(str(f)) for line in text.splitlines())
    assert len(exc.value.problems) >= 7


def test_teacher_missing_and_bad_fields(kb, tmp_path):
    f = write(tmp_path, {"base_model": "smollm2-360m", "steps": [{"method": "logit-distillation"}],
                         "stepz": []})
    with pytest.raises(SlmrecError) as exc:
        load_plan(f, kb)
    assert "unknown field 'stepz' (did you mean 'steps'?)" in str(exc.value)
    plan = Plan(base_model="smollm2-360m", steps=[Step(method="logit-distillation")])
    problems = [str(p) for p in validate_plan(plan, kb)]
    assert any("needs a teacher (logits access); the plan names none" in p for p in problems)


def test_round_trip_keeps_everything(kb, tmp_path):
    from slmrec.plan import Counterfactual, Prediction, Rejection

    plan = Plan(name="p", base_model="smollm2-360m", hardware="rtx-4090", kb_version=kb.version,
                steps=[Step(method="rtn-weight-only", params={"bits": 4, "group_size": 128},
                            why=["memory"], sources=["t-quant"],
                            predicted={"size_mb": Prediction(value=1, low=1, high=1, unit="MB")})],
                rejected=[Rejection(method="gptq", reason="needs calibration", kind="requirement")],
                counterfactuals=[Counterfactual(relax="tolerance_pct", to=3, change="x")],
                score=0.5, feasible=True)
    back = load_plan(plan.save(tmp_path / "p.yaml", full=True), kb)
    assert back == plan


def test_the_brief_plan_file_is_short_and_still_runs(kb, tmp_path):
    from slmrec.plan import Prediction, Rejection

    pred = {k: Prediction(value=1, low=1, high=1, unit="MB", sources=["t-quant"] * 5)
            for k in ("size_mb", "inference_memory_mb", "decode_ms_per_token", "prefill_ms",
                      "quality_loss_pct", "throughput_tok_s", "step_peak_memory_mb")}
    plan = Plan(name="p", base_model="smollm2-360m", hardware="rtx-4090",
                steps=[Step(method="rtn-weight-only", params={"bits": 4}, why=["memory"],
                            sources=["t-quant"], predicted=pred)], predicted=pred,
                rejected=[Rejection(method=f"m{i}", reason="x" * 80, kind="other")
                          for i in range(100)])
    path = plan.save(tmp_path / "p.yaml")
    assert len(path.read_text().splitlines()) < 60
    back = load_plan(path, kb)
    assert [s.method for s in back.steps] == ["rtn-weight-only"] and back.rejected == []


def test_a_valid_plan_has_no_problems(kb):
    plan = Plan(base_model="smollm2-360m", steps=[
        Step(method="structured-width-pruning", params={"fraction": 0.2}),
        Step(method="logit-distillation"), Step(method="gptq", params={"bits": 4})],
        teacher="smollm2-1.7b")
    assert validate_plan(plan, kb) == []
