"""Everything the KB knows about one id, as a plain dict (for `kb show`, JSON and the app)."""

from __future__ import annotations

from collections import Counter, defaultdict

from slmrec.errors import SlmrecError, unknown
from slmrec.graph import LifecycleGraph
from slmrec.kb import KB, iter_citations
from slmrec.schema import SECTIONS, ComponentClass, RelationKind


def describe(kb: KB, graph: LifecycleGraph, id: str) -> dict:
    kind = kb.kind_of(id)
    if kind is None:
        raise SlmrecError.one("kb", unknown("id", id, kb.all_ids()))
    rec = kb.record(id)
    out: dict = {"id": id, "kind": kind, "defined_in": kb.where(id),
                 "record": rec.model_dump(by_alias=True, mode="json", exclude_defaults=True)}
    if kind in ("method", "component"):
        out["relations"] = {
            "out": [_rel(r) for r in kb.relations_from(id)],
            "in": [_rel(r) for r in kb.relations_to(id)],
        }
    if kind == "method":
        out["requirements"] = graph.requirements(id)
        out["comes_after"] = graph.must_precede(id)    # declared to come before this method
        out["comes_before"] = graph.must_follow(id)    # declared to come after this method
        out["recovered_by"] = [link.src for link in graph.recovered_by(id)]
        out["conflicts_with"] = graph.conflicts_with(id)
    if kind == "component":
        out["methods"] = graph.methods_of(id)
    if kind == "source":
        out["cited_by"] = sorted({f"{who} ({field})" for s, who, field in iter_citations(kb) if s == id})
    cited = [s for s in _cited_sources(rec)]
    if cited:
        out["sources"] = [{"id": s, "title": kb.sources[s].title, "year": kb.sources[s].year,
                           "identifier": kb.sources[s].identifier} for s in cited if s in kb.sources]
    return out


def _rel(r) -> dict:
    return {"from": r.src, "kind": r.kind.value, "to": r.dst, "note": r.note, "sources": r.sources}


def _cited_sources(rec) -> list[str]:
    ids: list[str] = list(getattr(rec, "sources", []) or [])
    effects = getattr(rec, "effects", None)
    if effects is not None:
        for kind in ("quality", "recovery", "speedup"):
            ids += [ev.source for ev in getattr(effects, kind)]
    return list(dict.fromkeys(ids))


def stats(kb: KB) -> dict:
    """Counts per section, per component class, per component and per relation kind."""
    by_class = Counter(c.cls.value for c in kb.components.values())
    methods_by_class: Counter = Counter()
    for m in kb.methods.values():
        comp = kb.components.get(m.component)
        if comp:
            methods_by_class[comp.cls.value] += 1
    return {
        "kb_version": kb.version,
        "sections": {name: len(kb.section(name)) for name in SECTIONS},
        "components_by_class": {c.value: by_class.get(c.value, 0) for c in ComponentClass},
        "methods_by_class": {c.value: methods_by_class.get(c.value, 0) for c in ComponentClass},
        "methods_by_component": dict(sorted(Counter(m.component for m in kb.methods.values()).items())),
        "relations_by_kind": {k.value: sum(1 for r in kb.relations.values() if r.kind is k)
                              for k in RelationKind},
    }
