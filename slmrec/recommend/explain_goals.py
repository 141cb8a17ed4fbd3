"""The goal side of an explanation: which step serves each goal, the plan's task gain, and the
why-not of methods that serve a goal (naming the goal)."""

from __future__ import annotations

from slmrec.kb import KB
from slmrec.plan import Prediction, Rejection
from slmrec.recommend.goals import SEARCH_GOALS, goal_name
from slmrec.recommend.goals import serves as goal_serves
from slmrec.recommend.lifecycle import Lifecycle


def life_gain(life: Lifecycle) -> Prediction | None:
    """The chain's expected task gain (relative %, kept apart from general-text quality):
    the gains of its stages compound."""
    if not life.gains:
        return None
    v = lo = hi = 1.0
    srcs: list[str] = []
    conf = []
    for g in life.gains.values():
        v *= 1 + g.value / 100
        lo *= 1 + g.low / 100
        hi *= 1 + g.high / 100
        srcs += list(g.sources)
        conf.append(g.confidence)
    worst = "low" if "low" in conf else ("medium" if "medium" in conf else "high")
    return Prediction(value=round((v - 1) * 100, 3), low=round((lo - 1) * 100, 3),
                      high=round((hi - 1) * 100, 3), unit="%",
                      basis="prior" if worst == "low" else "evidence",
                      sources=list(dict.fromkeys(srcs)),
                      note=f"expected gain on the scenario's task objective ({worst} confidence); "
                           "not a change on general text")


def plan_goals(life: Lifecycle, methods: list[str], kb: KB, feasible: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for need in life.goals:
        g = need.goal
        if g in life.missing:
            out[g] = "NOT COVERED: " + life.missing[g]
        elif g in SEARCH_GOALS:
            out[g] = "met by the whole chain" if feasible else "NOT MET (see violations)"
        else:
            by = [m for m in methods if g in goal_serves(kb, m)]
            out[g] = "served by " + ", ".join(by) if by else "NOT COVERED"
    return out


def goal_rejections(rejected: list[Rejection], life: Lifecycle, kb: KB) -> list[Rejection]:
    """Name the goal in the why-not of every method that serves an implied goal."""
    needs = {n.goal for n in life.goals}
    out = []
    for r in rejected:
        m = kb.methods.get(r.method)
        goals = [g for g in (m.serves if m else []) if g in needs and g not in SEARCH_GOALS]
        if not goals:
            out.append(r)
            continue
        label = ", ".join(goal_name(kb, g) for g in goals)
        tried = life.tried.get(r.method)
        missing = [life.missing[g] for g in goals if g in life.missing]
        if tried:
            reason = tried if tried.startswith("serves") else f"serves {label}; {tried}"
            kind = "goal"
        elif missing and r.kind in ("dominated", "other"):
            reason = f"serves {label}, which the plan leaves uncovered; {r.reason}"
            kind = r.kind
        else:
            reason = f"serves {label}; {r.reason}"
            kind = r.kind
        out.append(r.model_copy(update={"reason": reason, "kind": kind}))
    return out
