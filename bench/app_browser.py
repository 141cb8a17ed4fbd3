"""The app's main interactions timed in a real browser (Debian's headless Chromium): load, search
hit, method select, one-hop expansion, recommend, open a run. Medians over repeats.

    python -m bench app_browser            # this checkout
    SLMREC_BENCH_BASELINE=/path/to/older/checkout python -m bench app_browser
                                           # also time an older checkout side by side

An interaction is timed from the user's action until the new content is on the page, Streamlit
is idle, every graph on the page has drawn, and the browser has painted twice (so the graph
layout, which runs in the browser, is counted). The first load after the server starts is
reported apart (it builds the caches). Goal: every interaction after the first load under 1 s.
The machine is shared: the 1-minute load average is written next to the figures.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import md_table, ratio

REPEATS = 5
GOAL_S = 1.0
SCENARIO = "bundled-demo"


def _settle(page) -> None:
    from tests.app.browser import settle

    settle(page)


def _timed(page, action, expect) -> float:
    t0 = time.perf_counter()
    action()
    expect().first.wait_for()
    _settle(page)
    return time.perf_counter() - t0


def _pick(page, label: str, option: str) -> None:
    from tests.app.browser import pick

    pick(page, label, option)


def _methods(kb) -> list[tuple[str, str]]:
    """Two runnable methods of the component with the most methods, to alternate between."""
    comp = max(kb.components, key=lambda c: len(kb.methods_of(c)))
    ms = sorted(kb.methods_of(comp), key=lambda m: m.name)
    return [(m.id, m.name) for m in (ms[0], ms[-1])]


def measure(root: Path, store: Path, logdir: Path) -> dict[str, list[float]]:
    from slmrec.kb import load_kb
    from tests.app.browser import browser_page, serve

    kb = load_kb()
    searches = [("gptq", kb.methods["gptq"].name), ("lora", kb.methods["lora"].name)]
    methods = _methods(kb)
    times: dict[str, list[float]] = {k: [] for k in
                                     ("first load", "load", "search hit", "method select",
                                      "recommend", "open a run")}
    with serve(store, logdir / f"app-{root.name}.log", root=root) as url:
        with browser_page() as page:
            def load():
                page.goto(url + "/")

            def explorer_ready():
                return page.get_by_text("Typed relations")

            times["first load"].append(_timed(page, load, explorer_ready))
            for _ in range(REPEATS):
                times["load"].append(_timed(page, load, explorer_ready))
            for i in range(REPEATS):
                query, name = searches[i % 2]
                box = page.get_by_label("Search the knowledge base")
                box.fill(query)
                box.press("Enter")
                page.get_by_role("button", name=f"{name} · method").first.wait_for()
                _settle(page)
                times["search hit"].append(_timed(
                    page, lambda: page.get_by_role("button", name=f"{name} · method").first.click(),
                    lambda: page.get_by_role("heading", name=name, exact=True)))
            for i in range(REPEATS):
                mid, name = methods[i % 2]
                if i == 0:  # put the component of these methods on screen first
                    page.goto(url + "/")
                    explorer_ready().first.wait_for()
                    _settle(page)
                    comp = kb.methods[mid].component
                    _pick(page, "Component", kb.components[comp].name)
                    page.get_by_role("heading", name=kb.components[comp].name).first.wait_for()
                    _settle(page)
                times["method select"].append(_timed(
                    page, lambda: _pick(page, "Method", f"{name} ({mid})"),
                    lambda: page.get_by_role("heading", name=name, exact=True)))
            for i in range(REPEATS):
                page.goto(f"{url}/?page=Recommend&rec_scenario={SCENARIO}")
                page.get_by_role("button", name="Recommend", exact=True).wait_for()
                _settle(page)
                times["recommend"].append(_timed(
                    page, lambda: page.get_by_role("button", name="Recommend", exact=True).click(),
                    lambda: page.get_by_role("heading", name="Ranked plans")))
            page.goto(f"{url}/?page=Runs")
            page.get_by_role("heading", name="Runs").first.wait_for()
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Open a run").first \
                .locator("input").wait_for()
            _settle(page)
            for i in range(REPEATS):
                rid = 1 + (i % 2 == 0)  # the newest run opens first; alternate 1, 2, 1, ...
                times["open a run"].append(_timed(
                    page, lambda: _pick(page, "Open a run", f"run {rid}:"),
                    lambda: page.get_by_role("heading", name=f"Run {rid}:")))
    return times


def main() -> dict:
    from tests.app.browser import chromium

    if chromium() is None:
        return {"status": "skipped", "title": "app in a browser",
                "error": "Debian's chromium is not installed (`make browser`)"}
    here = Path(__file__).resolve().parents[1]
    roots = [("this checkout", here)]
    if os.environ.get("SLMREC_BENCH_BASELINE"):
        roots.insert(0, ("baseline", Path(os.environ["SLMREC_BENCH_BASELINE"]).resolve()))
    results, load, errors = {}, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, root in roots:
            store = tmp / f"{label.replace(' ', '-')}.sqlite"
            # Each checkout's own RunStore writes its store (their schemas may differ).
            subprocess.run([sys.executable, str(here / "tests" / "app" / "demo_store.py"),
                            str(store), str(tmp / "run1")], check=True,
                           env={**os.environ, "PYTHONPATH": str(root)})
            load.append(round(os.getloadavg()[0], 2))
            try:
                results[label] = measure(root, store, tmp)
            except Exception as exc:  # noqa: BLE001 (say which checkout failed, keep the other)
                if label == "this checkout":
                    raise
                errors[label] = f"{type(exc).__name__}: {str(exc)[:300]}"
            load.append(round(os.getloadavg()[0], 2))
    mine = results["this checkout"]
    rows, ratios = [], {}
    for key, values in mine.items():
        med = statistics.median(values)
        base = results.get("baseline", {}).get(key)
        rows.append([key, round(med, 3), round(max(values), 3), len(values),
                     round(statistics.median(base), 3) if base else None])
        if key != "first load":
            ratios[f"{key.replace(' ', '_')}_over_1s"] = ratio(
                med / GOAL_S, "<= 1.0", f"median {med:.2f} s of {len(values)}")
    md = md_table(rows, ["interaction", "median s", "max s", "n", "baseline median s"])
    md += "".join(f"\n\n{k} failed: {v}" for k, v in errors.items())
    md += (f"\n\n1-minute load average before/after each checkout: {load} on "
           f"{os.cpu_count()} cores (the machine is shared).")
    return {"title": "app interactions in headless Chromium (medians; goal < 1 s after the "
                     "first load)", "ratios": ratios, "times": results, "load_avg": load,
            "markdown": md, "errors": errors}
