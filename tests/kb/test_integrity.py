"""Integrity of the shipped KB: keeps it honest as it grows."""

from __future__ import annotations

import re
from collections import Counter

import networkx as nx
import pytest

from slmrec.kb import load_kb
from slmrec.schema import SYMMETRIC_KINDS, ComponentClass, EvidenceBasis, RelationKind, SourceKind


@pytest.fixture(scope="module")
def kb():
    return load_kb()


def test_breadth(kb):
    assert len(kb.methods) >= 120
    assert len(kb.relations) >= 250
    assert len(kb.sources) >= 60
    assert len(kb.hardware) >= 6
    assert len(kb.models) >= 8


def test_every_component_has_methods(kb):
    empty = [c for c in kb.components if not kb.methods_of(c)]
    assert not empty, f"components without methods: {empty}"
    classes = Counter(c.cls for c in kb.components.values())
    assert classes[ComponentClass.main] == 7 and classes[ComponentClass.optional] >= 6
    assert classes[ComponentClass.cross_cutting] >= 7


def test_initialization_pathways_and_families(kb):
    init = kb.components["initialization"]
    assert {p.id for p in init.pathways} == {"efficient-design", "derive-from-larger", "pretrained-selection"}
    used = {m.pathway for m in kb.methods_of("initialization")}
    assert used >= {"efficient-design", "derive-from-larger", "pretrained-selection"}
    text = " ".join(f"{m.id} {m.family} {m.name}".lower() for m in kb.methods_of("initialization"))
    # Every efficient-design family the framework lists (lifecycle.md).
    for family in ("query", "latent", "shar", "tied", "swiglu", "rmsnorm", "sliding", "expert",
                   "state-space", "architecture-search"):
        assert family in text, f"no initialization method for '{family}'"


REQUIRED = {
    "compression": "rtn-weight-only gptq awq hqq llm-int8 smoothquant quip-sharp aqlm nf4 fp8-quantization "
                   "gguf-k-quants quantization-aware-training kv-cache-quantization bf16-cast fp16-cast "
                   "dynamic-int8 magnitude-pruning wanda sparsegpt semi-structured-2-4 "
                   "structured-width-pruning attention-head-pruning layer-dropping minitron-prune-distill "
                   "sheared-llama-pruning logit-distillation sequence-distillation reverse-kl-distillation "
                   "on-policy-distillation feature-distillation rationale-distillation low-rank-factorization",
    "post-training": "full-finetuning lora qlora dora adapter-tuning prefix-tuning prompt-tuning ia3 bitfit "
                     "instruction-tuning rlhf-ppo dpo orpo kto",
}


@pytest.mark.parametrize("component", sorted(REQUIRED))
def test_required_methods_present(kb, component):
    missing = [m for m in REQUIRED[component].split() if m not in kb.methods]
    assert not missing
    wrong = [m for m in REQUIRED[component].split() if kb.methods[m].component != component]
    assert not wrong


def test_methods_sourced_and_placed(kb):
    for m in kb.methods.values():
        assert m.sources and all(s in kb.sources for s in m.sources), m.id
        assert m.component in kb.components, m.id


def test_effect_ranges_are_sourced(kb):
    for m in kb.methods.values():
        for kind in ("quality", "recovery", "speedup", "task_gain"):
            for ev in getattr(m.effects, kind):
                assert ev.source in kb.sources, (m.id, kind)
                has_numbers = ev.low is not None
                assert has_numbers == (ev.basis not in (EvidenceBasis.unpublished,
                                                        EvidenceBasis.not_transferable)), (m.id, kind)
                if ev.basis is EvidenceBasis.measured:
                    assert kb.sources[ev.source].kind is SourceKind.measured, (m.id, ev.source)
        for ev in m.effects.recovery:
            if ev.low is not None:
                assert -0.5 <= ev.low <= ev.high <= 1.0, m.id


def test_requirements_filled_for_model_changing_methods(kb):
    """A method that trains must say what data it needs; distillation must say its teacher."""
    for m in kb.methods.values():
        if m.requires.training and m.component in ("post-training", "pretraining"):
            assert m.requires.data.value != "none" or m.requires.teacher.value != "none" \
                or m.effects.transform.init_from_scratch, m.id
        if "distill" in m.family:
            assert m.requires.teacher.value != "none", m.id


def test_orderings_acyclic_and_consistent(kb):
    main = {c.id for c in kb.main_components()}
    stage = {**{m.id: m.component for m in kb.methods.values()}, **{c: c for c in kb.components}}
    dag = nx.DiGraph()
    for r in kb.relations.values():
        if r.kind is RelationKind.precedes and stage[r.src] in main and stage[r.dst] in main:
            dag.add_edge(r.src, r.dst)
    assert nx.is_directed_acyclic_graph(dag)
    for a, b in dag.edges:
        assert not dag.has_edge(b, a)


def test_symmetric_relations_consistent(kb):
    kinds_by_pair: dict[frozenset, set] = {}
    for r in kb.relations.values():
        kinds_by_pair.setdefault(frozenset((r.src, r.dst)), set()).add(r.kind)
    for pair, kinds in kinds_by_pair.items():
        assert not (RelationKind.conflicts in kinds and kinds & {RelationKind.co_adapts, RelationKind.requires,
                                                                  RelationKind.recovers}), pair
    # Declared once, present in both directions of the graph.
    from slmrec.graph import build_graph
    g = build_graph(kb)
    for r in kb.relations.values():
        if r.kind in SYMMETRIC_KINDS:
            back = [d for d in (g.get_edge_data(r.dst, r.src) or {}).values() if d["kind"] == r.kind.value]
            assert back, r.id


def test_relations_have_notes_and_sources(kb):
    for r in kb.relations.values():
        assert r.note.strip() and r.sources, r.id


def test_nothing_structural_after_quantization(kb):
    """No relation says a structural change may follow weight quantization."""
    quant = {m.id for m in kb.methods.values() if m.effects.transform.weight_bits is not None
             and m.component == "compression"}
    structural_fields = ("params_fraction_removed", "mlp_fraction_removed", "heads_fraction_removed",
                         "layers_fraction_removed")
    structural = {m.id for m in kb.methods.values()
                  if any(getattr(m.effects.transform, f) is not None for f in structural_fields)}
    assert len(structural) >= 5 and len(quant) >= 8
    for r in kb.relations.values():
        if r.kind is RelationKind.precedes:
            assert not (r.src in quant and r.dst in structural), r.id


SOURCE_ID = re.compile(r"^([a-z][a-z0-9]*\d{4}-[a-z0-9][a-z0-9-]*|[a-z0-9.-]+-docs(-[a-z0-9-]+)?|[a-z0-9-]+)$")


def test_naming_conventions(kb):
    for s in kb.sources.values():
        if s.kind in (SourceKind.paper, SourceKind.survey):
            assert re.match(r"^[a-z][a-z0-9]*\d{4}-[a-z0-9][a-z0-9.-]*$", s.id), s.id
        assert SOURCE_ID.match(s.id), s.id
    for name in ("methods", "components", "hardware", "models", "capabilities"):
        for i in kb.section(name):
            assert re.match(r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$", i), i


def test_sources_are_cited(kb):
    from slmrec.kb import iter_citations
    cited = {s for s, _, _ in iter_citations(kb)}
    uncited = sorted(set(kb.sources) - cited - {"slmrec-measured"})
    assert not uncited, f"sources nobody cites: {uncited}"


def test_runners_named_by_methods_exist(kb):
    from runners.registry import RUNNERS, get_runner_class

    for m in kb.methods.values():
        if m.runner is None:
            continue
        assert m.runner in RUNNERS, (m.id, m.runner)
        params = get_runner_class(m.runner).Params.model_fields
        missing = [p for p in m.params if p not in params]
        assert not missing, f"{m.id}: KB params {missing} unknown to runner {m.runner}"


def test_catalog_models_are_consistent(kb):
    for b in kb.models.values():
        assert b.heads % b.kv_heads == 0, b.id
        assert b.sources, b.id
    assert any(b.local for b in kb.models.values()), "the bundled model must be in the catalog"


def test_hardware_profiles_are_physical(kb):
    for h in kb.hardware.values():
        assert set(h.precisions) <= set(h.peak_tflops), h.id
        assert all(c in kb.capabilities for c in h.capabilities), h.id
