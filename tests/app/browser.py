"""Drive the real app in headless Chromium: shared by the browser test and tests/app/screenshots.py.

The server is started through the project's own command (`python -m slmrec app --port N`) on a
free loopback port. The browser is Debian's `chromium` (never a playwright download), launched with
the flags in /work/shared/reference/runtime.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 1000}
WAIT_MS = 90_000  # generous: two shared cores


def chromium() -> str | None:
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(store: Path, log: Path, timeout: float = 90.0, root: Path = ROOT) -> Iterator[str]:
    """Start `slmrec app` on a free loopback port; yield its URL; stop it (and only it).
    `root`: the source tree to serve (the bench compares two checkouts)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(root),
           "SLMREC_STORE": str(store), "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "slmrec", "app", "--port", str(port)],
                                cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"slmrec app exited with {proc.returncode}:\n"
                                   + log.read_text(encoding="utf-8")[-3000:])
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"slmrec app did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this call created: app + streamlit
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@contextmanager
def browser_page() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    exe = chromium()
    if exe is None:
        raise RuntimeError("Debian's chromium is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


def wait_idle(page) -> None:
    """Until Streamlit has finished the current script run (no 'Running…' indicator)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS)


def open_explorer(page, url: str, shot: Path | None = None) -> None:
    page.goto(url + "/")
    page.get_by_role("heading", name="Lifecycle explorer").wait_for()
    page.locator('[data-testid="stGraphVizChart"] svg').first.wait_for()
    page.get_by_text("Typed relations").first.wait_for()
    wait_idle(page)
    if shot is not None:
        # Frame the lifecycle graph: all three component classes and the flow between them.
        page.set_viewport_size({"width": VIEWPORT["width"], "height": 1250})
        heading = page.get_by_role("heading", name="Lifecycle", exact=True)
        heading.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(800)  # let the graph layout settle
        page.screenshot(path=str(shot))
        page.set_viewport_size(VIEWPORT)


def recommend_named(page, url: str, scenario: str, expect: str, shot: Path | None = None) -> None:
    """Open the Recommend page for a named scenario, run it, wait until `expect` shows."""
    page.goto(f"{url}/?page=Recommend&rec_scenario={scenario}")
    page.get_by_role("heading", name="Recommend").wait_for()
    wait_idle(page)
    page.get_by_role("button", name="Recommend", exact=True).click()
    page.get_by_text(expect).first.wait_for()
    wait_idle(page)
    if shot is not None:
        # Frame the answer: from the ranked plans through the Pareto chart to the first step.
        page.set_viewport_size({"width": VIEWPORT["width"], "height": 1300})
        page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
        heading = page.get_by_role("heading", name="Ranked plans")
        heading.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(800)  # charts draw after the data arrives
        page.screenshot(path=str(shot), full_page=False)
        page.set_viewport_size(VIEWPORT)


def settle(page) -> None:
    """Idle, every graph drawn, and two frames painted."""
    wait_idle(page)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stGraphVizChart\"]')]"
        ".every(el => el.querySelector('svg'))", timeout=WAIT_MS)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def selectbox(page, label: str):
    return page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first


def shown(page, label: str) -> str:
    """What the selectbox labelled `label` shows: its text, and its input's value (where
    Streamlit's searchable select writes the chosen option)."""
    box = selectbox(page, label)
    values = box.locator("input").evaluate_all("els => els.map(e => e.value)")
    return " ".join([box.inner_text()] + values)


def pick(page, label: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `label`, as a user would (open, type, Enter)."""
    box = selectbox(page, label).locator("input")
    box.click()
    box.fill(option)
    page.keyboard.press("Enter")


def multi_pick(page, label: str, option: str) -> None:
    box = page.locator('[data-testid="stMultiSelect"]').filter(has_text=label).first
    box.locator("input").click()
    box.locator("input").fill(option)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")


def method_chart(page):
    """The explorer's method view: the graph after the 'Direct relations' heading."""
    return page.locator('[data-testid="stGraphVizChart"]').nth(2)
