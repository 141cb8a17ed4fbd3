"""Executor faults: a locked, damaged or vanished run store, a full disk, SIGTERM, SIGKILL, a
corrupted checkpoint, a damaged state.json, two runs on one folder, and bad inputs. Each test
asserts the exact recovered state: no row left `running`, no step without its row, no run that
completes on a silently wrong input, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.execute import execute
from slmrec.errors import SlmrecError
from slmrec.evidence import RunStore
from slmrec.plan import parse_plan
from tests.execute.conftest import make_plan, write_plan
from tests.reliability.conftest import one_line

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("faults")


def _run(kb, plan_dict, out, store, **kw):
    return execute(parse_plan(plan_dict), kb=kb, out_dir=out, store=store, progress=False,
                   log=lambda m: None, **kw)


def _steps_with_rows(store: RunStore, rid: int) -> list[int]:
    return [s["step_index"] for s in store.run(rid)["steps"] if s["status"] == "completed"]


def _no_temp_files(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if ".tmp" in p.name]
    assert not left, left


# ---- the run store ---------------------------------------------------------------------------------

def test_store_locked_mid_run_then_resume_records_every_step(tmp_path, fault_kb, tiny_model_dir,
                                                             monkeypatch):
    """A real SQLite lock taken by another connection from step 2 on: the run completes (the
    store is bookkeeping, not the work), says what it could not record, and `--resume` writes
    every missing row under the same run id."""
    path = tmp_path / "s.sqlite"
    store = RunStore(path, timeout=0.2)
    holder: list[sqlite3.Connection] = []
    real = RunStore.record_step

    def locking(self, run_id, step_index, *a, **k):
        if step_index == 1 and not holder:
            other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            holder.append(other)
        return real(self, run_id, step_index, *a, **k)
    monkeypatch.setattr(RunStore, "record_step", locking)
    plan = make_plan(tiny_model_dir, [{"method": "train", "params": {"steps": 2}}, "rtn", "eval"])
    out = tmp_path / "run"
    report = _run(fault_kb, plan, out, store)
    assert report.status == "completed"
    assert any("run store: could not record step 2" in n for n in report.notes)
    assert any("could not record the run's end" in n for n in report.notes)
    assert json.loads((out / "state.json").read_text())["report"]["status"] == "completed"
    holder[0].rollback()
    holder[0].close()
    row = store.run(report.run_id)
    assert row["status"] == "running" and not row["stale"]  # our process: alive, not stale
    assert _steps_with_rows(store, report.run_id) == [0]

    again = _run(fault_kb, plan, out, store, resume=True)
    assert again.status == "completed" and again.run_id == report.run_id
    row = store.run(report.run_id)
    assert row["status"] == "completed" and len(store.runs()) == 1
    assert _steps_with_rows(store, report.run_id) == [0, 1, 2]
    measured = {(m["step_index"], m["metric"]) for m in row["measurements"]}
    assert {(1, "ppl"), (2, "ppl"), (None, "ppl")} <= measured


def test_store_damaged_mid_run_is_a_note_then_a_clean_error(tmp_path, fault_kb, tiny_model_dir,
                                                            monkeypatch):
    path = tmp_path / "s.sqlite"
    store = RunStore(path, timeout=0.2)
    real = RunStore.record_step

    def damaging(self, run_id, step_index, *a, **k):
        if step_index == 1:
            self.close()
            for f in tmp_path.glob("s.sqlite*"):
                f.write_bytes(b"garbage " * 4096)
        return real(self, run_id, step_index, *a, **k)
    monkeypatch.setattr(RunStore, "record_step", damaging)
    out = tmp_path / "run"
    report = _run(fault_kb, make_plan(tiny_model_dir, ["rtn", "eval"]), out, store)
    assert report.status == "completed"
    assert any("not a usable run store" in n for n in report.notes)
    with pytest.raises(SlmrecError) as exc:
        _run(fault_kb, make_plan(tiny_model_dir, ["rtn", "eval"]), out, path, resume=True)
    one_line(exc.value, "s.sqlite", "not a usable run store")


# ---- the disk -----------------------------------------------------------------------------------------

def test_disk_full_writing_state_json_simulated(tmp_path, fault_kb, tiny_model_dir, monkeypatch):
    """ENOSPC from every state.json write after the first (simulated: see the tmpfs test for the
    real thing): the store row still ends `failed`, the last good state.json stays readable and no
    temporary file is left."""
    import runners.execute as ex

    real, calls = ex._write_json, []

    def full(path, data):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(28, "No space left on device", str(path))
        real(path, data)
    monkeypatch.setattr(ex, "_write_json", full)
    store = RunStore(tmp_path / "s.sqlite")
    out = tmp_path / "run"
    report = _run(fault_kb, make_plan(tiny_model_dir, ["rtn", "eval"]), out, store)
    assert report.status == "failed" and "No space left" in report.reason
    assert any("could not write state.json" in n for n in report.notes)
    assert store.run(report.run_id)["status"] == "failed"
    assert json.loads((out / "state.json").read_text())["report"]["status"] == "running"
    _no_temp_files(out)


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); the simulated ENOSPC test covers it")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_on_a_real_tmpfs_then_resume(tmp_path, tmpfs, fault_kb, tiny_model_dir):
    """The run folder on a 6 MB tmpfs that a step fills: the checkpoint, error.log, state.json
    and report writes meet ENOSPC; the run ends `failed` in the store with the reason, nothing
    half-written is left, and once space is freed `--resume` completes the same run."""
    store = RunStore(tmp_path / "s.sqlite")
    out = tmpfs / "run"
    marker = tmp_path / "filled-once"
    plan = make_plan(tiny_model_dir, [{"method": "train", "params": {"steps": 2}},
                                      {"method": "fill-disk", "params": {"marker": str(marker)}},
                                      "rtn", "eval"])
    report = _run(fault_kb, plan, out, store)
    assert report.status == "failed" and "No space left" in (report.reason or "")
    row = store.run(report.run_id)
    assert row["status"] == "failed" and _steps_with_rows(store, report.run_id) == [0]
    _no_temp_files(out)
    state = json.loads((out / "state.json").read_text())  # the last good one, whole
    assert state["report"]["steps"][0]["status"] == "completed"
    marker.write_text("done")
    for f in out.rglob("filler.bin"):
        f.unlink()
    again = _run(fault_kb, plan, out, store, resume=True)
    assert again.status == "completed" and again.run_id == report.run_id
    assert store.run(report.run_id)["status"] == "completed"
    assert _steps_with_rows(store, report.run_id) == [0, 1, 2, 3]


# ---- checkpoints and state.json ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, fault_kb, tiny_model_dir):
    """A run whose third step failed, with two intact checkpoints to corrupt."""
    import runners.registry as registry
    from tests.execute.conftest import TEST_RUNNERS

    registry.RUNNERS.update(TEST_RUNNERS)
    base = tmp_path_factory.mktemp("stopped")
    plan = make_plan(tiny_model_dir, [{"method": "train", "params": {"steps": 2}},
                                      {"method": "train-more", "params": {"steps": 2, "lr": 0.01}},
                                      {"method": "fail-once",
                                       "params": {"marker": str(base / "marker")}}])
    report = _run(fault_kb, plan, base / "run", False)
    assert report.status == "failed" and report.failed_step == 2
    return base / "run", plan, report.steps[1].metrics["ppl"]


def _flip_tensor_bytes(f: Path) -> None:
    raw = bytearray(f.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    for i in range(header + 64, min(len(raw), header + 4096), 7):
        raw[i] ^= 0x55
    f.write_bytes(bytes(raw))


CORRUPTIONS = [
    ("tensor-bytes", lambda d: _flip_tensor_bytes(d / "model.safetensors")),
    ("truncated", lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:-1000])),
    ("tokenizer-edited", lambda d: (d / "tokenizer.json").write_text(
        (d / "tokenizer.json").read_text().replace("<|endoftext|>", "<|endoftexT|>"))),
    ("config-deleted", lambda d: (d / "config.json").unlink()),
]


@pytest.mark.parametrize("corrupt", [c[1] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_a_corrupted_checkpoint_is_not_trusted_on_resume(tmp_path, stopped_run, fault_kb, corrupt):
    """Bytes changed under an intact header used to load silently and measure a wrong model:
    now the sha256 recorded at checkpoint time refuses it, the step runs again from the
    checkpoint before, and it measures exactly what it measured the first time."""
    src, plan, ppl_before = stopped_run
    out = shutil.copytree(src, tmp_path / "run")
    corrupt(out / "steps" / "02-train-more")
    report = _run(fault_kb, plan, out, False, resume=True)
    assert report.status == "completed"
    assert any("checkpoint of step 2 (train-more) was corrupt" in n for n in report.notes)
    assert report.steps[0].resumed and not report.steps[1].resumed
    assert report.steps[1].metrics["ppl"] == pytest.approx(ppl_before, rel=1e-6)


DAMAGED_STATE = [
    ("not-json", "{oops"),
    ("empty", ""),
    ("binary", "\x00\x01\x02"),
    ("a-list", "[]"),
    ("no-report", json.dumps({"format": 1})),
    ("report-a-string", json.dumps({"report": "x"})),
    ("steps-a-string", json.dumps({"report": {"steps": "all"}})),
    ("step-without-index", json.dumps({"report": {"steps": [{"method": "rtn"}]}})),
    ("index-a-string", json.dumps({"report": {"steps": [{"index": "0", "method": "rtn"}]}})),
    ("metrics-a-list", json.dumps({"report": {"steps": [{"index": 0, "method": "rtn",
                                                         "metrics": [1]}]}})),
    ("checkpoint-absolute", json.dumps({"report": {"steps": [{"index": 0, "method": "rtn",
                                                              "checkpoint": "/etc"}]}})),
    ("checkpoint-escapes", json.dumps({"report": {"steps": [{"index": 0, "method": "rtn",
                                                             "checkpoint": "../../x"}]}})),
    ("checksums-a-list", json.dumps({"checksums": [], "report": {"steps": []}})),
    ("run-id-a-string", json.dumps({"report": {"run_id": "1", "steps": []}})),
    ("unknown-step-field-type", json.dumps({"report": {"steps": [{"index": 0, "method": 5}]}})),
]


@pytest.mark.parametrize("text", [c[1] for c in DAMAGED_STATE], ids=[c[0] for c in DAMAGED_STATE])
def test_a_damaged_state_json_is_one_line_on_resume(tmp_path, fault_kb, tiny_model_dir, text):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.json").write_text(text)
    with pytest.raises(SlmrecError) as exc:
        _run(fault_kb, make_plan(tiny_model_dir, ["rtn"]), out, False, resume=True)
    one_line(exc.value, "state.json", "damaged")


# ---- inputs are checked before any model loads ------------------------------------------------------

def _bad_input(tmp_path, tiny_model_dir, kind):
    kw, plan = {}, make_plan(tiny_model_dir, ["rtn", "eval"])
    if kind == "data-missing":
        kw["data"] = tmp_path / "nope.txt"
    elif kind == "data-nul":
        (tmp_path / "c.txt").write_bytes(b"text " * 100 + b"\0" * 10_000)
        kw["data"] = tmp_path / "c.txt"
    elif kind == "data-folder":
        (tmp_path / "d.txt").mkdir()
        kw["data"] = tmp_path / "d.txt"
    elif kind == "data-empty":
        (tmp_path / "e.txt").write_text("")
        kw["data"] = tmp_path / "e.txt"
    elif kind == "seed-negative":
        kw["seed"] = -1
    elif kind == "seed-huge":
        kw["seed"] = 2**40
    elif kind == "model-missing-tensors":
        from safetensors.torch import load_file, save_file

        folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
        t = load_file(str(folder / "model.safetensors"))
        save_file({"lm_head.weight": next(iter(t.values()))}, str(folder / "model.safetensors"))
        plan = make_plan(folder, ["rtn", "eval"])
    elif kind == "model-truncated":
        folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
        (folder / "model.safetensors").write_bytes(b"\x10\x00")
        plan = make_plan(folder, ["rtn", "eval"])
    elif kind == "plan-bad-param":
        plan = make_plan(tiny_model_dir, [{"method": "rtn", "params": {"bits": 3}}])
    elif kind == "out-is-a-file":
        (tmp_path / "run").write_text("not a folder")
    return plan, kw


BAD_INPUTS = [("data-missing", "--data", "does not exist"), ("data-nul", "c.txt", "binary data"),
              ("data-folder", "d.txt", "not a regular file"), ("data-empty", "e.txt", "empty"),
              ("seed-negative", "--seed", "0 to"), ("seed-huge", "--seed", "0 to"),
              ("model-missing-tensors", "weights do not match config.json", "20 missing tensors"),
              ("model-truncated", "model.safetensors", "corrupt"),
              ("plan-bad-param", "<plan>", "must be one of"),
              ("out-is-a-file", "run", "existing file")]


@pytest.mark.parametrize("kind,where,needle", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_fail_before_the_model_loads_and_leave_nothing(tmp_path, fault_kb,
                                                                  tiny_model_dir, monkeypatch,
                                                                  kind, where, needle):
    import runners.checkpoint
    import runners.models

    def never(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(runners.models, "load_model", never)
    monkeypatch.setattr(runners.checkpoint, "load_checkpoint", never)
    plan, kw = _bad_input(tmp_path, tiny_model_dir, kind)
    store = RunStore(tmp_path / "s.sqlite")
    out = tmp_path / "run"
    existed = out.exists()
    with pytest.raises(SlmrecError) as exc:
        _run(fault_kb, plan, out, store, **kw)
    one_line(exc.value, where, needle)
    assert out.exists() == existed and store.runs() == []


# ---- one folder, one run ----------------------------------------------------------------------------------

def test_a_stale_lock_is_taken_over_and_another_kb_version_is_noted(tmp_path, fault_kb, tiny_model_dir):
    from runners.bookkeeping import LOCK

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    import socket

    (out / LOCK).write_text(json.dumps({"pid": dead.pid, "pid_start": 1.0,
                                        "host": socket.gethostname()}))
    report = _run(fault_kb, make_plan(tiny_model_dir, ["eval"], kb_version="0ld"), out, False)
    assert report.status == "completed" and not (out / LOCK).exists()
    # the plan was made for another KB version: said, not silently ignored
    assert any("made with KB version 0ld" in n for n in report.notes)


# ---- signals (a real process) -------------------------------------------------------------------------------

def _cli(plan_file, out, store, *extra):
    env = {**os.environ, "SLMREC_TEST_KB": os.environ["SLMREC_FAULT_KB"], "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tests.reliability.isolated_cli", "run", str(plan_file),
           "--out", str(out), "--store", str(store), "--quiet", *extra]
    return cmd, env


def _resume(kb, plan_file, out, store):
    import yaml

    return _run(kb, yaml.safe_load(plan_file.read_text()), out, RunStore(store), resume=True,
                plan_file=str(plan_file))


def _start_waiting_run(tmp_path, tiny_model_dir, fault_kb_dir, monkeypatch):
    monkeypatch.setenv("SLMREC_FAULT_KB", str(fault_kb_dir))
    marker = tmp_path / "go"
    plan_file = write_plan(tmp_path / "plan.yaml", make_plan(
        tiny_model_dir, ["rtn", {"method": "wait", "params": {"marker": str(marker)}}, "eval"]))
    out, store = tmp_path / "run", tmp_path / "s.sqlite"
    cmd, env = _cli(plan_file, out, store)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 90
    while not Path(str(marker) + ".started").exists():
        if proc.poll() is not None:
            pytest.fail(proc.communicate())
        assert time.monotonic() < deadline, "the run never reached its waiting step"
        time.sleep(0.02)
    return proc, marker, plan_file, out, store, cmd, env


def test_sigterm_is_recorded_like_ctrl_c(tmp_path, tiny_model_dir, fault_kb_dir, fault_kb,
                                         monkeypatch):
    """(SIGHUP takes the same handler: runners.bookkeeping.terminate_as_interrupt.)"""
    sig = signal.SIGTERM
    proc, marker, plan_file, out, store, cmd, env = _start_waiting_run(
        tmp_path, tiny_model_dir, fault_kb_dir, monkeypatch)
    try:
        # while it runs, a second run on the same folder is refused (the folder is claimed)
        import yaml

        with pytest.raises(SlmrecError) as exc:
            _run(fault_kb, yaml.safe_load(plan_file.read_text()), out, False, resume=True)
        one_line(exc.value, "another run (pid")
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "Traceback" not in err and "--resume" in err
    row = RunStore(store).run(1)
    assert row["status"] == "interrupted" and row["reason"] == f"terminated by {sig.name}"
    assert json.loads((out / "state.json").read_text())["report"]["status"] == "interrupted"
    marker.write_text("go")  # resumed in this process (one interpreter start less)
    done = _resume(fault_kb, plan_file, out, store)
    assert done.status == "completed" and done.run_id == 1
    assert RunStore(store).run(1)["status"] == "completed"
    assert _steps_with_rows(RunStore(store), 1) == [0, 1, 2]


def test_sigkill_leaves_a_stale_row_that_is_shown_and_reaped(tmp_path, tiny_model_dir,
                                                             fault_kb_dir, fault_kb, monkeypatch,
                                                             capsys):
    from slmrec.cli import main

    proc, marker, plan_file, out, store, cmd, env = _start_waiting_run(
        tmp_path, tiny_model_dir, fault_kb_dir, monkeypatch)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    rows = RunStore(store).runs()
    assert rows[0]["status"] == "running" and rows[0]["stale"]  # nothing could record the kill
    code = main(["runs", "show", "1", "--store", str(store)])
    assert code == 0 and "stale" in capsys.readouterr().out
    code = main(["runs", "list", "--store", str(store)])
    captured = capsys.readouterr()
    assert code == 0 and "run 1 was still marked running but its process is gone" in captured.err
    row = RunStore(store).run(1)
    assert row["status"] == "interrupted" and f"pid {proc.pid}" in row["reason"]
    marker.write_text("go")  # resumed in this process (one interpreter start less)
    done = _resume(fault_kb, plan_file, out, store)
    assert done.status == "completed" and done.run_id == 1
    assert RunStore(store).run(1)["status"] == "completed"
    assert _steps_with_rows(RunStore(store), 1) == [0, 1, 2]
