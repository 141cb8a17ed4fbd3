"""The KB's own measured figures agree with what bench/kb_figures.py measured (bench/results/
kb_figures.json, written by `python -m bench.kb_figures`), within each figure's spread.

Reading the committed JSON keeps this test fast; the JSON must come from the current FIGURES
(same chains and parameters), so a changed bench without a re-run fails here too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from bench import kb_figures

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "kb_figures.json"
CITE = re.compile(r"bench/kb_figures\.py: ([a-z0-9-]+)")
ROUNDING = 0.05  # figures are copied to the KB rounded to 0.1 (percent) or 0.01 (fractions)


def _measured_entries():
    """(file, method id, entry) for every evidence entry of basis measured from slmrec-measured."""
    out = []

    def walk(node, path, method):
        if isinstance(node, dict):
            method = node.get("id", method) if "effects" in node or "runner" in node else method
            if node.get("basis") == "measured" and node.get("source") == "slmrec-measured":
                out.append((path.name, method, node))
            for v in node.values():
                walk(v, path, method)
        elif isinstance(node, list):
            for v in node:
                walk(v, path, method)

    for path in sorted((ROOT / "kb" / "methods").glob("*.yaml")):
        walk(yaml.safe_load(path.read_text(encoding="utf-8")), path, None)
    return out


ENTRIES = _measured_entries()


@pytest.fixture(scope="module")
def results():
    return json.loads(RESULTS.read_text(encoding="utf-8"))


def test_results_come_from_the_current_figures(results):
    assert results["status"] == "ok" and results["tokens"] >= 4096  # a declared slice of 4,096 tokens or more
    assert set(results["figures"]) == set(kb_figures.FIGURES)
    for fid, spec in kb_figures.FIGURES.items():
        fig = results["figures"][fid]
        assert "error" not in fig, f"{fid}: {fig.get('error')}"
        assert fig["chain"] == json.loads(json.dumps(spec["chain"])), f"{fid}: re-run python -m bench.kb_figures"


def test_every_measured_kb_figure_cites_a_bench_figure():
    assert len(ENTRIES) >= 10
    missing = [f"{f}: {m}" for f, m, e in ENTRIES if not CITE.search(e.get("setting") or "")]
    assert not missing, f"measured figures without 'bench/kb_figures.py: <id>' in setting: {missing}"


@pytest.mark.parametrize("file, method, entry", ENTRIES, ids=[f"{m}-{i}" for i, (_, m, _) in enumerate(ENTRIES)])
def test_kb_figure_matches_its_measurement_within_the_spread(results, file, method, entry):
    fid = CITE.search(entry.get("setting") or "").group(1)
    fig = results["figures"].get(fid)
    assert fig, f"{file}: {method} cites unknown figure {fid}; known: {', '.join(results['figures'])}"
    spread = fig["high"] - fig["low"] + ROUNDING
    low, high = fig["low"], fig["high"]
    if str(entry.get("metric", "")).endswith("-improvement"):  # a gain: the change negated
        fig = {**fig, "low": -high, "high": -low, "value": -fig["value"]}
    assert abs(entry["low"] - fig["low"]) <= spread and abs(entry["high"] - fig["high"]) <= spread, \
        f"{file}: {method} [{entry['low']}, {entry['high']}] vs measured {fig['value']} [{fig['low']}, {fig['high']}]"
    assert entry["low"] - ROUNDING <= fig["value"] <= entry["high"] + ROUNDING
    assert "Q4_1" in (entry.get("baseline") or ""), f"{file}: {method}: baseline must name the Q4_1 origin"
