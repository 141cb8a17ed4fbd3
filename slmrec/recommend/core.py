"""Constraints in, plans out: the recommender.

`recommend(scenario)` searches the chains the KB allows (branch and bound over slots, see
`slmrec.recommend_search`), ranks the feasible ones, and explains the result:

- for every chosen step, why: the constraint it serves (what breaks without it) or the objective
  it improves, with the KB sources it rests on;
- for every method of a component the search considered, why not: the requirement, constraint,
  relation or evidence that excluded it, or how the top plan changes when it is forced in;
- counterfactuals: the smallest single relaxation (memory, size, latency, tolerance, a data
  tier, a teacher, compute) that would change the top plan, and how;
- when nothing is feasible: the binding constraints and the closest plan, never an empty answer.

No method is known by name here: everything comes from the KB through the search space.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmrec.kb import KB, load_kb
from slmrec.plan import Counterfactual, Plan, Rejection
from slmrec.recommend.counterfactuals import _counterfactuals, _discrete_variants
from slmrec.recommend.counterfactuals_stages import stage_counterfactuals
from slmrec.recommend.explain import _plan
from slmrec.recommend.explain_goals import goal_rejections
from slmrec.recommend.goals import implied_goals
from slmrec.recommend.lifecycle import Lifecycle, compose
from slmrec.recommend.runs import EXTRA_CORES, _closest, _searches, _static_binding
from slmrec.recommend.search import Candidate, Search
from slmrec.recommend.space import kb_index
from slmrec.recommend.text import _violation_text
from slmrec.recommend.whynot import _rejections
from slmrec.scenario import Scenario, load_scenario, to_dict


@dataclass
class Recommendation:
    scenario: Scenario
    kb_version: str
    plans: list[Plan]
    feasible: bool
    binding: list[str] = field(default_factory=list)
    pareto: list[dict] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    counterfactuals: list[Counterfactual] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def top(self) -> Plan | None:
        return self.plans[0] if self.plans else None

    def to_json(self) -> dict:
        return {
            "format": 1,
            "scenario": to_dict(self.scenario),
            "kb_version": self.kb_version,
            "feasible": self.feasible,
            "binding": self.binding,
            "plans": [p.model_dump(mode="json") for p in self.plans],
            "pareto": self.pareto,
            "rejected": [r.model_dump(mode="json") for r in self.rejected],
            "counterfactuals": [c.model_dump(mode="json") for c in self.counterfactuals],
            "stats": self.stats,
        }


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def recommend(scenario: Scenario | str | Path, kb: KB | None = None, *, top_k: int = 3,
              calibration: Any = None, explain: bool = True, counterfactuals: bool = True,
              pareto: bool = True) -> Recommendation:
    """Rank plans for `scenario` (a Scenario, a scenario name or a file) against `kb`."""
    # The search allocates many small objects but builds no reference cycles worth collecting;
    # pausing the cyclic collector saves it rescanning a large KB over and over.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _recommend(scenario, kb, top_k, calibration, explain, counterfactuals, pareto)
    finally:
        if paused:
            gc.enable()


def _recommend(scenario: Scenario | str | Path, kb: KB | None, top_k: int, calibration: Any,
               explain: bool, counterfactuals: bool, pareto: bool) -> Recommendation:
    t0 = time.perf_counter()
    kb = kb or load_kb()
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, kb)
    idx = kb_index(kb)
    needs = implied_goals(sc, kb)
    runs, board = _searches(idx, sc, top_k + EXTRA_CORES, calibration, pareto)
    by_model = {r.sp.model: r for r in runs}
    cands = [(c, by_model[c.model]) for c in board.top]
    feasible = bool(cands)
    binding: list[str] = []
    if not feasible:
        cands = _closest(runs)
        if cands:
            binding = [_violation_text(k, v, lim) for k, (v, lim) in cands[0][0].violations.items()]
        binding += _static_binding(runs)
    lives = _lifecycles(cands, needs)
    cands = cands[:top_k]
    best_run = lives[0][1] if lives else runs[0]
    plans = [_plan(life.cand, r, sc, kb, rank=i + 1, explain=explain and i == 0, life=life)
             for i, (life, r) in enumerate(lives[:top_k])]
    rec = Recommendation(sc, kb.version, plans, feasible, binding)
    rec.stats = {
        "models": [r.sp.model for r in runs],
        "options": sum(len(r.sp.options) for r in runs),
        "nodes": sum(r.stats.nodes for r in runs),
        "leaves": sum(r.stats.leaves for r in runs),
        "chains_evaluated": sum(r.stats.evaluated for r in runs),
        "search_seconds": round(sum(r.stats.seconds for r in runs), 4),
        "pareto_complete": board.pareto_complete,
    }
    if pareto and feasible:
        rec.pareto = _pareto(runs)
    if explain:
        top_life = lives[0][0] if lives else None
        rec.rejected = _rejections(best_run, top_life.cand if top_life else None, plans)
        if top_life is not None:
            rec.rejected = goal_rejections(rec.rejected, top_life, kb)
    if counterfactuals and (cands or runs):
        rec.counterfactuals = _counterfactuals(idx, sc, runs, cands, calibration, feasible)
        if lives:
            life, run = lives[0]
            rec.counterfactuals += stage_counterfactuals(idx, sc, life.core, run, life,
                                                         calibration, _discrete_variants(kb, sc))
    if plans:
        top = plans[0]
        top.rejected = rec.rejected
        top.counterfactuals = rec.counterfactuals
        if not feasible:
            top.notes.insert(0, "No plan meets every constraint; this is the closest plan. "
                                "Binding: " + "; ".join(binding))
    rec.stats["seconds"] = round(time.perf_counter() - t0, 4)
    return rec


def _lifecycles(cands: list[tuple[Candidate, Search]],
                needs: list) -> list[tuple[Lifecycle, Search]]:
    """Each fit-the-target chain completed with the stages its goals call for, best first
    (complete plans before plans that leave a goal uncovered)."""
    out, seen = [], set()
    for c, r in cands:
        life = compose(r, c, needs)
        key = (c.model, life.cand.key)
        if key in seen:
            continue
        seen.add(key)
        out.append((life, r))
    out.sort(key=lambda t: (not t[0].cand.feasible, t[0].score, len(t[0].cand.options)))
    return out


def _pareto(runs: list[Search]) -> list[dict]:
    pts = [(c, r) for r in runs for c in r.archive]
    vec = [(c.q[0], c.metrics["inference_memory_mb"], c.metrics["decode_ms_per_token"])
           for c, _ in pts]
    front = []
    for i, (c, r) in enumerate(pts):
        v = vec[i]
        if any(j != i and all(x <= y + 1e-12 for x, y in zip(w, v)) and (w != v or j < i)
               for j, w in enumerate(vec)):
            continue
        front.append({"base_model": r.sp.model,
                      "steps": [{"method": o.method, "params": dict(o.params)} for o in c.options],
                      "quality_loss_pct": round(c.q[0], 4),
                      "inference_memory_mb": round(c.metrics["inference_memory_mb"], 3),
                      "decode_ms_per_token": round(c.metrics["decode_ms_per_token"], 4),
                      "size_mb": round(c.metrics["size_mb"], 3), "score": round(c.score, 6)})
    front.sort(key=lambda d: (d["quality_loss_pct"], d["inference_memory_mb"]))
    return front
