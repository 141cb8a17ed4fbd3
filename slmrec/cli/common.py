"""Helpers shared by the command modules: the `--kb` overlay flag and output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from slmrec.kb import KB, load_kb


def add_kb_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kb", action="append", default=[], metavar="PATH",
                        help="extra KB directory overlaid on the shipped one (repeatable)")


def kb_from(args: argparse.Namespace) -> KB:
    return load_kb(getattr(args, "kb", None) or None)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table."""
    cells = [header] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
