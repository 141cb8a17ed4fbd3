"""Scenarios: parsing, shorthands, data-tier semantics, and one clear line per problem."""

from __future__ import annotations

import pytest
import yaml

from slmrec.errors import SlmrecError
from slmrec.scenario import (STANDS_IN, Data, list_scenarios, load_scenario, parse_scenario,
                             scenario_from_dict)


def problems(kb, data, file="s.yaml"):
    with pytest.raises(SlmrecError) as exc:
        parse_scenario(data, file, kb, "bad")
    return [str(p) for p in exc.value.problems]


def test_minimal_scenario_defaults(scenario):
    sc = scenario()
    assert sc.tolerance_pct == 5 and sc.workload.context == 2048
    assert sc.data.tiers() == {"none"}
    assert sc.teacher.access.value == "none"


def test_shorthands(scenario):
    sc = scenario(data=["labeled"], teacher="logits:smollm2-1.7b")
    assert sc.data.labeled > 0
    assert sc.teacher.access.value == "logits" and sc.teacher.model == "smollm2-1.7b"
    assert scenario(data="none").data.tiers() == {"none"}


def test_richer_tiers_stand_in_for_poorer(scenario, kb):
    # labeled text is also unlabeled text and can calibrate; logits imply text
    sc = scenario(data={"labeled": 100}, teacher="logits:smollm2-1.7b")
    tiers = sc.available_tiers(kb)
    assert {"labeled", "unlabeled", "calibration", "teacher-logits", "teacher-text"} <= tiers
    assert "preference" not in tiers
    assert STANDS_IN["calibration"] == ("calibration",)
    tokens = Data(labeled=100, unlabeled=1000).tokens()
    assert tokens["unlabeled"] == 100 * 256 + 1000


def test_every_problem_reported_once_with_file_and_field(kb):
    lines = problems(kb, {"task": "x", "base_model": "smollm2-36m", "hardware": "rtx4090",
                          "budgets": {"memory_mb": -1, "latncy": 3},
                          "data": {"labelled": 5}, "tolerance_pct": -2})
    text = "\n".join(lines)
    assert len(lines) == 6, text  # two unknown ids, four malformed fields
    assert all(line.startswith("s.yaml: scenario 'bad': field '") for line in lines), text
    assert "field 'budgets.memory_mb'" in text and "greater than 0" in text
    assert "unknown field 'latncy'" in text and "decode_ms_per_token" in text
    assert "unknown field 'labelled' (did you mean 'labeled'?)" in text
    assert "field 'tolerance_pct'" in text


def test_unknown_ids_get_did_you_mean_and_valid_values(kb):
    lines = problems(kb, {"task": "x", "base_model": "smollm2-36m", "hardware": "rtx4090",
                          "preferences": {"include": ["gptqq"]}})
    text = "\n".join(lines)
    assert "field 'base_model': unknown base model 'smollm2-36m' (did you mean 'smollm2-360m'?)" in text
    assert "'choose'" in text
    assert "field 'hardware': unknown hardware profile 'rtx4090' (did you mean 'rtx-4090'?)" in text
    assert "field 'preferences.include[0]': unknown method 'gptqq'" in text


def test_teacher_needs_a_model(kb):
    text = "\n".join(problems(kb, {"task": "x", "base_model": "smollm2-360m",
                                   "hardware": "rtx-4090", "teacher": {"access": "logits"}}))
    assert "teacher.model is required" in text


def test_custom_hardware_inline(scenario, kb):
    sc = scenario(hardware={"name": "my board", "kind": "soc", "memory_gb": 4,
                            "memory_bandwidth_gbs": 30, "peak_tflops": {"fp16": 1},
                            "precisions": ["fp16"], "capabilities": ["int8-kernels"]})
    hw = sc.target(kb)
    assert hw.id == "custom" and hw.memory_gb == 4
    text = "\n".join(problems(kb, {"task": "x", "base_model": "smollm2-360m", "hardware": {
        "memory_gb": 4, "memory_bandwidth_gbs": 30, "peak_tflops": {"fp16": 1},
        "precisions": ["fp16"], "capabilities": ["int9-kernels"]}}))
    assert "field 'hardware.capabilities[0]': unknown capability 'int9-kernels'" in text


def test_privacy_drops_a_remote_teacher(scenario, kb):
    sc = scenario(teacher={"access": "text", "model": "api-model", "local": False},
                  preferences={"privacy": True})
    access, why = sc.effective_teacher_access(kb)
    assert access == "none" and "privacy" in why
    assert sc.compute_target(kb).id == sc.target(kb).id


def test_named_scenarios_load_from_a_kb_root(kb, tmp_path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "mine.yaml").write_text(yaml.safe_dump(
        {"task": "t", "base_model": "choose", "hardware": "laptop-cpu"}))
    kb.roots.append(tmp_path)
    try:
        assert "mine" in list_scenarios(kb)
        assert load_scenario("mine", kb).name == "mine"
        with pytest.raises(SlmrecError, match="unknown scenario 'mne' \\(did you mean 'mine'"):
            load_scenario("mne", kb)
    finally:
        kb.roots.remove(tmp_path)


def test_bad_yaml_file_is_one_line(kb, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("task: [unclosed\n")
    with pytest.raises(SlmrecError) as exc:
        load_scenario(f, kb)
    assert len(exc.value.problems) == 1 and "invalid YAML" in str(exc.value)


def test_shipped_example_scenarios_are_valid_and_varied():
    from slmrec.kb import load_kb

    try:
        kb = load_kb()
    except SlmrecError:
        pytest.skip("the shipped KB does not load right now")
    named = list_scenarios(kb)
    assert len(named) >= 8
    scs = [load_scenario(n, kb) for n in named]
    assert any(s.base_model == "choose" for s in scs)
    assert any(s.preferences.privacy for s in scs)
    assert any(s.data.tiers() == {"none"} and s.teacher.access.value == "none" for s in scs)
    assert any(s.teacher.access.value != "none" for s in scs)
    assert len({s.hardware if isinstance(s.hardware, str) else "custom" for s in scs}) >= 5


def test_inline_dict_scenario(kb):
    sc = scenario_from_dict({"task": "t", "base_model": "choose", "hardware": "a100"}, kb)
    assert sc.candidate_models(kb) == sorted(kb.models)
