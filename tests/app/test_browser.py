"""End to end in a real headless Chromium: `slmrec app` on a free loopback port, the explorer,
then a recommendation for a named scenario whose first step must appear on the page."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.app.browser import chromium

pytestmark = pytest.mark.browser


@pytest.fixture
def named_scenario(kb, request) -> str:
    """A shipped named scenario when there is one, else the tests' own (a KB overlay)."""
    from slmrec.scenario import list_scenarios

    shipped = sorted(list_scenarios(kb))
    wanted = os.environ.get("SLMREC_SCREENSHOT_SCENARIO")  # tests/app/screenshots.py --scenario
    if wanted:
        assert wanted in shipped, f"no named scenario '{wanted}'; shipped: {shipped}"
        return wanted
    if shipped:
        return shipped[0]
    request.getfixturevalue("scenario_overlay")
    return "app-test"


@pytest.mark.skipif(chromium() is None, reason="Debian's chromium package is not installed "
                    "(`make browser` installs it); playwright never downloads a browser")
def test_explorer_and_a_named_recommendation_in_chromium(named_scenario, tmp_path):
    from slmrec.kb import load_kb
    from slmrec.recommend import recommend
    from slmrec.ui.rec_result import TOP_K
    from tests.app.browser import browser_page, open_explorer, recommend_named, serve

    kb = load_kb()
    rec = recommend(named_scenario, kb, top_k=TOP_K)
    assert rec.plans and rec.plans[0].steps
    first = rec.plans[0].steps[0].method
    expect = f"Step 1: {kb.methods[first].name}"

    out = Path(os.environ.get("SLMREC_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    with serve(Path(os.environ["SLMREC_STORE"]), tmp_path / "app.log") as url:
        with browser_page() as page:
            open_explorer(page, url, out / "explorer.png")
            assert page.get_by_text(f"{len(kb.methods)} methods").first.is_visible()
            recommend_named(page, url, named_scenario, expect, out / "recommend.png")
            assert page.get_by_text(expect).first.is_visible()
            assert page.locator('[data-testid="stException"]').count() == 0
    for name in ("explorer.png", "recommend.png"):
        assert (out / name).stat().st_size > 20_000, name
    print(f"screenshots: {out}")
