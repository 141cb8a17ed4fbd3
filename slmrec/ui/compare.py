"""Compare two to four methods side by side: requirements, effects, links and sources."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from slmrec.ui.common import (
    EFFECT_UNITS,
    bundle,
    evidence_rows,
    fmt_range,
    fmt_value,
    md_text,
    source_link,
)


def _column(b, mid: str) -> dict[str, str]:
    kb, g = b.kb, b.graph
    m = kb.methods[mid]
    req = g.requirements(mid)
    col = {
        "component": m.component,
        "family": m.family,
        "summary": m.summary,
        "runner": m.runner or "–",
        "data": req["data"] + (f" ({fmt_value(req['data_amount']['count'])} "
                               f"{req['data_amount']['unit']})" if req["data_amount"] else ""),
        "teacher": req["teacher"],
        "tokenizer match": fmt_value(req["tokenizer_match"]),
        "training": fmt_value(req["training"]),
        "compute": req["compute"],
        "hardware to run": fmt_value(req["hardware_to_run"]),
        "hardware to benefit": fmt_value(req["hardware_to_benefit"]),
        "requires (relations)": fmt_value(req["requires"]),
    }
    for kind in ("quality", "recovery", "speedup"):
        figs = getattr(m.effects, kind)
        col[f"{kind} ({EFFECT_UNITS[kind]})"] = "; ".join(
            f"{fmt_range(e.low, e.high)}" + (f" when {fmt_value(e.when)}" if e.when else "")
            + f" [{e.source}]" for e in figs) or "–"
    t = m.effects.transform.model_dump(exclude_defaults=True)
    col["transform"] = fmt_value(t)
    col["comes before"] = fmt_value(g.must_follow(mid))
    col["comes after"] = fmt_value(g.must_precede(mid))
    col["recovered by"] = fmt_value([link.src for link in g.recovered_by(mid)])
    col["conflicts with"] = fmt_value(g.conflicts_with(mid))
    col["sources"] = fmt_value(m.sources)
    # st.table renders its cells as markdown: `$bits ... $` would be typeset as LaTeX.
    return {k: md_text(v) for k, v in col.items()}


def range_chart(rows: list[dict]) -> alt.Chart | None:
    """Each method's published ranges, one panel per effect kind."""
    data = pd.DataFrame([r for r in rows if r["low"] is not None])
    if data.empty:
        return None
    data["label"] = data["method"] + " [" + data["source"] + "]"
    base = alt.Chart(data).encode(
        y=alt.Y("method:N", title=None),
        tooltip=["method", "effect", "range", "when", "setting", "source", "source title"])
    bars = base.mark_rule(strokeWidth=6, opacity=0.6).encode(
        x=alt.X("low:Q", title="published range"), x2="high:Q", color=alt.Color("method:N"))
    ends = base.mark_tick(thickness=2, size=14).encode(x="high:Q", color="method:N")
    starts = base.mark_tick(thickness=2, size=14).encode(x="low:Q", color="method:N")
    return (alt.layer(bars, starts, ends, data=data)
            .facet(row=alt.Row("effect:N", title=None))
            .resolve_scale(x="independent"))


def render() -> None:
    b = bundle()
    kb = b.kb
    st.title("Compare methods")
    ids = sorted(kb.methods, key=lambda i: (kb.methods[i].component, kb.methods[i].name))
    chosen = st.multiselect("Methods to compare (two to four)", ids, key="cmp_methods",
                            max_selections=4,
                            format_func=lambda i: f"{kb.methods[i].name} "
                                                  f"({kb.methods[i].component})")
    if len(chosen) < 2:
        st.info("Pick two to four methods to see them side by side.")
        return
    table = pd.DataFrame({md_text(kb.methods[m].name): _column(b, m) for m in chosen})
    st.table(table)  # a static table wraps long cells (summaries, ranges) instead of cutting them

    rows = [r for m in chosen for r in evidence_rows(kb, m)]
    st.subheader("Effects with their sources")
    if rows:
        chart = range_chart(rows)
        if chart is not None:
            st.altair_chart(chart)
        cols = ["method", "effect", "range", "unit", "when", "metric", "setting", "basis",
                "source", "source title"]
        st.dataframe(pd.DataFrame(rows)[cols], hide_index=True, key="cmp_effects")
    else:
        st.caption("None of these methods records quality, recovery or speed-up figures.")

    st.subheader("Sources")
    cited: dict[str, list[str]] = {}
    for m in chosen:
        rec = kb.methods[m]
        for s in list(rec.sources) + [e.source for k in ("quality", "recovery", "speedup")
                                      for e in getattr(rec.effects, k)]:
            cited.setdefault(s, [])
            if m not in cited[s]:
                cited[s].append(m)
    for s, who in cited.items():
        st.markdown(f"- {source_link(kb, s)} — cited by {', '.join(f'`{w}`' for w in who)}")
