"""The command line under hostile arguments: every mistake is exit code 2 and one line per
problem on stderr, never a traceback (run in-process through slmrec.cli.main)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from slmrec.cli import main
from tests.execute.conftest import make_plan, write_plan
from tests.reliability.conftest import one_line

pytestmark = pytest.mark.usefixtures("faults")


def _cli(capsys, *args) -> tuple[int, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.err


@pytest.fixture
def plan_file(tmp_path, tiny_model_dir):
    return write_plan(tmp_path / "plan.yaml", make_plan(tiny_model_dir, ["rtn", "eval"]))


def _arg(tmp_path: Path, plan_file: Path, kind: str) -> list:
    store = tmp_path / "s.sqlite"
    common = ["--store", store, "--quiet"]
    if kind == "seed-negative":
        return ["run", plan_file, "--out", tmp_path / "r", "--seed", "-1", *common]
    if kind == "seed-huge":
        return ["run", plan_file, "--out", tmp_path / "r", "--seed", str(2**40), *common]
    if kind == "seed-text":
        return ["run", plan_file, "--seed", "abc", *common]
    if kind == "data-missing":
        return ["run", plan_file, "--out", tmp_path / "r", "--data", tmp_path / "no.txt", *common]
    if kind == "data-binary":
        (tmp_path / "b.txt").write_bytes(os.urandom(4096))
        return ["run", plan_file, "--out", tmp_path / "r", "--data", tmp_path / "b.txt", *common]
    if kind == "model-missing":
        return ["run", plan_file, "--out", tmp_path / "r", "--model", tmp_path / "nomodel", *common]
    if kind == "out-is-file":
        (tmp_path / "f").write_text("x")
        return ["run", plan_file, "--out", tmp_path / "f", *common]
    if kind == "resume-nothing":
        return ["run", plan_file, "--out", tmp_path / "r", "--resume", *common]
    if kind == "plan-missing":
        return ["run", tmp_path / "none.yaml", *common]
    if kind == "plan-folder":
        (tmp_path / "pdir.yaml").mkdir()
        return ["run", tmp_path / "pdir.yaml", *common]
    if kind == "plan-binary":
        (tmp_path / "pb.yaml").write_bytes(b"\xff\xfe\x00\x01" * 10)
        return ["run", tmp_path / "pb.yaml", *common]
    if kind == "plan-fifo":
        os.mkfifo(tmp_path / "pf.yaml")
        return ["run", tmp_path / "pf.yaml", *common]
    if kind == "store-folder":
        (tmp_path / "sdir").mkdir()
        return ["run", plan_file, "--out", tmp_path / "r", "--store", tmp_path / "sdir", "--quiet"]
    if kind == "store-garbage":
        (tmp_path / "g.sqlite").write_bytes(b"garbage" * 1000)
        return ["run", plan_file, "--out", tmp_path / "r", "--store", tmp_path / "g.sqlite",
                "--quiet"]
    if kind == "store-under-a-file":
        (tmp_path / "afile").write_text("x")
        return ["run", plan_file, "--out", tmp_path / "r", "--store", tmp_path / "afile" / "s",
                "--quiet"]
    if kind == "list-garbage-store":
        (tmp_path / "g.sqlite").write_bytes(b"garbage" * 1000)
        return ["runs", "list", "--store", tmp_path / "g.sqlite"]
    if kind == "list-no-store":
        return ["runs", "list", "--store", tmp_path / "none.sqlite"]
    if kind == "show-not-a-number":
        _store_with_run(store)
        return ["runs", "show", "abc", "--store", store]
    if kind == "show-unknown-id":
        _store_with_run(store)
        return ["runs", "show", "999", "--store", store]
    if kind == "compare-unknown":
        _store_with_run(store)
        return ["runs", "compare", "1", "7", "--store", store]
    if kind == "calibrate-out-folder":
        _store_with_run(store)
        (tmp_path / "odir").mkdir()
        return ["calibrate", "--store", store, "-o", tmp_path / "odir"]
    if kind == "calibrate-out-dev-null":
        _store_with_run(store)
        return ["calibrate", "--store", store, "-o", "/dev/null"]
    if kind.startswith("recommend-out"):
        target = "/dev/null"
        if kind.endswith("symlink"):
            target = tmp_path / "link.yaml"
            target.symlink_to(tmp_path / "elsewhere.yaml")
        return ["recommend", "--scenario", "bundled-demo", "-o", target]
    if kind.startswith("graph-"):
        target = {"graph-missing-folder": tmp_path / "no" / "g.json",
                  "graph-folder": tmp_path,
                  "graph-proc": "/proc/self/g.json",
                  "graph-dev-null": "/dev/null",
                  "graph-bad-format": tmp_path / "g.x"}[kind]
        fmt = "xml" if kind == "graph-bad-format" else "json"
        return ["graph", "export", "--format", fmt, "-o", target]
    raise AssertionError(kind)


def _store_with_run(path: Path) -> None:
    from slmrec.evidence import RunStore

    s = RunStore(path)
    rid = s.start_run(plan_yaml="x", plan_hash="h", base_model="m")
    s.finish_run(rid, "completed")


CLI_CASES = [
    ("seed-negative", "--seed"), ("seed-huge", "--seed"), ("seed-text", "invalid int"),
    ("data-missing", "does not exist"), ("data-binary", "utf-8"),
    ("model-missing", "cannot load model"), ("out-is-file", "existing file"),
    ("resume-nothing", "nothing to resume"), ("plan-missing", "does not exist"),
    ("plan-folder", "does not exist"), ("plan-binary", "cannot read"),
    ("plan-fifo", "does not exist"),
    ("store-folder", "not a file"), ("store-garbage", "not a usable run store"),
    ("store-under-a-file", "cannot create the run store"),
    ("list-garbage-store", "not a usable run store"), ("list-no-store", "no run store here"),
    ("show-not-a-number", "must be a number"), ("show-unknown-id", "no run with id 999"),
    ("compare-unknown", "no run with id 7"), ("calibrate-out-folder", "a folder"),
    ("recommend-out-dev-null", "character device"), ("recommend-out-symlink", "symbolic link"),
    ("calibrate-out-dev-null", "character device"),
    ("graph-missing-folder", "does not exist"), ("graph-folder", "a folder"),
    ("graph-proc", "cannot write"), ("graph-dev-null", "character device"),
    ("graph-bad-format", "unknown format"),
]


@pytest.mark.parametrize("kind,needle", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_mistakes_exit_2_with_one_line(tmp_path, capsys, plan_file, kind, needle):
    args = _arg(tmp_path, plan_file, kind)
    code, err = _cli(capsys, *args)
    assert code == 2, err
    one_line(err, needle)
    assert not (tmp_path / "r").exists()  # nothing ran, nothing was created


@pytest.mark.parametrize("flag,value", [("--memory-mb", "nan"), ("--memory-mb", "-5"),
                                        ("--latency-ms", "inf"), ("--tolerance", "nan"),
                                        ("--size-mb", "0")])
def test_recommend_flags_refuse_unphysical_numbers(capsys, monkeypatch, flag, value):
    import slmrec.kb

    monkeypatch.setattr(slmrec.kb, "SHIPPED_KB", Path(__file__).resolve().parents[2] / "kb")
    code, err = _cli(capsys, "recommend", "--hardware", "laptop-2core-avx2", "--base-model",
                     "smollm2-135m", flag, value)
    assert code == 2, err
    one_line(err)


def test_runs_list_reads_a_locked_store(tmp_path, capsys):
    """A store another process holds locked (a writer mid-transaction) is still listed."""
    store = tmp_path / "s.sqlite"
    _store_with_run(store)
    other = sqlite3.connect(store, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        code = main(["runs", "list", "--store", str(store)])
        out = capsys.readouterr().out
    finally:
        other.rollback()
        other.close()
    assert code == 0 and "completed" in out


def test_an_os_error_anywhere_is_one_line(capsys, monkeypatch):
    """The last guard: an OSError no command anticipated is exit 2 and one line."""
    import slmrec.cli.run_cmd as rc

    def boom(args):
        raise PermissionError(13, "Permission denied", "/some/file")
    monkeypatch.setattr(rc, "cmd_runs_list", boom)
    code, err = _cli(capsys, "runs", "list")
    assert code == 2
    one_line(err, "/some/file", "permission denied")
