"""The space the recommender searches: plannable options, their order, and why others are out.

Two layers:

- `kb_index(kb)`: built once per KB and cached on it. Every plannable method's parameter grid
  compiled into `Option`s, a canonical order (a linear extension of the declared `precedes`
  relations, ties broken by lifecycle stage and by role), conflicts, requirements, and which
  methods are recovery steps that may move after the loss they heal.
- `build_space(...)`: per scenario and base model. Checks every method against the scenario's
  data, teacher, tokenizer, compute scale, hardware capabilities, step budgets and the KB's own
  evidence, and records one reason for each method it excludes.

Nothing here knows a method by name: it reads `requires`, `effects`, `cost` and relations.
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from slmrec.estimate import (Arch, Estimator, ModelState, Option, Workload,
                             compile_option, param_grid)
from slmrec.kb import KB
from slmrec.recommend.rules import rules_for
from slmrec.recommend.value import quality_prior
from slmrec.schema import ComponentClass, Relation, RelationKind
from slmrec.scenario import ACCESS_RANK, COMPUTE_RANK, Scenario

ROLE_STRUCTURE, ROLE_TRAIN, ROLE_PRECISION, ROLE_OTHER = 0, 1, 2, 3


# --------------------------------------------------------------------------------------------
# Per-KB index
# --------------------------------------------------------------------------------------------


@dataclass
class KBIndex:
    kb: KB
    options: dict[str, list[Option]]
    rank: dict[str, int]
    role: dict[str, int]
    comp_order: dict[str, int]
    floating: frozenset[str]
    requires: dict[str, list[str]]
    recovers: dict[str, list[Relation]]
    graph: nx.DiGraph = field(repr=False)
    pretrain_scale: frozenset[str] = frozenset()   # methods that train at pretraining scale
    node_rank: dict[object, int] = field(default_factory=dict, repr=False)
    required_by: frozenset[str] = frozenset()      # targets of `requires` relations
    _reach: dict[tuple, bool] = field(default_factory=dict, repr=False)

    # ---- order ----------------------------------------------------------------------------

    def must_precede(self, a: str, b: str) -> bool:
        """True when the KB declares (directly or transitively) that `a` comes before `b`
        (the one rule checker, `slmrec.recommend.rules`)."""
        return rules_for(self.kb).must_precede(a, b)

    def precedes_relation(self, a: str, b: str) -> Relation | None:
        return rules_for(self.kb).precedes_relation(a, b)

    # ---- conflicts and requirements -------------------------------------------------------

    def conflict(self, a: str, b: str) -> Relation | None:
        rules = rules_for(self.kb)
        return rules.conflict_relation(a, b) if b in rules.conflicts(a) else None

    def has_conflicts(self, m: str) -> bool:
        idx = self.kb.relation_index.get(RelationKind.conflicts.value, {})
        return bool(idx.get(m)) or bool(idx.get(self.kb.methods[m].component))

    def satisfied(self, req: str, chain: list[str]) -> bool:
        if req in self.kb.components:
            return any(self.kb.methods[m].component == req for m in chain)
        return req in chain


def _role(opts: list[Option], m) -> int:
    if any(o.edits_structure or o.trains_all for o in opts):
        return ROLE_STRUCTURE
    if m.requires.training or any(o.cost["passes"] == "train" for o in opts):
        return ROLE_TRAIN
    if any("weight_bits" in o.t or "activation_bits" in o.t for o in opts):
        return ROLE_PRECISION
    return ROLE_OTHER


def evidence_grid(m) -> list[dict]:
    """The method's search grid plus every parameter value its evidence names (a figure at
    sparsity 0.25 is searched even when the grid says 0.1/0.2/0.3)."""
    grid = param_grid(m)
    seen = {tuple(sorted(p.items())) for p in grid}
    extra: dict[str, set] = {}
    for e in list(m.effects.quality) + list(m.effects.task_gain):
        for k, v in e.when.items():
            spec = m.params.get(k)
            if spec is not None and spec.search and spec.check(v) is None:
                extra.setdefault(k, set()).add(v)
    for k, vals in extra.items():
        for v in sorted(vals, key=str):
            for p in list(grid):
                q = dict(p)
                q[k] = v
                key = tuple(sorted(q.items()))
                if key not in seen:
                    seen.add(key)
                    grid.append(q)
    return grid


def _with_prior(kb: KB, m, o: Option) -> Option:
    """An option whose quality effect is unpublished (or not covered at these values) gets its
    family's wide prior instead of being dropped (`slmrec.recommend.value`)."""
    if o.quality is not None:
        return o
    prior = quality_prior(kb, m, o)
    if prior is None:
        return o
    return dataclasses.replace(o, quality=prior, quality_status="prior")


def kb_index(kb: KB) -> KBIndex:
    """The index of `kb`, built on first use and cached on the KB object."""
    idx = kb.__dict__.get("_recommend_index")
    if idx is not None:
        return idx
    comp_order: dict[str, int] = {}
    for c in kb.components.values():
        comp_order[c.id] = c.order if c.cls is ComponentClass.main and c.order is not None \
            else 100  # optional and cross-cutting components sort after the main stages
    options: dict[str, list[Option]] = {}
    role: dict[str, int] = {}
    for m in kb.methods.values():
        if not m.plannable:
            continue
        opts = [_with_prior(kb, m, compile_option(m, p)) for p in evidence_grid(m)]
        options[m.id] = opts
        role[m.id] = _role(opts, m)
    # precedes graph: methods are str nodes; components get entry/exit nodes so that
    # "A precedes C" reaches every member of C without members reaching each other
    g = nx.DiGraph()
    members: dict[str, list[str]] = {}
    for m in kb.methods.values():
        members.setdefault(m.component, []).append(m.id)
        g.add_node(m.id)
    for c, ms in members.items():
        for mid in ms:
            g.add_edge(("in", c), mid)
            g.add_edge(mid, ("out", c))
    for r in kb.relations.values():
        if r.kind is not RelationKind.precedes:
            continue
        u = r.src if r.src in kb.methods else ("out", r.src)
        v = r.dst if r.dst in kb.methods else ("in", r.dst)
        g.add_edge(u, v)
    node_rank = _canonical_rank(kb, g, comp_order, role)
    rank = {n: r for n, r in node_rank.items() if isinstance(n, str)}
    requires: dict[str, list[str]] = {}
    recovers: dict[str, list[Relation]] = {}
    for r in kb.relations.values():
        if r.kind is RelationKind.requires:
            requires.setdefault(r.src, []).append(r.dst)
        elif r.kind is RelationKind.recovers:
            recovers.setdefault(r.src, []).append(r)
    floating = frozenset(mid for mid, opts in options.items()
                         if any(o.recovery is not None for o in opts) or mid in recovers)
    pretrain = frozenset(mid for mid in options if kb.methods[mid].requires.compute.value == "pretraining"
                         and (kb.methods[mid].requires.training
                              or any(o.cost["passes"] == "train" for o in options[mid])))
    required_by = frozenset(d for ds in requires.values() for d in ds)
    idx = KBIndex(kb, options, rank, role, comp_order, floating, requires, recovers, g, pretrain,
                  node_rank, required_by)
    kb.__dict__["_recommend_index"] = idx
    return idx


def _canonical_rank(kb: KB, g: nx.DiGraph, comp_order: dict[str, int],
                    role: dict[str, int]) -> dict[object, int]:
    """A linear extension of `precedes` over every node (methods and component entry/exit
    nodes): Kahn's algorithm, ties by (stage, role, family, id)."""

    def key(n: object) -> tuple:
        if isinstance(n, tuple):
            return (comp_order.get(n[1], 100), -1 if n[0] == "in" else 9, "", str(n))
        m = kb.methods[n]
        return (comp_order.get(m.component, 100), role.get(n, ROLE_OTHER), m.family, n)

    indeg = {n: d for n, d in g.in_degree()}
    heap = [(key(n), i, n) for i, n in enumerate(g.nodes) if indeg[n] == 0]
    heapq.heapify(heap)
    order: list[object] = []
    done: set = set()
    counter = len(heap)
    remaining = set(g.nodes)
    while remaining:
        if not heap:  # a cycle outside the main stages: break it at the smallest key
            n = min(remaining, key=key)
            heap.append((key(n), counter, n))
            counter += 1
        _, _, n = heapq.heappop(heap)
        if n in done:
            continue
        done.add(n)
        remaining.discard(n)
        order.append(n)
        for v in g.successors(n):
            indeg[v] -= 1
            if indeg[v] == 0 and v not in done:
                heapq.heappush(heap, (key(v), counter, v))
                counter += 1
    return {n: i for i, n in enumerate(order)}


# --------------------------------------------------------------------------------------------
# Per scenario and base model
# --------------------------------------------------------------------------------------------


@dataclass
class Why:
    kind: str          # requirement | constraint | relation | evidence | other
    reason: str
    sources: list[str] = field(default_factory=list)


@dataclass
class Limits:
    memory_mb: float | None = None
    size_mb: float | None = None
    decode_ms_per_token: float | None = None
    prefill_ms: float | None = None
    quality_loss_pct: float | None = None
    step_peak_memory_mb: float | None = None
    step_tflop: float | None = None
    step_hours: float | None = None

    def items(self):
        return [(k, v) for k, v in self.__dict__.items() if v is not None]


@dataclass
class Space:
    idx: KBIndex
    sc: Scenario
    model: str
    arch: Arch
    est: Estimator
    options: list[Option]                       # options that passed every static check
    rejected: dict[str, Why]                    # method id -> why it is out
    limits: Limits
    weights: dict[str, float]
    refs: dict[str, float]
    base: ModelState
    access: str
    include: list[str]

    @property
    def kb(self) -> KB:
        return self.idx.kb


_TIER_WORDS = {"calibration": "calibration samples", "unlabeled": "unlabeled text",
               "labeled": "labeled examples", "preference": "preference pairs",
               "teacher-logits": "teacher logits", "teacher-text": "teacher text"}


def objective_weights(objectives: list[str]) -> dict[str, float]:
    """First objective 1, then halves, normalised to sum to 1."""
    raw = {o: 0.5 ** i for i, o in enumerate(dict.fromkeys(objectives))}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def build_space(idx: KBIndex, sc: Scenario, model: str, *, calibration: Any = None,
                limits_override: dict[str, float | None] | None = None,
                dominance: bool = True) -> Space:
    """The options `sc` allows on `model`, with one reason for every method left out.
    `dominance=False` keeps options that others dominate (the exhaustive reference uses it)."""
    kb = idx.kb
    arch = sc.arch(kb, model)
    hw = sc.target(kb)
    chw = sc.compute_target(kb)
    teacher = sc.teacher_arch(kb)
    access, access_note = sc.effective_teacher_access(kb)
    tiers = sc.available_tiers(kb)
    tokens = sc.data.tokens()
    wl = Workload(sc.workload.context, sc.workload.prompt_tokens, sc.workload.batch)
    est = Estimator(kb, arch, hw, wl, compute_hardware=chw,
                    teacher=teacher if access != "none" else None, base_bits=sc.base_bits,
                    calibration=calibration, data_tokens=tokens)
    base = est.initial_state()
    limits = Limits(
        memory_mb=sc.memory_budget_mb(kb), size_mb=sc.budgets.size_mb,
        decode_ms_per_token=sc.budgets.decode_ms_per_token, prefill_ms=sc.budgets.prefill_ms,
        quality_loss_pct=sc.tolerance_pct, step_peak_memory_mb=sc.step_memory_budget_mb(kb),
        step_tflop=sc.compute.tflop, step_hours=sc.compute.hours)
    for k, v in (limits_override or {}).items():
        setattr(limits, k, v)
    rejected: dict[str, Why] = {}
    teacher_tok = sc.teacher_tokenizer(kb) if access != "none" else None
    exclude = set(sc.preferences.exclude)
    scale_rank = COMPUTE_RANK[sc.compute.scale.value]
    # the most reduced model any chain could reach: step costs below it are lower bounds
    feasible_opts: dict[str, list[Option]] = {}
    req_memo: dict[tuple, Why | None] = {}
    for m in kb.methods.values():
        if not m.plannable:
            rejected[m.id] = Why("other", "knowledge only: the KB marks it `plannable: false`, "
                                          "so it is not a plan step", list(m.sources[:1]))
            continue
        if m.id in exclude:
            rejected[m.id] = Why("constraint", "excluded by the scenario (preferences.exclude)")
            continue
        if sc.preferences.runnable and not _runnable(m):
            rejected[m.id] = Why("constraint", "no runner executes it in this installation "
                                               "(preferences.runnable)", list(m.sources[:1]))
            continue
        rq = m.requires
        sig = (rq.data, rq.data_amount.count if rq.data_amount else None,
               rq.data_amount.unit if rq.data_amount else None, rq.teacher, rq.tokenizer_match,
               rq.tokenizer_mismatch,
               rq.training, rq.compute, tuple(rq.hardware_to_run), m.cost.passes,
               m.cost.teacher_resident)
        if sig not in req_memo:   # methods share requirement profiles: check each profile once
            req_memo[sig] = _requirement_problem(m, sc, kb, tiers, tokens, access, access_note,
                                                 teacher, teacher_tok, arch, scale_rank, hw, chw)
        why = req_memo[sig]
        if why:
            rejected[m.id] = Why(why.kind, why.reason, list(m.sources[:1]))
            continue
        # evidence weighted by this model's scale, as the final prediction weighs it
        opts = [est.at_scale(o) for o in idx.options.get(m.id, []) if o.quality is not None]
        if not opts:
            first = idx.options.get(m.id, [None])[0]
            status = first.quality_status if first else "missing"
            rejected[m.id] = Why("evidence", _evidence_reason(m, status, idx.options.get(m.id, [])),
                                 list(m.sources[:1]))
            continue
        feasible_opts[m.id] = opts
    # step budgets: a step that cannot fit even on the smallest reachable model is out
    floor = _floor_state(est, base, feasible_opts)
    cost_memo: dict[tuple, Any] = {}
    for mid, opts in list(feasible_opts.items()):
        kept, worst = [], None
        for o in opts:
            ckey = (tuple(o.cost.values()), est.step_tokens(o),
                    kb.methods[o.method].requires.teacher.value)
            c = cost_memo.get(ckey)
            if c is None:
                c = cost_memo[ckey] = est.step_cost(floor, o)
            if limits.step_peak_memory_mb and c.peak_memory_mb > limits.step_peak_memory_mb:
                worst = worst or ("constraint", f"its step needs at least {c.peak_memory_mb:,.0f} MB "
                                  f"on {chw.name} ({limits.step_peak_memory_mb:,.0f} MB available"
                                  + (", privacy keeps steps on the target" if sc.preferences.privacy else "")
                                  + ")")
                continue
            if limits.step_tflop and c.tflop > limits.step_tflop:
                worst = worst or ("constraint", f"its step needs at least {c.tflop:,.3g} TFLOP "
                                  f"(compute budget {limits.step_tflop:,.3g} TFLOP)")
                continue
            if limits.step_hours and c.hours > limits.step_hours:
                worst = worst or ("constraint", f"its step needs at least {c.hours:,.3g} h on "
                                  f"{chw.name} (budget {limits.step_hours:,.3g} h)")
                continue
            kept.append(o)
        if kept:
            feasible_opts[mid] = kept
        else:
            del feasible_opts[mid]
            rejected[mid] = Why(worst[0], worst[1], list(chw.sources[:1]))
    # `requires` relations: a method needing something that cannot be planned is out (fixpoint)
    changed = True
    while changed:
        changed = False
        for mid in list(feasible_opts):
            for req in idx.requires.get(mid, ()):
                ok = (req in feasible_opts) if req in kb.methods else \
                    any(kb.methods[x].component == req for x in feasible_opts)
                if not ok:
                    rel = kb.relations.get((mid, RelationKind.requires.value, req))
                    cause = rejected.get(req)
                    rejected[mid] = Why("relation", f"requires '{req}', which cannot be planned here"
                                        + (f" ({cause.reason})" if cause else ""),
                                        list(rel.sources) if rel else [])
                    del feasible_opts[mid]
                    changed = True
                    break
    # a model built from random weights needs a pretraining-scale training step after it
    trainers = [mid for mid in feasible_opts if mid in idx.pretrain_scale]
    for mid in list(feasible_opts):
        if any(o.from_scratch for o in feasible_opts[mid]) and not trainers:
            causes = [f"'{t}' {rejected[t].reason}" for t in sorted(idx.pretrain_scale) if t in rejected]
            rejected[mid] = Why("requirement", "builds the model from random weights "
                                "(effects.transform.init_from_scratch), so a pretraining-scale step "
                                "must follow; " + ("; ".join(causes[:2]) if causes else
                                                   "the KB has no plannable pretraining method"),
                                list(kb.methods[mid].sources[:1]))
            del feasible_opts[mid]
    options = [o for mid in sorted(feasible_opts, key=lambda x: idx.rank.get(x, 0))
               for o in _undominated(feasible_opts[mid], est)]
    if dominance:
        dominated = _cross_dominated(options, idx, est, set(sc.preferences.include))
        if dominated:
            options = [o for o in options if o.key not in dominated]
            left = {o.method for o in options}
            for o_key, by in dominated.items():
                mid = o_key[0]
                if mid not in left and mid not in rejected:
                    rejected[mid] = Why("dominated", f"dominated by {by.label()}: no worse in "
                                        "any effect or cost, and bound by no relation of its own",
                                        list(by.sources[:1]))
    refs = dict(zip(("params", "bits_per_weight", "sparsity", "size_mb", "inference_memory_mb",
                     "decode_ms_per_token", "prefill_ms"), est.metrics(base)))
    return Space(idx, sc, model, arch, est, options, rejected, limits,
                 objective_weights(sc.preferences.objectives), refs, base, access,
                 list(sc.preferences.include))


def _runnable(m) -> bool:
    if m.runner is None:
        return False
    try:
        from runners.registry import RUNNERS  # noqa: PLC0415 (torch-free: lazy targets)
    except Exception:  # no runners package: trust the KB's runner field
        return True
    return m.runner in RUNNERS


def opens_up(space: Space, variant: Scenario) -> list[str]:
    """The methods excluded here whose requirements `variant` meets (a cheap test before a
    full search of the variant)."""
    kb = space.kb
    access, note = variant.effective_teacher_access(kb)
    teacher = variant.teacher_arch(kb)
    tiers, tokens = variant.available_tiers(kb), variant.data.tokens()
    hw, chw = variant.target(kb), variant.compute_target(kb)
    tok = variant.teacher_tokenizer(kb) if access != "none" else None
    scale = COMPUTE_RANK[variant.compute.scale.value]
    sc = space.sc
    b_access, b_note = sc.effective_teacher_access(kb)
    b_args = (sc.available_tiers(kb), sc.data.tokens(), b_access, b_note, sc.teacher_arch(kb),
              sc.teacher_tokenizer(kb) if b_access != "none" else None, space.arch,
              COMPUTE_RANK[sc.compute.scale.value], sc.target(kb), sc.compute_target(kb))
    out = []
    for mid, why in space.rejected.items():
        if why.kind in ("requirement", "constraint") and mid in space.idx.options:
            m = kb.methods[mid]
            if _requirement_problem(m, sc, kb, *b_args) is not None and \
                    _requirement_problem(m, variant, kb, tiers, tokens, access, note, teacher, tok,
                                         space.arch, scale, hw, chw) is None:
                out.append(mid)
    return out


def _requirement_problem(m, sc: Scenario, kb: KB, tiers: set[str], tokens: dict[str, float],
                         access: str, access_note: str | None, teacher: Arch | None,
                         teacher_tok: str | None, arch: Arch, scale_rank: int, hw, chw) -> Why | None:
    req = m.requires
    tier = req.data.value
    src = list(m.sources[:1])
    if tier != "none" and tier not in tiers:
        held = sorted(t for t in tiers if t != "none")
        if tier.startswith("teacher") and access_note:
            return Why("requirement", f"needs {_TIER_WORDS[tier]}; {access_note}", src)
        return Why("requirement", f"needs {_TIER_WORDS.get(tier, tier)} (data tier '{tier}'); the "
                                  f"scenario provides {', '.join(held) or 'no data and no teacher'}", src)
    # data amounts are soft: less data than usual shrinks the expected gain and its confidence
    # (slmrec.recommend.value), it never rules a method out
    if ACCESS_RANK[req.teacher.value] > ACCESS_RANK[access]:
        base = f"needs teacher {req.teacher.value} access; the scenario's teacher access is {access}"
        return Why("requirement", base + (f" ({access_note})" if access_note else ""), src)
    if req.teacher.value != "none" and m.cost.teacher_resident and teacher is None:
        return Why("requirement", f"runs the teacher beside the student, but teacher "
                                  f"'{sc.teacher.model}' has no architecture card (not a catalog "
                                  "model or local folder)", src)
    if req.tokenizer_match:
        student_tok = arch.tokenizer
        if req.teacher.value == "none":
            # a partner model that is not a teacher (e.g. a draft): any catalog model will do
            partners = [c.id for c in kb.models.values() if c.tokenizer == student_tok and c.id != arch.id]
            if not partners and teacher_tok != student_tok:
                return Why("requirement", f"needs a second model sharing the student's tokenizer "
                                          f"({student_tok or 'unknown'}); the catalog has none", src)
        elif teacher_tok is None or student_tok is None or teacher_tok != student_tok:
            return Why("requirement", f"needs teacher and student to share a tokenizer: teacher "
                                      f"'{sc.teacher.model}' uses {teacher_tok or 'an unknown tokenizer'}, "
                                      f"student '{arch.id}' uses {student_tok or 'an unknown tokenizer'}",
                       src)
    if req.tokenizer_mismatch and teacher_tok is not None and teacher_tok == arch.tokenizer:
        return Why("requirement", f"is useful only when teacher and student tokenizers differ "
                                  f"(requires.tokenizer_mismatch); teacher '{sc.teacher.model}' "
                                  f"and student '{arch.id}' share {teacher_tok}", src)
    if COMPUTE_RANK[req.compute.value] > scale_rank:
        return Why("constraint", f"needs {req.compute.value} compute; the scenario allows up to "
                                 f"{sc.compute.scale.value} (compute.scale)", src)
    runs_on = chw if (req.training or m.cost.passes != "none"
                      or req.compute.value not in ("none",)) else hw
    missing = [c for c in req.hardware_to_run if c not in runs_on.capabilities]
    if missing:
        return Why("requirement", f"needs {', '.join(missing)} to run; {runs_on.name} has "
                                  f"{', '.join(runs_on.capabilities) or 'no listed capabilities'}", src)
    return None


def _evidence_reason(m, status: str, opts: list[Option]) -> str:
    if status == "unpublished":
        return ("changes the model but the KB has only unpublished notes on its quality effect "
                "(effects.quality): no range to check the tolerance against")
    if status == "uncovered":
        tried = ", ".join(sorted({o.label() for o in opts}))
        whens = sorted({", ".join(f"{k}={v}" for k, v in e.when.items()) or "any"
                        for e in m.effects.quality})
        return (f"KB quality evidence covers {'; '.join(whens)} but not the searched values "
                f"({tried})")
    return ("changes the model but the KB gives no quality effect (effects.quality) to check the "
            "tolerance against")


def _floor_state(est: Estimator, base: ModelState, opts: dict[str, list[Option]]) -> ModelState:
    """The base with every field at its most reducing value among the options (a lower bound)."""
    s = base.copy()
    best: dict[str, float] = {}
    for olist in opts.values():
        for o in olist:
            for f, v in o.t.items():
                if f in ("params_fraction_removed", "mlp_fraction_removed", "layers_fraction_removed",
                         "heads_fraction_removed", "sparsity"):
                    best[f] = max(best.get(f, 0.0), v)
                elif f in ("weight_bits", "embedding_bits", "kv_cache_bits", "kv_heads",
                           "rank_fraction", "vocab_size"):
                    best[f] = min(best.get(f, v), v)
    keep = (1 - best.get("params_fraction_removed", 0)) * (1 - best.get("layers_fraction_removed", 0)) \
        * (1 - best.get("heads_fraction_removed", 0)) * min(1.0, 2 * best.get("rank_fraction", 0.5))
    s.qo, s.kvp, s.mlp, s.other = s.qo * keep, s.kvp * keep, s.mlp * keep, s.other * keep
    s.mlp *= 1 - best.get("mlp_fraction_removed", 0)
    s.layers = max(1.0, s.layers * (1 - best.get("layers_fraction_removed", 0)))
    if "embedding_bits" in best:
        s.embed_bits = min(s.embed_bits, best["embedding_bits"])
    if "weight_bits" in best:
        s.bits = min(s.bits, best["weight_bits"])
        s.int_quant = best["weight_bits"] < 16
    if "vocab_size" in best:
        s.embed *= min(1.0, best["vocab_size"] / s.vocab)
        s.vocab = min(s.vocab, best["vocab_size"])
    return s


def _dominates(a: Option, b: Option, est: Estimator) -> bool:
    """`a` is at least as good as `b` on everything the search can see (same method only)."""
    if a.fields != b.fields or a.structure != b.structure:
        return False
    pa, sa, _ = est.credit(a)
    pb, sb, _ = est.credit(b)
    for f in a.fields:
        x, y = a.t[f], b.t[f]
        if f == "weight_bits":
            ga, gb = a.t.get("group_size"), b.t.get("group_size")
            x = x + (a.group_overhead_bits / ga if ga and x < 16 else 0)
            y = y + (b.group_overhead_bits / gb if gb and y < 16 else 0)
            if x > y or (pb and not pa):
                return False
        elif f in ("params_fraction_removed", "mlp_fraction_removed", "layers_fraction_removed",
                   "heads_fraction_removed"):
            if x < y:
                return False
        elif f == "sparsity":
            if (sa or sb) and (x < y or (sb and not sa)):
                return False
        elif x > y:
            return False
    qa, qb = a.quality, b.quality
    if qa.value > qb.value or qa.low > qb.low or qa.high > qb.high:
        return False
    for ra, rb in ((a.recovery, b.recovery), (a.speedup, b.speedup)):
        if rb is None:
            continue
        if ra is None or ra.value < rb.value or ra.low < rb.low or ra.high < rb.high:
            return False
    if b.speedup is not None and est.credit(b)[2] and not est.credit(a)[2]:
        return False
    ca, cb = a.cost, b.cost
    for k in ("tokens", "trainable_fraction", "bits_during"):
        if (ca[k] or 0) > (cb[k] or 0):
            return False
    if a.method == b.method:
        return True
    # another method: it must also cost no more to run and restrict the order no more
    ma, mb = est.kb.methods[a.method], est.kb.methods[b.method]
    if (_PASSES[ca["passes"]] > _PASSES[cb["passes"]] or _OPT[ca["optimizer"]] > _OPT[cb["optimizer"]]
            or (ca["teacher_resident"] and not cb["teacher_resident"])
            or (ca["hessian"] and not cb["hessian"])
            or ma.requires.teacher.value != "none" and mb.requires.teacher.value == "none"
            or est.step_tokens(a) > est.step_tokens(b)
            or (a.int_quant and not b.int_quant) or (a.edits_structure and not b.edits_structure)
            or (a.trains_all and not b.trains_all) or a.from_scratch != b.from_scratch
            or a.lossy and not b.lossy):
        return False
    trains_a = ca["passes"] == "train" or ma.requires.training
    trains_b = cb["passes"] == "train" or mb.requires.training
    if trains_a and ma.requires.data.value != "none" and not (
            trains_b and mb.requires.data.value == ma.requires.data.value):
        return False
    return True


_PASSES = {"none": 0, "forward": 1, "train": 2}
_OPT = {"none": 0, "adapter": 1, "full": 2}


def _free(idx: KBIndex, mid: str) -> bool:
    """No relation of its own constrains where or with what this method may be planned."""
    g = idx.graph
    comp = idx.kb.methods[mid].component
    if any(v != ("out", comp) for v in g.successors(mid)) or \
            any(u != ("in", comp) for u in g.predecessors(mid)):
        return False
    rel = idx.kb.relation_index
    return not (rel.get("conflicts", {}).get(mid) or rel.get("requires", {}).get(mid)
                or mid in idx.required_by)


def _cross_dominated(opts: list[Option], idx: KBIndex, est: Estimator,
                     keep: set[str]) -> dict[tuple, Option]:
    """Options another method's option dominates: same slot, same stage and role, the dominator
    bound by no relation of its own (so nothing it could be combined with is lost) and of the
    same family (or a family no other option uses). Returns dominated key -> dominator."""
    kb = idx.kb
    fam_count: dict[str, int] = {}
    for o in opts:
        fam = kb.methods[o.method].family
        fam_count[fam] = fam_count.get(fam, 0) + 1
    groups: dict[tuple, list[Option]] = {}
    for o in opts:
        m = kb.methods[o.method]
        if not o.fields:
            continue  # field-less steps can be combined freely: dominance would not be exact
        groups.setdefault((o.fields, o.structure, m.component, idx.role.get(o.method),
                           o.from_scratch), []).append(o)
    out: dict[tuple, Option] = {}
    free_cache: dict[str, bool] = {}
    for group in groups.values():
        if len({o.method for o in group}) < 2:
            continue
        group.sort(key=lambda o: (o.quality.value, o.quality.high))
        skyline: list[Option] = []
        for b in group:
            fam_b = kb.methods[b.method].family
            dom = None
            if b.method not in keep and b.method not in idx.required_by:
                for a in skyline:
                    if a.method != b.method and (kb.methods[a.method].family == fam_b or
                                                 fam_count.get(kb.methods[a.method].family) == 1) \
                            and _dominates(a, b, est):
                        dom = a
                        break
            if dom is not None:
                out[b.key] = dom
                continue
            if free_cache.setdefault(b.method, _free(idx, b.method)):
                skyline.append(b)
    return out


def _undominated(opts: list[Option], est: Estimator) -> list[Option]:
    if len(opts) < 2:
        return opts
    out = []
    for i, o in enumerate(opts):
        if not any(j != i and _dominates(p, o, est) and (not _dominates(o, p, est) or j < i)
                   for j, p in enumerate(opts)):
            out.append(o)
    return out
