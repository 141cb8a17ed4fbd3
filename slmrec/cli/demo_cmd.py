"""`slmrec demo`: the main job of `make run`, end to end on the bundled defaults.

Validate the KB, print the lifecycle it encodes, recommend a plan for an example scenario, then
execute that plan on the bundled SmolLM2-135M and print predicted against measured.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from slmrec.cli.common import add_kb_flag, kb_from

DEFAULT_SCENARIO = "bundled-demo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="recommend a plan for an example scenario and run it on the "
                                    "bundled SmolLM2-135M (what `make run` does)")
    p.add_argument("--scenario", default=DEFAULT_SCENARIO, metavar="NAME|FILE",
                   help=f"scenario to plan for (default: {DEFAULT_SCENARIO})")
    p.add_argument("--model", default="smollm2-135m", metavar="ID|PATH",
                   help="model to execute the plan on (default: the bundled smollm2-135m)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/demo-<time>)")
    p.add_argument("--store", metavar="PATH", help="run store (default: $SLMREC_STORE or the user store)")
    p.add_argument("--no-run", action="store_true", help="stop after the recommendation")
    add_kb_flag(p)
    p.set_defaults(handler=_demo)


def _demo(args) -> int:
    from slmrec.cli.recommend_cmd import render_recommendation
    from slmrec.graph import LifecycleGraph
    from slmrec.recommend import recommend

    kb = kb_from(args)
    graph = LifecycleGraph(kb)
    _section("1. Knowledge base")
    print(f"{len(kb.methods)} methods in {len(kb.components)} components, {len(kb.relations)} typed "
          f"relations, {len(kb.sources)} sources, {len(kb.hardware)} hardware profiles, "
          f"{len(kb.models)} base models (kb {kb.version})")
    print("lifecycle: " + " -> ".join(graph.stage_order()))

    _section(f"2. Recommendation for scenario '{args.scenario}'")
    rec = recommend(args.scenario, kb, top_k=3)
    print(render_recommendation(rec))
    if rec.top is None:
        print("no plan to run", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    plan_path = rec.top.save(out / "plan.yaml")
    print(f"\nplan written to {plan_path}")
    if args.no_run:
        return 0

    _section(f"3. Executing the plan on {args.model}")
    from runners.execute import execute
    from runners.report import comparison_table

    report = execute(rec.top, kb=kb, model=args.model, out_dir=out, store=args.store,
                     plan_file=str(plan_path), log=lambda msg: print(msg, file=sys.stderr))
    print(comparison_table(report))
    for note in report.notes:
        print(f"note: {note}")
    print(f"\nrun {report.run_id if report.run_id is not None else ''} {report.status}"
          + (f": {report.reason}" if report.reason else "")
          + f"; report: {out / 'report.md'}")
    print("next: `slmrec runs list`, `slmrec app` to explore, `slmrec recommend --help` to plan your own")
    return report.exit_code


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)))
