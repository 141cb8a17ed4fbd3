"""`slmrec run PLAN.yaml` executes a plan; `slmrec runs list|show|compare` reads the run store.

Exit codes: 0 success, 1 a run that failed (or was interrupted), 2 a user mistake.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from slmrec.cli.common import add_kb_flag, kb_from, print_json, table

STORE_HELP = ("run store (SQLite); default: $SLMREC_STORE or ~/.local/share/slmrec/runs.sqlite")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="execute a plan on a real model, measuring after each step",
                       description="Validate PLAN against the KB and the runners, then run its "
                       "steps in order: measure after each, checkpoint it, record predicted vs "
                       "measured in the run store, and write report.json/report.md into --out.")
    p.add_argument("plan", metavar="PLAN.yaml", help="plan file (from `slmrec recommend` or by hand)")
    p.add_argument("--model", metavar="ID|PATH",
                   help="base model: a bundled id (smollm2-135m) or a local HF/checkpoint folder; "
                        "overrides the plan's base_model")
    p.add_argument("--data", metavar="PATH", help="text corpus (default: the stdlib pydoc topics)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<plan name>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last intact checkpoint")
    p.add_argument("--store", metavar="PATH", help=STORE_HELP)
    p.add_argument("--no-store", action="store_true", help="record nothing in the run store")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--allow-memory-overrun", action="store_true",
                   help="start even when the predicted peak memory exceeds the free memory")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (they are shown only on a terminal anyway)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    add_kb_flag(p)
    p.set_defaults(handler=cmd_run)

    r = sub.add_parser("runs", help="list, show and compare recorded runs",
                       description="Read the run store: what ran, its status, and predicted vs "
                       "measured for every step.")
    rs = r.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=type(r))
    rs.required = True
    pl = rs.add_parser("list", help="every recorded run, newest first")
    ps = rs.add_parser("show", help="one run: steps and predicted vs measured")
    ps.add_argument("id", metavar="ID", help="run id (see `slmrec runs list`)")
    pc = rs.add_parser("compare", help="two runs side by side, metric by metric")
    pc.add_argument("ids", metavar="ID", nargs=2, help="two run ids: A, then B")
    for q in (pl, ps, pc):
        q.add_argument("--store", metavar="PATH", help=STORE_HELP)
        q.add_argument("--json", action="store_true", help="machine-readable output")
    pl.add_argument("--status", choices=["running", "completed", "failed", "interrupted"],
                    help="only runs with this status")
    pl.set_defaults(handler=cmd_runs_list)
    ps.set_defaults(handler=cmd_runs_show)
    pc.set_defaults(handler=cmd_runs_compare)


# ------------------------------------------------------------------------------------------------
# slmrec run
# ------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from slmrec.plan import load_plan

    kb = kb_from(args)
    plan = load_plan(args.plan)  # parse only; the executor validates everything together
    if args.out:
        out = Path(args.out)
    else:
        stem = plan.name or Path(args.plan).stem
        stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)
        out = Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"

    from runners.execute import execute
    from runners.report import comparison_table

    store = False if args.no_store else args.store
    try:
        report = execute(plan, kb=kb, model=args.model, data=args.data, out_dir=out,
                         resume=args.resume, store=store, seed=args.seed,
                         allow_memory_overrun=args.allow_memory_overrun, plan_file=args.plan,
                         progress=not args.quiet and not args.json and sys.stderr.isatty(),
                         log=lambda msg: print(msg, file=sys.stderr))
    except KeyboardInterrupt:
        print(f"interrupted; continue with: slmrec run {args.plan} --out {out} --resume",
              file=sys.stderr)
        return 1
    except OSError as exc:  # a write the executor does not guard (it guards its bookkeeping)
        from slmrec.safeio import os_error

        raise os_error(getattr(exc, "filename", None) or out, exc, "cannot write") from None
    if args.json:
        print_json(report.to_dict())
    else:
        print(comparison_table(report))
        print()
        for note in report.notes:
            print(f"note: {note}")
        run = f"run {report.run_id}" if report.run_id is not None else "run"
        print(f"{run} {report.status}" + (f": {report.reason}" if report.reason else "")
              + f" (report: {out / 'report.md'})")
        if not report.ok:
            print(f"continue with: slmrec run {args.plan} --out {out} --resume", file=sys.stderr)
    return report.exit_code


# ------------------------------------------------------------------------------------------------
# slmrec runs
# ------------------------------------------------------------------------------------------------


def _store(args):
    from slmrec.evidence import RunStore, default_store_path
    from slmrec.errors import SlmrecError

    path = default_store_path(args.store)
    if not path.exists():
        raise SlmrecError.one(str(path), "no run store here yet; run a plan with `slmrec run`, "
                              "or pass --store / set $SLMREC_STORE")
    return RunStore(path)


def cmd_runs_list(args: argparse.Namespace) -> int:
    from slmrec.errors import SlmrecError

    store = _store(args)
    try:
        reaped = store.reap_stale()
    except SlmrecError:  # a locked store can still be listed (stale rows show as stale)
        reaped = []
    for rid in reaped:
        print(f"note: run {rid} was still marked running but its process is gone (killed or "
              "crashed); marked interrupted, continue it with --resume", file=sys.stderr)
    runs = store.runs(status=args.status)
    if args.json:
        print_json(runs)
        return 0
    if not runs:
        print("no runs recorded")
        return 0
    rows = [[r["id"], r["created"].replace("T", " ")[:19], r["name"] or "–", r["base_model"],
             r["status"] + (" (stale)" if r.get("stale") else ""), r["steps_completed"],
             (r["reason"] or "")[:60], r["out_dir"] or ""]
            for r in runs]
    print(table(rows, ["id", "created (UTC)", "plan", "base model", "status", "steps", "reason",
                       "folder"]))
    return 0


def _fmt(v):
    from runners.report import fmt

    return fmt(v)


def cmd_runs_show(args: argparse.Namespace) -> int:
    run = _store(args).run(args.id)
    if args.json:
        print_json(run)
        return 0
    stale = " (stale: its process is gone)" if run.get("stale") else ""
    print(f"run {run['id']}: {run['status']}{stale}"
          + (f": {run['reason']}" if run["reason"] else ""))
    print(f"plan {run['name'] or '–'} (hash {run['plan_hash']}, KB {run['kb_version'] or '–'}), "
          f"base model {run['base_model']}, seed {run['seed']}")
    print(f"created {run['created']}, finished {run['finished'] or '–'}, folder {run['out_dir']}")
    if run["steps"]:
        print()
        print(table([[s["step_index"] + 1, s["method"], s["runner"], s["status"], _fmt(s["wall_s"]),
                      ", ".join(f"{k}={v}" for k, v in s["params"].items()), s["reason"] or ""]
                     for s in run["steps"]],
                    ["#", "method", "runner", "status", "wall s", "params", "reason"]))
    if run["measurements"]:
        print()
        rows = []
        for m in run["measurements"]:
            from runners.report import compare_one, vs_predicted

            r = compare_one("", m["method"], m["metric"],
                            {"value": m["predicted"], "low": m["predicted_low"],
                             "high": m["predicted_high"]}, m["measured"])
            rng = "" if m["predicted_low"] is None else \
                f"{_fmt(m['predicted_low'])}–{_fmt(m['predicted_high'])}"
            rows.append(["plan" if m["step_index"] is None else m["step_index"] + 1, m["method"],
                         m["metric"], _fmt(m["predicted"]), rng, _fmt(m["measured"]),
                         vs_predicted(r)])
        print(table(rows, ["step", "method", "metric", "predicted", "range", "measured",
                           "vs predicted"]))
    return 0


def cmd_runs_compare(args: argparse.Namespace) -> int:
    store = _store(args)
    a, b = (store.run(i) for i in args.ids)

    def key(m):
        return ("plan" if m["step_index"] is None else m["step_index"] + 1, m["method"], m["metric"])

    ma = {key(m): m["measured"] for m in a["measurements"]}
    mb = {key(m): m["measured"] for m in b["measurements"]}
    keys = sorted(set(ma) | set(mb), key=lambda k: (k[0] == "plan", str(k[0]).zfill(4), k[2]))
    rows = []
    for k in keys:
        va, vb = ma.get(k), mb.get(k)
        ratio = vb / va if va and vb is not None else None
        rows.append({"step": k[0], "method": k[1], "metric": k[2], "a": va, "b": vb,
                     "b_over_a": ratio})
    if args.json:
        print_json({"a": {k: a[k] for k in ("id", "name", "status", "base_model", "plan_hash")},
                    "b": {k: b[k] for k in ("id", "name", "status", "base_model", "plan_hash")},
                    "rows": rows})
        return 0
    print(f"A = run {a['id']} ({a['name'] or '–'}, {a['status']}), "
          f"B = run {b['id']} ({b['name'] or '–'}, {b['status']})")
    if a["plan_hash"] != b["plan_hash"]:
        print("the two runs executed different plans")
    print(table([[r["step"], r["method"], r["metric"], _fmt(r["a"]), _fmt(r["b"]),
                  _fmt(r["b_over_a"]) + ("×" if r["b_over_a"] is not None else "")] for r in rows],
                ["step", "method", "metric", "A", "B", "B/A"]))
    return 0
