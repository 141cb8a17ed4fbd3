"""A record's direct relations grouped by kind and direction ("comes after", "recovered by", ...),
each symmetric relation once: what `slmrec kb show` prints and the explorer's method view draws."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from slmrec.kb import KB
from slmrec.schema import SYMMETRIC_KINDS, RelationKind

# How a relation reads from the centre's side: (kind, the centre is its source?) -> label.
READING = {
    ("precedes", True): "comes before", ("precedes", False): "comes after",
    ("requires", True): "requires", ("requires", False): "required by",
    ("conflicts", True): "conflicts with", ("conflicts", False): "conflicts with",
    ("recovers", True): "recovers", ("recovers", False): "recovered by",
    ("co-adapts", True): "co-adapts with", ("co-adapts", False): "co-adapts with",
    ("reuses", True): "reuses", ("reuses", False): "reused by",
    ("feeds-back", True): "feeds back to", ("feeds-back", False): "fed back from",
    ("constrains", True): "constrains", ("constrains", False): "constrained by",
}
KIND_ORDER = [k.value for k in RelationKind]


@dataclass
class Group:
    """The records related to `centre` by one kind in one direction."""
    centre: str
    kind: str
    outgoing: bool  # the centre is the relation's source (symmetric kinds: always True)
    members: list[tuple[str, str]] = field(default_factory=list)  # (id, note)
    sources: list[list[str]] = field(default_factory=list)  # per member

    @property
    def label(self) -> str:
        return READING.get((self.kind, self.outgoing), self.kind)

    @property
    def node(self) -> str:
        return f"group:{self.centre}:{self.kind}:{'out' if self.outgoing else 'in'}"


def relation_groups(kb: KB, centre: str, kinds: Iterable[str] | None = None,
                    skip: Iterable[str] = ()) -> list[Group]:
    """The direct relations of `centre`, grouped by kind and direction; a symmetric relation
    (stored either way round) is listed once; ids in `skip` are left out."""
    keep = None if kinds is None else set(kinds)
    skip = set(skip)
    groups: dict[tuple[str, bool], Group] = {}
    seen: set[tuple[str, bool, str]] = set()
    rels = [(r, True) for r in kb.relations_from(centre)] + \
        [(r, False) for r in kb.relations_to(centre)]
    for r, outgoing in rels:
        kind = r.kind.value
        if keep is not None and kind not in keep:
            continue
        other = r.dst if outgoing else r.src
        if other == centre or other in skip:
            continue
        if r.kind in SYMMETRIC_KINDS:
            outgoing = True
        if (kind, outgoing, other) in seen:
            continue
        seen.add((kind, outgoing, other))
        g = groups.setdefault((kind, outgoing), Group(centre, kind, outgoing))
        g.members.append((other, r.note or ""))
        g.sources.append(list(r.sources))
    out = sorted(groups.values(), key=lambda g: (not g.outgoing, KIND_ORDER.index(g.kind)
                                                 if g.kind in KIND_ORDER else 99))
    for g in out:
        g.members.sort(key=lambda m: m[0])
    return out


def neighbours(groups: list[Group]) -> list[str]:
    """Every record in the groups, once, in the order drawn."""
    out: list[str] = []
    for g in groups:
        out += [m for m, _ in g.members if m not in out]
    return out
