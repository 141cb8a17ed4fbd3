"""AppTest: the lifecycle explorer (overview, filters, drill-down, method detail, search)."""

from __future__ import annotations

import re

from slmrec.schema import ComponentClass
from tests.app.conftest import frame, new_app


def dots(at) -> list[str]:
    return [el.proto.spec for el in at.get("graphviz_chart")]


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_overview_shows_classes_flow_and_components(kb):
    at = new_app()
    assert at.title[0].value == "Lifecycle explorer"
    overview = dots(at)[0]
    for c in kb.components.values():
        assert f'"{c.id}"' in overview, c.id
    for cls in ("cluster_main", "cluster_optional", "cluster_cross_cutting"):
        assert cls in overview
    # Main stages are chained in stage order (the flow), drawn bold blue.
    mains = [c.id for c in kb.main_components()]
    assert f'"{mains[0]}" -> "{mains[1]}" [penwidth=3' in overview
    assert not at.error


def test_select_component_and_method(kb):
    comp = max(kb.components, key=lambda c: len(kb.methods_of(c)))
    at = new_app()
    at.selectbox(key="ex_component").set_value(comp).run()
    methods = at.selectbox(key="ex_method").options
    assert len(methods) == len(kb.methods_of(comp))
    target = sorted(kb.methods_of(comp), key=lambda m: m.name)[-1]
    at.selectbox(key="ex_method").set_value(target.id).run()
    assert not at.exception
    text = markdown(at)
    assert f"### {target.name}" in text
    assert f"`{target.id}` · component `{comp}`" in text
    for part in ("**Requirements**", "**Links**", "**Effects and their sources**", "**Sources**"):
        assert part in text
    req = next(m.value for m in at.markdown if m.value.startswith("- requires: "))
    assert f"- data: {target.requires.data.value}" in req
    links = next(m.value for m in at.markdown if m.value.startswith("- comes before: "))
    for label in ("comes after", "recovered by", "conflicts with", "reused in"):
        assert f"- {label}: " in links
    conflicts = sorted({r.dst if r.src == target.id else r.src for r in kb.relations.values()
                        if r.kind.value == "conflicts" and target.id in (r.src, r.dst)})
    assert "- conflicts with: " + (", ".join(f"`{c}`" for c in conflicts) or "–") in links
    # The method is highlighted in its component's graph (its family, when drawn by family).
    fam = re.escape(f"family:{target.family}")
    assert re.search(rf'"{fam}" \[[^]]*color="#e74c3c"', dots(at)[1]) or \
        re.search(rf'"{re.escape(target.id)}" \[[^]]*color="#e74c3c"', dots(at)[1])
    at.radio(key=f"ex_level_{comp}").set_value("methods").run()
    assert re.search(rf'"{re.escape(target.id)}" \[[^]]*color="#e74c3c"', dots(at)[1])


def test_filter_by_component_class(kb):
    at = new_app()
    at.sidebar.multiselect(key="ex_classes").set_value(["optional"]).run()
    assert not at.exception
    options = at.selectbox(key="ex_component").options  # labels: "Name (class)"
    optional = {f"{c.name} (optional)" for c in kb.components.values()
                if c.cls is ComponentClass.optional}
    assert options and set(options) == optional
    overview = dots(at)[0]
    assert "cluster_main" not in overview and "cluster_optional" in overview
    at.sidebar.multiselect(key="ex_classes").set_value([]).run()
    assert "Pick at least one component class in the sidebar." in [i.value for i in at.info]


def test_filter_by_family(kb):
    comp = max(kb.components, key=lambda c: len({m.family for m in kb.methods_of(c)}))
    family = sorted({m.family for m in kb.methods_of(comp)})[0]
    at = new_app()
    at.sidebar.multiselect(key="ex_families").set_value([family]).run()
    assert not at.exception
    options = at.selectbox(key="ex_component").options
    having = [c for c in kb.components.values()
              if any(m.family == family for m in kb.methods_of(c.id))]
    assert set(options) == {f"{c.name} ({c.cls.value})" for c in having}
    at.selectbox(key="ex_component").set_value(comp).run()
    table = frame(at, "runner")
    assert set(table["family"]) == {family}
    assert set(at.selectbox(key="ex_method").options) == {
        f"{kb.methods[i].name} ({i})" for i in table["id"]}


def test_filter_by_relation_kind(kb):
    at = new_app()
    at.sidebar.multiselect(key="ex_kinds").set_value(["precedes"]).run()
    assert not at.exception
    component_graph = dots(at)[1]
    kinds = set(re.findall(r'\[label="([a-z-]+)(?: ×\d+)?", tooltip=', component_graph))
    assert kinds <= {"precedes"}
    legend = at.table[0].value
    assert legend.loc["precedes", "shown"] == "yes"
    assert legend.loc["conflicts", "shown"] == "filtered out"


def test_search_opens_a_method(kb):
    target = next(m for m in kb.methods.values() if m.runner)
    at = new_app()
    at.text_input(key="ex_search").input(target.name).run()
    at.button(key=f"hit-{target.id}").click().run()
    assert not at.exception
    assert at.selectbox(key="ex_component").value == target.component
    assert at.selectbox(key="ex_method").value == target.id
    assert f"### {target.name}" in markdown(at)


def test_search_opens_a_source_and_reports_no_match(kb):
    source = next(iter(kb.sources.values()))
    at = new_app()
    at.text_input(key="ex_search").input(source.title).run()
    at.button(key=f"hit-{source.id}").click().run()
    assert not at.exception
    assert f"source `{source.id}`" in markdown(at)
    at.text_input(key="ex_search").input("qqqqzzzzxxxx").run()
    assert any("No matches" in c.value for c in at.caption)
