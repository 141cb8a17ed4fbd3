"""In headless Chromium, one test per finding of a new user's first session with the app: each
checks what the user saw go wrong (a hairball, a stale widget, LaTeX, a dropdown disagreeing
with the page, ...) no longer happens. One server and one browser for the whole file.

With $SLMREC_SCREENSHOT_DIR set (tests/app/screenshots.py), the method view and a run's chart
are saved there too. With $SLMREC_APP_ROOT pointing at another checkout, that checkout's app is
served instead: an older one shows each finding failing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.app.browser import chromium

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium() is None, reason="Debian's chromium package is not "
                                 "installed (`make browser`); playwright never downloads one")]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from tests.app.browser import browser_page, serve
    from tests.app.demo_store import fill

    tmp = tmp_path_factory.mktemp("browser")
    store = tmp / "runs.sqlite"
    fill(store, tmp / "run1")
    root = Path(os.environ.get("SLMREC_APP_ROOT") or Path(__file__).resolve().parents[2])
    with serve(store, tmp / "app.log", root=root) as url, browser_page() as page:
        yield url, page


def _shot(page, name: str, anchor) -> None:
    out = os.environ.get("SLMREC_SCREENSHOT_DIR")
    if not out:
        return
    anchor.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(800)
    page.screenshot(path=str(Path(out) / name))


def _open_method(page, url: str, kb, mid: str) -> None:
    from tests.app.browser import settle

    name = kb.methods[mid].name
    page.goto(url + "/")
    page.get_by_text("Typed relations").first.wait_for()
    settle(page)
    box = page.get_by_label("Search the knowledge base")
    box.fill(mid)
    box.press("Enter")
    page.get_by_role("button", name=f"{name} · method").first.click()
    page.get_by_role("heading", name=name, exact=True).wait_for()
    settle(page)


def test_method_view_is_the_method_and_its_own_relations_readable(app, kb):
    """Found: GPTQ's 'direct relations' graph had 34 nodes and 369 edges (45 touching GPTQ),
    labels about 2 px tall. Now: only the method's own relations, one box per kind."""
    from slmrec.graph import RELATION_KINDS
    from slmrec.relation_groups import relation_groups
    from tests.app.browser import method_chart, multi_pick, settle

    url, page = app
    _open_method(page, url, kb, "gptq")
    groups = relation_groups(kb, "gptq", RELATION_KINDS)
    chart = method_chart(page)
    assert chart.get_by_text(f"{groups[0].label} ({len(groups[0].members)})").count() == 1
    assert chart.locator("g.edge").count() == len(groups)  # one edge per group, all to GPTQ
    heights = chart.locator("text").evaluate_all(
        "els => els.map(e => e.getBoundingClientRect().height)")
    assert min(heights) >= 9, min(heights)  # readable at the default width
    _shot(page, "method.png", page.get_by_text("Direct relations").first)
    # One hop further: expanding a neighbour adds its own groups (the neighbour with the most
    # relations of its own).
    near = [m for g in groups for m, _ in g.members if m in kb.methods]
    first = max(near, key=lambda m: len(relation_groups(kb, m, RELATION_KINDS, skip=["gptq"])))
    more = len(relation_groups(kb, first, RELATION_KINDS, skip=["gptq"]))
    assert more > 0
    multi_pick(page, "Expand one hop from", kb.methods[first].name)
    page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=\"stGraphVizChart\"]')[2]"
        ".querySelectorAll('g.edge').length === n", arg=len(groups) + more)
    settle(page)


def test_switching_scenario_leaves_no_stale_plan(app, kb):
    """Found: after switching scenario, 'Show plan' still read the previous scenario's plan."""
    from slmrec.scenario import list_scenarios
    from tests.app.browser import pick, selectbox, settle

    url, page = app
    first, second = sorted(list_scenarios(kb))[:2]
    page.goto(f"{url}/?page=Recommend&rec_scenario={first}")
    page.get_by_role("button", name="Recommend", exact=True).click()
    selectbox(page, "Show plan").wait_for()
    settle(page)
    pick(page, "Named scenario", second)
    page.get_by_text("Press Recommend to rank plans for this scenario.").wait_for()
    settle(page)
    assert page.locator('[data-testid="stSelectbox"]').filter(has_text="Show plan").count() == 0
    assert page.get_by_role("heading", name="Ranked plans").count() == 0


def test_the_form_starts_on_the_bundled_model_and_marks_task_required(app, kb):
    """Found: the empty form defaulted to Gemma 3 1B on an A100, and submitting without a task
    failed on a field the form never marked as required."""
    from tests.app.browser import settle, shown

    url, page = app
    page.goto(f"{url}/?page=Recommend")
    page.get_by_text("the form", exact=True).click()
    page.get_by_text("Task (required)").wait_for()
    settle(page)
    assert "smollm2-135m" in shown(page, "Base model")
    hw = shown(page, "Target hardware")
    assert any(f"({h.id})" in hw for h in kb.hardware.values() if h.kind == "cpu"), hw
    message = page.get_by_text("Task is required")
    for _ in range(3):  # a click that lands while a rerun starts is dropped: click again
        page.get_by_role("button", name="Recommend", exact=True).click()
        try:
            message.wait_for(timeout=20_000)
            break
        except Exception:  # noqa: BLE001 (playwright's TimeoutError)
            settle(page)
    assert message.is_visible()
    assert page.locator('[data-testid="stException"]').count() == 0


def test_compare_shows_dollar_text_as_text(app, kb):
    """Found: Compare typeset `$bits, group_size = $` as LaTeX."""
    from tests.app.browser import multi_pick, settle

    url, page = app
    page.goto(f"{url}/?page=Compare")
    page.get_by_role("heading", name="Compare methods").wait_for()
    for mid in ("gptq", "awq"):
        multi_pick(page, "Methods to compare", kb.methods[mid].name)
        settle(page)
    page.get_by_text("Effects with their sources").wait_for()
    settle(page)
    assert page.locator(".katex").count() == 0
    assert page.get_by_text("$bits", exact=False).count() > 0


def test_the_sources_dropdown_names_the_source_on_display(app, kb):
    """Found: the Sources dropdown showed a different source from the one displayed."""
    from tests.app.browser import pick, settle, shown

    url, page = app
    page.goto(f"{url}/?page=Sources")
    page.get_by_role("heading", name="Sources").first.wait_for()
    settle(page)
    plain = [s for s in sorted(kb.sources.values(), key=lambda s: s.id)
             if re.fullmatch(r"[A-Za-z0-9 ,.]+", s.title)]  # typed as is, shown as is
    target = plain[len(plain) // 2]
    pick(page, "Source", target.title)
    page.get_by_role("heading", name=target.title, exact=True).wait_for()
    settle(page)
    assert target.title in shown(page, "Source")
    page.get_by_label("Filter by id, title, author or venue").fill(target.title[:14])
    page.keyboard.press("Enter")
    settle(page)
    page.get_by_text(f"of {len(kb.sources)} sources.").wait_for()
    assert target.title in shown(page, "Source")
    assert page.get_by_role("heading", name=target.title, exact=True).count() == 1


def test_a_run_is_charted_on_one_log_axis_and_runs_on_the_plans_model(app):
    """Found: one non-zero axis per metric, bookkeeping metrics by default, and 'Run it on'
    defaulting to another model than the plan's."""
    from tests.app.browser import pick, settle, shown

    url, page = app
    page.goto(f"{url}/?page=Runs")
    page.get_by_role("heading", name="Runs").first.wait_for()
    settle(page)
    pick(page, "Open a run", "run 1:")
    page.get_by_role("heading", name="Run 1:").wait_for()
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    settle(page)
    metrics = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Metrics to chart")
    text = metrics.inner_text()
    assert "decode_ms_per_token" in text and "checkpoint_s" not in text
    assert page.get_by_text("one log scale").count() == 1
    _shot(page, "runs.png", page.get_by_role("heading", name="Run 1:"))
    assert "the plan's base model" in shown(page, "Run it on")
    assert page.locator('[data-testid="stException"]').count() == 0
