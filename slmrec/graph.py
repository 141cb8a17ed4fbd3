"""The lifecycle as a typed NetworkX multigraph, and the structural questions asked of it.

Nodes carry `type` (component, pathway, method, source, hardware, model, capability); edges carry
`kind`: a relation kind from the KB (precedes, requires, ...) or a structural link (part-of,
cites, has-capability, needs-capability, benefits-from, follows-pathway). Symmetric relation
kinds (conflicts, co-adapts) are stored in both directions with `symmetric=True`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import networkx as nx

from slmrec.errors import SlmrecError, unknown
from slmrec.kb import KB
from slmrec.schema import SYMMETRIC_KINDS, ComponentClass, RelationKind

STRUCTURAL = ("part-of", "cites", "has-capability", "needs-capability", "benefits-from",
              "follows-pathway")
RELATION_KINDS = tuple(k.value for k in RelationKind)


def build_graph(kb: KB) -> nx.MultiDiGraph:
    g = nx.MultiDiGraph(kb_version=kb.version)
    for s in kb.sources.values():
        g.add_node(s.id, type="source", label=s.title, year=s.year, kind=s.kind.value,
                   identifier=s.identifier)
    for cap in kb.capabilities.values():
        g.add_node(cap.id, type="capability", label=cap.id, summary=cap.summary)
    for c in kb.components.values():
        g.add_node(c.id, type="component", label=c.name, cls=c.cls.value,
                   order=-1 if c.order is None else c.order, summary=c.summary)
        _cite(g, c.id, c.sources)
        for p in c.pathways:
            g.add_node(p.id, type="pathway", label=p.name, summary=p.summary, component=c.id)
            g.add_edge(p.id, c.id, kind="part-of")
            _cite(g, p.id, p.sources)
    for m in kb.methods.values():
        g.add_node(m.id, type="method", label=m.name, component=m.component, family=m.family,
                   summary=m.summary, runner=m.runner or "", plannable=m.plannable)
        g.add_edge(m.id, m.component, kind="part-of")
        if m.pathway:
            g.add_edge(m.id, m.pathway, kind="follows-pathway")
        _cite(g, m.id, m.sources)
        for cap in m.requires.hardware_to_run:
            g.add_edge(m.id, cap, kind="needs-capability")
        for cap in m.requires.hardware_to_benefit:
            g.add_edge(m.id, cap, kind="benefits-from")
    for h in kb.hardware.values():
        g.add_node(h.id, type="hardware", label=h.name, memory_gb=h.memory_gb,
                   bandwidth_gbs=h.memory_bandwidth_gbs)
        _cite(g, h.id, h.sources)
        for cap in h.capabilities:
            g.add_edge(h.id, cap, kind="has-capability")
    for b in kb.models.values():
        g.add_node(b.id, type="model", label=b.name, params=b.params, layers=b.layers)
        _cite(g, b.id, b.sources)
    for r in kb.relations.values():
        attrs = dict(kind=r.kind.value, note=r.note, sources=list(r.sources),
                     symmetric=r.kind in SYMMETRIC_KINDS)
        g.add_edge(r.src, r.dst, **attrs)
        if r.kind in SYMMETRIC_KINDS:
            g.add_edge(r.dst, r.src, **attrs)
    return g


def _cite(g: nx.MultiDiGraph, node: str, sources: Iterable[str]) -> None:
    for s in sources:
        g.add_edge(node, s, kind="cites")


@dataclass(frozen=True)
class Link:
    src: str
    kind: str
    dst: str
    note: str = ""

    def __str__(self) -> str:
        return f"{self.src} --{self.kind}--> {self.dst}"


class LifecycleGraph:
    """Queries over the KB graph. Build once per KB; every query is read-only."""

    def __init__(self, kb: KB):
        self.kb = kb
        self.g = build_graph(kb)

    # ---- helpers -----------------------------------------------------------------------------

    def _node(self, node: str, type_: str | None = None) -> str:
        if node not in self.g:
            raise SlmrecError.one("graph", unknown("node", node, self.g.nodes))
        if type_ and self.g.nodes[node]["type"] != type_:
            pool = [n for n, d in self.g.nodes(data=True) if d["type"] == type_]
            raise SlmrecError.one("graph", f"'{node}' is a {self.g.nodes[node]['type']}, not a "
                                           f"{type_}" + unknown(type_, node, pool)[len(f"unknown {type_} '{node}'"):])
        return node

    def _edges(self, kinds: Iterable[str]) -> nx.DiGraph:
        kinds = set(kinds)
        view = nx.DiGraph()
        for u, v, d in self.g.edges(data=True):
            if d["kind"] in kinds:
                view.add_edge(u, v, kind=d["kind"], note=d.get("note", ""))
        return view

    def links(self, node: str, kinds: Iterable[str] | None = None, direction: str = "out") -> list[Link]:
        self._node(node)
        edges = self.g.out_edges(node, data=True) if direction == "out" else self.g.in_edges(node, data=True)
        kinds = set(kinds) if kinds is not None else None
        out = []
        for u, v, d in edges:
            if kinds is None or d["kind"] in kinds:
                out.append(Link(u, d["kind"], v, d.get("note", "")))
        return sorted(set(out), key=lambda link: (link.kind, link.src, link.dst))

    # ---- stage structure ---------------------------------------------------------------------

    def stage_order(self) -> list[str]:
        """Main components in lifecycle order: topological over component-level `precedes`
        (feedback edges never enter the order); ties broken by each component's `order`."""
        mains = {c.id: c.order for c in self.kb.main_components()}
        dag = nx.DiGraph()
        dag.add_nodes_from(mains)
        for u, v, d in self.g.edges(data=True):
            if d["kind"] == "precedes" and u in mains and v in mains:
                dag.add_edge(u, v)
        return list(nx.lexicographical_topological_sort(dag, key=lambda n: (mains[n], n)))

    def components(self, cls: ComponentClass | str | None = None) -> list[str]:
        cls = ComponentClass(cls) if cls else None
        comps = sorted(self.kb.components.values(), key=lambda c: (c.cls.value, c.order or 0, c.id))
        return [c.id for c in comps if cls is None or c.cls is cls]

    def methods_of(self, component: str) -> list[str]:
        self._node(component, "component")
        return sorted(u for u, _, d in self.g.in_edges(component, data=True)
                      if d["kind"] == "part-of" and self.g.nodes[u]["type"] == "method")

    # ---- method questions --------------------------------------------------------------------

    def requirements(self, method: str) -> dict:
        """What a method needs: required nodes, data, teacher, compute and hardware."""
        m = self.kb.methods[self._node(method, "method")]
        req = m.requires
        return {
            "requires": [link.dst for link in self.links(method, ["requires"])],
            "data": req.data.value,
            "data_amount": req.data_amount.model_dump() if req.data_amount else None,
            "teacher": req.teacher.value,
            "tokenizer_match": req.tokenizer_match,
            "training": req.training,
            "compute": req.compute.value,
            "hardware_to_run": list(req.hardware_to_run),
            "hardware_to_benefit": list(req.hardware_to_benefit),
        }

    def _precedes(self) -> nx.DiGraph:
        return self._edges(["precedes"])

    def _rules(self):
        from slmrec.recommend.rules import rules_for  # noqa: PLC0415 (graph is imported first)

        return rules_for(self.kb)

    def must_follow(self, method: str) -> list[str]:
        """Methods declared (directly, transitively or through their stage) to come after
        `method`: the recommender's rule checker."""
        if method not in self.kb.methods:
            return []
        return sorted(self._rules().after(method))

    def must_precede(self, method: str) -> list[str]:
        """Methods declared (directly, transitively or through their stage) to come before it."""
        if method not in self.kb.methods:
            return []
        return self._rules().before(method)

    def may_follow(self, method: str) -> list[str]:
        """Plannable methods that may come after `method` in one chain, by the same rule checker
        the recommender and plan validation use (order with its recovery/co-adaptation
        exceptions, conflicts, one method per slot)."""
        self._node(method, "method")
        rules = self._rules()
        return sorted(o.id for o in self.kb.methods.values()
                      if o.id != method and o.plannable and rules.may_follow(method, o.id))

    def may_precede(self, method: str) -> list[str]:
        """Plannable methods that may come before `method` (the mirror of may_follow)."""
        self._node(method, "method")
        rules = self._rules()
        return sorted(o.id for o in self.kb.methods.values()
                      if o.id != method and o.plannable and rules.may_follow(o.id, method))

    def recovered_by(self, method: str) -> list[Link]:
        """What heals the quality `method` loses: relations `X recovers method` (or its
        component)."""
        self._node(method, "method")
        comp = self.kb.methods[method].component
        links = self.links(method, ["recovers"], "in") + self.links(comp, ["recovers"], "in")
        return sorted(set(links), key=lambda link: (link.src, link.dst))

    def conflicts_with(self, method: str) -> list[str]:
        return sorted({link.dst for link in self.links(method, ["conflicts"])})

    def reused_methods(self) -> dict[str, list[str]]:
        """Methods used by more than one component: the method's own component plus every
        component (or method of another component) that `reuses` it."""
        out: dict[str, set[str]] = {}
        for u, v, d in self.g.edges(data=True):
            if d["kind"] != "reuses" or self.g.nodes.get(v, {}).get("type") != "method":
                continue
            home = self.kb.methods[v].component
            user = u if self.g.nodes[u]["type"] == "component" else self.kb.methods.get(u, None)
            user_comp = user if isinstance(user, str) else (user.component if user else None)
            if user_comp and user_comp != home:
                out.setdefault(v, {home}).add(user_comp)
        return {m: sorted(cs) for m, cs in sorted(out.items())}

    def neighbourhood(self, node: str, radius: int = 1, kinds: Iterable[str] | None = None) -> nx.MultiDiGraph:
        self._node(node)
        view = self.g
        if kinds is not None:
            keep = set(kinds)
            view = nx.subgraph_view(self.g, filter_edge=lambda u, v, k: self.g.edges[u, v, k]["kind"] in keep)
        return nx.ego_graph(view, node, radius=radius, undirected=True).copy()

    def dependency_path(self, a: str, b: str) -> list[Link]:
        """Shortest chain of typed relations linking two nodes (direction ignored, structural
        links such as citations excluded). Empty when a == b; error when none exists."""
        self._node(a)
        self._node(b)
        if a == b:
            return []
        rel = nx.MultiGraph()
        for u, v, d in self.g.edges(data=True):
            if d["kind"] in RELATION_KINDS or d["kind"] == "part-of":
                rel.add_edge(u, v, kind=d["kind"], src=u, dst=v, note=d.get("note", ""))
        try:
            path = nx.shortest_path(rel, a, b)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            raise SlmrecError.one("graph", f"no dependency path between '{a}' and '{b}'") from None
        out = []
        for u, v in zip(path, path[1:]):
            # Prefer a true relation over a part-of hop when both link the pair.
            edges = sorted(rel.get_edge_data(u, v).values(), key=lambda d: d["kind"] == "part-of")
            d = edges[0]
            out.append(Link(d["src"], d["kind"], d["dst"], d["note"]))
        return out


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

EXPORT_FORMATS = ("graphml", "json", "dot")


def _scalar(value: object) -> object:
    if isinstance(value, (list, tuple, set)):
        return ", ".join(str(v) for v in value)
    if value is None:
        return ""
    return value


def export_graph(g: nx.MultiDiGraph, fmt: str, path: Path | str) -> Path:
    """Write the graph as GraphML, node-link JSON or Graphviz DOT, atomically."""
    if fmt not in EXPORT_FORMATS:
        raise SlmrecError.one("--format", unknown("format", fmt, EXPORT_FORMATS)
                              + f"; valid: {', '.join(EXPORT_FORMATS)}")
    from slmrec.safeio import write_with  # noqa: PLC0415

    def produce(tmp: Path) -> None:
        if fmt == "graphml":
            flat = nx.MultiDiGraph()
            flat.graph.update({k: _scalar(v) for k, v in g.graph.items()})
            flat.add_nodes_from((n, {k: _scalar(v) for k, v in d.items()})
                                for n, d in g.nodes(data=True))
            flat.add_edges_from((u, v, {k: _scalar(x) for k, x in d.items()})
                                for u, v, d in g.edges(data=True))
            nx.write_graphml(flat, tmp)
        elif fmt == "json":
            tmp.write_text(json.dumps(nx.node_link_data(g, edges="links"), indent=1, default=str),
                           encoding="utf-8")
        else:
            tmp.write_text(to_dot(g), encoding="utf-8")

    return write_with(path, produce)


_DOT_SHAPES = {"component": "box", "pathway": "box", "method": "ellipse", "source": "note",
               "hardware": "box3d", "model": "cylinder", "capability": "diamond"}
_DOT_STYLES = {"feeds-back": "dashed", "constrains": "dotted", "cites": "dotted"}


def to_dot(g: nx.MultiDiGraph) -> str:
    def q(s: object) -> str:
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph slmrec {", "  rankdir=LR;"]
    for n, d in g.nodes(data=True):
        lines.append(f"  {q(n)} [label={q(d.get('label', n))}, shape={_DOT_SHAPES.get(d['type'], 'ellipse')}, "
                     f"type={q(d['type'])}];")
    for u, v, d in g.edges(data=True):
        style = _DOT_STYLES.get(d["kind"], "solid")
        lines.append(f"  {q(u)} -> {q(v)} [label={q(d['kind'])}, style={style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
