"""AppTest: methods side by side, and the bibliography with the facts that cite each source."""

from __future__ import annotations

from tests.app.conftest import frame, new_app
from slmrec.ui.common import md_text
from tests.app.test_recommend import keyed


def _label(kb, mid: str) -> str:
    return f"{kb.methods[mid].name} ({kb.methods[mid].component})"


def test_compare_needs_two_methods_then_shows_them_side_by_side(kb):
    with_effects = [m.id for m in kb.methods.values() if m.effects.quality] or list(kb.methods)
    chosen = (with_effects + [m for m in kb.methods if m not in with_effects])[:3]
    at = new_app("Compare")
    assert "Pick two to four methods" in at.info[0].value
    at.multiselect(key="cmp_methods").set_value(chosen[:1]).run()
    assert at.info and not at.exception
    at.multiselect(key="cmp_methods").set_value(chosen).run()
    assert not at.exception and not at.info
    table = at.table[0].value
    # st.table renders markdown: names and values are escaped (no LaTeX, links or emphasis).
    assert list(table.columns) == [md_text(kb.methods[m].name) for m in chosen]
    for row in ("data", "teacher", "compute", "hardware to run", "transform", "sources"):
        assert row in table.index
    assert table.loc["component", md_text(kb.methods[chosen[0]].name)] == \
        md_text(kb.methods[chosen[0]].component)
    md = "\n".join(m.value for m in at.markdown)
    for src in kb.methods[chosen[0]].sources:
        assert f"`{src}`" in md
    if kb.methods[chosen[0]].effects.quality:
        effects = frame(at, "effect")
        assert chosen[0] in set(effects["method"])
        assert at.get("vega_lite_chart"), "the range chart is drawn"


def test_compare_caps_the_selection_at_four(kb):
    at = new_app("Compare")
    assert at.multiselect(key="cmp_methods").proto.max_selections == 4


def test_sources_filter_and_facts_citing_a_source(kb):
    from slmrec.kb import iter_citations

    cited = {}
    for sid, who, field in iter_citations(kb):
        cited.setdefault(sid, []).append((who, field))
    sid = max(cited, key=lambda s: len(cited[s]))
    source = kb.sources[sid]
    at = new_app("Sources")
    assert not at.exception
    assert len(at.dataframe[0].value) == len(kb.sources)
    at.text_input(key="src_filter").input(source.title[:25]).run()
    listed = at.dataframe[0].value
    assert sid in set(listed["id"]) and len(listed) <= len(kb.sources)
    keyed(at.selectbox, "src_selected_").set_value(sid).run()
    assert not at.exception
    facts = frame(at, "fact")
    assert len(facts) == len(cited[sid])
    assert set(facts["record"]) == {who for who, _ in cited[sid]}
    at.text_input(key="src_filter").input("no-such-source-anywhere").run()
    assert "No source matches the filter." in [i.value for i in at.info]


def test_the_sources_dropdown_shows_the_source_on_display(kb):
    """Found: after the list changed, the dropdown named one source and the page showed
    another. The dropdown is now keyed to its list and starts at the source on display."""
    at = new_app("Sources")
    box = keyed(at.selectbox, "src_selected_")
    sid = _id_of(kb, box.options[3])
    box.set_value(sid).run()
    shown = next(m.value for m in at.markdown if m.value.startswith("#### "))
    assert shown == "#### " + md_text(kb.sources[sid].title)
    # Narrow the list so that the source moves to another position: dropdown and page agree.
    at.text_input(key="src_filter").input(kb.sources[sid].title[:12]).run()
    box = keyed(at.selectbox, "src_selected_")
    assert box.value == sid
    assert next(m.value for m in at.markdown if m.value.startswith("#### ")) == \
        "#### " + md_text(kb.sources[sid].title)


def _id_of(kb, label: str) -> str:
    return next(s.id for s in kb.sources.values() if f"{s.title} ({s.year})" == label)


def test_compare_never_typesets_dollar_text_as_latex(kb):
    """Found: Compare rendered `$bits, group_size = $` as LaTeX."""
    from slmrec.ui.compare import _column
    from slmrec.ui.common import bundle

    mid = next(m.id for m in kb.methods.values()
               if "$" in str(m.effects.transform.model_dump(exclude_defaults=True)))
    col = _column(bundle(), mid)
    assert "$" in col["transform"]
    for text in col.values():  # every dollar escaped: markdown shows it, KaTeX never sees it
        assert all(i > 0 and text[i - 1] == "\\" for i, ch in enumerate(text) if ch == "$"), text
