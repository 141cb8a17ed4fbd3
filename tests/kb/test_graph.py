"""Graph queries on a tiny KB built in the test, and on the shipped KB; exports load back."""

from __future__ import annotations

import json

import networkx as nx
import pytest

from slmrec.errors import SlmrecError
from slmrec.graph import LifecycleGraph, export_graph
from slmrec.kb import load_kb
from tests.kb.tinykb import write_tiny_kb


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> LifecycleGraph:
    root = write_tiny_kb(tmp_path_factory.mktemp("kb"))
    return LifecycleGraph(load_kb([root], shipped=False))


@pytest.fixture(scope="module")
def shipped() -> LifecycleGraph:
    return LifecycleGraph(load_kb())


def test_typed_nodes(tiny):
    types = {n: d["type"] for n, d in tiny.g.nodes(data=True)}
    assert types["init"] == "component" and types["gqa"] == "method"
    assert types["quant2022"] == "source" and types["laptop"] == "hardware"
    assert types["tiny-1"] == "model" and types["int4-kernels"] == "capability"
    assert types["from-scratch"] == "pathway"


def test_stage_order_ignores_feedback(tiny):
    # compression feeds back to init, which must not break or reorder the stages.
    assert tiny.stage_order() == ["init", "training", "compression"]


@pytest.mark.parametrize("query,arg,expected", [
    ("methods_of", "compression", ["gptq", "prune", "rtn"]),
    ("must_follow", "prune", ["rtn"]),
    # the stage order (init, training, compression) counts too: one checker for every query
    ("must_precede", "rtn", ["gqa", "lora", "prune"]),
    ("conflicts_with", "rtn", ["gptq"]),
    ("conflicts_with", "gptq", ["rtn"]),
    ("must_follow", "gqa", ["gptq", "lora", "prune", "rtn"]),
])
def test_queries(tiny, query, arg, expected):
    assert getattr(tiny, query)(arg) == expected


def test_requirements(tiny):
    req = tiny.requirements("gptq")
    assert req["data"] == "calibration" and req["teacher"] == "none"
    assert tiny.requirements("rtn")["hardware_to_benefit"] == ["int4-kernels"]


def test_may_follow_respects_order_conflicts_and_stages(tiny):
    follows = tiny.may_follow("rtn")
    assert "gptq" not in follows          # conflicts
    assert "prune" not in follows         # declared to come before rtn
    assert "lora" not in follows          # earlier main stage
    assert "rag" not in follows           # not a plan step
    assert "rtn" in tiny.may_follow("prune")
    assert "prune" in tiny.may_precede("rtn")


def test_recovered_by(tiny):
    assert [link.src for link in tiny.recovered_by("prune")] == ["lora"]
    assert tiny.recovered_by("gqa") == []


def test_reused_methods(tiny):
    assert tiny.reused_methods() == {"prune": ["compression", "init"]}


def test_neighbourhood(tiny):
    sub = tiny.neighbourhood("prune", radius=1)
    assert {"rtn", "lora", "compression", "quant2022", "init"} <= set(sub.nodes)
    assert "gqa" not in sub.nodes


def test_dependency_path(tiny):
    path = tiny.dependency_path("lora", "rtn")
    assert [(link.src, link.kind, link.dst) for link in path] == [
        ("lora", "recovers", "prune"), ("prune", "precedes", "rtn")]
    with pytest.raises(SlmrecError, match="did you mean 'lora'"):
        tiny.dependency_path("lorra", "rtn")


@pytest.mark.parametrize("fmt", ["graphml", "json", "dot"])
def test_exports_load_back(tiny, tmp_path, fmt):
    path = export_graph(tiny.g, fmt, tmp_path / f"g.{fmt}")
    if fmt == "graphml":
        back = nx.read_graphml(path)
        assert set(back.nodes) == set(tiny.g.nodes)
        assert back.number_of_edges() == tiny.g.number_of_edges()
    elif fmt == "json":
        data = json.loads(path.read_text())
        back = nx.node_link_graph(data, edges="links")
        assert set(back.nodes) == set(tiny.g.nodes)
        assert back.number_of_edges() == tiny.g.number_of_edges()
    else:
        text = path.read_text()
        assert text.startswith("digraph slmrec {") and text.rstrip().endswith("}")
        assert text.count(" -> ") == tiny.g.number_of_edges()


# ---- the shipped KB ---------------------------------------------------------------------------

def test_shipped_stage_order(shipped):
    assert shipped.stage_order() == ["initialization", "pretraining", "post-training", "compression",
                                     "evaluation", "deployment", "maintenance"]


def test_shipped_domain_facts(shipped):
    # Facts a practitioner expects the graph to know (lifecycle.md, "Interconnections").
    assert "calibration" == shipped.requirements("gptq")["data"]
    assert shipped.requirements("rtn-weight-only")["data"] == "none"
    assert shipped.requirements("logit-distillation")["tokenizer_match"] is True
    assert shipped.requirements("sequence-distillation")["tokenizer_match"] is False
    assert any(link.src in ("logit-distillation", "lora") for link in shipped.recovered_by("layer-dropping"))
    reused = shipped.reused_methods()
    assert any(m in reused for m in ("logit-distillation", "structured-width-pruning", "layer-dropping"))
    for quant in ("gptq", "rtn-weight-only", "awq"):
        assert quant in shipped.must_follow("structured-width-pruning")


def test_shipped_dependency_path(shipped):
    path = shipped.dependency_path("qlora", "nf4")
    assert len(path) >= 1 and path[0].src in ("qlora", "nf4")
