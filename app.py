"""slmrec's web app: `slmrec app` (or `streamlit run app.py`). Thin: each page lives in
`slmrec.ui.<page>` and calls the slmrec and runners APIs; nothing here imports torch."""

from __future__ import annotations

import importlib

import streamlit as st

PAGES = {
    "Explorer": "slmrec.ui.explorer",
    "Compare": "slmrec.ui.compare",
    "Recommend": "slmrec.ui.recommend",
    "Runs": "slmrec.ui.runs",
    "Sources": "slmrec.ui.sources",
}

st.set_page_config(page_title="slmrec", page_icon="🧭", layout="wide")
with st.sidebar:
    st.markdown("## slmrec")
    st.caption("The small-language-model lifecycle: knowledge, recommendations, runs.")
    page = st.radio("Page", list(PAGES), key="page", bind="query-params")
importlib.import_module(PAGES[page]).render()
