"""`slmrec kb`: validate, summarise, show and search the knowledge base."""

from __future__ import annotations

import argparse

from slmrec.cli.common import add_kb_flag, kb_from, print_json, table

WIDTH = 110  # `kb show` clips long lines to this many characters unless --all
NOTES = 2  # ... and prints this many notes per kind of relation


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kb", help="validate, summarise, show and search the knowledge base")
    kb_sub = p.add_subparsers(dest="kb_command", metavar="SUBCOMMAND", required=True)

    v = kb_sub.add_parser("validate", help="load the KB and report every problem (exit 2 if any)")
    add_kb_flag(v)
    v.set_defaults(handler=_validate)

    s = kb_sub.add_parser("stats", help="counts per section, component class and relation kind")
    add_kb_flag(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(handler=_stats)

    c = kb_sub.add_parser("coverage", help="catalogue, methods per family, effects with figures, "
                                           "multi-source relations, families with no runner")
    add_kb_flag(c)
    c.add_argument("--families", action="store_true", help="list every family, not family groups")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(handler=_coverage)

    sh = kb_sub.add_parser("show", help="a method, component, source, hardware or model, with "
                                        "everything linked to it")
    sh.add_argument("id")
    add_kb_flag(sh)
    sh.add_argument("--all", action="store_true",
                    help="every relation with its note and sources, every link (default: one "
                         "line per kind of relation)")
    sh.add_argument("--json", action="store_true", help="machine-readable output")
    sh.set_defaults(handler=_show)

    se = kb_sub.add_parser("search", help="ranked matches over names and summaries")
    se.add_argument("text", nargs="+")
    se.add_argument("--limit", type=int, default=10)
    se.add_argument("--kind", choices=["method", "component", "source", "hardware", "model"])
    add_kb_flag(se)
    se.add_argument("--json", action="store_true", help="machine-readable output")
    se.set_defaults(handler=_search)


def _validate(args) -> int:
    kb = kb_from(args)
    roots = ", ".join(str(r) for r in kb.roots)
    print(f"ok: {len(kb.methods)} methods, {len(kb.relations)} relations, {len(kb.sources)} sources, "
          f"{len(kb.components)} components, {len(kb.hardware)} hardware profiles, "
          f"{len(kb.models)} base models (kb {kb.version}; {roots})")
    return 0


def _stats(args) -> int:
    from slmrec.describe import stats

    data = stats(kb_from(args))
    if args.json:
        print_json(data)
        return 0
    print(f"KB version {data['kb_version']}")
    print(table([[k, v] for k, v in data["sections"].items()], ["section", "records"]))
    print()
    print(table([[k, data["components_by_class"][k], data["methods_by_class"][k]]
                 for k in data["components_by_class"]], ["component class", "components", "methods"]))
    print()
    print(table([[k, v] for k, v in data["methods_by_component"].items()], ["component", "methods"]))
    print()
    print(table([[k, v] for k, v in data["relations_by_kind"].items()], ["relation kind", "relations"]))
    return 0


def _coverage(args) -> int:
    from slmrec.kb_coverage import coverage

    from runners.registry import runnable_methods

    kb = kb_from(args)
    data = coverage(kb)
    runnable = runnable_methods(kb)
    data["runnable"] = {"count": len(runnable), "methods": runnable}
    if args.json:
        print_json(data)
        return 0
    cat = data["catalogue"]
    print(f"catalogue: {cat['models']} base models in {len(cat['families'])} families "
          f"({cat['sliding_window']} with sliding-window layers, {cat['mixture_of_experts']} "
          f"mixture-of-experts, {cat['plain_mlp']} plain MLP, {cat['layer_wise_widths']} with "
          f"per-layer widths, {cat['per_layer_embeddings']} with per-layer embeddings)")
    print(", ".join(f"{f} {n}" for f, n in cat["families"].items()))
    print()
    rows = []
    for row in data["components"]:
        fams = row["families"] if args.families else row["family_groups"]
        rows.append([row["component"], row["class"], row["methods"], len(row["families"]),
                     ", ".join(f"{f} {n}" for f, n in fams.items())])
    print(table(rows, ["component", "class", "methods", "families",
                       "methods per " + ("family" if args.families else "family group")]))
    if data["empty_components"]:
        print(f"\ncomponents with no methods: {', '.join(data['empty_components'])}")
    ev, rel = data["effects"], data["relations"]
    print(f"\neffects with a published or measured figure: {ev['with_figure']} of {ev['total']} "
          f"({ev['share_with_figure']:.0%}); by basis: "
          + ", ".join(f"{b} {n}" for b, n in ev["by_basis"].items()))
    print(f"relations: {rel['total']}; with two or more sources: {rel['two_or_more_sources']} "
          f"({rel['share_two_or_more']:.0%}); by kind: "
          + ", ".join(f"{k} {n}" for k, n in rel["by_kind"].items()))
    print("single-source relations, most frequent source: "
          + ", ".join(f"{s} {n}" for s, n in rel["single_source_top"].items()))
    print(f"\nfamilies with no runnable method ({len(data['families_without_runner'])} of "
          f"{data['families']}): {', '.join(data['families_without_runner'])}")
    if data["goals_unserved"]:
        print(f"goals no method serves: {', '.join(data['goals_unserved'])}")
    print(f"\nrunnable here: {len(runnable)} of {data['methods']} methods (a registered runner, runners/registry.py)")
    print(f"\n{data['methods']} methods; share filled in:")
    print(table([[k, f"{v:.0%}"] for k, v in data["share"].items()], ["field", "share"]))
    print()
    print(table([[k, v] for k, v in data["schema_use"].items()], ["schema field", "records"]))
    return 0


def _show(args) -> int:
    from slmrec.describe import describe
    from slmrec.graph import LifecycleGraph

    kb = kb_from(args)
    data = describe(kb, LifecycleGraph(kb), args.id)
    if args.json:
        print_json(data)
        return 0
    rec = data["record"]
    say = print if args.all else (lambda line: print(_clip(line)))
    title = rec.get("name") or rec.get("title") or args.id
    print(f"{title}  [{data['kind']} {args.id}]  ({data['defined_in']})")
    for key in ("summary", "component", "family", "pathway", "class", "runner"):
        if key in rec:
            print(f"  {key}: {rec[key]}")
    if "requirements" in data:
        req = data["requirements"]
        say("  requires: " + ", ".join(f"{k}={v}" for k, v in req.items()
                                          if v not in (None, [], False, "none")))
    effects = rec.get("effects", {})
    for kind in ("quality", "recovery", "speedup", "task_gain"):
        for ev in effects.get(kind, []):
            rng = ev.get("basis") if ev.get("low") is None else f"{ev['low']}..{ev['high']}"
            when = f" when {ev['when']}" if ev.get("when") else ""
            vs = (f" vs {ev['versus']}" if ev.get("versus")
                  else f" against {ev['baseline']}" if ev.get("baseline") else "")
            scope = f" ({ev['scope']})" if ev.get("scope") else ""
            say(f"  {kind}{scope}: {rng}{when}{vs} [{ev['source']}] "
                f"{ev.get('setting') or ev.get('note') or ''}".rstrip())
    if effects.get("transform"):
        print(f"  transform: {effects['transform']}")
    for case in effects.get("transform_cases", []):
        print(f"  transform when {case['when']}: "
              f"{ {k: v for k, v in case.items() if k != 'when' and v not in (None, False)} }")
    links = ("comes_after", "comes_before", "recovered_by", "conflicts_with") if args.all else ()
    for key in links + ("methods", "cited_by"):
        if data.get(key):
            say(f"  {key.replace('_', ' ')}: {', '.join(data[key])}")
    if "relations" in data:
        _print_relations(kb, args.id, args.all)
    for s in data.get("sources", []):
        print(f"  source {s['id']}: {s['title']} ({s['year']}) {s['identifier']}")
    return 0


def _clip(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _print_relations(kb, id: str, everything: bool) -> None:
    """One line per kind and direction, each distinct note once under it (clipped to the
    screen); with `everything`, each relation with its full note and sources."""
    from slmrec.relation_groups import relation_groups

    for g in relation_groups(kb, id):
        ids = [m for m, _ in g.members]
        line = f"  {g.label} ({len(ids)}): {', '.join(ids)}"
        print(line if everything else _clip(line))
        if everything:
            for (other, note), sources in zip(g.members, g.sources):
                print(f"    {other}: {note} [{', '.join(sources)}]")
            continue
        notes: dict[str, int] = {}
        for _, note in g.members:
            if note:
                notes[note] = notes.get(note, 0) + 1
        # The most shared notes first; the rest are one --all away.
        ranked = sorted(notes.items(), key=lambda kv: -kv[1])
        for note, n in ranked[:NOTES]:
            print(_clip(f"    {'' if n == 1 else f'({n}×) '}{note}"))
        if len(ranked) > NOTES:
            print(f"    … {len(ranked) - NOTES} more notes (--all)")


def _search(args) -> int:
    from slmrec.textsearch import TextIndex

    hits = TextIndex(kb_from(args)).search(" ".join(args.text), limit=args.limit, kind=args.kind)
    if args.json:
        print_json([h.__dict__ for h in hits])
        return 0
    if not hits:
        print("no matches")
        return 0
    print(table([[h.score, h.kind, h.id, h.name] for h in hits], ["score", "kind", "id", "name"]))
    return 0
