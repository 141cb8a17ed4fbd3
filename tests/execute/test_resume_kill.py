"""Kill a run mid-plan (in a subprocess), resume it, reach the same figures as a run left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runners.execute import execute
from slmrec.evidence import RunStore
from slmrec.plan import parse_plan
from tests.execute.conftest import make_plan, write_plan

ROOT = Path(__file__).resolve().parents[2]
SAME = ("params", "size_mb", "sparsity", "bits_per_weight", "ppl", "probe_ppl")


def _steps(tiny_model_dir):
    return make_plan(tiny_model_dir, [
        {"method": "train", "params": {"steps": 3}},
        {"method": "train-more", "params": {"steps": 400, "lr": 0.003}},  # long enough to be killed in
        "rtn", "eval"])


def _completed(state: Path) -> int:
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        return 0
    return sum(s["status"] == "completed" for s in data["report"]["steps"])


def test_kill_then_resume_matches_an_uninterrupted_run(tmp_path, kb_dir, tiny_kb, tiny_model_dir):
    plan_file = write_plan(tmp_path / "plan.yaml", _steps(tiny_model_dir))
    out, store = tmp_path / "run", tmp_path / "s.sqlite"
    env = {**os.environ, "SLMREC_TEST_KB": str(kb_dir), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tests.execute.isolated_cli", "run", str(plan_file), "--out",
           str(out), "--store", str(store), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while _completed(out / "state.json") < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "step 1 never completed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed_at = _completed(out / "state.json")
    assert 1 <= killed_at < 4, "the run finished before it could be killed"
    assert RunStore(store).run(1)["status"] == "running"   # a kill leaves no chance to record

    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after step" in resumed.stderr
    final = json.loads((out / "report.json").read_text())
    assert final["status"] == "completed"
    assert final["steps"][0]["resumed"] is True and final["steps"][3]["resumed"] is False
    run = RunStore(store).run(1)                           # the same run id, now completed
    assert run["status"] == "completed" and len(RunStore(store).runs()) == 1

    assert torch.get_num_threads() == 1  # as in the subprocess (OMP_NUM_THREADS=1): same sums
    alone = execute(parse_plan(_steps(tiny_model_dir)), kb=tiny_kb, out_dir=tmp_path / "alone",
                    store=False, progress=False)
    assert alone.ok
    for metric in SAME:
        assert final["final_metrics"][metric] == pytest.approx(alone.final_metrics[metric],
                                                               rel=1e-5), metric
    for a, b in zip(final["steps"], alone.steps):
        if "train_loss" in b.metrics:
            assert a["metrics"]["train_loss"] == pytest.approx(b.metrics["train_loss"], rel=1e-5)
