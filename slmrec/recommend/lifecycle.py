"""From a chain that fits the target to a whole lifecycle: the stages the goals call for.

The branch and bound (`search.py`) finds the chains that meet the budgets and the tolerance.
For each of them, every implied goal the chain leaves uncovered is given the step that serves
it best (KB `serves`): adaptation, specialisation and alignment steps are valued by their
expected task gain for the data the user holds (`value.py`); evaluation and deployment steps
(the bookends every plan ends with) by how well they fit the scenario (the data held for the
objective, the runtime the chain's formats co-adapt with, a runner that executes them). Each
added step is placed by the rule checker (`rules.py`) and the whole chain is re-simulated, so a
training step is checked against the memory of the device it runs on. A goal no allowed step
can serve stays uncovered: the plan ranks below complete ones and says which goal and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slmrec.estimate import Option
from slmrec.recommend.goals import BOOKENDS, SEARCH_GOALS, GoalNeed, covered, goal_name
from slmrec.recommend.goals import serves as goal_serves
from slmrec.recommend.search import STEP_PENALTY, Candidate, Search
from slmrec.recommend.value import Gain, task_gain

MISSING_GOAL_PENALTY = 1.0   # an uncovered goal ranks a plan below every complete one
GAIN_WEIGHT = 0.02           # score per % of risk-adjusted task gain (pessimistic-leaning mid)
MAX_PER_GOAL = 8             # methods tried per goal
_LABELS = {"step_peak_memory_mb": ("step peak memory", "MB"), "step_hours": ("step time", "h"),
           "step_tflop": ("step compute", "TFLOP"), "memory_mb": ("inference memory", "MB"),
           "quality_loss_pct": ("quality loss", "%"), "size_mb": ("size on disk", "MB"),
           "decode_ms_per_token": ("decode latency", "ms/token")}
_TIER_RANK = {"none": 0, "calibration": 1, "unlabeled": 2, "teacher-text": 2,
              "teacher-logits": 2, "labeled": 3, "preference": 3}


@dataclass
class Lifecycle:
    cand: Candidate
    score: float
    gains: dict[str, Gain] = field(default_factory=dict)          # method -> expected gain
    whys: dict[str, list[str]] = field(default_factory=dict)      # method -> why (stage steps)
    missing: dict[str, str] = field(default_factory=dict)         # goal -> why uncovered
    tried: dict[str, str] = field(default_factory=dict)           # method -> why not chosen
    goals: list[GoalNeed] = field(default_factory=list)
    core: Candidate | None = None   # the fit-the-target chain the stages were added to
    device_bound: set[str] = field(default_factory=set)   # stage steps refused for step limits

    @property
    def complete(self) -> bool:
        return not self.missing


def _risk(g: Gain | None) -> float:
    """Risk-aware value of a gain: the pessimistic half of the range, and for a low-confidence
    prior little more than its low end."""
    if g is None:
        return 0.0
    if g.confidence == "low":
        return g.low + 0.25 * (g.value - g.low)
    return (g.value + g.low) / 2


def _stage_options(run: Search, need: GoalNeed, chain: tuple[Option, ...]) -> list[Option]:
    goal = need.goal
    sp = run.sp
    kb = sp.kb
    have = {o.method for o in chain}
    by_method: dict[str, Option] = {}
    pool = list(sp.options)
    for mid, why in sp.rejected.items():   # effect-free twins the space folded away
        if why.kind == "dominated":
            pool += [o for o in sp.idx.options.get(mid, ()) if o.quality is not None]
    for o in pool:
        m = kb.methods[o.method]
        # which methods may serve a goal is data: `serves`, held to the goal's `served_by`
        # (a stage goal needs a step that trains, deploy-runtime one that yields an artifact or
        # a runtime) by the loader
        if goal not in goal_serves(kb, o.method) or o.method in have or o.method in by_method:
            continue
        if need.tiers and m.requires.data.value not in need.tiers:
            continue   # it must use what implied the goal (the domain corpus, the pairs)
        by_method[o.method] = o
    return list(by_method.values())


def _fit(run: Search, o: Option, chain: tuple[Option, ...], held: dict[str, float]) -> tuple:
    """How well a bookend fits the scenario, best first: the most specific data it can use, the
    target capabilities it benefits from (present minus missing), a runtime made for this kind
    of target, co-adaptation with a step of the chain, a runner that executes it."""
    sp = run.sp
    kb = sp.kb
    m = kb.methods[o.method]
    caps = set(sp.est.hw.capabilities)
    benefit = set(m.requires.hardware_to_benefit)
    present, missing = len(benefit & caps), len(benefit - caps)
    score = _TIER_RANK.get(m.requires.data.value, 0) * 3 + 2 * present - missing
    if m.requires.hardware_to_run or m.requires.hardware_to_run_any:
        score += 1          # made for this kind of target (its capabilities were checked)
    if kb.relation_index.get("co-adapts", {}).get(o.method, set()) & {x.method for x in chain}:
        score += 2
    if o.cost["passes"] == "train":
        score -= 3          # a bookend that trains (a draft head, say) is no plain bookend
    # the KB's standard choice: how many relations name the method (at most 1 point)
    score += min(_relation_count(kb).get(o.method, 0), 10) / 10
    return (score, -missing, m.runner is not None)


def _relation_count(kb) -> dict[str, int]:
    got = kb.__dict__.get("_relation_count")
    if got is None:
        got = {}
        for r in kb.relations.values():
            got[r.src] = got.get(r.src, 0) + 1
            got[r.dst] = got.get(r.dst, 0) + 1
        kb.__dict__["_relation_count"] = got
    return got


def compose(run: Search, cand: Candidate, needs: list[GoalNeed]) -> Lifecycle:
    sp = run.sp
    kb = sp.kb
    held = sp.sc.data.tokens()
    chain = tuple(cand.options)
    life = Lifecycle(cand, cand.score, goals=needs, core=cand)
    base_viol = set(cand.violations)
    # max_steps bounds the steps that change the model, stages included (checked per stage in
    # _add_stages); the search's own bound is lifted so that bookends can be placed
    saved = run.max_steps
    run.max_steps = max(saved, len(chain)) + 3 * len(needs)
    try:
        _add_stages(run, life, needs, chain, base_viol, held)
        _drop_redundant(run, life, needs, {o.key for o in chain})
    finally:
        run.max_steps = saved
    total_gain = sum(_risk(x) for x in life.gains.values())
    bookends = sum(1 for o in life.cand.options
                   if set(kb.methods[o.method].serves) & set(BOOKENDS))
    life.score = (life.cand.score - GAIN_WEIGHT * total_gain - STEP_PENALTY * bookends
                  + MISSING_GOAL_PENALTY * len(life.missing))
    return life


def _add_stages(run: Search, life: Lifecycle, needs: list[GoalNeed], chain: tuple[Option, ...],
                base_viol: set, held: dict[str, float]) -> None:
    sp = run.sp
    kb = sp.kb
    for o in chain:   # steps of the fit-the-target chain that also serve a stage goal
        for need in needs:
            if need.goal in SEARCH_GOALS or need.goal not in kb.methods[o.method].serves:
                continue
            gain = task_gain(kb, kb.methods[o.method], o.params, held)
            life.whys.setdefault(o.method, []).append(
                f"serves {goal_name(kb, need.goal)}: the scenario holds {need.why}")
            if gain is not None and o.method not in life.gains:
                life.gains[o.method] = gain
                life.whys[o.method].append(gain.text() + f" ({', '.join(gain.sources)})")
    for need in needs:
        g = need.goal
        if g in SEARCH_GOALS:
            continue
        if g in covered([o.method for o in chain], kb, True):
            continue
        limit = sp.sc.preferences.max_steps
        used = sum(1 for o in chain if not set(goal_serves(kb, o.method)) & set(BOOKENDS))
        if g not in BOOKENDS and used >= limit:
            life.missing[g] = (f"{goal_name(kb, g)} ({need.why}) is not covered: the plan already "
                               f"has {used} steps that change the model (preferences.max_steps "
                               f"{limit}; evaluation and deployment steps come on top)")
            continue
        best = None
        opts = _stage_options(run, need, chain)
        ranked = []
        for o in opts:
            gain = None if g in BOOKENDS else task_gain(kb, kb.methods[o.method], o.params, held)
            ranked.append(((_risk(gain), _fit(run, o, chain, held) if g in BOOKENDS else ()), o, gain))
        ranked.sort(key=lambda t: (-t[0][0], tuple(-x for x in t[0][1]),
                                   sp.idx.rank.get(t[1].method, 0)))
        for (_, _), o, gain in ranked[:MAX_PER_GOAL]:
            full = run.complete(chain + (o,))
            if full is None:
                life.tried[o.method] = ("its `requires` relations name steps that cannot be "
                                        "planned here")
                continue
            orders = _goal_ordered(run, full) + run._orders(full)
            if not orders:
                life.tried[o.method] = "cannot be ordered with the plan's steps (rule checker)"
                continue
            # the order the goals follow in the lifecycle (kb/goals.yaml) first, then the score
            c2 = min((run.evaluate(order) for order in orders),
                     key=lambda c: (_goal_inversions(kb, c.options), c.score))
            new = set(c2.violations) - base_viol
            if new:
                k = sorted(new)[0]
                v, lim = c2.violations[k]
                label, unit = _LABELS.get(k, (k.replace("_", " "), ""))
                if k.startswith("step_"):
                    life.device_bound.add(o.method)
                life.tried[o.method] = (f"with it the {label} is {v:,.0f} {unit} > {lim:,.0f} "
                                        f"{unit} on {_device(run, k)}")
                continue
            if best is None:
                best = (None, o, gain, c2)
            else:
                life.tried[o.method] = f"serves {goal_name(kb, g)} less well than {best[1].method}" \
                    + (f" ({gain.text()})" if gain else "")
        if best is None:
            reasons = [f"{mid}: {why}" for mid, why in life.tried.items()
                       if mid in {o.method for o in opts}]
            rej = [(why.kind != "constraint", f"{mid}: {why.reason}")
                   for mid, why in sp.rejected.items()
                   if g in kb.methods[mid].serves and why.kind in ("requirement", "constraint")]
            rej = [text for _, text in sorted(rej, key=lambda t: t[0])]
            life.missing[g] = (f"{goal_name(kb, g)} ({need.why}) is not covered: "
                               + ("; ".join((reasons + rej)[:3]) or "no method in the KB serves it"))
            continue
        _, o, gain, c2 = best
        chain = tuple(c2.options)
        life.cand = c2
        why = [f"serves {goal_name(kb, g)}: " + (need.why if g in BOOKENDS
                                                  else f"the scenario holds {need.why}")]
        if gain is not None:
            life.gains[o.method] = gain
            why.append(gain.text() + f" ({', '.join(gain.sources)})")
        if o.method in life.tried:
            del life.tried[o.method]
        life.whys[o.method] = why


def _goal_rank(kb, mid: str) -> int | None:
    order = list(kb.goals)
    stage = [order.index(g) for g in kb.methods[mid].serves
             if g in order and g not in SEARCH_GOALS and g not in BOOKENDS]
    return min(stage) if stage else None


def _goal_inversions(kb, options) -> int:
    """Pairs of stage steps in the opposite order of their goals (adapt, specialise, align)."""
    ranks = [r for r in (_goal_rank(kb, o.method) for o in options) if r is not None]
    return sum(1 for i in range(len(ranks)) for j in range(i + 1, len(ranks)) if ranks[i] > ranks[j])


def _goal_ordered(run: Search, full: tuple) -> list[tuple]:
    """The canonical order with the stage steps of one stage sorted by their goals' order."""
    kb = run.sp.kb
    idx = run.sp.idx
    order = sorted(full, key=lambda o: (idx.comp_order.get(kb.methods[o.method].component, 100),
                                        _goal_rank(kb, o.method) if _goal_rank(kb, o.method)
                                        is not None else -1, idx.rank.get(o.method, 0)))
    return [tuple(order)] if run._valid(order) else []


def _drop_redundant(run: Search, life: Lifecycle, needs: list[GoalNeed], core: set) -> None:
    """A stage step whose goals other steps already serve (a LoRA step next to the supervised
    tuning a DPO step requires) is dropped when the chain stays valid and within its limits."""
    kb = run.sp.kb
    wanted = {n.goal for n in needs} - set(SEARCH_GOALS)
    changed = True
    while changed:
        changed = False
        chain = list(life.cand.options)
        for o in chain:
            mine = goal_serves(kb, o.method) & wanted
            if o.key in core or not mine or run.rules.requires.get(o.method):
                continue   # a step that pulled in what it requires is the one to keep
            rest = [x for x in chain if x is not o]
            if not mine <= {g for x in rest for g in goal_serves(kb, x.method)}:
                continue
            if run.rules.check([x.method for x in rest], requires=True, first=True):
                continue
            c2 = run.evaluate(tuple(rest))
            if set(c2.violations) - set(life.cand.violations):
                continue
            life.cand = c2
            life.gains.pop(o.method, None)
            life.whys.pop(o.method, None)
            life.tried[o.method] = ("its goals are already served by "
                                    + ", ".join(x.method for x in rest
                                                if mine & set(kb.methods[x.method].serves)))
            changed = True
            break


def _device(run: Search, limit: str) -> str:
    sc = run.sp.sc
    kb = run.sp.kb
    if limit.startswith("step_"):
        hw = sc.compute_target(kb)
        return f"{hw.name} (where the steps run)"
    return f"{sc.target(kb).name} (the target)"
