"""Fixtures for executor tests: a tiny KB, a tiny model folder, test-only runners, a temp store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from tests.execute.tinykb import write_kb  # noqa: E402

# Tiny models run many small kernels: on a shared 2-core machine, two OpenMP threads waiting for
# each other's descheduled peer make them 10x slower or worse. One thread is fast and steady.
torch.set_num_threads(1)

TEST_RUNNERS = {
    "test-nan": "tests.execute.fake_runners:NanTrain",
    "test-nan-weights": "tests.execute.fake_runners:NanWeights",
    "test-fail-once": "tests.execute.fake_runners:FailOnce",
    "test-raise": "tests.execute.fake_runners:Raise",
}


@pytest.fixture(scope="session")
def kb_dir(tmp_path_factory) -> Path:
    return write_kb(tmp_path_factory.mktemp("kb") / "kb")


@pytest.fixture(scope="session")
def tiny_kb(kb_dir):
    from slmrec.kb import load_kb

    return load_kb([kb_dir], shipped=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from runners.models import save_checkpoint, tiny_model

    model, tok = tiny_model(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)
    return save_checkpoint(model, tok, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path, kb_dir):
    """Test runners registered; the run store and the shipped KB point into temp folders."""
    import runners.registry as registry
    import slmrec.kb

    for rid, target in TEST_RUNNERS.items():
        monkeypatch.setitem(registry.RUNNERS, rid, target)
    monkeypatch.setenv("SLMREC_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setattr(slmrec.kb, "SHIPPED_KB", kb_dir)
    monkeypatch.delenv("SLMREC_KB", raising=False)


def make_plan(base: Path | str, steps: list, **extra) -> dict:
    return {"name": extra.pop("name", "test-plan"), "base_model": str(base),
            "steps": [s if isinstance(s, dict) else {"method": s} for s in steps], **extra}


def write_plan(path: Path, plan: dict) -> Path:
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path
