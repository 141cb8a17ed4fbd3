"""Fixtures for the fuzz and fault suite: the executor tests' tiny KB and model, an overlay KB
with fault-injecting methods, and helpers that assert a one-line user error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.execute.conftest import kb_dir, tiny_kb, tiny_model_dir  # noqa: E402,F401

FAULT_RUNNERS = {
    "test-fill-disk": "tests.reliability.fault_runners:FillDisk",
    "test-wait": "tests.reliability.fault_runners:WaitForMarker",
}


def _method(id, runner, params=None):
    return {"id": id, "name": id, "component": "compression", "family": "test", "summary": id,
            "sources": ["test-docs"], "runner": runner, "params": params or {}}


@pytest.fixture(scope="session")
def fault_kb_dir(tmp_path_factory, kb_dir) -> Path:
    """The tiny KB plus methods whose runners fill the disk or wait for a marker file."""
    root = tmp_path_factory.mktemp("faultkb") / "kb"
    root.mkdir()
    for f in Path(kb_dir).iterdir():
        (root / f.name).write_text(f.read_text())
    (root / "faults.yaml").write_text(yaml.safe_dump({"methods": [
        _method("fill-disk", "test-fill-disk", {"leave": {"type": "int", "default": 1024},
                                                 "marker": {"type": "str", "default": ""}}),
        _method("wait", "test-wait", {"marker": {"type": "str", "default": "marker"}}),
    ]}, sort_keys=False))
    return root


@pytest.fixture(scope="session")
def fault_kb(fault_kb_dir):
    from slmrec.kb import load_kb

    return load_kb([fault_kb_dir], shipped=False)


@pytest.fixture(scope="session")
def shipped_kb():
    from slmrec.kb import SHIPPED_KB, load_kb

    return load_kb([SHIPPED_KB], shipped=False)


@pytest.fixture
def faults(monkeypatch, tmp_path, fault_kb_dir):
    """Test and fault runners registered; the store and the shipped KB in temp places."""
    import runners.registry as registry
    import slmrec.kb
    from tests.execute.conftest import TEST_RUNNERS

    for rid, target in {**TEST_RUNNERS, **FAULT_RUNNERS}.items():
        monkeypatch.setitem(registry.RUNNERS, rid, target)
    monkeypatch.setenv("SLMREC_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setattr(slmrec.kb, "SHIPPED_KB", fault_kb_dir)
    monkeypatch.delenv("SLMREC_KB", raising=False)


def one_line(exc_or_text, *needles: str) -> str:
    """The error is one line per problem, quotes no more than a short piece of the input, names
    what it should (every needle, case-insensitive) and is no traceback."""
    text = str(exc_or_text)
    assert "Traceback" not in text
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert lines, "no error text"
    for ln in lines:
        assert len(ln) <= 800, f"error line of {len(ln)} characters"
    low = text.lower()
    for n in needles:
        assert n.lower() in low, f"{n!r} not in {text!r}"
    return text
