"""Plans from chains: predictions, the why of each step, goals and notes."""

from __future__ import annotations

import dataclasses

from slmrec.estimate import Option
from slmrec.kb import KB
from slmrec.plan import Plan, Prediction, Step
from slmrec.recommend.explain_goals import life_gain, plan_goals
from slmrec.recommend.lifecycle import Lifecycle
from slmrec.recommend.search import Candidate, Search
from slmrec.recommend.space import Space
from slmrec.recommend.text import LIMIT_LABELS, _fmt, _violation_text
from slmrec.scenario import CHOOSE, Scenario, to_dict


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
        bm, am = run._model_metrics(before, c.options), run._model_metrics(after, c.options)
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
