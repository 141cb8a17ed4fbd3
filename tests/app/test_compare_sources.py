"""AppTest: methods side by side, and the bibliography with the facts that cite each source."""

from __future__ import annotations

from tests.app.conftest import frame, new_app


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
    assert list(table.columns) == [kb.methods[m].name for m in chosen]
    for row in ("data", "teacher", "compute", "hardware to run", "transform", "sources"):
        assert row in table.index
    assert table.loc["component", kb.methods[chosen[0]].name] == kb.methods[chosen[0]].component
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
    at.selectbox(key="src_selected").set_value(sid).run()
    assert not at.exception
    facts = frame(at, "fact")
    assert len(facts) == len(cited[sid])
    assert set(facts["record"]) == {who for who, _ in cited[sid]}
    at.text_input(key="src_filter").input("no-such-source-anywhere").run()
    assert "No source matches the filter." in [i.value for i in at.info]
