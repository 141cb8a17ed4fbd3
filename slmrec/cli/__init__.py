"""The `slmrec` command line. Each command group lives in its own module with a `register`.

User mistakes raise `SlmrecError`: printed one problem per line on stderr, exit code 2, no
traceback. Modules import heavy libraries (torch) inside their handlers, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys

from slmrec.errors import SlmrecError

# Command-group modules, in the order `slmrec --help` lists them.
COMMAND_MODULES = [
    "slmrec.cli.kb_cmd",
    "slmrec.cli.graph_cmd",
    "slmrec.cli.recommend_cmd",
    "slmrec.cli.run_cmd",
    "slmrec.cli.calibrate_cmd",
    "slmrec.cli.app_cmd",
    "slmrec.cli.demo_cmd",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors also exit 2, in one line
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="slmrec", description="Plan, predict and run the small-language-model "
                                                "lifecycle from a sourced knowledge base.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command group not present in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SlmrecError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file the command could not read or write: one line, exit 2
        from slmrec.safeio import os_error

        where = exc.filename if getattr(exc, "filename", None) else "<io>"
        print(f"error: {os_error(where, exc, 'cannot read or write').problems[0]}",
              file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # a run store the command could not use: one line, exit 2
        print(f"error: run store: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
