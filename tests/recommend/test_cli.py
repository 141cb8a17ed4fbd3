"""The recommend / explain / scenarios commands (in-process, on the fixture KB as an overlay)."""

from __future__ import annotations

import json

import pytest
import yaml

from slmrec.cli import main
from slmrec.cli.recommend_cmd import parse_data_spec
from slmrec.errors import SlmrecError


@pytest.fixture
def kbdir(tmp_path):
    from tests.recommend.fixture_kb import write_kb

    root = write_kb(tmp_path / "kb")
    (root / "scenarios").mkdir()
    (root / "scenarios" / "phone.yaml").write_text(yaml.safe_dump({
        "description": "a phone", "task": "chat on a phone", "base_model": "smollm2-360m",
        "hardware": "phone-soc", "budgets": {"memory_mb": 450}, "data": {"calibration": 128}}))
    return root


@pytest.fixture
def cli(kbdir, monkeypatch, capsys):
    import slmrec.cli.common as common
    from slmrec.kb import load_kb

    kb = load_kb([kbdir], shipped=False)
    monkeypatch.setattr(common, "load_kb", lambda paths=None: kb)

    def run(*argv):
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_recommend_a_named_scenario_prints_the_table_and_the_why(cli):
    code, out, _ = cli("recommend", "--scenario", "phone")
    assert code == 0
    assert "Top plan" in out and "memory MB" in out and "decode ms/tok" in out
    assert "Why each step" in out and "serves the inference memory budget" in out
    assert "Why not" in out and "What would change the top plan" in out


def test_recommend_json_is_the_documented_shape(cli):
    code, out, _ = cli("recommend", "-s", "phone", "--json", "--top", "2")
    data = json.loads(out)
    assert code == 0 and data["format"] == 1 and len(data["plans"]) <= 2
    assert {"scenario", "plans", "pareto", "rejected", "counterfactuals", "stats"} <= set(data)


def test_inline_flags_and_output_file_then_explain(cli, tmp_path):
    plan = tmp_path / "plan.yaml"
    code, out, _ = cli("recommend", "--hardware", "rtx-4090", "--base-model", "smollm2-360m",
                       "--memory-mb", "900", "--tolerance", "3", "--data", "calibration=128",
                       "--teacher", "logits:smollm2-1.7b", "-o", str(plan), "--no-counterfactuals")
    assert code == 0 and plan.is_file() and f"written to {plan}" in out
    code, out, _ = cli("explain", str(plan))
    assert code == 0 and "Why each step" in out and "predicted" in out
    code, out, _ = cli("explain", str(plan), "--json")
    assert json.loads(out)["base_model"] == "smollm2-360m"


def test_flags_override_a_named_scenario(cli):
    code, out, _ = cli("recommend", "-s", "phone", "--memory-mb", "2000", "--json")
    assert json.loads(out)["scenario"]["budgets"]["memory_mb"] == 2000


def test_user_mistakes_are_one_line_each_and_exit_2(cli, tmp_path):
    code, _, err = cli("recommend", "--hardware", "rtx4090", "--base-model", "smollm2-36m")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: <flags>") for line in lines)
    assert "did you mean 'rtx-4090'" in err and "did you mean 'smollm2-360m'" in err
    code, _, err = cli("recommend")
    assert code == 2 and "--scenario" in err
    code, _, err = cli("recommend", "-s", "phne")
    assert code == 2 and "did you mean 'phone'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: smollm2-360m\nsteps: [{method: gptqq}]\n")
    code, _, err = cli("explain", str(bad))
    assert code == 2 and "unknown method 'gptqq'" in err


def test_scenarios_list_and_show(cli):
    code, out, _ = cli("scenarios", "list")
    assert code == 0 and "phone" in out and "chat on a phone" in out
    code, out, _ = cli("scenarios", "show", "phone")
    assert code == 0 and yaml.safe_load(out)["hardware"] == "phone-soc"
    code, out, _ = cli("scenarios", "list", "--json")
    assert json.loads(out)[0]["name"] == "phone"


def test_data_spec_parsing():
    assert parse_data_spec("none") == {}
    assert parse_data_spec("calibration=128,labeled")["labeled"] > 0
    with pytest.raises(SlmrecError, match="unknown data tier 'labelled'"):
        parse_data_spec("labelled=5")
