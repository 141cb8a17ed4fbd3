"""Predictions, checks and why for a hand-written plan (`slmrec predict PLAN.yaml`).

The plan's steps are taken as written (order and parameters); the scenario comes from the plan
(`scenario:`) or is given. Every step is checked by the one rule checker and against the
scenario's requirements, simulated by the estimator on the device where it runs, and given its
task gain; the goals the scenario implies are checked for coverage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from slmrec.errors import Problem, SlmrecError
from slmrec.estimate import compile_option, default_params
from slmrec.kb import KB
from slmrec.plan import Plan, Step, validate_plan
from slmrec.recommend.explain_goals import life_gain, plan_goals
from slmrec.recommend.goals import SEARCH_GOALS, goal_name, implied_goals
from slmrec.recommend.lifecycle import Lifecycle
from slmrec.recommend.search import Search
from slmrec.recommend.space import build_space, kb_index
from slmrec.recommend.value import quality_prior, task_gain
from slmrec.scenario import Scenario, to_dict


@dataclass
class PredictedPlan:
    plan: Plan
    problems: list[Problem] = field(default_factory=list)


def predict_plan(plan: Plan, kb: KB, sc: Scenario, file: str = "<plan>") -> PredictedPlan:
    problems = validate_plan(plan, kb, file)
    bad = [p for p in problems if p.field and p.field.endswith(".method")
           and "unknown method" in p.message]
    if bad:
        raise SlmrecError(bad)
    idx = kb_index(kb)
    sp = build_space(idx, sc, plan.base_model, dominance=False)
    run = Search(sp, k=1, pareto=False)
    opts = []
    for s in plan.steps:
        m = kb.methods[s.method]
        params = default_params(m)
        params.update(s.params)
        o = compile_option(m, params)
        if o.quality is None:
            prior = quality_prior(kb, m, o)
            if prior is not None:
                o = dataclasses.replace(o, quality=prior, quality_status="prior")
        opts.append(o)
    for mid, why in sp.rejected.items():
        for i, s in enumerate(plan.steps):
            if s.method == mid and why.kind in ("requirement", "constraint"):
                problems.append(Problem(file, why.reason, f"step {i + 1} ({mid})",
                                        f"steps[{i}].method"))
    cand = run.evaluate(tuple(opts))
    pred = sp.est.predict_chain(opts)
    held = sc.data.tokens()
    needs = implied_goals(sc, kb)
    life = Lifecycle(cand, cand.score, goals=needs)
    steps = []
    for o, s, preds in zip(opts, plan.steps, pred.steps):
        m = kb.methods[o.method]
        why = []
        for need in needs:
            if need.goal in m.serves and need.goal not in SEARCH_GOALS:
                why.append(f"serves {goal_name(kb, need.goal)} ({need.why})")
                gain = task_gain(kb, m, o.params, held)
                if gain is not None and o.method not in life.gains:
                    life.gains[o.method] = gain
                    why.append(gain.text())
        if o.quality is not None and o.quality_status == "prior":
            why.append(o.quality.note or "family prior")
        steps.append(Step(method=s.method, params=dict(o.params), why=why or list(s.why),
                          sources=list(m.sources), predicted=preds))
    covered_goals = {g for o in opts for g in kb.methods[o.method].serves}
    for need in needs:
        if need.goal not in SEARCH_GOALS and need.goal not in covered_goals:
            life.missing[need.goal] = f"{goal_name(kb, need.goal)} ({need.why}) is not covered " \
                                      "by any step"
    final = dict(pred.final)
    gain = life_gain(life)
    if gain is not None:
        final["task_gain_pct"] = gain
    violations = [f"{k} {v:,.4g} > {lim:,.4g}" for k, (v, lim) in cand.violations.items()]
    out = plan.model_copy(update={
        "steps": steps, "predicted": final, "scenario": to_dict(sc), "feasible": cand.feasible,
        "violations": violations, "goals": plan_goals(life, [o.method for o in opts], kb,
                                                       cand.feasible),
        "notes": [f"goal not covered: {w}" for w in life.missing.values()],
        "score": None, "kb_version": kb.version})
    return PredictedPlan(out, problems)

