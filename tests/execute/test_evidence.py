"""The SQLite run store: schema, round trip, the rows calibration reads."""

from __future__ import annotations

import sqlite3

import pytest

from slmrec.errors import SlmrecError
from slmrec.evidence import MEASUREMENT_FIELDS, SCHEMA_VERSION, RunStore, default_store_path


def _run(store: RunStore, **kw) -> int:
    args = dict(plan_yaml="steps: []\n", plan_hash="abc", base_model="tiny", kb_version="kb1",
                out_dir="/tmp/x", name="p", seed=0)
    args.update(kw)
    return store.start_run(**args)


def test_round_trip(tmp_path):
    store = RunStore(tmp_path / "deep" / "runs.sqlite")
    rid = _run(store)
    store.record_step(rid, 0, "rtn", metrics={"size_mb": 1.5, "ppl": 12.0, "junk": "x"},
                      predicted={"size_mb": {"value": 1.4, "low": 1.2, "high": 1.6},
                                 "ppl": 11.0},
                      context={"base_params": 1e6, "hardware": {"cores": 2}, "params": {"bits": 8}},
                      runner="weight-only-quant", params={"bits": 8}, wall_s=0.5,
                      checkpoint="steps/01-rtn")
    store.record_step(rid, 1, "eval", metrics={"ppl": float("nan")}, status="failed",
                      reason="boom")
    store.record_step(rid, None, "plan", metrics={"size_mb": 1.5},
                      predicted={"size_mb": {"value": 1.0}})
    store.finish_run(rid, "failed", "step 2 failed")

    run = store.run(rid)
    assert run["status"] == "failed" and run["reason"] == "step 2 failed" and run["finished"]
    assert run["plan_yaml"] == "steps: []\n" and run["kb_version"] == "kb1"
    assert [(s["method"], s["status"]) for s in run["steps"]] == [("rtn", "completed"),
                                                                 ("eval", "failed")]
    assert run["steps"][0]["params"] == {"bits": 8} and run["steps"][1]["reason"] == "boom"

    rows = store.measurements(method="rtn")
    assert [r["metric"] for r in rows] == ["ppl", "size_mb"]       # non-numbers skipped
    size = rows[1]
    assert set(MEASUREMENT_FIELDS) <= set(size)
    assert (size["run_id"], size["step_index"], size["predicted"], size["predicted_low"],
            size["predicted_high"], size["measured"]) == (rid, 0, 1.4, 1.2, 1.6, 1.5)
    assert size["context"] == {"base_params": 1e6, "hardware": {"cores": 2}, "params": {"bits": 8}}
    assert rows[0]["predicted"] == 11.0 and rows[0]["predicted_low"] is None
    assert store.measurements(method="eval") == []                 # NaN is not a measurement
    (plan_row,) = store.measurements(method="plan")
    assert plan_row["step_index"] is None and plan_row["measured"] == 1.5
    assert len(store.measurements(metric="size_mb")) == 2
    assert store.runs()[0]["steps_completed"] == 1


def test_rerecording_a_step_replaces_it_and_reopen(tmp_path):
    store = RunStore(tmp_path / "r.sqlite")
    rid = _run(store)
    store.record_step(rid, 0, "rtn", metrics={"ppl": 10.0, "size_mb": 2.0})
    store.record_step(rid, 0, "rtn", metrics={"ppl": 11.0})
    assert [(r["metric"], r["measured"]) for r in store.measurements(run_id=rid)] == [("ppl", 11.0)]
    store.finish_run(rid, "failed", "x")
    store.reopen_run(rid)
    assert store.run(rid)["status"] == "running" and store.run(rid)["reason"] is None
    with pytest.raises(ValueError):
        store.finish_run(rid, "weird")


def test_schema_is_versioned_and_wal(tmp_path):
    path = tmp_path / "r.sqlite"
    store = RunStore(path)
    assert store.schema_version == SCHEMA_VERSION
    RunStore(path)  # reopening applies nothing twice
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == SCHEMA_VERSION
    db.execute("INSERT INTO migrations VALUES (?, 'future')", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(SlmrecError, match="newer than this slmrec"):
        RunStore(path)


def test_runs_list_filters_and_unknown_ids(tmp_path):
    store = RunStore(tmp_path / "r.sqlite")
    a, b = _run(store), _run(store, name="q")
    store.finish_run(a, "completed")
    assert [r["id"] for r in store.runs()] == [b, a]
    assert [r["id"] for r in store.runs(status="completed")] == [a]
    with pytest.raises(SlmrecError, match=r"no run with id 99; recent ids: 2, 1"):
        store.run(99)
    with pytest.raises(SlmrecError, match="run id must be a number"):
        store.run("abc")


def test_store_path_resolution_and_garbage_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SLMREC_STORE", str(tmp_path / "env.sqlite"))
    assert default_store_path() == tmp_path / "env.sqlite"
    assert default_store_path(tmp_path / "x.sqlite") == tmp_path / "x.sqlite"
    monkeypatch.delenv("SLMREC_STORE")
    assert default_store_path().name == "runs.sqlite" and ".local" in str(default_store_path())
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SlmrecError, match="not a usable run store"):
        RunStore(bad)
