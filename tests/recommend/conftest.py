"""Fixtures for the recommender tests: a small realistic KB written to a temp folder."""

from __future__ import annotations

import pytest

from slmrec.kb import load_kb
from slmrec.scenario import parse_scenario
from tests.recommend.fixture_kb import kb_data, write_kb


@pytest.fixture(scope="session")
def kb(tmp_path_factory):
    return load_kb([write_kb(tmp_path_factory.mktemp("kb"))], shipped=False)


@pytest.fixture(scope="session")
def make_kb(tmp_path_factory):
    """Build a variant of the fixture KB: make_kb(edit) where edit(data) mutates the dict."""

    def build(edit):
        data = kb_data()
        edit(data)
        return load_kb([write_kb(tmp_path_factory.mktemp("kbv"), data)], shipped=False)

    return build


@pytest.fixture
def scenario(kb):
    def build(kb_=None, **fields):
        data = {"task": "test", "base_model": "smollm2-360m", "hardware": "rtx-4090"}
        data.update(fields)
        return parse_scenario(data, "<test>", kb_ or kb, "test")

    return build
