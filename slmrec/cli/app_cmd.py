"""`slmrec app`: serve the Streamlit app on the loopback interface only."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from slmrec.errors import SlmrecError

APP = Path(__file__).resolve().parents[2] / "app.py"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="open the web app (explorer, compare, recommend, runs, sources)",
                       description="Serve the Streamlit app at http://127.0.0.1:PORT (loopback "
                       "only; nothing listens on other interfaces).")
    p.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    p.add_argument("--store", metavar="PATH",
                   help="run store the Runs page reads and writes (default: $SLMREC_STORE or "
                        "~/.local/share/slmrec/runs.sqlite)")
    p.add_argument("--print-command", action="store_true",
                   help="print the streamlit command instead of running it")
    p.set_defaults(handler=cmd_app)


def streamlit_command(port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.headless", "true", "--server.address", "127.0.0.1",
            "--server.port", str(port), "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal"]


def cmd_app(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise SlmrecError.one("--port", f"port must be between 1 and 65535, got {args.port}")
    if not APP.is_file():
        raise SlmrecError.one(str(APP), "app.py is missing; run `slmrec app` from a source "
                              "checkout (pip install -e .)")
    cmd = streamlit_command(args.port)
    if args.print_command:
        print(" ".join(cmd))
        return 0
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.store:
        env["SLMREC_STORE"] = str(Path(args.store).expanduser().resolve())
    print(f"slmrec app: http://127.0.0.1:{args.port}  (Ctrl-C to stop)", file=sys.stderr)
    try:
        return subprocess.call(cmd, cwd=APP.parent, env=env)
    except KeyboardInterrupt:
        return 0
