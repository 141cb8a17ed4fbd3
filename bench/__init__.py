"""Benchmarks: `python -m bench` (or `make bench`) runs every bench module found here.

A bench is a module `bench/<name>.py` with a `main() -> dict`. Each compares slmrec against a
baseline measured side by side in the same process and run, and reports ratios, since absolute
times drift between machines. The returned dict may hold anything JSON-serialisable; these keys
are read by the summary (`bench/results/README.md`):

- `title`: one line saying what is compared;
- `ratios`: {name: {"value": float, "target": "<= 1.15" | ">= 1.0" | None, "ok": bool | None,
  "note": str}} (build entries with `bench._common.ratio`);
- `markdown`: an extra Markdown block (a table) shown under the bench's heading.

Modules whose name starts with `_` and modules without a `main` are helpers, not benches.
"""
