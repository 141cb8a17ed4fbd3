"""The bibliography, and for each source the facts (records, effects, relations) that cite it."""

from __future__ import annotations

import hashlib
from collections import Counter

import pandas as pd
import streamlit as st

from slmrec.kb import KB, iter_citations
from slmrec.schema import SourceKind
from slmrec.ui.common import bundle, evidence_rows, md_text, source_link


def _url(s) -> str:
    if s.url:
        return s.url
    if s.arxiv:
        return f"https://arxiv.org/abs/{s.arxiv}"
    return f"https://doi.org/{s.doi}" if s.doi else ""


def facts_citing(kb: KB, sid: str) -> list[dict]:
    """Each citation of `sid`, with the fact it supports spelled out."""
    rows = []
    for src, who, field in iter_citations(kb):
        if src != sid:
            continue
        kind, _, id = who.partition(":")
        if kind == "method" and field.startswith("effects."):
            effect = field.split(".", 1)[1]
            for ev in evidence_rows(kb, id):
                if ev["source"] == sid and ev["effect"] == effect:
                    when = f" when {ev['when']}" if ev["when"] != "–" else ""
                    rows.append({"record": who, "field": field,
                                 "fact": f"{effect}: {ev['range']} ({ev['unit']}){when}; "
                                         f"{ev['setting']}".rstrip("; ")})
        elif kind == "relation":
            rel = next((r for r in kb.relations.values() if r.id == id), None)
            rows.append({"record": who, "field": field,
                         "fact": rel.note if rel else id})
        else:
            rec = kb.record(id)
            text = getattr(rec, "summary", None) or getattr(rec, "note", None) or \
                getattr(rec, "name", "") or ""
            rows.append({"record": who, "field": field, "fact": text})
    return rows


def render() -> None:
    kb = bundle().kb
    st.title("Sources")
    counts = Counter(s for s, _, _ in iter_citations(kb))
    left, right = st.columns([2, 1])
    text = left.text_input("Filter by id, title, author or venue", key="src_filter")
    kinds = right.multiselect("Kind", [k.value for k in SourceKind], key="src_kinds",
                              placeholder="all kinds")
    needle = text.strip().lower()
    # Most-cited first: the sources the KB leans on most.
    sources = [s for s in sorted(kb.sources.values(),
                                 key=lambda s: (-counts.get(s.id, 0), -s.year, s.id))
               if (not kinds or s.kind.value in kinds)
               and (not needle or needle in " ".join([s.id, s.title, " ".join(s.authors),
                                                      s.venue or ""]).lower())]
    st.caption(f"{len(sources)} of {len(kb.sources)} sources.")
    if not sources:
        st.info("No source matches the filter.")
        return
    table = pd.DataFrame([{"id": s.id, "title": s.title,
                           "authors": ", ".join(s.authors[:3])
                           + (" et al." if len(s.authors) > 3 else ""),
                           "year": s.year, "venue": s.venue or "", "kind": s.kind.value,
                           "link": _url(s), "cited": counts.get(s.id, 0)} for s in sources])
    st.dataframe(table, hide_index=True, key="src_table",
                 column_config={"link": st.column_config.LinkColumn("link"),
                                "year": st.column_config.NumberColumn("year", format="%d")})
    ids = [s.id for s in sources]
    # The dropdown is keyed to the list it offers: when the filter changes the list, a new
    # dropdown shows the source on display (the last one picked, while the filter keeps it),
    # never a stale position in the old list.
    current = st.session_state.get("src_current")
    key = "src_selected_" + hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]
    sid = st.selectbox("Source", ids, key=key, index=ids.index(current) if current in ids else 0,
                       format_func=lambda i: f"{kb.sources[i].title} ({kb.sources[i].year})")
    st.session_state["src_current"] = sid
    s = kb.sources[sid]
    st.markdown("#### " + md_text(s.title))
    st.markdown(source_link(kb, sid))
    if s.authors:
        st.caption(", ".join(s.authors))
    if s.note:
        st.caption(s.note)
    facts = facts_citing(kb, sid)
    st.markdown(f"**Facts that cite it** ({len(facts)})")
    if facts:
        st.dataframe(pd.DataFrame(facts), hide_index=True, key="src_facts")
    else:
        st.caption("Nothing in the KB cites this source yet.")
