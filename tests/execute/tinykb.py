"""A tiny KB whose methods map onto the real runners, for executor tests (independent of kb/)."""

from __future__ import annotations

from pathlib import Path

import yaml

SOURCES = [{"id": "test-docs", "title": "Test documentation", "year": 2025,
            "kind": "documentation", "url": "https://example.org/docs"}]
COMPONENTS = [
    {"id": "training", "name": "Training", "class": "main", "order": 0, "summary": "train",
     "sources": ["test-docs"]},
    {"id": "compression", "name": "Compression", "class": "main", "order": 1, "summary": "shrink",
     "sources": ["test-docs"]},
    {"id": "evaluation", "name": "Evaluation", "class": "cross-cutting", "summary": "measure",
     "sources": ["test-docs"]},
]


def _m(id, component, runner=None, params=None, **extra):
    rec = {"id": id, "name": id, "component": component, "family": "test", "summary": id,
           "sources": ["test-docs"], "params": params or {}, **extra}
    if runner:
        rec["runner"] = runner
    return rec


INT = lambda d, **k: {"type": "int", "default": d, **k}        # noqa: E731
FLOAT = lambda d, **k: {"type": "float", "default": d, **k}    # noqa: E731
STR = lambda d, **k: {"type": "str", "default": d, **k}        # noqa: E731

METHODS = [
    _m("train", "training", "causal-lm-train",
       {"steps": INT(3, min=1), "lr": FLOAT(1e-3, min=0), "batch_size": INT(2, min=1),
        "seq_len": INT(32, min=8)}),
    # A second training method: a plan holds each method once, and the kill test needs two steps.
    _m("train-more", "training", "causal-lm-train",
       {"steps": INT(3, min=1), "lr": FLOAT(1e-3, min=0), "batch_size": INT(2, min=1),
        "seq_len": INT(32, min=8)}),
    _m("rtn", "compression", "weight-only-quant", {"bits": INT(8, choices=[4, 8]),
                                                   "group_size": INT(32)}),
    _m("int8", "compression", "dynamic-int8"),
    _m("half", "compression", "cast", {"dtype": STR("bf16", choices=["bf16", "fp16"])}),
    _m("eval", "evaluation", "evaluate",
       {"seq_len": INT(32), "ppl_blocks": INT(2), "batch_size": INT(2), "prompt_len": INT(8),
        "decode_tokens": INT(2), "repeats": INT(1)}),
    _m("distill", "compression", "logit-distill",
       {"steps": INT(2, min=1), "batch_size": INT(2, min=1), "seq_len": INT(32, min=8)}),
    _m("awq", "compression"),                                  # knowledge only: no runner
    _m("broken", "compression", "no-such-runner"),             # names an unregistered runner
    _m("nan-train", "training", "test-nan", {"after": INT(2)}),
    _m("nan-weights", "compression", "test-nan-weights"),
    _m("fail-once", "compression", "test-fail-once", {"marker": STR("marker")}),
    _m("raise", "compression", "test-raise", {"kind": STR("bug")}),
]
RELATIONS = [
    {"from": "train", "to": "rtn", "kind": "precedes", "note": "train, then shrink",
     "sources": ["test-docs"]},
]
MODELS = [
    {"id": "big-7b", "name": "Big", "family": "big", "architecture": "llama", "params": 7e9,
     "layers": 32, "hidden": 4096, "intermediate": 11008, "heads": 32, "kv_heads": 32,
     "vocab": 32000, "context": 4096, "tied_embeddings": False, "tokenizer": "big",
     "license": "apache-2.0", "sources": ["test-docs"]},
]


def write_kb(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "kb.yaml").write_text(yaml.safe_dump(
        {"sources": SOURCES, "components": COMPONENTS, "methods": METHODS,
         "relations": RELATIONS, "models": MODELS}, sort_keys=False))
    return root
