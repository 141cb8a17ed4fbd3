"""`slmrec run` and `slmrec runs`: output and exit codes (0 ok, 1 failed run, 2 user mistake)."""

from __future__ import annotations

import json

import pytest

from slmrec.cli import main
from tests.execute.conftest import make_plan, write_plan


def _cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse (--help, usage errors)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_run_then_runs_list_show_compare(tmp_path, capsys, tiny_model_dir):
    store = tmp_path / "s.sqlite"
    plan = write_plan(tmp_path / "p.yaml", make_plan(tiny_model_dir, [
        {"method": "rtn", "predicted": {"size_mb": {"value": 0.1, "low": 0.05, "high": 0.2}}},
        "eval"]))
    code, out, err = _cli(capsys, "run", plan, "--out", tmp_path / "a", "--store", store, "--quiet")
    assert code == 0, err
    assert "predicted" in out and "measured" in out and "size_mb" in out and "run 1 completed" in out
    code, out, _ = _cli(capsys, "run", plan, "--out", tmp_path / "b", "--store", store,
                        "--json", "--seed", "1")
    assert code == 0 and json.loads(out)["status"] == "completed"

    code, out, _ = _cli(capsys, "runs", "list", "--store", store)
    assert code == 0 and "completed" in out and out.count("test-plan") == 2
    code, out, _ = _cli(capsys, "runs", "list", "--store", store, "--json")
    assert [r["id"] for r in json.loads(out)] == [2, 1]
    code, out, _ = _cli(capsys, "runs", "show", "1", "--store", store)
    assert code == 0 and "weight-only-quant" in out and "size_mb" in out and "0.05–0.2" in out
    code, out, _ = _cli(capsys, "runs", "show", "1", "--store", store, "--json")
    assert json.loads(out)["steps"][0]["method"] == "rtn"
    code, out, _ = _cli(capsys, "runs", "compare", "1", "2", "--store", store)
    assert code == 0 and "B/A" in out and "params" in out
    code, out, _ = _cli(capsys, "runs", "compare", "1", "2", "--store", store, "--json")
    rows = json.loads(out)["rows"]
    assert any(r["metric"] == "params" and r["b_over_a"] == 1.0 for r in rows)


def test_exit_codes(tmp_path, capsys, tiny_model_dir):
    store = tmp_path / "s.sqlite"
    failing = write_plan(tmp_path / "f.yaml", make_plan(tiny_model_dir, ["nan-weights"]))
    code, out, err = _cli(capsys, "run", failing, "--out", tmp_path / "f", "--store", store, "--quiet")
    assert code == 1 and "failed" in out and "--resume" in err

    bad = write_plan(tmp_path / "b.yaml", make_plan(tiny_model_dir, ["awq", "nope"]))
    code, out, err = _cli(capsys, "run", bad, "--out", tmp_path / "b", "--store", store)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "method 'awq' is not executable here" in err and "unknown method 'nope'" in err

    code, _, err = _cli(capsys, "run", tmp_path / "missing.yaml", "--store", store)
    assert code == 2 and "plan file does not exist" in err
    code, _, err = _cli(capsys, "run", failing, "--out", tmp_path / "f", "--store", store)
    assert code == 2 and "already holds a run" in err
    code, _, err = _cli(capsys, "runs", "show", "42", "--store", store)
    assert code == 2 and "no run with id 42" in err
    code, _, err = _cli(capsys, "runs", "list", "--store", tmp_path / "none.sqlite")
    assert code == 2 and "no run store here yet" in err
    code, _, err = _cli(capsys, "run", failing, "--bogus")
    assert code == 2 and "unrecognized arguments" in err


@pytest.mark.parametrize("argv", [["run", "--help"], ["runs", "--help"], ["runs", "list", "--help"],
                                  ["runs", "show", "--help"], ["runs", "compare", "--help"]])
def test_help(capsys, argv):
    code, out, _ = _cli(capsys, *argv)
    assert code == 0 and "usage:" in out
