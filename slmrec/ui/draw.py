"""Graphviz DOT text for the lifecycle overview and the per-component method graph.

Streamlit renders DOT in the browser (`st.graphviz_chart`), so no graphviz binary is needed.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from typing import Iterable

import networkx as nx

from slmrec.graph import LifecycleGraph
from slmrec.kb import KB
from slmrec.schema import ComponentClass

# Component classes: visually distinct fill, border and shape.
CLASS_STYLE = {
    ComponentClass.main: 'shape=box, style="filled,bold", fillcolor="#d6e6f7", color="#1f4e79"',
    ComponentClass.optional: 'shape=box, style="filled,dashed,rounded", fillcolor="#e3f2df", '
                             'color="#3b7a2a"',
    ComponentClass.cross_cutting: 'shape=box, style="filled,diagonals", fillcolor="#fbe5c8", '
                                  'color="#a35a00"',
}
CLASS_LABEL = {ComponentClass.main: "main stages", ComponentClass.optional: "optional components",
               ComponentClass.cross_cutting: "cross-cutting concerns"}

# Relation kinds: one edge style each (the legend in the explorer repeats this table).
KIND_STYLE = {
    "precedes": 'color="#333333"',
    "requires": 'color="#1f5fbf", penwidth=2',
    "conflicts": 'color="#c0392b", dir=none, style=bold',
    "recovers": 'color="#2e8b57", penwidth=2',
    "co-adapts": 'color="#7d3c98", dir=both',
    "reuses": 'color="#7f8c8d", style=dashed',
    "feeds-back": 'color="#d35400", style=dashed, penwidth=2',
    "constrains": 'color="#8e8e8e", style=dotted',
}
KIND_MEANING = {
    "precedes": "comes before, when both are in one chain",
    "requires": "cannot be used without",
    "conflicts": "must not share a chain with (symmetric)",
    "recovers": "heals the quality lost by",
    "co-adapts": "is tuned jointly with (symmetric)",
    "reuses": "applies the technique of, in another stage",
    "feeds-back": "its outcome triggers a revisit of",
    "constrains": "its choice limits what can be chosen in",
}
_FAMILY_COLOURS = ["#eaf2fb", "#fdf2e9", "#e9f7ef", "#f4ecf7", "#fef9e7", "#ebf5fb", "#fdedec",
                   "#eafaf1", "#f2f3f4", "#e8f8f5"]


def q(text: object) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lifecycle_dot(kb: KB, graph: LifecycleGraph, classes: Iterable[str],
                  kinds: Iterable[str] | None = None, selected: str | None = None,
                  lift: bool = False) -> str:
    """Components by class, the main flow in stage order, and the typed relations between
    components (feedback, constraints, reuse). With `lift`, relations between methods of two
    components are drawn between those components too, with a count."""
    keep = {ComponentClass(c) for c in classes}
    kinds = set(KIND_STYLE) if kinds is None else set(kinds)
    counts = Counter(m.component for m in kb.methods.values())
    lines = ["digraph lifecycle {", "  rankdir=LR; newrank=true; nodesep=0.3; ranksep=0.45;",
             '  node [fontname="Helvetica", fontsize=13, margin="0.15,0.08"]; '
             'edge [fontname="Helvetica", fontsize=10];']
    shown: set[str] = set()
    flow: set[tuple[str, str]] = set()
    for cls in ComponentClass:
        if cls not in keep:
            continue
        ids = graph.stage_order() if cls is ComponentClass.main else graph.components(cls)
        if not ids:
            continue
        lines.append(f"  subgraph cluster_{cls.name} {{ label={q(CLASS_LABEL[cls])}; "
                     'style="rounded,dashed"; color="#bbbbbb"; fontname="Helvetica"; fontsize=12;')
        for cid in ids:
            c = kb.components[cid]
            label = "\n".join(textwrap.wrap(c.name, 16)) + f"\n{counts.get(cid, 0)} methods"
            extra = ', penwidth=3, color="#e74c3c"' if cid == selected else ""
            lines.append(f"    {q(cid)} [label={q(label)}, tooltip={q(c.summary)}, "
                         f"{CLASS_STYLE[cls]}{extra}];")
            shown.add(cid)
        # The main flow in stage order; other classes are chained invisibly into one row each.
        for a, b in zip(ids, ids[1:]):
            if cls is ComponentClass.main:
                flow.add((a, b))
                lines.append(f'    {q(a)} -> {q(b)} [penwidth=3, color="#1f4e79", weight=10];')
            else:
                lines.append(f"    {q(a)} -> {q(b)} [style=invis, weight=10];")
        lines.append("  }")
    lines += _component_links(kb, shown, kinds, flow, lift)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _component_links(kb: KB, shown: set[str], kinds: set[str], flow: set[tuple[str, str]],
                     lift: bool) -> list[str]:
    def comp(node: str) -> str | None:
        if node in kb.components:
            return node
        m = kb.methods.get(node)
        return m.component if m else None

    links: Counter = Counter()
    for r in kb.relations.values():
        kind = r.kind.value
        if kind not in kinds:
            continue
        direct = r.src in kb.components and r.dst in kb.components
        if not direct and not lift:
            continue
        a, b = comp(r.src), comp(r.dst)
        if not a or not b or a == b or a not in shown or b not in shown:
            continue
        if kind == "precedes" and (a, b) in flow:
            continue  # the flow edge already says it
        links[(a, kind, b)] += 1
    out = []
    for (a, kind, b), n in sorted(links.items()):
        # No edge labels here (they would spread the overview thin): style and colour say the
        # kind (see the legend), the tooltip says it in words.
        tip = f"{a} {kind} {b}" + ("" if n == 1 else f" ({n} method relations)")
        out.append(f"  {q(a)} -> {q(b)} [tooltip={q(tip)}, constraint=false, "
                   f"{KIND_STYLE.get(kind, '')}];")
    return out


def component_relations(kb: KB, methods: Iterable[str], kinds: Iterable[str],
                        outside: bool) -> tuple[list[tuple[str, str, str, str]], int]:
    """(from, kind, to, note) of the relations to draw for these methods, and how many implied
    `precedes` edges were left out: `precedes` is drawn as its transitive reduction (a -> b -> c
    without the a -> c that follows from it), which keeps the order and drops the clutter."""
    mine = set(methods)
    kinds = set(kinds)
    rels = []
    for r in kb.relations.values():
        if r.kind.value not in kinds:
            continue
        inside = (r.src in mine) + (r.dst in mine)
        if inside == 0 or (inside == 1 and not outside):
            continue
        rels.append((r.src, r.kind.value, r.dst, r.note))
    return _reduce_precedes(rels)


def _reduce_precedes(rels: list[tuple[str, str, str, str]]) -> tuple[list, int]:
    order = nx.DiGraph((a, b) for a, k, b, _ in rels if k == "precedes")
    if order.number_of_edges() == 0 or not nx.is_directed_acyclic_graph(order):
        return rels, 0
    keep = set(nx.transitive_reduction(order).edges())
    out = [r for r in rels if r[1] != "precedes" or (r[0], r[2]) in keep]
    return out, len(rels) - len(out)


def component_dot(kb: KB, component: str, methods: Iterable[str], kinds: Iterable[str],
                  outside: bool = True, selected: str | None = None,
                  level: str = "methods") -> str:
    """The methods of one component, grouped by family, with the typed relations among them
    (and, with `outside`, to nodes in other components, drawn grey). With level="families",
    each family is one node and the relations between families are counted."""
    methods = list(methods)
    rels, _ = component_relations(kb, methods, kinds, outside)
    families: dict[str, list[str]] = {}
    for mid in methods:
        families.setdefault(kb.methods[mid].family, []).append(mid)
    colours = {fam: _FAMILY_COLOURS[i % len(_FAMILY_COLOURS)]
               for i, fam in enumerate(sorted(families))}
    lines = ["digraph component {", "  rankdir=LR; nodesep=0.25; ranksep=0.6; compound=true;",
             '  node [fontname="Helvetica", fontsize=11, shape=ellipse, style=filled]; '
             'edge [fontname="Helvetica", fontsize=9];']
    if level == "families":
        lines += _family_level(kb, families, colours, rels, selected)
    else:
        lines += _method_level(kb, families, colours, rels, selected)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _external_node(kb: KB, node: str, label: str | None = None) -> str:
    rec = kb.methods.get(node) or kb.components.get(node)
    where = kb.methods[node].component if node in kb.methods else "component"
    text = label or f"{getattr(rec, 'name', node)}\n({where})"
    return (f"  {q(node)} [label={q(text)}, shape=box, style=\"rounded,filled\", "
            'fillcolor="#f2f2f2", color="#999999", fontcolor="#555555"];')


def _method_level(kb: KB, families: dict[str, list[str]], colours: dict[str, str],
                  rels: list, selected: str | None) -> list[str]:
    lines = []
    mine = {m for ids in families.values() for m in ids}
    for i, (fam, ids) in enumerate(sorted(families.items())):
        lines.append(f"  subgraph cluster_f{i} {{ label={q(fam)}; style=rounded; "
                     'color="#cccccc"; fontname="Helvetica"; fontsize=10;')
        for mid in ids:
            m = kb.methods[mid]
            extra = ', penwidth=3, color="#e74c3c"' if mid == selected else ""
            lines.append(f"    {q(mid)} [label={q(m.name)}, tooltip={q(m.summary)}, "
                         f"fillcolor={q(colours[fam])}{extra}];")
        lines.append("  }")
    external = sorted({n for a, _, b, _ in rels for n in (a, b) if n not in mine})
    lines += [_external_node(kb, n) for n in external]
    for a, kind, b, note in rels:
        lines.append(f"  {q(a)} -> {q(b)} [label={q(kind)}, tooltip={q(note)}, "
                     f"{KIND_STYLE.get(kind, '')}];")
    return lines


def _family_level(kb: KB, families: dict[str, list[str]], colours: dict[str, str],
                  rels: list, selected: str | None) -> list[str]:
    home = {m: f"family:{fam}" for fam, ids in families.items() for m in ids}

    def group(node: str) -> str:
        if node in home:
            return home[node]
        return kb.methods[node].component if node in kb.methods else node

    lines = []
    inner: Counter = Counter()
    links: Counter = Counter()
    for a, kind, b, _ in rels:
        ga, gb = group(a), group(b)
        if ga == gb:
            inner[(ga, kind)] += 1
        else:
            links[(ga, kind, gb)] += 1
    chosen = home.get(selected or "")
    for fam, ids in sorted(families.items()):
        node = f"family:{fam}"
        inside = ", ".join(f"{n} {k}" for (g, k), n in sorted(inner.items()) if g == node)
        label = f"{fam}\n{len(ids)} methods" + (f"\n({inside} inside)" if inside else "")
        names = "\n".join(kb.methods[m].name for m in ids)
        extra = ', penwidth=3, color="#e74c3c"' if node == chosen else ""
        lines.append(f"  {q(node)} [label={q(label)}, tooltip={q(names)}, shape=box, "
                     f"style=\"rounded,filled\", fillcolor={q(colours[fam])}{extra}];")
    external = sorted({g for (ga, _, gb) in links for g in (ga, gb) if not g.startswith("family:")})
    for g in external:
        rec = kb.components.get(g)
        lines.append(_external_node(kb, g, f"{getattr(rec, 'name', g)}\n(component)"))
    reduced, _ = _reduce_precedes([(a, k, b, "") for (a, k, b) in links])
    keep = {(a, k, b) for a, k, b, _ in reduced}
    for (a, kind, b), n in sorted(links.items()):
        if (a, kind, b) not in keep:
            continue
        label = kind if n == 1 else f"{kind} ×{n}"
        lines.append(f"  {q(a)} -> {q(b)} [label={q(label)}, tooltip={q(f'{n} method relations')}, "
                     f"{KIND_STYLE.get(kind, '')}];")
    return lines
