"""The `slmrec kb` and `slmrec graph` commands on the shipped KB."""

from __future__ import annotations

import json

import pytest

from slmrec.cli import main


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_counts_per_class_and_relation_kind(capsys):
    code, out, _ = _run(capsys, "kb", "stats", "--json")
    data = json.loads(out)
    assert code == 0
    assert set(data["components_by_class"]) == {"main", "optional", "cross-cutting"}
    assert data["components_by_class"]["main"] == 7
    assert set(data["relations_by_kind"]) == {"precedes", "requires", "conflicts", "recovers",
                                              "co-adapts", "reuses", "feeds-back", "constrains"}
    assert all(n > 0 for n in data["relations_by_kind"].values())
    code, text, _ = _run(capsys, "kb", "stats")
    assert "component class" in text and "relation kind" in text


def test_coverage_reports_shares(capsys):
    code, out, _ = _run(capsys, "kb", "coverage", "--json")
    data = json.loads(out)
    assert code == 0 and data["methods"] >= 120 and not data["empty_components"]
    assert data["share"]["sources"] == 1.0
    assert 0.5 <= data["share"]["requirements"] <= 1.0
    ev, rel = data["effects"], data["relations"]
    assert ev["with_figure"] == sum(n for b, n in ev["by_basis"].items()
                                    if b not in ("unpublished", "not-transferable"))
    assert ev["total"] == sum(ev["by_basis"].values())
    assert 0 < rel["two_or_more_sources"] < rel["total"]
    assert data["catalogue"]["models"] >= 12
    assert "quantization/weight-only" not in data["families_without_runner"]  # gptq runs
    code, text, _ = _run(capsys, "kb", "coverage")
    for needle in ("catalogue:", "effects with a published or measured figure",
                   "with two or more sources", "families with no runnable method",
                   "effects.transform_cases"):
        assert needle in text


@pytest.mark.parametrize("query,expected", [
    ("gptq", "gptq"),
    ("low rank adapters", "lora"),
    ("grouped query attention", "grouped-query-attention"),
    ("speculative decoding draft", "speculative-decoding"),
    ("lamma cpp", "llama-cpp-runtime"),          # a typo still finds it
])
def test_search_ranks_the_obvious_match_first(capsys, query, expected):
    code, out, _ = _run(capsys, "kb", "search", *query.split(), "--json", "--limit", "3")
    hits = json.loads(out)
    assert code == 0 and expected in [h["id"] for h in hits]


def test_show_method_links_everything(capsys):
    code, out, _ = _run(capsys, "kb", "show", "gptq", "--json")
    data = json.loads(out)
    assert code == 0 and data["kind"] == "method"
    assert data["requirements"]["data"] == "calibration"
    assert data["sources"] and data["relations"]["out"] and data["relations"]["in"]
    code, text, _ = _run(capsys, "kb", "show", "gptq")
    assert "requires:" in text and "source frantar2022-gptq" in text


def test_show_source_lists_what_cites_it(capsys):
    code, out, _ = _run(capsys, "kb", "show", "miraghaei2025-lifecycle", "--json")
    data = json.loads(out)
    assert code == 0 and len(data["cited_by"]) >= 20


def test_show_unknown_id_suggests(capsys):
    code, _, err = _run(capsys, "kb", "show", "gptqq")
    assert code == 2 and "did you mean 'gptq'" in err


def test_graph_path_and_order(capsys):
    code, out, _ = _run(capsys, "graph", "order")
    assert code == 0 and out.strip().startswith("initialization -> pretraining")
    code, out, _ = _run(capsys, "graph", "path", "structured-width-pruning", "gptq", "--json")
    links = json.loads(out)
    assert code == 0 and links[0]["src"] == "structured-width-pruning"


@pytest.mark.parametrize("fmt", ["graphml", "json", "dot"])
def test_graph_export_cli(capsys, tmp_path, fmt):
    target = tmp_path / f"kb.{fmt}"
    code, out, _ = _run(capsys, "graph", "export", "--format", fmt, "-o", str(target))
    assert code == 0 and target.stat().st_size > 10_000 and "nodes" in out
