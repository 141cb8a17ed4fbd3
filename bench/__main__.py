"""Run the benches: `python -m bench [NAME ...] [--list]`.

Every module `bench/<name>.py` with a `main()` is a bench (see bench/__init__.py). Each result goes
to `bench/results/<name>.json`; `bench/results/README.md` summarises every result file there, so
running one bench refreshes its section and keeps the others'.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def discover() -> list[str]:
    """Bench modules: bench/<name>.py defining a top-level main() (helpers have none)."""
    names = []
    for m in pkgutil.iter_modules([str(HERE)]):
        if m.name.startswith("_") or m.ispkg:
            continue
        source = (HERE / f"{m.name}.py").read_text(encoding="utf-8")
        if "\ndef main(" in source:
            names.append(m.name)
    return sorted(names)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_one(name: str) -> dict | None:
    module = importlib.import_module(f"bench.{name}")
    main = getattr(module, "main", None)
    if not callable(main):
        return None  # a helper module (e.g. a synthetic KB builder)
    print(f"== bench {name}", flush=True)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        result = dict(main() or {})
        result.setdefault("status", "ok")
    except Exception as exc:  # noqa: BLE001  (one broken bench must not hide the others)
        traceback.print_exc()
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    from bench._common import machine

    result.update(name=name, started=started, wall_s=round(time.perf_counter() - t0, 2),
                  machine=machine())
    RESULTS.mkdir(exist_ok=True)
    _write(RESULTS / f"{name}.json", json.dumps(result, indent=2, default=str) + "\n")
    for key, r in (result.get("ratios") or {}).items():
        verdict = {True: "ok", False: "MISSED", None: ""}[r.get("ok")]
        print(f"   {key}: {r.get('value')} (target {r.get('target') or '–'}) {verdict}", flush=True)
    return result


def summary() -> str:
    lines = ["# Benchmark results", "",
             "Written by `python -m bench` (`make bench`). Every figure is a ratio against a "
             "baseline measured side by side in the same run; absolute times are in the JSON files.",
             ""]
    results = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    rows = []
    for r in results:
        for key, v in (r.get("ratios") or {}).items():
            verdict = {True: "met", False: "**missed**", None: "–"}[v.get("ok")]
            rows.append(f"| {r['name']} | {key} | {v.get('value')} | {v.get('target') or '–'} | "
                        f"{verdict} | {v.get('note', '')} |")
    if rows:
        lines += ["| bench | ratio | value | target | verdict | note |",
                  "| --- | --- | --- | --- | --- | --- |"] + rows + [""]
    for r in results:
        m = r.get("machine", {})
        lines += [f"## {r['name']}: {r.get('title', '')}".rstrip(": "), "",
                  f"Run {r.get('started', '?')}, {r.get('wall_s', '?')} s on {m.get('cpu', '?')} "
                  f"({m.get('torch_threads', '?')} torch threads), status {r.get('status')}"
                  + (f": {r['error']}" if r.get("error") else "") + ".", ""]
        if r.get("markdown"):
            lines += [r["markdown"].rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    names = discover()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benches to run (default: all: "
                        f"{', '.join(names)})")
    parser.add_argument("--list", action="store_true", help="list the bench modules and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(names))
        return 0
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; available: {', '.join(names)}")
    import torch

    # One fixed thread count for every bench. One thread by default: on a shared machine, busy
    # OpenMP threads waiting for descheduled peers slow small kernels down by 10x or more, which
    # would swamp the ratios; BENCH_THREADS=N uses N.
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    failed = 0
    for name in args.names or names:
        result = run_one(name)
        failed += bool(result and result.get("status") != "ok")
    _write(RESULTS / "README.md", summary())
    print(f"summary: {RESULTS / 'README.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
