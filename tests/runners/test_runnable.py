"""`slmrec kb coverage` counts the methods a registered runner executes."""

from __future__ import annotations

import json


def test_coverage_counts_runnable_methods(capsys):
    from runners.registry import RUNNERS, runnable_methods
    from slmrec.cli import main
    from slmrec.kb import load_kb
    kb = load_kb()
    runnable = runnable_methods(kb)
    assert all(kb.methods[m].runner in RUNNERS for m in runnable)
    assert {"dora", "dpo", "ties-merging", "speculative-decoding", "task-benchmark-eval"} <= set(runnable)
    assert main(["kb", "coverage", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runnable"]["count"] == len(runnable) >= 70
