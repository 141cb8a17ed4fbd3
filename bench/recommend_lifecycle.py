"""Scenario benchmark: do the top plans hold what an expert expects?

`bench/data/lifecycle_scenarios.yaml` holds scenarios written from practitioners' guides and
papers (each cites its source) with the properties an expert expects of the top plan: the
families or goals that must or must not appear, their order, the last step, or that no plan is
feasible and which constraint binds. Reports the share of properties held (target >= 0.8) and
each miss, so a regression names the scenario and the property.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bench._common import md_table, ratio

DATA = Path(__file__).resolve().parent / "data" / "lifecycle_scenarios.yaml"


def _match(sel: str, step, kb) -> bool:
    kind, _, arg = sel.partition(":")
    m = kb.methods[step.method]
    if kind == "goal":
        return arg in m.serves
    if kind == "family":
        return m.family.startswith(arg)
    if kind == "method":
        return m.id == arg
    raise ValueError(f"unknown selector {sel!r}")


def _first(sel: str, steps, kb) -> int | None:
    return next((i for i, s in enumerate(steps) if _match(sel, s, kb)), None)


def check(entry: dict, rec, kb) -> list[tuple[str, bool, str]]:
    """(property, held, detail) for one scenario's top plan."""
    exp = entry.get("expect", {})
    top = rec.top
    steps = top.steps if top else []
    chain = " -> ".join(s.method for s in steps)
    out = []
    if exp.get("infeasible"):
        out.append(("infeasible", not rec.feasible, f"feasible={rec.feasible}"))
        binding = exp.get("binding")
        if binding:
            text = " ".join(rec.binding + [c.relax for c in rec.counterfactuals
                                           if "feasible" in c.change])
            out.append((f"binding:{binding}", binding in text, text[:160]))
        return out
    out.append(("feasible", rec.feasible, "; ".join(rec.binding)[:160]))
    for sel in exp.get("must", []):
        out.append((f"must {sel}", _first(sel, steps, kb) is not None, chain))
    for sel in exp.get("must_not", []):
        out.append((f"must_not {sel}", _first(sel, steps, kb) is None, chain))
    for a, b in exp.get("order", []):
        ia, ib = _first(a, steps, kb), _first(b, steps, kb)
        out.append((f"order {a} < {b}", ia is not None and ib is not None and ia < ib, chain))
    if exp.get("last"):
        out.append((f"last {exp['last']}", bool(steps) and _match(exp["last"], steps[-1], kb),
                    chain))
    return out


def run(path: Path = DATA) -> dict:
    from slmrec.kb import load_kb
    from slmrec.recommend import recommend
    from slmrec.scenario import parse_scenario

    kb = load_kb()
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["scenarios"]
    rows, misses, held, total, per = [], [], 0, 0, []
    for e in entries:
        sc = parse_scenario({"name": e["name"], **e["scenario"]}, str(path), kb, e["name"])
        infeasible = e.get("expect", {}).get("infeasible", False)
        rec = recommend(sc, kb, counterfactuals=infeasible, pareto=False)
        props = check(e, rec, kb)
        ok = sum(1 for _, h, _ in props if h)
        held += ok
        total += len(props)
        top = rec.top
        per.append({"name": e["name"], "held": ok, "properties": len(props),
                    "sources": e.get("sources", []),
                    "top_plan": [s.method for s in top.steps] if top else [],
                    "misses": [{"property": p, "detail": d} for p, h, d in props if not h]})
        rows.append([e["name"], f"{ok}/{len(props)}",
                     " -> ".join(s.method for s in top.steps) if top else "-"])
        misses += [f"{e['name']}: {p} ({d})" for p, h, d in props if not h]
    multi = sum(1 for p in per if sum(1 for m in p["top_plan"]
                                      if set(kb.methods[m].serves) - {"evaluate-objective",
                                                                      "deploy-runtime"}) >= 2)
    return {"held": held, "total": total, "scenarios": per, "rows": rows, "misses": misses,
            "multi_stage": multi}


def main() -> dict:
    r = run()
    share = r["held"] / max(r["total"], 1)
    for m in r["misses"]:
        print("   miss:", m)
    return {
        "title": "scenario benchmark: properties an expert expects of the top plan",
        "scenarios": r["scenarios"],
        "table": md_table(r["rows"], ["scenario", "held", "top plan"]),
        "ratios": {
            "properties_held": ratio(share, ">= 0.8", f"{r['held']} of {r['total']} properties "
                                     f"over {len(r['scenarios'])} scenarios "
                                     "(bench/data/lifecycle_scenarios.yaml)"),
            "multi_stage_share": ratio(r["multi_stage"] / max(len(r["scenarios"]), 1), None,
                                       "top plans with two or more steps that change the model "
                                       "or serve a goal besides the bookends"),
        },
    }


if __name__ == "__main__":
    res = main()
    print(res["table"])
    print(res["ratios"])
