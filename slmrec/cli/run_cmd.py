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
    pc.add_argument("--all", action="store_true",
                    help="every metric (default: quality, size, latency, memory, time)")
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
        print(f"interrupted; continue with: {resume_command(args, out)}", file=sys.stderr)
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
            print(f"continue with: {resume_command(args, out)}", file=sys.stderr)
    return report.exit_code


def resume_command(args: argparse.Namespace, out: Path) -> str:
    """The command that continues this run: the original one, every option kept (model, data,
    store, seed, KB overlays, ...), with --out pointing at the run folder and --resume."""
    import shlex

    cmd = ["slmrec", "run", str(args.plan)]
    for flag, value in (("--model", args.model), ("--data", args.data),
                        ("--store", args.store)):
        if value:
            cmd += [flag, str(value)]
    for path in getattr(args, "kb", None) or []:
        cmd += ["--kb", str(path)]
    if args.seed != 0:
        cmd += ["--seed", str(args.seed)]
    for flag, on in (("--no-store", args.no_store),
                     ("--allow-memory-overrun", args.allow_memory_overrun),
                     ("--quiet", args.quiet), ("--json", args.json)):
        if on:
            cmd.append(flag)
    return shlex.join(cmd + ["--out", str(out), "--resume"])


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


# `runs compare` shows these by default, in this order (--all: every metric).
COMPARE_HEADLINE = ("quality_loss_pct", "probe_ppl", "ppl", "size_mb", "params",
                    "decode_ms_per_token", "inference_memory_mb", "peak_memory_mb", "wall_s")


def compare_rows(a: dict, b: dict) -> list[dict]:
    """Runs A and B metric by metric, per step and for the final model. A perplexity is keyed
    by its text slice too, so figures on different slices land on different rows (no ratio)."""
    from runners.report import final_runner, metric_slice

    def table(run):
        runners = {s["step_index"]: s["runner"] for s in run["steps"]}
        last = final_runner([{**s, "metrics": {m["metric"]: 1 for m in run["measurements"]
                                               if m["step_index"] == s["step_index"]}}
                             for s in run["steps"]])
        out = {}
        for m in run["measurements"]:
            step = "plan" if m["step_index"] is None else m["step_index"] + 1
            runner = last if m["step_index"] is None else runners.get(m["step_index"])
            out[(step, m["metric"], metric_slice(m["metric"], runner))] = (m["method"],
                                                                          m["measured"])
        return out

    ta, tb = table(a), table(b)
    order = {m: i for i, m in enumerate(COMPARE_HEADLINE)}
    keys = sorted(set(ta) | set(tb), key=lambda k: (k[0] != "plan", str(k[0]).zfill(4),
                                                     order.get(k[1], 99), k[1], str(k[2])))
    rows = []
    for k in keys:
        (ma, va), (mb, vb) = ta.get(k, (None, None)), tb.get(k, (None, None))
        ratio = vb / va if va and vb is not None else None
        rows.append({"step": k[0], "metric": k[1], "slice": k[2], "method_a": ma,
                     "method_b": mb, "a": va, "b": vb, "b_over_a": ratio})
    return rows


def cmd_runs_compare(args: argparse.Namespace) -> int:
    from runners.report import slice_warnings

    store = _store(args)
    a, b = (store.run(i) for i in args.ids)
    rows = compare_rows(a, b)
    # Same metric, same step, on two slices: a warning, and neither row gets a ratio.
    split = {(r["step"], r["metric"]) for r in rows if r["a"] is None or r["b"] is None}
    warnings = slice_warnings([{"metric": r["metric"], "slice": r["slice"], "measured": v}
                               for r in rows for v in (r["a"], r["b"]) if v is not None
                               and (r["step"], r["metric"]) in split])
    if args.json:
        print_json({"a": {k: a[k] for k in ("id", "name", "status", "base_model", "plan_hash")},
                    "b": {k: b[k] for k in ("id", "name", "status", "base_model", "plan_hash")},
                    "rows": rows, "warnings": warnings})
        return 0
    print(f"A = run {a['id']} ({a['name'] or '–'}, {a['status']}), "
          f"B = run {b['id']} ({b['name'] or '–'}, {b['status']})")
    if a["plan_hash"] != b["plan_hash"]:
        def chain(run):
            return " → ".join(s["method"] for s in run["steps"]) or "no step"

        print(f"different plans: A {chain(a)}; B {chain(b)}")
    shown = rows if args.all else [r for r in rows if r["metric"] in COMPARE_HEADLINE]
    groups: dict = {}
    for r in shown:
        groups.setdefault(r["step"], []).append(r)
    for step, group in groups.items():
        if step == "plan":
            print("\nfinal model")
        else:
            ma = next((r["method_a"] for r in group if r["method_a"]), "–")
            mb = next((r["method_b"] for r in group if r["method_b"]), "–")
            print(f"\nstep {step}: A {ma}" + ("" if ma == mb else f", B {mb}"))
        print(table([[r["metric"], r["slice"] or "", _fmt(r["a"]), _fmt(r["b"]),
                      _fmt(r["b_over_a"]) + ("×" if r["b_over_a"] is not None else "")]
                     for r in group], ["metric", "slice", "A", "B", "B/A"]))
    for w in warnings:
        print(w)
    hidden = len(rows) - len(shown)
    if hidden:
        print(f"\n{hidden} more rows (bookkeeping and secondary metrics): --all; "
              "--json for everything")
    return 0
