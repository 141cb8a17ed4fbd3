"""Resuming a run: reading state.json back (its shape checked, so a damaged or hand-edited file
is one error line) and finding the last checkpoint that can be trusted (its sha256 as recorded
when its step completed; see runners.checkpoint.checkpoint_digest).

    state = read_state(out / "state.json", key)          # SlmrecError when unusable
    start, model, tokenizer = restore(report, out, say, load_checkpoint, checksums)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runners.checkpoint import checkpoint_digest
from runners.report import RunReport
from slmrec.errors import SlmrecError


def read_state(path: Path, key: dict) -> dict:
    folder = str(path.parent)
    if not path.is_file():
        raise SlmrecError.one(folder, "nothing to resume: the folder holds no state.json; run "
                              "without --resume to start")
    damaged = SlmrecError.one(str(path), "state.json is unreadable or damaged; start the run "
                              "again in a new --out folder")
    try:
        if path.stat().st_size > 64 * 2**20:
            raise damaged
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise damaged from None
    if not state_shape_ok(state):
        raise damaged
    diffs = []
    names = {"plan_hash": "the plan's steps (plan hash)", "model": "--model", "data": "--data",
             "seed": "the seed"}
    for k, what in names.items():
        if state.get(k) != key[k]:
            diffs.append(f"{what} differs (run: {state.get(k)!r}, now: {key[k]!r})")
    if diffs:
        raise SlmrecError.one(str(path), "cannot resume a different run: " + "; ".join(diffs)
                              + "; resume with the same plan and flags, or use another --out")
    return state


def state_shape_ok(state: Any) -> bool:
    """state.json as this executor writes it (types checked, so a hand-edited or damaged file
    is one error line, never a traceback)."""
    if not isinstance(state, dict) or not isinstance(state.get("report"), dict):
        return False
    if not isinstance(state.get("checksums", {}), dict):
        return False
    rep = state["report"]
    if not isinstance(rep.get("steps", []), list) or not isinstance(rep.get("notes", []), list):
        return False
    if not isinstance(rep.get("base_metrics", {}) or {}, dict):
        return False
    if rep.get("run_id") is not None and (isinstance(rep["run_id"], bool)
                                          or not isinstance(rep["run_id"], int)):
        return False
    for s in rep.get("steps", []):
        if not isinstance(s, dict) or not isinstance(s.get("index"), int) \
                or not isinstance(s.get("method"), str) \
                or not isinstance(s.get("status", "pending"), str) \
                or not isinstance(s.get("metrics", {}) or {}, dict) \
                or not isinstance(s.get("checkpoint"), (str, type(None))):
            return False
        ck = s.get("checkpoint")
        if ck is not None and (Path(ck).is_absolute() or ".." in Path(ck).parts):
            return False  # a checkpoint lives inside the run folder
    try:
        RunReport.from_dict(rep)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def restore(report: RunReport, out: Path, say, load_checkpoint, checksums: dict | None = None,
             verify: bool = True):
    """(first step to run, model, tokenizer) from the last intact checkpoint, or (0, None, None).

    A checkpoint whose files do not hash to the sha256 recorded in state.json when its step
    completed is not trusted: the step runs again (like a truncated one)."""
    checksums = {} if checksums is None else checksums
    done = []
    for s in report.steps:
        if s.status != "completed":
            break
        done.append(s)
    for s in report.steps[len(done):]:
        s.status, s.checkpoint, s.metrics, s.resumed = "pending", None, {}, False
    while done:
        last = done[-1]
        if last.checkpoint is None:  # read-only first step: nothing to load, re-run it
            last.status = "pending"
            done.pop()
            continue
        try:
            want = checksums.get(last.checkpoint)
            if want is None and verify:
                raise SlmrecError.one(last.checkpoint, "no checksum recorded in state.json")
            try:
                have = checkpoint_digest(out / last.checkpoint)
            except OSError as exc:
                raise SlmrecError.one(last.checkpoint, f"unreadable ({exc.strerror})") from None
            if verify and have != want:
                raise SlmrecError.one(last.checkpoint, "its files changed since the step "
                                      "completed (sha256 differs from state.json)")
            model, tok = load_checkpoint(out / last.checkpoint)
        except SlmrecError as exc:
            checksums.pop(last.checkpoint, None)
            say(f"warning: checkpoint of step {last.index + 1} ({last.method}) is unusable "
                f"({'; '.join(p.message for p in exc.problems)}); falling back to the one before")
            report.notes.append(f"resume: checkpoint of step {last.index + 1} ({last.method}) "
                                "was corrupt and the step was run again")
            last.status, last.checkpoint, last.metrics = "pending", None, {}
            done.pop()
            continue
        for s in done:
            s.resumed = True
        say(f"resuming after step {last.index + 1} ({last.method}) from {last.checkpoint}")
        return len(done), model, tok
    if any(s.status == "pending" for s in report.steps) and report.base_metrics:
        say("resuming from the start: no intact checkpoint")
    return 0, None, None
