"""Counterfactuals for the stages the goals call for: which single relaxation (a data tier, a
teacher, a training device with more memory, more compute, a longer plan) lets a step join the
top plan or cover a goal it leaves uncovered ("with 10,000 labeled examples, lora joins the
plan"; "with rtx-4090 for training, dpo fits").

The top plan's fit-the-target chain is kept; only the stages are composed again under the
relaxed scenario (`lifecycle.compose`), so each variant costs one space and one composition,
not a search. The relaxations come from the scenario's vocabulary and the KB's hardware table:
nothing here names a method.
"""

from __future__ import annotations

from typing import Any

from slmrec.plan import Counterfactual
from slmrec.recommend.goals import BOOKENDS, SEARCH_GOALS, goal_name, implied_goals
from slmrec.recommend.goals import serves as goal_serves
from slmrec.recommend.lifecycle import Lifecycle, compose
from slmrec.recommend.search import Candidate, Search
from slmrec.recommend.space import KBIndex, build_space
from slmrec.scenario import Scenario

MAX_DEVICES = 3   # larger training devices tried, smallest first


def _device_variants(kb, sc: Scenario) -> list[tuple[str, Any, str, Scenario]]:
    """Training devices with more memory than the one the steps run on now, smallest first
    (none when the scenario keeps every step on the target)."""
    if sc.preferences.privacy:
        return []
    now = sc.compute_target(kb)
    bigger = sorted((h for h in kb.hardware.values() if h.memory_gb > now.memory_gb),
                    key=lambda h: (h.memory_gb, h.id))
    out = []
    for h in bigger[:MAX_DEVICES]:
        new = sc.model_copy(deep=True)
        new.compute.hardware = h.id
        new.compute.memory_mb = None
        out.append(("compute.hardware", h.id,
                    f"train on {h.id} ({h.memory_gb:g} GB)", new))
    return out


def _steps_variant(sc: Scenario, life: Lifecycle) -> list[tuple[str, Any, str, Scenario]]:
    lim = sc.preferences.max_steps
    stage_missing = [g for g in life.missing if g not in BOOKENDS]
    if not stage_missing or lim >= 12:
        return []
    to = min(12, lim + len(stage_missing))
    new = sc.model_copy(deep=True)
    new.preferences.max_steps = to
    return [("preferences.max_steps", to, f"allow {to} steps that change the model", new)]


def stage_counterfactuals(idx: KBIndex, sc: Scenario, core: Candidate, run: Search,
                          life: Lifecycle, calibration: Any,
                          variants: list[tuple[str, Any, str, Scenario]]) -> list[Counterfactual]:
    """One line per relaxation that adds a stage step to the top plan or covers a goal it
    leaves uncovered (the first relaxation of each kind that does so)."""
    kb = idx.kb
    have = {o.method for o in life.cand.options}
    out: list[Counterfactual] = []
    done: set[str] = set()
    wanted = {n.goal for n in life.goals}
    missing = bool(set(life.missing) - set(BOOKENDS))
    # only a relaxation that implies a new goal, or one tried while a stage goal is uncovered or
    # a stage step was refused on the training device, can add a stage: the others are skipped
    # (each try costs a space and a composition)
    tries = [v for v in variants
             if missing or {n.goal for n in implied_goals(v[3], kb)} - wanted]
    stage_goals = wanted - set(BOOKENDS) - set(SEARCH_GOALS)
    refused = any(why.kind == "constraint" and goal_serves(kb, mid) & stage_goals
                  for mid, why in run.sp.rejected.items())   # e.g. step memory on the device
    if missing or life.device_bound or refused:
        tries += _device_variants(kb, sc)
    for field_name, value, text, variant in tries + _steps_variant(sc, life):
        kind = field_name.split(".")[0] if not field_name.startswith("compute") else "compute"
        if kind in done:
            continue
        try:
            sp = build_space(idx, variant, run.sp.model, calibration=calibration)
        except (KeyError, ValueError):
            continue
        r2 = Search(sp, k=1, pareto=False)
        by_key = {o.key: o for o in sp.options}
        chain = tuple(by_key.get(o.key, o) for o in core.options)
        c2 = r2.evaluate(chain)
        if set(c2.violations) - set(core.violations):
            continue
        life2 = compose(r2, c2, implied_goals(variant, kb))
        stage = set(kb.goals) - set(BOOKENDS) - set(SEARCH_GOALS)
        joins = [o.method for o in life2.cand.options
                 if o.method not in have and goal_serves(kb, o.method) & stage]
        if not joins:
            continue
        goals = sorted({g for m in joins for g in kb.methods[m].serves
                        if g in {n.goal for n in life2.goals}} & stage,
                       key=lambda g: list(kb.goals).index(g) if g in kb.goals else 99)
        still = sorted(set(life2.missing) - set(BOOKENDS))
        change = (f"{text}: {', '.join(joins)} {'joins' if len(joins) == 1 else 'join'} the plan"
                  + (f" ({', '.join(goal_name(kb, g) for g in goals)})" if goals else "")
                  + (f"; still uncovered: {', '.join(still)}" if still else ""))
        out.append(Counterfactual(relax=field_name, to=value, change=change))
        done.add(kind)
    return out
