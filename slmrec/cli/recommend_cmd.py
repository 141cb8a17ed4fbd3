"""`slmrec recommend`, `slmrec explain` and `slmrec scenarios`.

    slmrec recommend --scenario phone-assistant [--top 3] [--json] [-o plan.yaml]
    slmrec recommend --hardware raspberry-pi-5-8gb --base-model smollm2-360m --memory-mb 600 \
        --tolerance 3 --data labeled=5000 --teacher logits:smollm2-1.7b
    slmrec explain plan.yaml
    slmrec scenarios list | show NAME
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from slmrec.cli.common import add_kb_flag, kb_from, print_json, table
from slmrec.errors import Problem, SlmrecError

INLINE_FLAGS = ("hardware", "memory_mb", "latency_ms", "tolerance", "data", "teacher",
                "base_model", "size_mb", "include", "exclude")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="rank plans for a scenario: predictions, why, why not, "
                                         "counterfactuals",
                       description="Search the chains of lifecycle methods the KB allows for a "
                                   "scenario and rank the feasible ones. Give a named scenario or "
                                   "file, inline flags, or both (flags override the scenario).")
    p.add_argument("--scenario", "-s", metavar="NAME|FILE",
                   help="a scenario in kb/scenarios (see `slmrec scenarios list`) or a YAML file")
    p.add_argument("--top", "-k", type=int, default=3, metavar="K", help="plans to return (default 3)")
    p.add_argument("--json", action="store_true", help="print the stable JSON (docs/recommend-json.md)")
    p.add_argument("-o", "--output", metavar="PLAN.yaml", help="write the top plan to this file")
    g = p.add_argument_group("inline scenario (quick use; override --scenario)")
    g.add_argument("--hardware", metavar="ID", help="target hardware profile id")
    g.add_argument("--base-model", metavar="ID|PATH", help="catalog id, local folder or 'choose'")
    g.add_argument("--memory-mb", type=float, metavar="MB", help="inference memory budget")
    g.add_argument("--size-mb", type=float, metavar="MB", help="size-on-disk budget")
    g.add_argument("--latency-ms", type=float, metavar="MS", help="decode latency per token budget")
    g.add_argument("--tolerance", type=float, metavar="PCT", help="quality loss allowed, percent")
    g.add_argument("--data", metavar="SPEC", help="data held: 'none', or tiers with optional "
                                                  "amounts, e.g. 'calibration=128,labeled=5000'")
    g.add_argument("--teacher", metavar="SPEC", help="'none', 'text:MODEL' or 'logits:MODEL'")
    g.add_argument("--include", metavar="M1,M2", help="methods the plan must contain "
                                                     "(comma-separated ids)")
    g.add_argument("--exclude", metavar="M1,M2", help="methods the plan must not use "
                                                     "(comma-separated ids)")
    p.add_argument("--full", action="store_true", help="with -o: write every source list and "
                                                       "the why-not table into the plan file")
    p.add_argument("--calibration", metavar="FILE", help="calibration JSON (slmrec.calibrate) "
                                                         "to correct the predictions")
    p.add_argument("--no-counterfactuals", action="store_true", help="skip the counterfactuals")
    p.add_argument("--all", action="store_true", help="list every rejected method (also the "
                                                      "knowledge-only ones and those no runner "
                                                      "executes)")
    add_kb_flag(p)
    p.set_defaults(handler=cmd_recommend)

    e = sub.add_parser("explain", help="show a saved plan: steps, predictions, why, why not",
                       description="Read a plan file, validate it against the KB and print it.")
    e.add_argument("plan", metavar="PLAN.yaml")
    e.add_argument("--json", action="store_true", help="print the plan as JSON")
    e.add_argument("--all", action="store_true", help="list every rejected method")
    add_kb_flag(e)
    e.set_defaults(handler=cmd_explain)

    pr = sub.add_parser("predict", help="predictions, checks and why for a hand-written plan",
                        description="Check a plan file with the recommender's rule checker and "
                                    "the scenario's requirements, and predict every step on the "
                                    "device where it runs, with goals and task gains.")
    pr.add_argument("plan", metavar="PLAN.yaml")
    pr.add_argument("--scenario", "-s", metavar="NAME|FILE", help="the scenario (default: the "
                                                                  "plan's own `scenario:`)")
    pr.add_argument("--json", action="store_true", help="print the predicted plan as JSON")
    add_kb_flag(pr)
    pr.set_defaults(handler=cmd_predict)

    s = sub.add_parser("scenarios", help="list or show the named example scenarios")
    ss = s.add_subparsers(dest="scenarios_command", metavar="list|show")
    ss.required = True
    sl = ss.add_parser("list", help="the named scenarios")
    sl.add_argument("--json", action="store_true")
    add_kb_flag(sl)
    sl.set_defaults(handler=cmd_scenarios_list)
    sh = ss.add_parser("show", help="one scenario, validated, as YAML")
    sh.add_argument("name", metavar="NAME|FILE")
    sh.add_argument("--json", action="store_true")
    add_kb_flag(sh)
    sh.set_defaults(handler=cmd_scenarios_show)


# --------------------------------------------------------------------------------------------
# recommend
# --------------------------------------------------------------------------------------------


def parse_data_spec(spec: str) -> dict[str, float] | list[str]:
    """'none' | 'labeled' | 'calibration=128,labeled=5000' -> the scenario's `data` value."""
    from slmrec.scenario import DATA_UNITS, DEFAULT_AMOUNTS

    spec = spec.strip()
    if spec in ("", "none"):
        return {}
    out: dict[str, float] = {}
    problems = []
    for part in spec.split(","):
        name, _, amount = part.strip().partition("=")
        if name not in DATA_UNITS:
            problems.append(Problem("--data", f"unknown data tier '{name}'; valid: "
                                              f"{', '.join(DATA_UNITS)} (optionally =AMOUNT)"))
            continue
        try:
            out[name] = float(amount) if amount else DEFAULT_AMOUNTS[name]
        except ValueError:
            problems.append(Problem("--data", f"amount '{amount}' of '{name}' is not a number"))
    if problems:
        raise SlmrecError(problems)
    return out


def scenario_from_args(args: argparse.Namespace, kb) -> Any:
    from slmrec.scenario import load_scenario, scenario_from_dict, to_dict

    inline = {k: getattr(args, k, None) for k in INLINE_FLAGS}
    if args.scenario:
        sc = load_scenario(args.scenario, kb)
        if not any(v is not None for v in inline.values()):
            return sc
        data = to_dict(sc)
        name = sc.name
    else:
        if not args.hardware:
            raise SlmrecError.one("<flags>", "give --scenario NAME|FILE, or at least --hardware "
                                             "for an inline scenario (see `slmrec scenarios list`)",
                                  None, "--scenario")
        data = {"task": "inline scenario", "base_model": "choose"}
        name = "inline"
    if args.hardware:
        data["hardware"] = args.hardware
    if args.base_model:
        data["base_model"] = args.base_model
    budgets = data.setdefault("budgets", {})
    for flag, key in (("memory_mb", "memory_mb"), ("size_mb", "size_mb"),
                      ("latency_ms", "decode_ms_per_token")):
        if getattr(args, flag) is not None:
            budgets[key] = getattr(args, flag)
    if args.tolerance is not None:
        data["tolerance_pct"] = args.tolerance
    if args.data is not None:
        data["data"] = parse_data_spec(args.data)
    if args.teacher is not None:
        data["teacher"] = args.teacher
    prefs = data.setdefault("preferences", {})
    for flag in ("include", "exclude"):
        if getattr(args, flag, None):
            prefs[flag] = list(dict.fromkeys(list(prefs.get(flag) or [])
                                             + [x.strip() for x in getattr(args, flag).split(",")
                                                if x.strip()]))
    return scenario_from_dict(data, kb, name)


def cmd_recommend(args: argparse.Namespace) -> int:
    from slmrec.recommend import recommend

    if args.top < 1:
        raise SlmrecError.one("<flags>", f"--top must be at least 1, got {args.top}", None, "--top")
    if args.output:
        from slmrec.safeio import check_target

        check_target(args.output)  # a bad -o is said before the search, not after it
    kb = kb_from(args)
    sc = scenario_from_args(args, kb)
    cal = None
    if args.calibration:
        from slmrec.calibrate import Calibration

        cal = Calibration.load(args.calibration)
    rec = recommend(sc, kb, top_k=args.top, calibration=cal,
                    counterfactuals=not args.no_counterfactuals)
    if args.output and rec.top is not None:
        rec.top.save(args.output, full=args.full)
    if args.json:
        print_json(rec.to_json())
    else:
        print(render_recommendation(rec, show_all=args.all))
        if args.output and rec.top is not None:
            print(f"\ntop plan written to {args.output}")
    return 0


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


COLUMNS = [("size_mb", "size MB"), ("inference_memory_mb", "memory MB"),
           ("decode_ms_per_token", "decode ms/tok"), ("prefill_ms", "prefill ms"),
           ("quality_loss_pct", "general-text loss % [range]"),
           ("task_gain_pct", "task gain % [range]"), ("step_peak_memory_mb", "step mem MB"),
           ("step_tflop", "step TFLOP")]


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 10000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1 or a == 0:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _cell(p: Any, key: str) -> str:
    if p is None:
        return ""
    text = _num(p.value)
    if key in ("quality_loss_pct", "task_gain_pct") and p.low is not None and p.high is not None \
            and (p.low != p.value or p.high != p.value):
        text += f" [{_num(p.low)}, {_num(p.high)}]"
    if p.basis == "calibrated":
        text += "*"
    return text


def _step_label(method: str, params: dict) -> str:
    if not params:
        return method
    return method + "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def render_plan(plan, show_why: bool = True) -> str:
    rows = []
    rows.append(["0", f"base model {plan.base_model}"] + [""] * len(COLUMNS))
    for i, s in enumerate(plan.steps, 1):
        rows.append([str(i), _step_label(s.method, s.params)]
                    + [_cell(s.predicted.get(k), k) for k, _ in COLUMNS])
    rows.append(["=", "predicted"] + [_cell(plan.predicted.get(k), k) for k, _ in COLUMNS])
    out = [table(rows, ["#", "step"] + [h for _, h in COLUMNS])]
    if any(p.basis == "calibrated" for p in plan.predicted.values()):
        out.append("  * corrected by calibration on measured runs")
    if plan.goals:
        out.append("")
        out.append("Goals")
        out += [textwrap.fill(f"{g}: {v}", 100, initial_indent="  - ", subsequent_indent="    ")
                for g, v in plan.goals.items()]
    if show_why:
        out.append("")
        out.append("Why each step")
        for i, s in enumerate(plan.steps, 1):
            out.append(f"  {i} {s.method}")
            for w in s.why:
                out.append(textwrap.fill(w, 100, initial_indent="      - ",
                                         subsequent_indent="        "))
            if s.sources:
                out.append(textwrap.fill("sources: " + ", ".join(s.sources), 100,
                                         initial_indent="      ", subsequent_indent="        "))
    return "\n".join(out)


NO_RUNNER = "no runner executes it"
NEAREST = 12   # rejections shown without --all


def render_rejections(rejected, show_all: bool = False) -> str:
    if not rejected:
        return ""
    order = {"goal": 0, "constraint": 1, "relation": 2, "dominated": 3, "requirement": 4,
             "evidence": 5, "other": 6}
    no_runner = [r.method for r in rejected if NO_RUNNER in r.reason]
    shown = [r for r in rejected if show_all or (r.kind != "other" and NO_RUNNER not in r.reason)]
    hidden = [r.method for r in rejected if r not in shown and NO_RUNNER not in r.reason]
    shown.sort(key=lambda r: (order.get(r.kind, 9), r.component or "", r.method))
    rest = []
    if not show_all and len(shown) > NEAREST:
        shown, rest = shown[:NEAREST], shown[NEAREST:]
    rows = [[r.method, r.component or "", r.kind, textwrap.shorten(r.reason, 150)] for r in shown]
    out = [f"Why not ({len(rejected)} methods not in the top plan; the nearest first)",
           table(rows, ["method", "component", "kind", "reason"])]
    if rest:
        out.append(f"  ... {len(rest)} more (--all to list)")
    if no_runner and not show_all:
        out.append(textwrap.fill(f"{NO_RUNNER} in this installation (preferences.runnable): "
                                 f"{len(no_runner)} methods, --all to list", 100,
                                 subsequent_indent="  "))
    if hidden:
        out.append(textwrap.fill(f"knowledge only (not plan steps): {len(hidden)} methods, "
                                 "--all to list", 100, subsequent_indent="  "))
    return "\n".join(out)


def render_recommendation(rec, show_all: bool = False) -> str:
    sc = rec.scenario
    out = [f"Scenario {sc.name or '(inline)'}: {sc.task}", f"  {sc.summary()}", ""]
    if not rec.plans:
        out.append("No plan: " + "; ".join(rec.binding or ["nothing can be planned"]))
        return "\n".join(out)
    top = rec.top
    if rec.feasible:
        out.append(f"Top plan ({len(rec.plans)} returned; score {top.score:.3f}, lower is better)")
    else:
        out.append("NO FEASIBLE PLAN. Binding constraints:")
        out += [f"  - {b}" for b in rec.binding]
        out.append("Closest plan:")
    out.append(render_plan(top))
    if top.notes:
        out.append("")
        out.append("Notes")
        out += [textwrap.fill(n, 100, initial_indent="  - ", subsequent_indent="    ")
                for n in top.notes]
    if len(rec.plans) > 1:
        out.append("")
        out.append("Other plans")
        rows = []
        for p in rec.plans[1:]:
            pr = p.predicted
            rows.append([p.name, p.base_model, " -> ".join(_step_label(s.method, s.params) for s in p.steps)
                         or "(unchanged)", f"{p.score:.3f}"]
                        + [_cell(pr.get(k), k) for k in ("inference_memory_mb", "decode_ms_per_token",
                                                         "quality_loss_pct")])
        out.append(table(rows, ["plan", "base", "steps", "score", "memory MB", "decode ms/tok",
                                "quality loss %"]))
    if rec.pareto:
        out.append("")
        out.append(f"Pareto front of the fit-the-target chains over general-text quality, memory "
                   f"and decode latency ({len(rec.pareto)} chains; the stages are added on top)")
        rows = [[str(i + 1), p["base_model"], " -> ".join(_step_label(s["method"], s["params"])
                                                         for s in p["steps"]) or "(unchanged)",
                 _num(p["quality_loss_pct"]), _num(p["inference_memory_mb"]),
                 _num(p["decode_ms_per_token"])] for i, p in enumerate(rec.pareto)]
        out.append(table(rows, ["#", "base", "steps", "quality loss %", "memory MB", "decode ms/tok"]))
    if rec.counterfactuals:
        out.append("")
        out.append("What would change the top plan (one relaxation at a time)")
        for c in rec.counterfactuals:
            out.append(textwrap.fill(f"{c.relax} -> {c.to}: {c.change}", 100,
                                     initial_indent="  - ", subsequent_indent="    "))
    if rec.rejected:
        out.append("")
        out.append(render_rejections(rec.rejected, show_all))
    out.append("")
    out.append(f"KB {rec.kb_version}; searched {rec.stats.get('nodes', 0)} nodes, evaluated "
               f"{rec.stats.get('chains_evaluated', 0)} chains in {rec.stats.get('seconds', 0) * 1000:.0f} ms")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# explain, scenarios
# --------------------------------------------------------------------------------------------


def cmd_explain(args: argparse.Namespace) -> int:
    from slmrec.plan import load_plan

    kb = kb_from(args)
    plan = load_plan(args.plan, kb)
    if args.json:
        print_json(plan.model_dump(mode="json"))
        return 0
    sc = plan.scenario or {}
    out = [f"Plan {plan.name or args.plan}: {sc.get('task', '')}".rstrip(": "),
           f"  base model {plan.base_model}; hardware {plan.hardware or '-'}; teacher "
           f"{plan.teacher or 'none'}; KB {plan.kb_version or '?'}"
           + ("" if not plan.kb_version or plan.kb_version == kb.version
              else f" (the KB is now {kb.version}: re-run `slmrec recommend` to refresh)"), ""]
    if not plan.feasible:
        out.append("This plan does not meet its scenario: " + "; ".join(plan.violations))
    out.append(render_plan(plan))
    if plan.notes:
        out += ["", "Notes"] + [textwrap.fill(n, 100, initial_indent="  - ", subsequent_indent="    ")
                                for n in plan.notes]
    if plan.counterfactuals:
        out += ["", "What would change it"] + [
            textwrap.fill(f"{c.relax} -> {c.to}: {c.change}", 100, initial_indent="  - ",
                          subsequent_indent="    ") for c in plan.counterfactuals]
    if plan.rejected:
        out += ["", render_rejections(plan.rejected, args.all)]
    print("\n".join(out))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from slmrec.kb import read_yaml
    from slmrec.plan import parse_plan
    from slmrec.recommend.predict import predict_plan
    from slmrec.scenario import load_scenario, parse_scenario

    kb = kb_from(args)
    if not Path(args.plan).is_file():
        raise SlmrecError.one(args.plan, "plan file does not exist")
    data, _, problems = read_yaml(Path(args.plan))
    if problems:
        raise SlmrecError(problems)
    plan = parse_plan(data, args.plan)
    if args.scenario:
        sc = load_scenario(args.scenario, kb)
    elif plan.scenario:
        sc = parse_scenario(plan.scenario, args.plan, kb, plan.name or "plan")
    else:
        raise SlmrecError.one(args.plan, "the plan has no `scenario:`; give --scenario NAME|FILE",
                              "plan", "scenario")
    got = predict_plan(plan, kb, sc, args.plan)
    if args.json:
        print_json({"plan": got.plan.model_dump(mode="json"),
                    "problems": [str(p) for p in got.problems]})
        return 0 if not got.problems else 1
    p = got.plan
    out = [f"Plan {plan.name or args.plan} for scenario {sc.name or '(inline)'}: {sc.task}",
           f"  {sc.summary()}", ""]
    out.append("Checks: " + ("all pass (order, conflicts, requirements, slots, data, teacher)"
                             if not got.problems else f"{len(got.problems)} problem(s)"))
    out += [f"  - {pr}" for pr in got.problems]
    if not p.feasible:
        out.append("Does not meet the scenario: " + "; ".join(p.violations))
    out.append("")
    out.append(render_plan(p))
    if p.notes:
        out += ["", "Notes"] + [textwrap.fill(n, 100, initial_indent="  - ",
                                              subsequent_indent="    ") for n in p.notes]
    print("\n".join(out))
    return 0 if not got.problems else 1


def cmd_scenarios_list(args: argparse.Namespace) -> int:
    from slmrec.scenario import list_scenarios
    from slmrec.kb import read_yaml

    kb = kb_from(args)
    rows, items = [], []
    for name, path in list_scenarios(kb).items():
        data, _, problems = read_yaml(path)
        data = data if isinstance(data, dict) and not problems else {}
        hw = data.get("hardware")
        hw = hw if isinstance(hw, str) else (hw or {}).get("name", "custom")
        item = {"name": name, "file": str(path), "task": data.get("task", ""),
                "base_model": data.get("base_model", ""), "hardware": hw,
                "description": data.get("description", "")}
        items.append(item)
        rows.append([name, item["base_model"], hw, textwrap.shorten(str(item["task"]), 70)])
    if args.json:
        print_json(items)
    elif not rows:
        print("no scenarios found")
    else:
        print(table(rows, ["name", "base model", "hardware", "task"]))
    return 0


def cmd_scenarios_show(args: argparse.Namespace) -> int:
    from slmrec.scenario import dump_yaml, load_scenario, to_dict

    kb = kb_from(args)
    sc = load_scenario(args.name, kb)
    if args.json:
        print_json(to_dict(sc))
    else:
        sys.stdout.write(dump_yaml(sc))
        sys.stdout.write("# " + sc.summary() + "\n")
    return 0


