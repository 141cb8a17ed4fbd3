"""A method at the centre and its direct relations grouped by kind: the explorer's method view.

Only relations that touch the method are drawn (no edges among its neighbours), one box per kind
and direction ("comes after", "recovered by", ...) listing the related records, so the picture
stays a handful of nodes however many relations a method has. Expanding a neighbour adds that
neighbour's own groups, one hop further out. Pure functions over the KB: the app caches them.
"""

from __future__ import annotations

from html import escape
from typing import Iterable

from slmrec.kb import KB
from slmrec.relation_groups import Group, neighbours, relation_groups
from slmrec.ui.draw import q

__all__ = ["Group", "method_dot", "neighbours", "relation_groups"]

KIND_COLOUR = {"precedes": "#333333", "requires": "#1f5fbf", "conflicts": "#c0392b",
               "recovers": "#2e8b57", "co-adapts": "#7d3c98", "reuses": "#7f8c8d",
               "feeds-back": "#d35400", "constrains": "#8e8e8e"}
MAX_ROWS = 10  # names listed per group box; the rest are counted


def _name(kb: KB, id: str) -> str:
    rec = kb.record(id) if kb.kind_of(id) else None
    return getattr(rec, "name", None) or id


def _short(kb: KB, id: str) -> str:
    """A name for a list row: the part before a parenthesised gloss ("GPTQ (second-order ...)"
    reads "GPTQ"; a gloss in the middle stays), cut at 36 characters."""
    name = _name(kb, id)
    head = name.rsplit(" (", 1)[0] if name.endswith(")") and " (" in name else name
    return head if len(head) <= 36 else head[:35] + "…"


def _where(kb: KB, id: str) -> str:
    m = kb.methods.get(id)
    return m.component if m else (kb.kind_of(id) or "")


def _port(id: str) -> str:
    return "p" + "".join(c if c.isalnum() else "_" for c in id)


def _group_node(kb: KB, g: Group, expanded: set[str]) -> str:
    colour = KIND_COLOUR.get(g.kind, "#333333")
    rows = [f'<TR><TD BGCOLOR="{colour}" ALIGN="LEFT"><FONT COLOR="white"><B>'
            f'{escape(g.label)} ({len(g.members)})</B></FONT></TD></TR>']
    for mid, note in g.members[:MAX_ROWS]:
        bold = ("<B>", "</B>") if mid in expanded else ("", "")
        rows.append(f'<TR><TD ALIGN="LEFT" PORT="{_port(mid)}">'
                    f'{bold[0]}{escape(_short(kb, mid))}{bold[1]}</TD></TR>')
    if len(g.members) > MAX_ROWS:
        rows.append(f'<TR><TD ALIGN="LEFT"><I>+ {len(g.members) - MAX_ROWS} more '
                    "(table below)</I></TD></TR>")
    table = ('<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="4" COLOR="'
             f'{colour}">' + "".join(rows) + "</TABLE>>")
    return f"  {q(g.node)} [shape=plain, label={table}];"


def _edge(g: Group, anchor: str, right: bool) -> str:
    """An edge between an anchor and a group drawn on its right (or left): the arrow follows
    the relation's direction either way."""
    colour = KIND_COLOUR.get(g.kind, "#333333")
    a, b = (anchor, q(g.node)) if right else (q(g.node), anchor)
    back = ", dir=back" if g.outgoing != right else ""
    if g.kind in ("conflicts", "co-adapts"):
        back = ", dir=none"
    return f"  {a} -> {b} [color={q(colour)}, penwidth=2{back}];"


def method_dot(kb: KB, centre: str, kinds: Iterable[str] | None = None,
               expand: Iterable[str] = ()) -> str:
    """DOT for the method view: `centre`, its groups, and each expanded neighbour's groups."""
    kinds = None if kinds is None else list(kinds)
    groups = relation_groups(kb, centre, kinds)
    near = neighbours(groups)
    expand = [e for e in expand if e in near]
    lines = ["digraph method {", "  rankdir=LR; nodesep=0.2; ranksep=0.5;",
             '  node [fontname="Helvetica", fontsize=12]; edge [arrowsize=0.7];']
    name = "\n".join([_name(kb, centre), f"({_where(kb, centre)})"])
    lines.append(f"  {q(centre)} [label={q(name)}, shape=box, style=\"rounded,filled,bold\", "
                 'fillcolor="#fde2e0", color="#e74c3c", penwidth=2, fontsize=15];')
    for g in groups:
        lines.append(_group_node(kb, g, set(expand)))
        lines.append(_edge(g, q(centre), right=g.outgoing))
    for e in expand:
        home = next(g for g in groups if any(m == e for m, _ in g.members))
        anchor = f"{q(home.node)}:{_port(e)}"
        for g in relation_groups(kb, e, kinds, skip=[centre]):
            lines.append(_group_node(kb, g, set()))
            lines.append(_edge(g, anchor, right=home.outgoing))
    lines.append("}")
    return "\n".join(lines) + "\n"
