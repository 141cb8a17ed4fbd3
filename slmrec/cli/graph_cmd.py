"""`slmrec graph`: structural questions and exports."""

from __future__ import annotations

import argparse

from slmrec.cli.common import add_kb_flag, kb_from, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graph", help="query and export the lifecycle graph")
    g = p.add_subparsers(dest="graph_command", metavar="SUBCOMMAND", required=True)

    e = g.add_parser("export", help="write the graph as GraphML, node-link JSON or DOT")
    e.add_argument("--format", required=True, help="graphml | json | dot")
    e.add_argument("-o", "--output", required=True, metavar="FILE")
    add_kb_flag(e)
    e.set_defaults(handler=_export)

    pa = g.add_parser("path", help="shortest dependency path between two nodes")
    pa.add_argument("a")
    pa.add_argument("b")
    add_kb_flag(pa)
    pa.add_argument("--json", action="store_true")
    pa.set_defaults(handler=_path)

    o = g.add_parser("order", help="main components in lifecycle order")
    add_kb_flag(o)
    o.set_defaults(handler=_order)

    for name, help_ in (("follows", "what may come after a method"),
                        ("precedes", "what may come before a method"),
                        ("recovers", "what recovers a method's quality loss"),
                        ("requires", "what a method needs")):
        q = g.add_parser(name, help=help_)
        q.add_argument("method")
        add_kb_flag(q)
        q.add_argument("--json", action="store_true")
        q.set_defaults(handler=_method_query, query=name)

    r = g.add_parser("reused", help="methods reused across components")
    add_kb_flag(r)
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=_reused)

    n = g.add_parser("neighbours", help="nodes within a radius of a node")
    n.add_argument("node")
    n.add_argument("--radius", type=int, default=1)
    add_kb_flag(n)
    n.add_argument("--json", action="store_true")
    n.set_defaults(handler=_neighbours)


def _graph(args):
    from slmrec.graph import LifecycleGraph

    return LifecycleGraph(kb_from(args))


def _export(args) -> int:
    from slmrec.graph import export_graph

    lg = _graph(args)
    path = export_graph(lg.g, args.format, args.output)
    print(f"wrote {path} ({lg.g.number_of_nodes()} nodes, {lg.g.number_of_edges()} edges, {args.format})")
    return 0


def _path(args) -> int:
    links = _graph(args).dependency_path(args.a, args.b)
    if args.json:
        print_json([link.__dict__ for link in links])
        return 0
    if not links:
        print(args.a)
    for link in links:
        print(f"{link}" + (f"   # {link.note}" if link.note else ""))
    return 0


def _order(args) -> int:
    print(" -> ".join(_graph(args).stage_order()))
    return 0


def _method_query(args) -> int:
    lg = _graph(args)
    if args.query == "requires":
        data = lg.requirements(args.method)
    elif args.query == "follows":
        data = {"declared": lg.must_follow(args.method), "compatible": lg.may_follow(args.method)}
    elif args.query == "precedes":
        data = {"declared": lg.must_precede(args.method), "compatible": lg.may_precede(args.method)}
    else:
        data = [link.__dict__ for link in lg.recovered_by(args.method)]
    if args.json:
        print_json(data)
    elif isinstance(data, dict):
        for k, v in data.items():
            print(f"{k}: {', '.join(v) if isinstance(v, list) else v}")
    else:
        for d in data:
            print(f"{d['src']} recovers {d['dst']}: {d['note']}")
    return 0


def _reused(args) -> int:
    data = _graph(args).reused_methods()
    if args.json:
        print_json(data)
        return 0
    for m, comps in data.items():
        print(f"{m}: {', '.join(comps)}")
    return 0


def _neighbours(args) -> int:
    sub = _graph(args).neighbourhood(args.node, args.radius)
    data = sorted((n, d["type"]) for n, d in sub.nodes(data=True) if n != args.node)
    if args.json:
        print_json([{"id": n, "type": t} for n, t in data])
        return 0
    for n, t in data:
        print(f"{t:10} {n}")
    return 0
