"""A bench-local KB: one method per registered runner (method id = runner id), its parameters
derived from the runner's `Params`, so the benches do not depend on the state of `kb/`."""

from __future__ import annotations

import typing
from pathlib import Path

import yaml

_TYPES = {int: "int", float: "float", str: "str", bool: "bool"}


def _spec(field) -> dict | None:
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) is typing.Union and len(args) == 1:
        ann = args[0]
    if typing.get_origin(ann) is typing.Literal:
        choices = list(typing.get_args(ann))
        kind = _TYPES.get(type(choices[0]))
        spec = {"type": kind, "choices": choices} if kind else None
    else:
        kind = _TYPES.get(ann)
        spec = {"type": kind} if kind else None
    if spec is None:
        return None
    if not field.is_required() and field.default is not None:
        spec["default"] = field.default
    return spec


def write_runner_kb(root: Path) -> Path:
    from runners.registry import RUNNERS, get_runner_class

    methods = []
    for rid in sorted(RUNNERS):
        try:
            cls = get_runner_class(rid)
        except Exception:  # noqa: BLE001  (a runner not importable here is left out)
            continue
        params = {n: s for n, f in cls.Params.model_fields.items() if (s := _spec(f))}
        methods.append({"id": rid, "name": rid, "component": "lifecycle", "family": "bench",
                        "summary": cls.summary or rid, "runner": rid, "params": params,
                        "sources": ["bench"]})
    kb = {"sources": [{"id": "bench", "title": "slmrec benches", "year": 2025,
                       "kind": "measured", "url": "https://example.org/slmrec-bench"}],
          "components": [{"id": "lifecycle", "name": "Lifecycle", "class": "main", "order": 0,
                          "summary": "every runner", "sources": ["bench"]}],
          "methods": methods}
    root.mkdir(parents=True, exist_ok=True)
    (root / "kb.yaml").write_text(yaml.safe_dump(kb, sort_keys=False))
    return root


def load_runner_kb(root: Path):
    from slmrec.kb import load_kb

    return load_kb([write_runner_kb(root)], shipped=False)
