"""What a scenario implies the lifecycle must achieve, and which goals a chain covers.

A goal is implied by what the user holds or asks for (the table below is the scenario's own
vocabulary, like the data tiers in `slmrec.scenario`); a scenario may also state goals
(`goals:`). Which goals a method serves is KB data (`serves:`). `preserve-quality` is covered by
any chain within the tolerance; every other goal by a step that serves it.
"""

from __future__ import annotations

from dataclasses import dataclass

from slmrec.kb import KB
from slmrec.scenario import Scenario

# A goal the search itself covers (fit the budgets, stay within the tolerance): not a stage.
SEARCH_GOALS = ("fit-target", "preserve-quality")
# Stages every plan ends with (bookends).
BOOKENDS = ("evaluate-objective", "deploy-runtime")
# Unlabeled text counts as a domain corpus (rather than calibration text) from this many tokens
# on: the smallest corpora domain-adaptive pre-training is reported with are millions of tokens
# (task-adaptive pre-training in Gururangan et al. 2020, arXiv:2004.10964).
DOMAIN_TOKENS = 1e6


@dataclass(frozen=True)
class GoalNeed:
    goal: str
    why: str           # what in the scenario implies it
    tiers: frozenset[str] = frozenset()   # data tiers a stage must consume to use what implied
                                          # the goal (empty: any)


def implied_goals(sc: Scenario, kb: KB) -> list[GoalNeed]:
    """The goals `sc` implies or states, in lifecycle order."""
    out: dict[str, str] = {}
    tiers: dict[str, frozenset[str]] = {}
    out["fit-target"] = "the target's memory, size and latency budgets"
    access, _ = sc.effective_teacher_access(kb)
    d = sc.data
    if d.unlabeled >= DOMAIN_TOKENS:
        out["adapt-domain"] = f"{d.unlabeled:,.0f} tokens of unlabeled domain text"
        tiers["adapt-domain"] = frozenset({"unlabeled"})
    if d.labeled > 0:
        out["specialise-task"] = f"{d.labeled:,.0f} labeled examples"
        tiers["specialise-task"] = frozenset({"labeled"}) if access == "none" else frozenset()
    elif access != "none":
        out["specialise-task"] = f"a teacher ({sc.teacher.model}, {access} access)"
    if d.preference > 0:
        out["align-preferences"] = f"{d.preference:,.0f} preference pairs"
        tiers["align-preferences"] = frozenset({"preference"})
    out["preserve-quality"] = f"a quality tolerance of {sc.tolerance_pct:g}%"
    out["evaluate-objective"] = "every plan measures its objective before it ships"
    out["deploy-runtime"] = "every plan ends in an artifact the target's runtime loads"
    if sc.update_every_days:
        out["keep-current"] = f"updates every {sc.update_every_days:g} days"
    for g in sc.goals:
        out.setdefault(g, "stated by the scenario (goals)")
    order = list(kb.goals) or list(out)
    return [GoalNeed(g, out[g], tiers.get(g, frozenset()))
            for g in sorted(out, key=lambda g: order.index(g)
                                               if g in order else len(order))]


def serves(kb: KB, mid: str) -> set[str]:
    """The goals a step counts for: a step that trains serves no bookend (it is no artifact or
    measurement step, whatever else it does)."""
    m = kb.methods[mid]
    out = set(m.serves)
    if m.requires.training or m.cost.passes == "train":
        out -= set(BOOKENDS)
    return out


def covered(methods: list[str], kb: KB, feasible: bool) -> set[str]:
    """Goals a chain of methods covers (preserve-quality: the chain is within the tolerance;
    fit-target: it meets the budgets)."""
    out = {g for mid in methods if mid in kb.methods for g in serves(kb, mid)}
    if feasible:
        out.update(SEARCH_GOALS)
    else:
        out.difference_update(SEARCH_GOALS)
    return out


def goal_name(kb: KB, g: str) -> str:
    return kb.goals[g].name if g in kb.goals else g
