"""How deep the knowledge base is: what `slmrec kb coverage` reports.

Counts the catalogue, methods per component and family, how many effects carry a figure (a
published or measured number rather than an `unpublished`/`not-transferable` note), how many
relations have two or more sources, which families have no runnable method, which goals no method
serves, and how often the newer schema fields are used.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from slmrec.kb import KB
from slmrec.schema import EvidenceBasis

EFFECT_KINDS = ("quality", "recovery", "speedup", "task_gain")
# Bases whose evidence carries a number.
FIGURE_BASES = frozenset({EvidenceBasis.reported, EvidenceBasis.survey,
                          EvidenceBasis.documentation, EvidenceBasis.measured})


def _groups(families: Counter) -> dict[str, int]:
    """Methods per top-level family ("quantization/weight-only" -> "quantization")."""
    groups: Counter = Counter()
    for fam, n in families.items():
        groups[fam.split("/")[0]] += n
    return dict(groups.most_common())


def _filled(kb: KB) -> dict[str, float]:
    filled: Counter = Counter()
    for m in kb.methods.values():
        req = m.requires
        if (req.data.value != "none" or req.teacher.value != "none" or req.training
                or req.compute.value != "none" or req.note or req.hardware_to_run
                or req.hardware_to_run_any or req.hardware_to_benefit or req.data_amount):
            filled["requirements"] += 1
        t = m.effects.transform
        if (any(getattr(m.effects, k) for k in EFFECT_KINDS) or m.effects.transform_cases
                or any(v not in (None, False) for k, v in t
                       if k not in ("group_overhead_bits", "note"))):
            filled["effects"] += 1
        if m.effects.quality:
            filled["quality_evidence"] += 1
        if m.sources:
            filled["sources"] += 1
        if m.runner:
            filled["runner"] += 1
        if m.serves:
            filled["serves"] += 1
    n = max(len(kb.methods), 1)
    return {k: round(filled[k] / n, 3) for k in
            ("requirements", "effects", "quality_evidence", "sources", "runner", "serves")}


def effect_figures(kb: KB) -> dict:
    """Effects by basis, and the share that carries a published or measured figure."""
    by_basis: Counter = Counter()
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for m in kb.methods.values():
        for kind in EFFECT_KINDS:
            for ev in getattr(m.effects, kind):
                by_basis[ev.basis.value] += 1
                by_kind[kind]["figure" if ev.basis in FIGURE_BASES else "no-figure"] += 1
    total = sum(by_basis.values())
    figures = sum(n for b, n in by_basis.items() if EvidenceBasis(b) in FIGURE_BASES)
    return {"total": total, "with_figure": figures,
            "share_with_figure": round(figures / total, 3) if total else 0.0,
            "by_basis": dict(by_basis.most_common()),
            "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}}


def relation_sources(kb: KB) -> dict:
    """Relations by kind; how many have two or more sources; the sources that stand alone most."""
    by_kind = Counter(r.kind.value for r in kb.relations.values())
    multi = sum(1 for r in kb.relations.values() if len(set(r.sources)) >= 2)
    alone = Counter(r.sources[0] for r in kb.relations.values() if len(set(r.sources)) == 1)
    total = len(kb.relations)
    return {"total": total, "by_kind": dict(by_kind.most_common()), "two_or_more_sources": multi,
            "share_two_or_more": round(multi / total, 3) if total else 0.0,
            "single_source_top": dict(alone.most_common(5))}


def catalogue(kb: KB) -> dict:
    fams = Counter(b.family for b in kb.models.values())
    return {"models": len(kb.models), "families": dict(sorted(fams.items())),
            "sliding_window": sum(1 for b in kb.models.values() if b.sliding_window),
            "mixture_of_experts": sum(1 for b in kb.models.values() if b.active_params),
            "plain_mlp": sum(1 for b in kb.models.values() if b.mlp == "plain"),
            "layer_wise_widths": sum(1 for b in kb.models.values() if b.layer_widths),
            "per_layer_embeddings": sum(1 for b in kb.models.values()
                                        if b.per_layer_embedding_params)}


def schema_use(kb: KB) -> dict[str, int]:
    """How many records use each field the schema gained for what the KB could not say."""
    evs = [ev for m in kb.methods.values() for k in EFFECT_KINDS for ev in getattr(m.effects, k)]
    methods = list(kb.methods.values())
    return {
        "evidence.baseline": sum(1 for e in evs if e.baseline),
        "evidence.versus": sum(1 for e in evs if e.versus),
        "evidence.model_params": sum(1 for e in evs if e.model_params),
        "evidence.scope": sum(1 for e in evs if e.scope),
        "evidence.data": sum(1 for e in evs if e.data),
        "basis.not-transferable": sum(1 for e in evs if e.basis is EvidenceBasis.not_transferable),
        "requires.hardware_to_run_any": sum(1 for m in methods if m.requires.hardware_to_run_any),
        "cost.resident_frozen_models": sum(1 for m in methods if m.cost.resident_frozen_models),
        "effects.transform_cases": sum(1 for m in methods if m.effects.transform_cases),
        "effects.task_gain": sum(1 for m in methods if m.effects.task_gain),
        "method.serves": sum(1 for m in methods if m.serves),
    }


def coverage(kb: KB) -> dict:
    """Everything `slmrec kb coverage` prints, as data."""
    rows: dict[str, dict] = defaultdict(lambda: {"methods": 0, "families": Counter()})
    runnable: dict[str, bool] = defaultdict(bool)
    for m in kb.methods.values():
        row = rows[m.component]
        row["methods"] += 1
        row["families"][m.family] += 1
        runnable[m.family] |= bool(m.runner)
    order = {c.id: (c.cls.value != "main", c.cls.value, c.order or 0)
             for c in kb.components.values()}
    served = {g for m in kb.methods.values() for g in m.serves}
    return {
        "components": [{"component": comp, "class": kb.components[comp].cls.value,
                        "methods": row["methods"], "families": dict(sorted(row["families"].items())),
                        "family_groups": _groups(row["families"])}
                       for comp, row in sorted(rows.items(),
                                               key=lambda kv: order.get(kv[0], (True, "", 0)))],
        "empty_components": sorted(c for c in kb.components if c not in rows),
        "share": _filled(kb),
        "methods": len(kb.methods),
        "families": len(runnable),
        "families_without_runner": sorted(f for f, ok in runnable.items() if not ok),
        "goals_unserved": sorted(set(kb.goals) - served),
        "catalogue": catalogue(kb),
        "effects": effect_figures(kb),
        "relations": relation_sources(kb),
        "schema_use": schema_use(kb),
    }
