"""Why not: one reason for every method the top plan does not hold."""

from __future__ import annotations

from slmrec.estimate import Option
from slmrec.plan import Plan, Rejection
from slmrec.recommend.search import Candidate, Search
from slmrec.recommend.space import Space, _free
from slmrec.recommend.text import _fmt, _violation_text


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
