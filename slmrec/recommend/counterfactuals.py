"""Counterfactuals: the smallest single relaxation (a limit, a data tier, a teacher, compute,
privacy) that changes the top plan, and how."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from slmrec.kb import KB
from slmrec.plan import Counterfactual
from slmrec.recommend.runs import _searches, _spaces
from slmrec.recommend.search import Board, Candidate, Search
from slmrec.recommend.space import KBIndex, opens_up
from slmrec.recommend.text import LIMIT_LABELS, SCENARIO_FIELD, _fmt, _metric
from slmrec.recommend.whynot import _inert_option
from slmrec.scenario import COMPUTE_RANK, DATA_UNITS, DEFAULT_AMOUNTS, Scenario
from slmrec.schema import ComputeScale, TeacherAccess


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
                                           tol + 1, tol + 2, tol + 5, tol + 10) if x > tol})
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
