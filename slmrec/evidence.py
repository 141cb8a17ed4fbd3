"""The run store: every executed plan and every measurement, as evidence for calibration.

SQLite (stdlib `sqlite3`) in WAL mode, so a running executor and a reader (the CLI, the app,
calibration) never block each other for long. The schema is versioned: `migrations` records each
applied version and `_MIGRATIONS` only ever grows.

Tables
- `runs`: one row per run (the plan YAML and its hash, KB version, base model, status, reason,
  output folder).
- `steps`: one row per executed step (runner, parameters, status, reason, wall time, checkpoint).
- `measurements`: one row per (run, step, metric): predicted value/low/high next to the measured
  value, with a JSON `context` (base model parameters, hardware, step parameters, the metrics of
  the step's input model). Plan-level (final model) rows have `step_index` NULL and method `plan`.

`RunStore.measurements()` returns dict rows with exactly the fields calibration reads:
run_id, step_index, method, metric, predicted, predicted_low, predicted_high, measured, context.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from slmrec.errors import SlmrecError

DEFAULT_STORE = Path("~/.local/share/slmrec/runs.sqlite")
HEARTBEAT_S = 30        # a running executor touches its row this often
STALE_AFTER_S = 600     # a row silent this long (or whose process is gone) is stale
PLAN_METHOD = "plan"  # `method` of plan-level (final model) measurement rows

RUN_STATUSES = ("running", "completed", "failed", "interrupted")

_MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        created     TEXT NOT NULL,
        finished    TEXT,
        name        TEXT,
        plan_yaml   TEXT NOT NULL,
        plan_hash   TEXT NOT NULL,
        kb_version  TEXT,
        base_model  TEXT NOT NULL,
        seed        INTEGER,
        status      TEXT NOT NULL,
        reason      TEXT,
        out_dir     TEXT
    );
    CREATE TABLE steps (
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_index  INTEGER NOT NULL,
        method      TEXT NOT NULL,
        runner      TEXT,
        params      TEXT NOT NULL DEFAULT '{}',
        status      TEXT NOT NULL,
        reason      TEXT,
        wall_s      REAL,
        checkpoint  TEXT,
        PRIMARY KEY (run_id, step_index)
    );
    CREATE TABLE measurements (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_index      INTEGER,
        method          TEXT NOT NULL,
        metric          TEXT NOT NULL,
        predicted       REAL,
        predicted_low   REAL,
        predicted_high  REAL,
        measured        REAL,
        context         TEXT NOT NULL DEFAULT '{}'
    );
    CREATE UNIQUE INDEX measurements_key
        ON measurements (run_id, IFNULL(step_index, -1), metric);
    CREATE INDEX measurements_metric ON measurements (metric, method);
    """,
    # version 2: who runs a `running` row, so a dead run is noticed (see RunStore.stale)
    """
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    ALTER TABLE runs ADD COLUMN pid_start REAL;
    ALTER TABLE runs ADD COLUMN host TEXT;
    ALTER TABLE runs ADD COLUMN heartbeat TEXT;
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)

MEASUREMENT_FIELDS = ("run_id", "step_index", "method", "metric", "predicted", "predicted_low",
                      "predicted_high", "measured", "context")


def default_store_path(explicit: str | os.PathLike | None = None) -> Path:
    """--store, else $SLMREC_STORE, else ~/.local/share/slmrec/runs.sqlite."""
    raw = explicit or os.environ.get("SLMREC_STORE") or DEFAULT_STORE
    return Path(raw).expanduser()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _me() -> tuple[int, float | None, str]:
    """(pid, process start time, host) of this process."""
    try:
        import psutil

        start = psutil.Process().create_time()
    except Exception:  # noqa: BLE001  (psutil missing or /proc unreadable)
        start = None
    return os.getpid(), start, socket.gethostname()


def process_alive(pid: int | None, start: float | None) -> bool:
    """True when process `pid` exists here and (when known) started at `start` (not a reused
    pid)."""
    if not pid:
        return False
    try:
        import psutil

        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return start is None or abs(proc.create_time() - float(start)) < 1.0
    except Exception:  # noqa: BLE001  (NoSuchProcess, AccessDenied: treat as gone/alive below)
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return start is None


def _store_error(path: Path, exc: sqlite3.Error) -> SlmrecError:
    """A sqlite3 error as one line: locked, damaged, or another failure, and what to do."""
    text = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:120]
    if "locked" in text or "busy" in text:
        msg = (f"the run store is locked by another process ({text}); retry when it is done, "
               "or pass another --store")
    elif "not a database" in text or "malformed" in text or "corrupt" in text:
        msg = (f"not a usable run store ({text}); it is damaged: move it aside or pass another "
               "--store path or set $SLMREC_STORE")
    else:
        msg = f"run store error ({text}); pass another --store path or set $SLMREC_STORE"
    return SlmrecError.one(str(path), msg)


def _num(v: Any) -> float | None:
    """A finite float, or None (NaN/inf are stored as NULL, never as garbage)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _pred(p: Any) -> tuple[float | None, float | None, float | None]:
    """(value, low, high) of a Prediction, a dict or a plain number."""
    if p is None:
        return None, None, None
    if isinstance(p, (int, float)):
        return _num(p), None, None
    get = p.get if isinstance(p, Mapping) else (lambda k: getattr(p, k, None))
    return _num(get("value")), _num(get("low")), _num(get("high"))


class RunStore:
    """The SQLite run store at `path` (created, with parent folders, on first use)."""

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 30.0):
        self.path = default_store_path(path)
        self.timeout = timeout
        self._local = threading.local()  # one connection per thread, opened on first use
        if self.path.exists() and not self.path.is_file():
            raise SlmrecError.one(str(self.path), "is not a file; pass a file path as --store")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                self._migrate(db)
        except SlmrecError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise SlmrecError.one(str(self.path), "cannot create the run store: "
                                  f"{exc.strerror or exc}") from None

    # ---- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, inside one transaction (committed or rolled back on exit).

        WAL with synchronous=NORMAL: a commit survives a killed process (not a power cut)
        without an fsync per commit."""
        try:
            db = getattr(self._local, "db", None)
            if db is None:
                db = sqlite3.connect(self.path, timeout=self.timeout)
                self._local.db = db
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA foreign_keys = ON")
                db.execute("PRAGMA synchronous = NORMAL")
            with db:
                yield db
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _migrate(self, db: sqlite3.Connection) -> None:
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, "
                   "applied TEXT NOT NULL)")
        done = {r[0] for r in db.execute("SELECT version FROM migrations")}
        newer = [v for v in done if v > SCHEMA_VERSION]
        if newer:
            raise SlmrecError.one(str(self.path), f"run store schema version {max(newer)} is newer "
                                  f"than this slmrec understands ({SCHEMA_VERSION}); upgrade slmrec")
        for version, script in enumerate(_MIGRATIONS, start=1):
            if version in done:
                continue
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO migrations (version, applied) VALUES (?, ?)",
                       (version, _now()))

    @property
    def schema_version(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT MAX(version) FROM migrations").fetchone()[0] or 0

    # ---- writing -------------------------------------------------------------------------------

    def start_run(self, *, plan_yaml: str, plan_hash: str, base_model: str,
                  kb_version: str | None = None, out_dir: str | os.PathLike | None = None,
                  name: str | None = None, seed: int | None = None) -> int:
        """Insert a run with status `running`; return its id."""
        pid, start, host = _me()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs (created, name, plan_yaml, plan_hash, kb_version, base_model, "
                "seed, status, out_dir, pid, pid_start, host, heartbeat) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (_now(), name, plan_yaml, plan_hash, kb_version, base_model, seed,
                 None if out_dir is None else str(out_dir), pid, start, host, _now()))
            return int(cur.lastrowid)

    def reopen_run(self, run_id: int) -> None:
        """Mark a run `running` again (resume), owned by this process."""
        pid, start, host = _me()
        with self._connect() as db:
            db.execute("UPDATE runs SET status = 'running', reason = NULL, finished = NULL, "
                       "pid = ?, pid_start = ?, host = ?, heartbeat = ? WHERE id = ?",
                       (pid, start, host, _now(), run_id))

    def heartbeat(self, run_id: int) -> None:
        """The running executor is alive (see `stale`)."""
        with self._connect() as db:
            db.execute("UPDATE runs SET heartbeat = ? WHERE id = ? AND status = 'running'",
                       (_now(), run_id))

    @staticmethod
    def stale(row: Mapping[str, Any], now: datetime | None = None) -> bool:
        """A `running` row whose process is gone (same host) or silent for STALE_AFTER_S."""
        if row.get("status") != "running":
            return False
        if row.get("host") == socket.gethostname() and row.get("pid"):
            return not process_alive(row["pid"], row.get("pid_start"))
        beat = row.get("heartbeat") or row.get("created")
        try:
            age = ((now or datetime.now(timezone.utc)) - datetime.fromisoformat(beat)).total_seconds()
        except (TypeError, ValueError):
            return True
        return age > STALE_AFTER_S

    def reap_stale(self) -> list[int]:
        """Mark every stale `running` row `interrupted` (the process died without recording its
        end: killed, out of memory, power cut); return their ids. `--resume` continues them."""
        with self._connect() as db:  # read first: a locked store is only read
            rows = [dict(r) for r in db.execute(
                "SELECT id, status, pid, pid_start, host, heartbeat, created FROM runs "
                "WHERE status = 'running'")]
        ids = [r["id"] for r in rows if self.stale(r)]
        if not ids:
            return []
        with self._connect() as db:
            for r in rows:
                if r["id"] in ids:
                    db.execute("UPDATE runs SET status = 'interrupted', finished = ?, reason = ? "
                               "WHERE id = ? AND status = 'running'",
                               (_now(), f"the process (pid {r['pid'] or '?'}) ended without "
                                "recording its end (killed or crashed); continue it with "
                                "--resume", r["id"]))
        return ids

    def record_step(self, run_id: int, step_index: int | None, method: str, *,
                    metrics: Mapping[str, Any] | None = None,
                    predicted: Mapping[str, Any] | None = None,
                    context: Mapping[str, Any] | None = None,
                    status: str = "completed", reason: str | None = None,
                    runner: str | None = None, params: Mapping[str, Any] | None = None,
                    wall_s: float | None = None, checkpoint: str | None = None) -> None:
        """Record one step (or, with step_index None, the plan-level final measurements).

        One measurement row per metric that was measured or predicted; a re-run step (resume)
        replaces its earlier rows.
        """
        metrics = dict(metrics or {})
        predicted = dict(predicted or {})
        ctx = json.dumps(dict(context or {}), sort_keys=True, default=str)
        with self._connect() as db:
            if step_index is not None:
                db.execute(
                    "INSERT OR REPLACE INTO steps (run_id, step_index, method, runner, params, "
                    "status, reason, wall_s, checkpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, step_index, method, runner,
                     json.dumps(dict(params or {}), sort_keys=True, default=str), status, reason,
                     _num(wall_s), checkpoint))
            db.execute("DELETE FROM measurements WHERE run_id = ? AND IFNULL(step_index, -1) = ?",
                       (run_id, -1 if step_index is None else step_index))
            for metric in sorted(set(metrics) | set(predicted)):
                value, low, high = _pred(predicted.get(metric))
                measured = _num(metrics.get(metric))
                if measured is None and value is None and low is None and high is None:
                    continue
                db.execute(
                    "INSERT INTO measurements (run_id, step_index, method, metric, predicted, "
                    "predicted_low, predicted_high, measured, context) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, step_index, method, metric, value, low, high, measured, ctx))

    def finish_run(self, run_id: int, status: str, reason: str | None = None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        with self._connect() as db:
            db.execute("UPDATE runs SET status = ?, reason = ?, finished = ? WHERE id = ?",
                       (status, reason, _now(), run_id))

    # ---- reading -------------------------------------------------------------------------------

    def runs(self, status: str | None = None) -> list[dict]:
        """Every run, newest first, without the plan YAML (see `run`)."""
        sql = ("SELECT r.id, r.created, r.finished, r.name, r.plan_hash, r.kb_version, "
               "r.base_model, r.seed, r.status, r.reason, r.out_dir, r.pid, r.pid_start, "
               "r.host, r.heartbeat, "
               "(SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'completed') "
               "AS steps_completed FROM runs r")
        args: tuple = ()
        if status:
            sql += " WHERE r.status = ?"
            args = (status,)
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(sql + " ORDER BY r.id DESC", args)]
        for r in rows:
            r["stale"] = self.stale(r)
        return rows

    def run(self, run_id: int | str) -> dict:
        """One run with its plan YAML, steps and measurements; SlmrecError if unknown."""
        try:
            rid = int(run_id)
        except (TypeError, ValueError):
            raise SlmrecError.one(str(self.path), f"run id must be a number, got {run_id!r}; "
                                  "list ids with 'slmrec runs list'") from None
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (rid,)).fetchone()
            if row is None:
                ids = [r[0] for r in db.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 10")]
                known = ", ".join(map(str, ids)) or "none yet"
                raise SlmrecError.one(str(self.path), f"no run with id {rid}; recent ids: {known}")
            out = dict(row)
            out["stale"] = self.stale(out)
            out["steps"] = []
            for s in db.execute("SELECT * FROM steps WHERE run_id = ? ORDER BY step_index", (rid,)):
                d = dict(s)
                d["params"] = _json(d["params"])
                out["steps"].append(d)
        out["measurements"] = self.measurements(run_id=rid)
        return out

    def measurements(self, metric: str | None = None, method: str | None = None, *,
                     run_id: int | None = None, status: str | None = None) -> list[dict]:
        """Measurement rows (context decoded), oldest first; filter by metric, method, run or
        run status. Plan-level rows have step_index None and method 'plan'."""
        where, args = [], []
        for col, val in (("m.metric", metric), ("m.method", method), ("m.run_id", run_id),
                         ("r.status", status)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = ("SELECT m.run_id, m.step_index, m.method, m.metric, m.predicted, m.predicted_low, "
               "m.predicted_high, m.measured, m.context, r.base_model, r.kb_version, "
               "r.status AS run_status FROM measurements m JOIN runs r ON r.id = m.run_id")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY m.run_id, IFNULL(m.step_index, 1e9), m.metric"
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(sql, args)]
        for r in rows:
            r["context"] = _json(r["context"])
        return rows


def _json(text: str | None) -> dict:
    """A stored JSON column; a damaged one reads as empty rather than ending the reader."""
    try:
        v = json.loads(text or "{}")
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}
