"""Refresh the README's screenshots: docs/img/{explorer,method,recommend,runs}.png.

    .venv/bin/python tests/app/screenshots.py [--out docs/img] [--scenario NAME]

Runs the browser tests (tests/app/test_browser.py, tests/app/test_browser_findings.py) with
their screenshots pointed at --out, so the pictures show exactly what the tests checked: the
explorer, a method's view (GPTQ), the recommendation for a named scenario (the first shipped
one unless --scenario names another), and a run's predicted-against-measured chart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"), help="folder for the PNGs")
    parser.add_argument("--scenario", help="named scenario to recommend for")
    args = parser.parse_args(argv)
    env = {**os.environ, "SLMREC_SCREENSHOT_DIR": str(Path(args.out).resolve()),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if args.scenario:
        env["SLMREC_SCREENSHOT_SCENARIO"] = args.scenario
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
           str(ROOT / "tests" / "app" / "test_browser.py"),
           str(ROOT / "tests" / "app" / "test_browser_findings.py")]
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code == 0:
        for name in ("explorer.png", "method.png", "recommend.png", "runs.png"):
            print(Path(args.out) / name)
    return code


if __name__ == "__main__":
    sys.exit(main())
