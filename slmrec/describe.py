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


def _groups(families: Counter) -> dict[str, int]:
    """Methods per top-level family ("quantization/weight-only" -> "quantization")."""
    groups: Counter = Counter()
    for fam, n in families.items():
        groups[fam.split("/")[0]] += n
    return dict(groups.most_common())


def coverage(kb: KB) -> dict:
    """Methods per component and family, and how complete their records are."""
    rows: dict[str, dict] = defaultdict(lambda: {"methods": 0, "families": Counter()})
    filled = Counter()
    for m in kb.methods.values():
        row = rows[m.component]
        row["methods"] += 1
        row["families"][m.family] += 1
        req = m.requires
        if (req.data.value != "none" or req.teacher.value != "none" or req.training
                or req.compute.value != "none" or req.note or req.hardware_to_run
                or req.hardware_to_benefit or req.data_amount):
            filled["requirements"] += 1
        t = m.effects.transform
        if m.effects.quality or m.effects.recovery or m.effects.speedup or any(
                v not in (None, False) for k, v in t if k not in ("group_overhead_bits", "note")):
            filled["effects"] += 1
        if m.effects.quality:
            filled["quality_evidence"] += 1
        if m.sources:
            filled["sources"] += 1
        if m.runner:
            filled["runner"] += 1
    n = max(len(kb.methods), 1)
    order = {c.id: (c.cls.value != "main", c.cls.value, c.order or 0) for c in kb.components.values()}
    return {
        "components": [{"component": comp, "class": kb.components[comp].cls.value,
                        "methods": row["methods"], "families": dict(sorted(row["families"].items())),
                        "family_groups": _groups(row["families"])}
                       for comp, row in sorted(rows.items(), key=lambda kv: order.get(kv[0], (True, "", 0)))],
        "empty_components": sorted(c for c in kb.components if c not in rows),
        "share": {k: round(filled[k] / n, 3) for k in
                  ("requirements", "effects", "quality_evidence", "sources", "runner")},
        "methods": len(kb.methods),
    }
