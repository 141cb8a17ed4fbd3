"""One rule checker for chains of methods: the search, plan validation and `graph follows` use it.

Rules, all read from the KB:

- `precedes` (method- and component-level, transitive): a step declared to come before another
  must not come after it;
- typed exceptions: a step that `recovers` or `co-adapts` with an earlier step that changes the
  weights (a compression step) may follow it even where the stage order says otherwise (LoRA or
  distillation after pruning, QLoRA on an NF4 base, quantization-aware training after RTN);
- `conflicts` (method- and component-level, symmetric): two steps must not share a chain;
- `requires`: a step needs the named method (or a method of the named component) in the chain;
- one method per slot: two steps may not set the same transform field (two weight
  quantizations), and a method appears once.

The closure of `precedes` is computed once per KB (a set of descendants per method). Checking a
chain walks it once, intersecting each step's small per-method sets with the steps seen so far:
the work per step is bounded by the KB, not by the chain, so long plans check in linear time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import networkx as nx  # noqa: F401 (the graph type)

from slmrec.kb import KB
from slmrec.schema import Relation, RelationKind

# Transform fields that name a slot (a chain sets each at most once). Notes and flags do not.
_NOT_SLOTS = {"note", "group_overhead_bits", "group_size", "init_from_scratch", "embedding_bits"}


@dataclass(frozen=True)
class Violation:
    kind: str          # order | conflict | requires | slot
    at: int            # index of the step that breaks the rule
    other: int | None  # index of the step it clashes with (None for requires)
    text: str
    sources: tuple[str, ...] = ()


class Rules:
    """The checker of one KB. Build with `rules_for(kb)` (cached on the KB)."""

    def __init__(self, kb: KB):
        self.kb = kb
        members: dict[str, list[str]] = {}
        for m in kb.methods.values():
            members.setdefault(m.component, []).append(m.id)
        self.members = members
        g = nx.DiGraph()
        g.add_nodes_from(kb.methods)
        for c in kb.components:
            g.add_edge(("in", c), ("out", c))   # stage order passes through a stage
        for c, ms in members.items():
            for mid in ms:
                g.add_edge(("in", c), mid)
                g.add_edge(mid, ("out", c))
        for r in kb.relations.values():
            if r.kind is RelationKind.precedes:
                u = r.src if r.src in kb.methods else ("out", r.src)
                v = r.dst if r.dst in kb.methods else ("in", r.dst)
                g.add_edge(u, v)
        self._g = g
        self._after: dict[str, frozenset[str]] = {}
        self._exempt: dict[str, frozenset[str]] = {}
        self._conflicts: dict[str, frozenset[str]] = {}
        self._slot: dict[str, frozenset[str]] = {}
        self.requires: dict[str, list[str]] = {}
        for r in kb.relations.values():
            if r.kind is RelationKind.requires:
                self.requires.setdefault(r.src, []).append(r.dst)

    # ---- per-method sets (memoised) ------------------------------------------------------

    def _expand(self, node: str) -> list[str]:
        return list(self.members.get(node, ())) if node in self.kb.components else [node]

    def after(self, mid: str) -> frozenset[str]:
        """Methods declared (transitively) to come after `mid`."""
        got = self._after.get(mid)
        if got is None:
            got = self._after[mid] = self._reach(mid, self._g.successors)
        return got

    def before(self, mid: str) -> list[str]:
        """Methods declared (transitively) to come before `mid`."""
        return sorted(self._reach(mid, self._g.predecessors))

    def _reach(self, mid: str, step) -> frozenset[str]:
        """Methods reachable from `mid` through stage nodes only: the order is transitive
        through the stages (a method before a stage before a later stage), never through
        another method, whose own relations bind only when it is in the chain."""
        if mid not in self._g:
            return frozenset()
        out: set[str] = set()
        seen: set = {mid}
        stack = [mid]
        while stack:
            for v in step(stack.pop()):
                if v in seen:
                    continue
                seen.add(v)
                if isinstance(v, str):
                    out.add(v)
                else:
                    stack.append(v)
        out.discard(mid)
        return frozenset(out)

    def exempt(self, mid: str) -> frozenset[str]:
        """Weight-changing methods `mid` may follow although the order says otherwise: the ones
        it `recovers` or `co-adapts` with."""
        got = self._exempt.get(mid)
        if got is None:
            out: set[str] = set()
            kb = self.kb
            comp = kb.methods[mid].component if mid in kb.methods else None
            for kind in (RelationKind.recovers.value, RelationKind.co_adapts.value):
                idx = kb.relation_index.get(kind, {})
                for src in (mid, comp):
                    for dst in idx.get(src, ()) if src else ():
                        out.update(x for x in self._expand(dst) if self.changes_weights(x))
            got = self._exempt[mid] = frozenset(out)
        return got

    def changes_weights(self, mid: str) -> bool:
        return bool(self.slots(mid))

    def slots(self, mid: str) -> frozenset[str]:
        got = self._slot.get(mid)
        if got is None:
            m = self.kb.methods.get(mid)
            got = frozenset()
            if m is not None:
                t = m.effects.transform.model_dump(exclude_none=True, exclude_defaults=True)
                got = frozenset(k for k in t if k not in _NOT_SLOTS)
            self._slot[mid] = got
        return got

    def conflicts(self, mid: str) -> frozenset[str]:
        got = self._conflicts.get(mid)
        if got is None:
            kb = self.kb
            comp = kb.methods[mid].component if mid in kb.methods else None
            idx = kb.relation_index.get(RelationKind.conflicts.value, {})
            out: set[str] = set()
            for src in (mid, comp):
                for dst in idx.get(src, ()) if src else ():
                    out.update(self._expand(dst))
            out.discard(mid)
            got = self._conflicts[mid] = frozenset(out)
        return got

    def precedes_relation(self, a: str, b: str) -> Relation | None:
        kb = self.kb
        for x in (a, kb.methods[a].component if a in kb.methods else a):
            for y in (b, kb.methods[b].component if b in kb.methods else b):
                r = kb.relations.get((x, RelationKind.precedes.value, y))
                if r is not None:
                    return r
        return None

    def conflict_relation(self, a: str, b: str) -> Relation | None:
        kb = self.kb
        for x in (a, kb.methods[a].component if a in kb.methods else a):
            for y in (b, kb.methods[b].component if b in kb.methods else b):
                if x != y:
                    lo, hi = sorted((x, y))
                    r = kb.relations.get((lo, RelationKind.conflicts.value, hi))
                    if r is not None:
                        return r
        return None

    # ---- pairwise questions --------------------------------------------------------------

    def must_precede(self, a: str, b: str) -> bool:
        """`a` is declared to come before `b` (transitively)."""
        return b in self.after(a)

    def may_follow(self, earlier: str, later: str) -> bool:
        """`later` may come after `earlier` in one chain."""
        return not self.check([earlier, later], requires=False)

    # ---- whole chains --------------------------------------------------------------------

    def check(self, chain: Iterable[str], *, requires: bool = True,
              first: bool = False) -> list[Violation]:
        """Every violation of `chain` (method ids in execution order); `first` stops at one."""
        ids = list(chain)
        out: list[Violation] = []
        pos: dict[str, int] = {}
        slot_at: dict[str, int] = {}
        comps: set[str] = set()
        kb = self.kb
        for j, mid in enumerate(ids):
            if mid not in kb.methods:
                continue
            if mid in pos:
                out.append(Violation("slot", j, pos[mid], f"'{mid}' appears twice"))
            else:
                late = self.after(mid)
                seen = pos.keys()
                hits = (late & seen) if len(late) < len(pos) else {x for x in pos if x in late}
                if hits:
                    hits = hits - self.exempt(mid)
                for x in sorted(hits, key=pos.get):
                    rel = self.precedes_relation(mid, x)
                    why = f": {rel.note}" if rel else " (through the declared stage order)"
                    out.append(Violation("order", j, pos[x], f"'{mid}' must come before '{x}'{why}",
                                         tuple(rel.sources) if rel else ()))
                clash = self.conflicts(mid)
                for x in sorted((clash & seen) if len(clash) < len(pos) else
                                {x for x in pos if x in clash}, key=pos.get):
                    rel = self.conflict_relation(mid, x)
                    out.append(Violation("conflict", j, pos[x], f"'{mid}' and '{x}' conflict"
                                         + (f": {rel.note}" if rel else ""),
                                         tuple(rel.sources) if rel else ()))
                for f in self.slots(mid):
                    k = slot_at.get(f)
                    if k is not None and ids[k] not in self.exempt(mid) \
                            and mid not in self.exempt(ids[k]):
                        out.append(Violation("slot", j, k, f"'{mid}' and '{ids[k]}' both set "
                                             f"{f}: a chain sets each slot once"))
                    slot_at.setdefault(f, j)
                pos[mid] = j
            comps.add(kb.methods[mid].component)
            if first and out:
                return out
        if requires:
            for j, mid in enumerate(ids):
                for req in self.requires.get(mid, ()):
                    ok = req in comps if req in kb.components else req in pos
                    if not ok:
                        rel = kb.relations.get((mid, RelationKind.requires.value, req))
                        out.append(Violation("requires", j, None, f"'{mid}' requires '{req}' in "
                                             "the plan, which is missing",
                                             tuple(rel.sources) if rel else ()))
                        if first:
                            return out
        return out

    def ok(self, chain: Iterable[str], *, requires: bool = False) -> bool:
        return not self.check(chain, requires=requires, first=True)


def rules_for(kb: KB) -> Rules:
    got = kb.__dict__.get("_rules")
    if got is None:
        got = kb.__dict__["_rules"] = Rules(kb)
    return got
