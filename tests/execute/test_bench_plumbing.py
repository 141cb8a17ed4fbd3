"""The bench harness itself (no timing here: benches run with `make bench`)."""

from __future__ import annotations

import json

import bench.__main__ as harness
from bench._common import ratio
from bench._kb import load_runner_kb
from runners.registry import RUNNERS


def test_discovery_finds_benches_not_helpers():
    names = harness.discover()
    assert {"executor_overhead", "lora_throughput", "runner_table"} <= set(names)
    assert "synthetic_kb" not in names and "_common" not in names


def test_ratio_verdicts():
    assert ratio(1.1, "<= 1.15")["ok"] is True
    assert ratio(1.2, "<= 1.15")["ok"] is False
    assert ratio(0.9, ">= 1.0")["ok"] is False
    assert ratio(2.0)["ok"] is None


def test_summary_reads_every_result(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({
        "name": "a", "title": "A vs B", "status": "ok", "wall_s": 1.0,
        "ratios": {"speed": ratio(1.3, "<= 1.15", "slow")}, "markdown": "| x |\n| --- |"}))
    (tmp_path / "b.json").write_text(json.dumps({"name": "b", "status": "error",
                                                 "error": "Boom: no"}))
    text = harness.summary()
    assert "| a | speed | 1.3 | <= 1.15 | **missed** | slow |" in text
    assert "## a: A vs B" in text and "| x |" in text and "Boom: no" in text


def test_runner_kb_covers_every_runner(tmp_path):
    kb = load_runner_kb(tmp_path / "kb")
    assert set(kb.methods) == set(RUNNERS)
    assert kb.methods["lora"].params["rank"].default == 8
    assert kb.methods["weight-only-quant"].params["bits"].choices == [4, 8]
