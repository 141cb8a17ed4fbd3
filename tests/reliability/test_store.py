"""The run store's liveness bookkeeping: pid, process start time, host and heartbeat decide
whether a `running` row is alive or stale."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from slmrec.evidence import STALE_AFTER_S, RunStore

HOST = socket.gethostname()
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _my_start() -> float:
    import psutil

    return psutil.Process().create_time()


STALE_CASES = [
    ("this-process", lambda: {"pid": os.getpid(), "pid_start": _my_start(), "host": HOST}, False),
    ("dead-pid", lambda: {"pid": _dead_pid(), "pid_start": None, "host": HOST}, True),
    ("reused-pid", lambda: {"pid": os.getpid(), "pid_start": _my_start() - 3600, "host": HOST},
     True),
    ("other-host-fresh", lambda: {"pid": 1, "host": "elsewhere",
                                  "heartbeat": (NOW - timedelta(seconds=30)).isoformat()}, False),
    ("other-host-silent", lambda: {"pid": 1, "host": "elsewhere",
                                   "heartbeat": (NOW - timedelta(seconds=STALE_AFTER_S + 1))
                                   .isoformat()}, True),
    ("old-row-no-pid", lambda: {"created": (NOW - timedelta(days=2)).isoformat()}, True),
    ("garbage-heartbeat", lambda: {"host": "elsewhere", "heartbeat": "yesterday"}, True),
    ("finished-run", lambda: {"status": "completed", "pid": _dead_pid(), "host": HOST}, False),
]


@pytest.mark.parametrize("row,stale", [c[1:] for c in STALE_CASES], ids=[c[0] for c in STALE_CASES])
def test_stale_rows(row, stale):
    assert RunStore.stale({"status": "running", **row()}, now=NOW) is stale


def test_reap_marks_only_stale_rows(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    live = store.start_run(plan_yaml="x", plan_hash="h", base_model="m")
    dead = store.start_run(plan_yaml="x", plan_hash="h", base_model="m")
    done = store.start_run(plan_yaml="x", plan_hash="h", base_model="m")
    store.finish_run(done, "completed")
    with store._connect() as db:
        db.execute("UPDATE runs SET pid = ? WHERE id = ?", (_dead_pid(), dead))
    assert store.reap_stale() == [dead]
    status = {r["id"]: r["status"] for r in store.runs()}
    assert status == {live: "running", dead: "interrupted", done: "completed"}
    assert store.reap_stale() == []


def test_heartbeat_thread_touches_the_row(tmp_path, monkeypatch):
    from runners.bookkeeping import Heartbeat

    store = RunStore(tmp_path / "s.sqlite")
    rid = store.start_run(plan_yaml="x", plan_hash="h", base_model="m")
    beats = []
    real = RunStore.heartbeat
    monkeypatch.setattr(RunStore, "heartbeat", lambda self, r: (beats.append(r), real(self, r)))
    with Heartbeat(store, rid, 0.01):
        deadline = time.monotonic() + 10
        while len(beats) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert beats[:3] == [rid] * 3
    assert store.run(rid)["heartbeat"] is not None


def test_the_store_migrates_a_version_1_store(tmp_path):
    """A store written before liveness columns existed opens, gains them, keeps its rows."""
    import sqlite3

    from slmrec.evidence import _MIGRATIONS

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)")
    for stmt in filter(str.strip, _MIGRATIONS[0].split(";")):
        db.execute(stmt)
    db.execute("INSERT INTO migrations VALUES (1, 'then')")
    db.execute("INSERT INTO runs (created, plan_yaml, plan_hash, base_model, status) "
               "VALUES ('2025-01-01T00:00:00+00:00', 'x', 'h', 'm', 'running')")
    db.commit()
    db.close()
    store = RunStore(path)
    assert store.schema_version == 2
    row = store.runs()[0]
    assert row["pid"] is None and row["stale"]  # no pid, silent since 2025: stale
