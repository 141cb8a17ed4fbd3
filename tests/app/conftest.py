"""Fixtures for the app tests: an AppTest on app.py, a temporary run store with one run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
TIMEOUT = 60  # seconds per script run; generous for 2 shared cores


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # Never touch the user's run store or runs folder.
    monkeypatch.setenv("SLMREC_STORE", str(tmp_path / "store" / "runs.sqlite"))
    monkeypatch.setenv("SLMREC_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)


def new_app(page: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def frame(at, column: str):
    """The first dataframe on the page with `column` (display-only tables carry no key)."""
    for df in at.dataframe:
        value = df.value
        if column in value.columns:
            return value
    raise AssertionError(f"no table with a column {column!r}")


@pytest.fixture
def kb():
    from slmrec.kb import load_kb

    return load_kb()


@pytest.fixture
def store_with_run(tmp_path):
    """A run store holding one completed two-step run with predictions and measurements, and
    one failed run."""
    from tests.app.demo_store import fill

    return fill(os.environ["SLMREC_STORE"], tmp_path / "run1")


def test_scenario(kb) -> dict:
    """A scenario that needs compression: the smallest catalog model under a memory budget of
    70% of its 16-bit weights, on a CPU profile."""
    model = min(kb.models.values(), key=lambda m: m.params)
    cpu = [h for h in kb.hardware.values() if h.kind == "cpu"] or list(kb.hardware.values())
    hw = max(cpu, key=lambda h: h.memory_gb)
    return {"name": "app-test", "description": "written by tests/app", "task": "app test",
            "base_model": model.id, "hardware": hw.id,
            "budgets": {"memory_mb": round(model.params * 2 / 1e6 * 0.7)},
            "tolerance_pct": 10, "data": {"calibration": 128}}


@pytest.fixture
def scenario_overlay(kb, tmp_path, monkeypatch):
    """A KB overlay ($SLMREC_KB) holding one named scenario, 'app-test'."""
    import yaml

    root = tmp_path / "kb-overlay"
    (root / "scenarios").mkdir(parents=True)
    (root / "empty.yaml").write_text("sources: []\n", encoding="utf-8")
    data = test_scenario(kb)
    (root / "scenarios" / "app-test.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    monkeypatch.setenv("SLMREC_KB", str(root))
    return data
