"""Run bookkeeping that survives faults: the executor's claim on its folder, its guarded writes
to the run store, its heartbeat, and SIGTERM/SIGHUP handled like Ctrl-C.

- `claim(out)`: an exclusive lock file in the run folder (O_EXCL, holding this process's pid and
  start time). A second run on the same folder is refused while the first lives; a lock left by
  a dead process is taken over.
- `Ledger`: every run-store write goes through `Ledger.call`: a locked, damaged or vanished store
  (or a full disk) is a note on the run and a warning line, never an exception out of the
  executor; `resume` re-records every completed step, so no step ends without its rows.
- `Heartbeat`: touches the run's row every HEARTBEAT_S seconds, so `slmrec runs list` tells a
  live run from one whose process died (see slmrec.evidence.RunStore.stale).
- `terminate_as_interrupt()`: while a run executes, SIGTERM and SIGHUP raise `Terminated` (a
  KeyboardInterrupt), so a `kill` or a closed terminal is recorded as `interrupted`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from slmrec.errors import SlmrecError

LOCK = ".slmrec-run.lock"


class Terminated(KeyboardInterrupt):
    """A termination signal, handled like Ctrl-C (the run is recorded as interrupted)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def reason(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP raise Terminated inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    old = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            try:
                old[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class _Deferred:
    signum: int | None = None


@contextmanager
def terminate_as_interrupt_deferred() -> Iterator[_Deferred]:
    """Inside the block, SIGINT/SIGTERM/SIGHUP are remembered, not raised: the executor's final
    bookkeeping is never cut short by an impatient second signal."""
    box = _Deferred()
    if threading.current_thread() is not threading.main_thread():
        yield box
        return

    def handler(signum, frame):
        box.signum = signum

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            try:
                old[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass
    try:
        yield box
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _me() -> dict[str, Any]:
    from slmrec.evidence import _me as who

    pid, start, host = who()
    return {"pid": pid, "pid_start": start, "host": host}


def claim(out: Path) -> Path:
    """Claim run folder `out` (created if needed) for this process; return the lock path.

    SlmrecError when another live process holds it."""
    from slmrec.evidence import process_alive
    from slmrec.safeio import os_error

    if out.exists() and not out.is_dir():
        raise SlmrecError.one(str(out), "--out is an existing file, not a folder; choose a "
                              "folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(out, exc, "cannot create the run folder") from None
    lock = out / LOCK
    me = _me()
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                         0o644)
        except FileExistsError:
            try:
                held = json.loads(lock.read_text(encoding="utf-8"))
                assert isinstance(held, dict)
            except (OSError, ValueError, AssertionError):
                held = {}  # a half-written lock: its writer died between open and write
            import socket

            if held.get("host") not in (None, socket.gethostname()) or \
                    process_alive(held.get("pid"), held.get("pid_start")):
                raise SlmrecError.one(str(out), f"another run (pid {held.get('pid', '?')} on "
                                      f"{held.get('host', '?')}) is using this folder; wait for "
                                      "it, or choose another --out") from None
            try:
                lock.unlink()  # left by a dead process: take it over
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise os_error(lock, exc, "cannot remove a stale run lock") from None
            continue
        except OSError as exc:
            raise os_error(lock, exc, "cannot claim the run folder") from None
        try:
            os.write(fd, json.dumps(me).encode())
        finally:
            os.close(fd)
        return lock
    raise SlmrecError.one(str(out), "cannot claim the run folder: its lock keeps changing")


def release(lock: Path | None) -> None:
    if lock is None:
        return
    try:
        held = json.loads(lock.read_text(encoding="utf-8"))
        if held.get("pid") == os.getpid():
            lock.unlink()
    except (OSError, ValueError, AttributeError):
        pass


STORE_ERRORS = (SlmrecError, sqlite3.Error, OSError)


class Ledger:
    """The run store behind a guard: a failing write is reported once per kind and remembered
    (`lost`), never raised. Without a store every call is a no-op."""

    def __init__(self, store, report, say: Callable[[str], None]):
        self.store, self.report, self.say = store, report, say
        self.lost: list[str] = []

    def __bool__(self) -> bool:
        return self.store is not None

    def call(self, what: str, fn_name: str, *args, **kwargs) -> bool:
        if self.store is None or self.report.run_id is None:
            return False
        try:
            getattr(self.store, fn_name)(self.report.run_id, *args, **kwargs)
            return True
        except STORE_ERRORS as exc:
            msg = "; ".join(p.message for p in exc.problems) if isinstance(exc, SlmrecError) \
                else f"{type(exc).__name__}: {exc}"
            self.lost.append(what)
            note = (f"run store: could not record {what} ({msg[:160]}); state.json keeps it and "
                    "--resume records it again")
            if note not in self.report.notes:
                self.report.notes.append(note)
            self.say(f"warning: {note}")
            return False


class Heartbeat:
    """A daemon thread touching the run's row every `interval` seconds (errors ignored: the
    heartbeat is a hint for `runs list`, never a reason to stop a run)."""

    def __init__(self, store, run_id: int | None, interval: float):
        self.store, self.run_id, self.interval = store, run_id, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if self.store is not None and self.run_id is not None:
            self._thread = threading.Thread(target=self._beat, daemon=True, name="slmrec-heartbeat")
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.heartbeat(self.run_id)
            except Exception:  # noqa: BLE001
                pass
        try:
            self.store.close()  # this thread's connection
        except Exception:  # noqa: BLE001
            pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def guarded(what: str, fn: Callable[[], Any], report, say: Callable[[str], None]) -> bool:
    """Run one bookkeeping write of the executor's `finally`; a failure is a note, not a raise."""
    try:
        fn()
        return True
    except Exception as exc:  # noqa: BLE001  (disk full, permission, a vanished folder)
        msg = "; ".join(p.message for p in exc.problems) if isinstance(exc, SlmrecError) \
            else f"{type(exc).__name__}: {exc}"
        note = f"could not write {what}: {msg[:200]}"
        if note not in report.notes:
            report.notes.append(note)
        say(f"warning: {note}")
        return False
