"""Shared pieces of the app: cached KB/graph/index, user-error display, optional modules, and
small formatting helpers. Presentation only."""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator

import streamlit as st

from slmrec.errors import SlmrecError
from slmrec.graph import LifecycleGraph
from slmrec.kb import KB, SHIPPED_KB, load_kb
from slmrec.schema import ComponentClass, Evidence

CLASS_BADGE = {ComponentClass.main: ":blue-badge[main]",
               ComponentClass.optional: ":green-badge[optional]",
               ComponentClass.cross_cutting: ":orange-badge[cross-cutting]"}
EFFECT_UNITS = {"quality": "% quality loss (negative: a gain)",
                "recovery": "fraction of the loss recovered",
                "speedup": "× decode speed-up"}


@dataclass
class Bundle:
    kb: KB
    graph: LifecycleGraph


@st.cache_resource(show_spinner="Loading the knowledge base", max_entries=4)
def _load(overlay: str, signature: tuple) -> Bundle:  # keyed on $SLMREC_KB and the files' state
    kb = load_kb()
    # The search index needs scikit-learn (seconds to import): built with the KB, in the first
    # load, so that the first search answers at once. (Not in a background thread: importing
    # the same modules from two threads can deadlock Python's import locks.)
    text_index_of(kb)
    return Bundle(kb, LifecycleGraph(kb))


def _signature(overlay: str) -> tuple:
    """Count and newest modification time of the KB's YAML files: an edited KB reloads."""
    roots = [SHIPPED_KB] + ([Path(overlay)] if overlay else [])
    stamps = [p.stat().st_mtime_ns for r in roots if r.is_dir() for p in r.rglob("*.yaml")]
    return (len(stamps), max(stamps, default=0))


_INDEX_LOCK = threading.Lock()
_INDEXES: dict[int, Any] = {}


def text_index_of(kb: KB):
    """The KB's search index, built once per loaded KB (a search during the build waits)."""
    with _INDEX_LOCK:
        if id(kb) not in _INDEXES:
            from slmrec.textsearch import TextIndex

            _INDEXES.clear()  # an edited KB replaces the old one
            _INDEXES[id(kb)] = (kb, TextIndex(kb))  # holding kb keeps its id unique
        return _INDEXES[id(kb)][1]


def text_index(version: str | None = None):
    return text_index_of(bundle().kb)


def kb_key() -> tuple:
    """What identifies the loaded KB: the overlay and the state of its files. Cached views of
    the KB take it as their first argument."""
    overlay = os.environ.get("SLMREC_KB", "")
    return (overlay, _signature(overlay))


def bundle() -> Bundle:
    """The KB and its graph, loaded once per server; a broken KB stops the page with its
    problems."""
    try:
        overlay = os.environ.get("SLMREC_KB", "")
        return _load(overlay, _signature(overlay))
    except SlmrecError as exc:
        st.error("The knowledge base has problems; fix them and reload:")
        show_problems(exc)
        st.stop()
        raise  # unreachable: st.stop() raises


def show_problems(exc: SlmrecError) -> None:
    """One inline error per problem: the file, the field and what is valid. Never a traceback."""
    for problem in exc.problems:
        st.error(str(problem))


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a user mistake inline and carry on rendering the rest of the page."""
    try:
        yield
    except SlmrecError as exc:
        show_problems(exc)


def optional(module: str) -> ModuleType | None:
    """Import a module that another part of the project may not have shipped yet."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            return None
        raise


def missing(what: str, module: str) -> None:
    st.info(f"{what} needs `{module}`, which is not part of this build yet.")


def graph(dot: str, slot: str) -> None:
    """`st.graphviz_chart` that starts afresh whenever the DOT changes. Streamlit keeps one
    d3-graphviz instance per chart position, and that instance animates from the old graph to
    the new one, sampling every path (seconds of browser time for a few dozen edges). Two
    alternating positions, one left empty, make each new graph a fresh chart: it is laid out
    once and drawn, with no animation (bench/app_browser.py measures the difference)."""
    key = f"_graph_{slot}"
    digest = hashlib.sha1(dot.encode()).hexdigest()
    last = st.session_state.get(key)
    parity = 0 if last is None else last[1] if last[0] == digest else 1 - last[1]
    st.session_state[key] = (digest, parity)
    slots = (st.empty(), st.empty())
    slots[parity].graphviz_chart(dot, width="stretch")


# ---- formatting ----------------------------------------------------------------------------

def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and x != x)  # None or NaN


def fmt_range(low: float | None, high: float | None) -> str:
    low, high = (None if _missing(low) else low), (None if _missing(high) else high)
    if low is None and high is None:
        return "unpublished"
    if low == high or high is None:
        return f"{_num(low)}"
    if low is None:
        return f"≤ {_num(high)}"
    return f"{_num(low)} … {_num(high)}"


def _num(x: Any) -> str:
    if _missing(x):
        return "–"
    if isinstance(x, float):
        if x == int(x) and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.4g}"
    return str(x)


def fmt_value(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items())
    return _num(value)


def evidence_rows(kb: KB, method_id: str) -> list[dict]:
    """One row per effect figure of a method, with its source's title."""
    m = kb.methods[method_id]
    rows = []
    for kind in ("quality", "recovery", "speedup"):
        ev: Evidence
        for ev in getattr(m.effects, kind):
            src = kb.sources.get(ev.source)
            rows.append({
                "method": method_id, "effect": kind, "range": fmt_range(ev.low, ev.high),
                "unit": EFFECT_UNITS[kind], "when": fmt_value(ev.when), "metric": ev.metric or "",
                "setting": ev.setting or ev.note or "", "basis": ev.basis.value,
                "source": ev.source, "source title": src.title if src else "",
                "low": ev.low, "high": ev.high,
            })
    return rows


def source_link(kb: KB, sid: str) -> str:
    """Markdown: the source's title, year and a link to its identifier."""
    s = kb.sources.get(sid)
    if s is None:
        return f"`{sid}`"
    url = s.url or (f"https://arxiv.org/abs/{s.arxiv}" if s.arxiv else
                    f"https://doi.org/{s.doi}" if s.doi else "")
    ident = f"[{md_text(s.identifier)}]({url})" if url else md_text(s.identifier)
    return f"`{sid}` {md_text(s.title)} ({s.year}) {ident}"


def id_list(ids: Iterable[str]) -> str:
    ids = list(ids)
    return ", ".join(f"`{i}`" for i in ids) if ids else "–"


def name_of(kb: KB, id: str) -> str:
    rec = kb.record(id)
    return getattr(rec, "name", None) or getattr(rec, "title", None) or id


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~$]|:(?=\S))")


def md_text(value: Any) -> str:
    """A user-supplied name as literal text inside Markdown: every character Markdown (or
    Streamlit's HTML, links, images, emoji shortcodes, LaTeX) would interpret is escaped, so a run
    or plan name such as `![x](http://host/t.png)` shows as written and fetches nothing."""
    return _MD_SPECIAL.sub(r"\\\1", str(value)).replace("\n", " ")


def md_code(value: Any) -> str:
    """A user-supplied value inside an inline code span (backticks cannot close it early)."""
    return "`" + str(value).replace("`", "'").replace("\n", " ") + "`"
