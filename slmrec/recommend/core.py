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

import dataclasses
import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmrec.estimate import Option
from slmrec.kb import KB, load_kb
from slmrec.plan import Counterfactual, Plan, Prediction, Rejection, Step
from slmrec.recommend.explain_goals import goal_rejections, life_gain, plan_goals
from slmrec.recommend.goals import implied_goals
from slmrec.recommend.lifecycle import Lifecycle, compose
from slmrec.recommend.search import Board, Candidate, Search
from slmrec.recommend.space import KBIndex, Space, _free, build_space, kb_index, opens_up
from slmrec.scenario import (CHOOSE, COMPUTE_RANK, DATA_UNITS, DEFAULT_AMOUNTS, Scenario,
                             load_scenario, to_dict)
from slmrec.schema import ComputeScale, TeacherAccess

EXTRA_CORES = 2            # fit-the-target chains kept beyond top_k for the lifecycle stage
SCALING_EXPONENT = 0.076   # loss ~ N^-0.076 (Kaplan et al. 2020): compares base models in 'choose'
LIMIT_LABELS = {"memory_mb": ("inference memory", "MB"), "size_mb": ("size on disk", "MB"),
                "decode_ms_per_token": ("decode latency", "ms/token"),
                "prefill_ms": ("prefill latency", "ms"),
                "quality_loss_pct": ("quality loss", "%"),
                "step_peak_memory_mb": ("step peak memory", "MB"),
                "step_tflop": ("step compute", "TFLOP"), "step_hours": ("step time", "h")}
METRIC_FOR_LIMIT = {"memory_mb": "inference_memory_mb"}
SCENARIO_FIELD = {"memory_mb": "budgets.memory_mb", "size_mb": "budgets.size_mb",
                  "decode_ms_per_token": "budgets.decode_ms_per_token",
                  "prefill_ms": "budgets.prefill_ms", "quality_loss_pct": "tolerance_pct",
                  "step_peak_memory_mb": "compute.memory_mb", "step_tflop": "compute.tflop",
                  "step_hours": "compute.hours"}


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


def _spaces(idx: KBIndex, sc: Scenario, calibration: Any) -> list[Space]:
    return [build_space(idx, sc, m, calibration=calibration) for m in sc.candidate_models(idx.kb)]


def _searches(idx: KBIndex, sc: Scenario, top_k: int, calibration: Any, pareto: bool,
              spaces: list[Space] | None = None, need: dict[str, set] | None = None,
              **settings) -> tuple[list[Search], Board]:
    """One search per candidate base model, sharing one board (best first, so the others prune
    against it)."""
    spaces = spaces or _spaces(idx, sc, calibration)
    refs = None
    priors = {sp.model: 0.0 for sp in spaces}
    if sc.base_model == CHOOSE and len(spaces) > 1:
        # one yardstick for every candidate: the largest base model's figures, and a size prior
        biggest = max(spaces, key=lambda sp: sp.arch.params)
        refs = biggest.refs
        for sp in spaces:
            priors[sp.model] = 100 * ((biggest.arch.params / sp.arch.params) ** SCALING_EXPONENT - 1)
    runs = [Search(sp, k=top_k, pareto=pareto, prior_q=priors[sp.model], refs=refs,
                   need_any=(need or {}).get(sp.model)) for sp in spaces]
    if need is not None:  # a model with nothing new cannot beat the plans already found
        runs = [r for r in runs if r.need_any]
    board = Board(top_k)
    for r in sorted(runs, key=lambda r: r.root_bound()):
        r.run(board=board, **settings)
    return runs, board


def _closest(runs: list[Search]) -> list[tuple[Candidate, Search]]:
    board = Board(1)
    for r in runs:
        r.run(board=board, mode="closest", k=1)
    by_model = {r.sp.model: r for r in runs}
    out = [(c, by_model[c.model]) for c in board.top]
    for r in runs:
        r.reset(mode="rank")
    return out


def _static_binding(runs: list[Search]) -> list[str]:
    out = []
    for r in runs:
        for m in r.sp.include:
            why = r.sp.rejected.get(m)
            if why:
                out.append(f"preferences.include names '{m}', which {why.reason}")
    return out


def _violation_text(name: str, v: float, lim: float) -> str:
    label, unit = LIMIT_LABELS.get(name, (name, ""))
    return f"{label} {_fmt(v)} {unit} > {_fmt(lim)} {unit} ({SCENARIO_FIELD.get(name, name)})"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3g}"


# --------------------------------------------------------------------------------------------
# Plans and the why of each step
# --------------------------------------------------------------------------------------------


def _identity(sp: Space) -> Option | None:
    """A step that changes nothing and needs nothing (e.g. loading the checkpoint), from the
    earliest stage, preferring one with a runner: a plan that keeps the base model as it is."""
    kb = sp.kb
    best = None
    for o in sp.options:
        m = kb.methods[o.method]
        if o.fields or o.recovery or o.speedup or o.quality_status != "lossless" or \
                o.cost["passes"] != "none" or m.requires.data.value != "none" or \
                m.requires.teacher.value != "none" or o.from_scratch:
            continue
        key = (sp.idx.comp_order.get(m.component, 100), m.runner is None, sp.idx.rank.get(o.method, 0))
        if best is None or key < best[0]:
            best = (key, o)
    return best[1] if best else None


def _plan(c: Candidate, run: Search, sc: Scenario, kb: KB, *, rank: int, explain: bool,
          life: Lifecycle | None = None) -> Plan:
    sp = run.sp
    pred = sp.est.predict_chain(list(c.options))
    whys = _step_whys(c, run) if explain else [[] for _ in c.options]
    if life is not None:
        whys = [life.whys.get(o.method, []) + [w for w in why if not w.startswith(
            ("no measurable effect", "the rest of the plan depends"))] if o.method in life.whys
            else why for o, why in zip(c.options, whys)]
    steps_pred = pred.steps
    final = pred.final
    if not c.options:
        # keep the base model as it is: one no-op step (e.g. loading the checkpoint) so the
        # executor has something to run and measure; it costs nothing beyond inference itself
        ident = _identity(sp)
        if ident is not None:
            c = dataclasses.replace(c, options=(ident,))
            zero = {k: Prediction(value=0.0, low=0.0, high=0.0, unit=u, basis="analytic")
                    for k, u in (("step_peak_memory_mb", "MB"), ("step_tflop", "TFLOP"),
                                 ("step_hours", "h"))}
            final = {**pred.final, **zero}
            steps_pred = [final]
            whys = [["the base model already meets every constraint: this step keeps it as it is"]]
    steps = []
    for i, (o, preds) in enumerate(zip(c.options, steps_pred)):
        m = kb.methods[o.method]
        srcs = list(dict.fromkeys(list(m.sources) + [s for p in preds.values() for s in p.sources
                                                     if s in kb.sources and s not in sp.est.sources_hw
                                                     and s not in sp.arch.sources]))
        steps.append(Step(method=o.method, params=dict(o.params), why=whys[i], sources=srcs,
                          predicted=preds))
    hw = sc.hardware if isinstance(sc.hardware, str) else "custom"
    notes = []
    if sc.base_model == CHOOSE:
        notes.append(f"base model chosen from {', '.join(sc.candidate_models(kb))}: {sp.model}")
    if not any(o.fields or o.quality_status != "lossless" or o.recovery for o in c.options):
        notes.append("the base model already meets every constraint: no step changes it")
    for o in c.options:
        precision, sparse, speed = sp.est.credit(o)
        m = kb.methods[o.method]
        if m.requires.hardware_to_benefit and not speed:
            notes.append(f"{o.method}: {sp.est.hw.name} lacks "
                         f"{', '.join(x for x in m.requires.hardware_to_benefit if x not in sp.est.caps)}"
                         " - it saves memory but brings no speed-up there")
    goals: dict[str, str] = {}
    if life is not None:
        final = dict(final)
        gain = life_gain(life)
        if gain is not None:
            final["task_gain_pct"] = gain
        goals = plan_goals(life, [o.method for o in c.options], kb, c.feasible)
        notes += [f"goal not covered: {why}" for why in life.missing.values()]
    return Plan(name=f"{sc.name or 'scenario'}#{rank}", scenario=to_dict(sc), base_model=sp.model,
                goals=goals,
                hardware=hw, teacher=sc.teacher.model if sp.access != "none" else None,
                steps=steps, predicted=final, notes=notes, kb_version=kb.version,
                score=round(life.score if life is not None else c.score, 6),
                feasible=c.feasible,
                violations=[_violation_text(k, v, lim) for k, (v, lim) in c.violations.items()])


def _metric(c: Candidate, limit: str) -> float:
    if limit == "quality_loss_pct":
        return c.q[0]
    return c.metrics.get(METRIC_FOR_LIMIT.get(limit, limit), 0.0)


def _step_whys(c: Candidate, run: Search) -> list[list[str]]:
    sp = run.sp
    kb = sp.kb
    out = []
    for j, o in enumerate(c.options):
        why: list[str] = []
        rest = c.options[:j] + c.options[j + 1:]
        before = c.steps[j - 1][0] if j else sp.base
        after = c.steps[j][0]
        full = run.complete(rest)
        orders = run._orders(full) if full is not None and len(full) == len(rest) else []
        without = min((run.evaluate(order) for order in orders), key=lambda x: x.score, default=None) \
            if orders else None
        if without is None:
            why.append("the rest of the plan depends on it (order or `requires` relations)")
        else:
            broken = [k for k in without.violations if k not in c.violations]
            for k in broken:
                v, lim = without.violations[k]
                label, unit = LIMIT_LABELS.get(k, (k, ""))
                why.append(f"serves the {label} budget: without it {_fmt(v)} {unit} > "
                           f"{_fmt(lim)} {unit}")
            if not broken and without.score > c.score:
                why.append(f"improves the objectives ({', '.join(sp.sc.preferences.objectives)}): "
                           f"score {c.score:.3f} with it, {without.score:.3f} without")
        bm, am = run._model_metrics(before), run._model_metrics(after)
        changes = []
        for key, label, unit in (("size_mb", "size", "MB"), ("inference_memory_mb", "memory", "MB"),
                                 ("decode_ms_per_token", "decode", "ms/token")):
            if abs(am[key] - bm[key]) > 1e-6 * max(bm[key], 1):
                changes.append(f"{label} {_fmt(bm[key])} -> {_fmt(am[key])} {unit}")
        if changes:
            why.append("; ".join(changes))
        if o.quality is not None and o.quality.sources:
            why.append(f"quality effect {_fmt(o.quality.value)}% [{_fmt(o.quality.low)}, "
                       f"{_fmt(o.quality.high)}] ({', '.join(o.quality.sources)})")
        if o.recovery is not None and before.q > 0:
            why.append(f"recovery step: takes back {_fmt(100 * o.recovery.value)}% of the loss so far "
                       f"({_fmt(before.q)}% -> {_fmt(after.q)}%; {', '.join(o.recovery.sources)})")
            for r in sp.idx.recovers.get(o.method, []):
                if any(x.method == r.dst or kb.methods[x.method].component == r.dst
                       for x in c.options[:j]):
                    why.append(f"KB: {r.src} recovers {r.dst} - {r.note} ({', '.join(r.sources)})")
        for x in c.options:
            if x is not o and o.method in sp.idx.requires.get(x.method, ()):
                rel = kb.relations.get((x.method, "requires", o.method))
                why.append(f"required by {x.method}" + (f": {rel.note} ({', '.join(rel.sources)})"
                                                         if rel else ""))
        if o.speedup is not None and sp.est.credit(o)[2]:
            why.append(f"decode speed-up x{_fmt(o.speedup.value)} ({', '.join(o.speedup.sources)})")
        for x in c.options[j + 1:]:
            rel = sp.idx.precedes_relation(o.method, x.method)
            if rel is not None:
                why.append(f"comes before {x.method}: {rel.note} ({', '.join(rel.sources)})")
        if not why:
            why.append("included by the scenario (preferences.include)"
                       if o.method in sp.include else "no measurable effect")
        out.append(why)
    return out


# --------------------------------------------------------------------------------------------
# Why not
# --------------------------------------------------------------------------------------------


def _rejections(run: Search, top: Candidate | None, plans: list[Plan]) -> list[Rejection]:
    sp = run.sp
    kb = sp.kb
    relevant = {kb.methods[m].component for m in sp.idx.options}
    in_plan = {o.method for o in top.options} if top else set()
    by_root: dict[str, list[str]] = {}
    for o in sp.options:
        lst = by_root.setdefault(kb.methods[o.method].family.split("/")[0], [])
        if o.method not in lst:
            lst.append(o.method)
    out: list[Rejection] = []
    for mid, why in sp.rejected.items():
        m = kb.methods[mid]
        if m.component not in relevant:
            continue
        reason = why.reason
        if why.kind == "requirement":
            alt = _alternatives(mid, sp, in_plan, by_root)
            if alt:
                reason += f"; offered instead: {', '.join(alt)}"
        out.append(Rejection(method=mid, component=m.component, reason=reason, kind=why.kind,
                             sources=why.sources))
    by_method: dict[str, list[Option]] = {}
    for o in sp.options:
        by_method.setdefault(o.method, []).append(o)
    other_plans = {s.method: p.name for p in plans[1:] for s in p.steps}
    # methods whose single option has the same effect and cost as another's, bound by no relation
    # of their own and with no less loss, share its verdict (large KBs hold many such twins)
    seen: dict[tuple, tuple[Option, Rejection | None]] = {}
    if top is not None:
        for o in top.options:
            seen.setdefault(_twin_key(o, run), (o, None))
    for mid, opts in sorted(by_method.items(), key=lambda kv: (kv[1][0].quality.value,
                                                               kv[1][0].quality.high)):
        if mid in in_plan:
            continue
        key = _twin_key(opts[0], run) if len(opts) == 1 else None
        twin = seen.get(key) if key is not None else None
        o = opts[0]
        if twin is not None and o.quality.value >= twin[0].quality.value and \
                o.quality.high >= twin[0].quality.high and _free(sp.idx, mid):
            rep, verdict = twin
            comp = kb.methods[mid].component
            if verdict is None:
                out.append(Rejection(method=mid, component=comp, kind="dominated", reason=(
                    f"same effect and cost as {rep.label()} in the top plan, with no less quality "
                    f"loss ({_fmt(o.quality.value)}% vs {_fmt(rep.quality.value)}%)"),
                    sources=list(o.quality.sources)))
            else:
                more = "" if o.quality.value == rep.quality.value else \
                    f", with more quality loss ({_fmt(o.quality.value)}% vs {_fmt(rep.quality.value)}%)"
                out.append(Rejection(method=mid, component=comp, kind=verdict.kind, reason=(
                    f"same predicted effect and cost as {rep.method}{more}; like it: "
                    f"{verdict.reason}"), sources=list(o.quality.sources)))
            continue
        rej = _why_not(mid, opts, run, top, other_plans.get(mid))
        out.append(rej)
        if key is not None and key not in seen and _free(sp.idx, mid):
            seen[key] = (o, rej)
    out.sort(key=lambda r: (sp.idx.comp_order.get(r.component or "", 100),
                            sp.idx.rank.get(r.method, 0)))
    return out


def _twin_key(o: Option, run: Search) -> tuple:
    m = run.sp.kb.methods[o.method]
    return (run.sig.get(o.key), o.recovery, tuple(o.cost.values()), m.requires.teacher.value,
            m.requires.data.value, run.est.step_tokens(o), o.fields, o.int_quant,
            o.edits_structure, o.trains_all, o.from_scratch, m.component,
            run.sp.idx.role.get(o.method))


def _alternatives(mid: str, sp: Space, in_plan: set[str],
                  by_root: dict[str, list[str]]) -> list[str]:
    """Feasible methods of the same family root that the scenario allows (e.g. another
    distillation when one needs what the scenario lacks)."""
    root = sp.kb.methods[mid].family.split("/")[0]
    return [m + (" (in the plan)" if m in in_plan else "") for m in by_root.get(root, [])
            if m != mid][:3]


def _why_not(mid: str, opts: list[Option], run: Search, top: Candidate | None,
             other: str | None) -> Rejection:
    sp = run.sp
    kb = sp.kb
    comp = kb.methods[mid].component
    base = list(top.options) if top else []
    best: Candidate | None = None
    blocked: str | None = None
    blocked_src: list[str] = []
    for o in opts:
        keep = [x for x in base if not (x.fields & o.fields)
                and kb.methods[x.method].family != kb.methods[o.method].family]
        for x in keep:
            rel = sp.idx.conflict(o.method, x.method)
            if rel is not None:
                blocked = f"conflicts with {x.method} in the top plan: {rel.note}"
                blocked_src = list(rel.sources)
                break
        else:
            full = run.complete(tuple(keep + [o]))
            if full is None:
                blocked = blocked or ("its `requires` relations name steps that cannot be "
                                      "planned here, or the plan would exceed max_steps")
                continue
            orders = run._orders(full)
            if not orders:
                blocked = blocked or ("cannot be ordered with the top plan's steps (declared "
                                      "`precedes` order, or structural edits after integer "
                                      "quantization)")
                continue
            for order in orders:
                cand = run.evaluate(order)
                if best is None or (cand.feasible, -cand.score) > (best.feasible, -best.score):
                    best = cand
    if best is None:
        return Rejection(method=mid, component=comp, reason=blocked or "no valid chain holds it",
                         kind="relation", sources=blocked_src)
    label = ", ".join(x.label() for x in best.options)
    if not best.feasible:
        k, (v, lim) = next(iter(best.violations.items()))
        return Rejection(method=mid, component=comp, kind="constraint",
                         reason=f"with it ({label}) the {_violation_text(k, v, lim)}",
                         sources=_option_sources(best, mid))
    reason = f"feasible but ranks lower: best plan with it ({label}) scores {best.score:.3f}"
    if all(_inert(o, run) for o in opts):
        reason = ("no effect the KB quantifies (no transform, quality, recovery or credited "
                  "speed-up figure), so it only adds a step; " + reason)
    if top is not None:
        reason += f" vs {top.score:.3f}"
        diffs = _diff(best, top)
        if diffs:
            reason += f" ({diffs})"
    if other:
        reason += f"; used in {other}"
    return Rejection(method=mid, component=comp, reason=reason, kind="dominated",
                     sources=_option_sources(best, mid))


def _inert(o: Option, run: Search) -> bool:
    return (not o.fields and o.quality_status == "lossless" and o.recovery is None
            and not (o.speedup is not None and run.est.credit(o)[2]))


def _inert_option(o: Option, sp: Space) -> bool:
    return (not o.fields and o.recovery is None and (o.quality is None or o.quality.value >= 0)
            and not (o.speedup is not None and o.speedup.value > 1 and sp.est.credit(o)[2]))


def _option_sources(c: Candidate, mid: str) -> list[str]:
    for o in c.options:
        if o.method == mid and o.quality is not None:
            return list(o.quality.sources)
    return []


def _diff(a: Candidate, b: Candidate) -> str:
    out = []
    if abs(a.q[0] - b.q[0]) > 0.05:
        out.append(f"quality loss {_fmt(a.q[0])}% vs {_fmt(b.q[0])}%")
    for key, label, unit in (("inference_memory_mb", "memory", "MB"),
                             ("decode_ms_per_token", "decode", "ms/token")):
        x, y = a.metrics[key], b.metrics[key]
        if abs(x - y) > 0.01 * max(y, 1e-9):
            out.append(f"{label} {_fmt(x)} vs {_fmt(y)} {unit}")
    if len(a.options) != len(b.options) and not out:
        out.append(f"{len(a.options)} steps vs {len(b.options)}")
    return ", ".join(out)


# --------------------------------------------------------------------------------------------
# Counterfactuals
# --------------------------------------------------------------------------------------------


def _chain_text(c: Candidate | None) -> str:
    if c is None:
        return "nothing"
    return " -> ".join(o.label() for o in c.options) or "the base model unchanged"


def _counterfactuals(idx: KBIndex, sc: Scenario, runs: list[Search],
                     cands: list[tuple[Candidate, Search]], calibration: Any,
                     feasible: bool) -> list[Counterfactual]:
    out: list[Counterfactual] = []
    top = cands[0][0] if cands and feasible else None
    cutoff = top.score if top else None
    top_model = cands[0][1].sp.model if cands else None
    # 1) numeric limits: the smallest relaxation of one limit that lets a better plan win
    for name, lim in runs[0].sp.limits.items():
        if lim is None:
            continue
        if name == "quality_loss_pct":
            # the tolerance also scales the quality objective, so try a ladder of tolerances
            cf = _tolerance_counterfactual(runs, lim, top, feasible, top_model)
            if cf is not None:
                out.append(cf)
            continue
        best_val, best_c, best_model = math.inf, None, None
        for r in runs:
            saved = r.limits
            r.limits = [(k, v) for k, v in saved if k != name]
            r.run(mode="rank", k=1, cutoff=cutoff, relax=name)
            c = r.relaxed
            r.limits = saved
            r.reset(mode="rank")
            if c is None:
                continue
            v = _metric(c, name)
            if v > lim and (v < best_val or (v == best_val and c.score < best_c.score)):
                best_val, best_c, best_model = v, c, r.sp.model
        if best_c is None:
            continue
        label, unit = LIMIT_LABELS.get(name, (name, ""))
        to = _round_up(best_val)
        model = f" on {best_model}" if best_model != top_model else ""
        verb = "the top plan becomes" if feasible else "a plan becomes feasible:"
        out.append(Counterfactual(relax=SCENARIO_FIELD.get(name, name), to=to,
                                  change=f"allow {label} {_fmt(to)} {unit} (now {_fmt(lim)}): "
                                         f"{verb} {_chain_text(best_c)}{model}"))
    # 2) discrete relaxations: one more data tier, a teacher, more compute
    known = {(r.sp.model, o.key) for r in runs for o in r.sp.options}
    done: set[str] = set()
    for field_name, value, text, variant in _discrete_variants(idx.kb, sc):
        dimension = field_name.split(".")[0]
        if dimension in done:
            continue  # a smaller relaxation of this kind already changes the top plan
        if feasible and not any(not _inert_option(o, r.sp) for r in runs
                                for mid in opens_up(r.sp, variant)
                                for o in idx.options.get(mid, ()) if o.quality is not None):
            # nothing with an effect the KB quantifies becomes possible (an inert step, with
            # no transform, gain, recovery or credited speed-up, only adds a step)
            continue
        spaces = _spaces(idx, variant, calibration)
        new = {sp.model: {o.key for o in sp.options if (sp.model, o.key) not in known
                          and not _inert_option(o, sp)} for sp in spaces}
        if feasible and not any(new.values()):
            continue  # nothing new becomes possible: the top plan cannot change
        # with a feasible top plan, only plans holding something new can beat it
        _, board = _searches(idx, variant, 1, calibration, False, spaces,
                             need=new if feasible else None,
                             **({"cutoff": cutoff} if feasible else {}))
        if not board.top:
            continue
        c = board.top[0]
        model = c.model
        if top is not None and c.key == top.key:
            continue
        where = f" on {model}" if model != top_model else ""
        verb = "the top plan becomes" if feasible else "a plan becomes feasible:"
        out.append(Counterfactual(relax=field_name, to=value,
                                  change=f"{text}: {verb} {_chain_text(c)}{where}"))
        done.add(dimension)
    return out


def _tolerance_counterfactual(runs: list[Search], tol: float, top: Candidate | None,
                              feasible: bool, top_model: str | None) -> Counterfactual | None:
    """The tolerance also scales the quality objective, so a ladder of tolerances is searched
    (the spaces do not depend on it: the same searches are re-run with other limits)."""
    ladder = sorted({round(x, 2) for x in (tol * 1.5, tol * 2, tol * 3, tol * 5, tol * 10,
                                           tol + 1, tol + 2, tol + 5) if x > tol})
    for t in ladder:
        board = Board(1)
        for r in runs:
            saved = r.sp.limits
            r.set_limits(dataclasses.replace(saved, quality_loss_pct=t))
            r.run(board=board, mode="rank", k=1, pareto=False)
            r.set_limits(saved)
            r.reset(mode="rank")
        if not board.top:
            continue
        c = board.top[0]
        if top is not None and c.key == top.key and c.model == top_model:
            continue
        where = f" on {c.model}" if c.model != top_model else ""
        verb = "the top plan becomes" if feasible else "a plan becomes feasible:"
        return Counterfactual(relax="tolerance_pct", to=t,
                              change=f"allow quality loss {_fmt(t)} % (now {_fmt(tol)}): {verb} "
                                     f"{_chain_text(c)}{where}")
    return None


def _round_up(v: float) -> float:
    if v <= 0:
        return round(v, 2)
    mag = 10 ** (math.floor(math.log10(v)) - 1)
    return float(math.ceil(v / mag - 1e-9) * mag)


def _discrete_variants(kb: KB, sc: Scenario) -> list[tuple[str, Any, str, Scenario]]:
    """One-step relaxations, smallest first within each kind (data, teacher, compute, privacy):
    the first of a kind that changes the top plan is the one reported."""
    out = []
    data = sc.data
    for tier in DATA_UNITS:
        if getattr(data, tier) <= 0:
            amount = DEFAULT_AMOUNTS[tier]
            new = sc.model_copy(deep=True)
            setattr(new.data, tier, amount)
            out.append((f"data.{tier}", amount,
                        f"add {tier} data (about {amount:,.0f} {DATA_UNITS[tier]})", new))
    access = sc.teacher.access.value
    models = sc.candidate_models(kb)
    student = kb.models.get(models[0]) if len(models) == 1 else None
    others = sorted((m for m in kb.models.values() if student is None or m.id != student.id),
                    key=lambda m: -m.params)
    if access == "none" and others:
        t = others[0]
        new = sc.model_copy(deep=True)
        new.teacher.access, new.teacher.model = TeacherAccess.text, t.id
        out.append(("teacher", f"text:{t.id}", f"give text access to teacher {t.id}",
                    new))
    if access in ("none", "text"):
        same = [m for m in others if student is not None and m.tokenizer == student.tokenizer
                and m.params > student.params]
        if same:
            t = same[0]
            new = sc.model_copy(deep=True)
            new.teacher.access, new.teacher.model = TeacherAccess.logits, t.id
            new.teacher.tokenizer = None
            out.append(("teacher", f"logits:{t.id}", f"give logit access to teacher {t.id} "
                        f"(same tokenizer as the student)", new))
    scales = list(ComputeScale)
    rank = COMPUTE_RANK[sc.compute.scale.value]
    if rank + 1 < len(scales):
        nxt = scales[rank + 1]
        new = sc.model_copy(deep=True)
        new.compute.scale = nxt
        out.append(("compute.scale", nxt.value, f"allow {nxt.value} compute", new))
    if sc.preferences.privacy:
        new = sc.model_copy(deep=True)
        new.preferences.privacy = False
        out.append(("preferences.privacy", False, "let steps and the teacher run off the device", new))
    return out


# --------------------------------------------------------------------------------------------
# Pareto front
# --------------------------------------------------------------------------------------------


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

