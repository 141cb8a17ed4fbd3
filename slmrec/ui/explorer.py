"""Lifecycle explorer: components and their flow, drill-down into a component's methods and
relations, a method's requirements, effects and links, and a search box over the KB."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from slmrec.describe import describe
from slmrec.graph import RELATION_KINDS
from slmrec.schema import ComponentClass
from slmrec.ui import draw, method_view
from slmrec.ui.common import (
    CLASS_BADGE,
    Bundle,
    bundle,
    evidence_rows,
    fmt_value,
    graph,
    id_list,
    kb_key,
    md_text,
    name_of,
    source_link,
    text_index,
    user_errors,
)

CLASSES = [c.value for c in ComponentClass]


# ---- cached views of the KB: keyed on kb_key(), so an edited KB redraws ---------------------
# cache_resource hands back the same object (no copy, no serialisation): callers only read them.


@st.cache_resource(show_spinner=False, max_entries=64)
def _lifecycle_dot(key: tuple, classes: tuple, kinds: tuple, selected: str | None,
                   lift: bool) -> str:
    b = bundle()
    return draw.lifecycle_dot(b.kb, b.graph, classes, kinds, selected, lift)


@st.cache_resource(show_spinner=False, max_entries=256)
def _component_view(key: tuple, comp: str, ids: tuple, kinds: tuple, outside: bool,
                    method: str | None, level: str) -> tuple[int, int, str]:
    kb = bundle().kb
    rels, implied = draw.component_relations(kb, ids, kinds, outside)
    return len(rels), implied, draw.component_dot(kb, comp, ids, kinds, outside, method, level)


@st.cache_resource(show_spinner=False, max_entries=512)
def _method_view(key: tuple, mid: str, kinds: tuple, expand: tuple) -> str:
    return method_view.method_dot(bundle().kb, mid, kinds, expand)


@st.cache_resource(show_spinner=False, max_entries=512)
def _groups(key: tuple, mid: str, kinds: tuple) -> list[method_view.Group]:
    return method_view.relation_groups(bundle().kb, mid, kinds)


@st.cache_resource(show_spinner=False, max_entries=512)
def _describe(key: tuple, id: str) -> dict:
    b = bundle()
    return describe(b.kb, b.graph, id)


def open_id(id: str) -> None:
    """Callback: focus the explorer on any KB id (search hits, links from other pages)."""
    kb = bundle().kb
    kind = kb.kind_of(id)
    st.session_state["page"] = "Explorer"
    if kind in ("method", "component"):
        comp = kb.methods[id].component if kind == "method" else id
        cls = kb.components[comp].cls.value
        if cls not in st.session_state.get("ex_classes", CLASSES):
            st.session_state["ex_classes"] = list(st.session_state["ex_classes"]) + [cls]
        st.session_state["ex_families"] = []
        st.session_state["ex_component"] = comp
        if kind == "method":
            st.session_state["ex_method"] = id
        else:
            st.session_state.pop("ex_method", None)
        st.session_state["ex_other"] = None
    else:
        st.session_state["ex_other"] = id


def _component_options(b: Bundle, classes: list[str], families: list[str]) -> list[str]:
    kb, g = b.kb, b.graph
    ordered = g.stage_order() + g.components(ComponentClass.optional) + \
        g.components(ComponentClass.cross_cutting)
    out = [c for c in ordered if kb.components[c].cls.value in classes]
    if families:
        out = [c for c in out if any(m.family in families for m in kb.methods_of(c))]
    return out


def _keep_valid(key: str, options: list, multi: bool = False) -> None:
    """Drop a remembered widget value that the current options no longer offer."""
    if key not in st.session_state:
        return
    value = st.session_state[key]
    if multi:
        st.session_state[key] = [v for v in value if v in options]
    elif value not in options:
        del st.session_state[key]


def sidebar_filters(b: Bundle) -> tuple[list[str], list[str], list[str], bool, bool]:
    kb = b.kb
    families = sorted({m.family for m in kb.methods.values()})
    with st.sidebar:
        st.subheader("Filters")
        st.session_state.setdefault("ex_classes", CLASSES)
        st.session_state.setdefault("ex_kinds", list(RELATION_KINDS))
        _keep_valid("ex_families", families, multi=True)
        classes = st.multiselect("Component class", CLASSES, key="ex_classes")
        fams = st.multiselect("Method family", families, key="ex_families",
                              placeholder="all families")
        kinds = st.multiselect("Relation kind", list(RELATION_KINDS), key="ex_kinds")
        outside = st.checkbox("Component graph: show links to other components", value=False,
                              key="ex_outside")
        lift = st.checkbox("Lifecycle: lift method relations to their components", value=False,
                           key="ex_lift")
    return classes, fams, kinds, outside, lift


def search_box(b: Bundle) -> None:
    text = st.text_input("Search the knowledge base", key="ex_search",
                         placeholder="e.g. gptq, 4-bit quantization, distillation, lora")
    if not text.strip():
        return
    hits = text_index(b.kb.version).search(text, limit=8)
    if not hits:
        st.caption(f"No matches for '{text}'.")
        return
    st.caption(f"{len(hits)} best matches; open one:")
    cols = st.columns(4)
    for i, hit in enumerate(hits):
        cols[i % 4].button(f"{hit.name} · {hit.kind}", key=f"hit-{hit.id}", on_click=open_id,
                           args=(hit.id,), help=f"{hit.id} (score {hit.score})",
                           width="stretch")


def other_panel(b: Bundle, id: str) -> None:
    """A search hit that is neither a method nor a component: source, hardware, model."""
    data = describe(b.kb, b.graph, id)
    rec = data["record"]
    with st.container(border=True):
        st.markdown(f"**{name_of(b.kb, id)}** · {data['kind']} `{id}` · defined in "
                    f"`{data['defined_in']}`")
        if data["kind"] == "source":
            st.markdown(source_link(b.kb, id))
            if data.get("cited_by"):
                st.markdown("Cited by: " + ", ".join(f"`{c}`" for c in data["cited_by"]))
        st.json(rec, expanded=False)
        st.button("Close", key="ex_other_close",
                  on_click=lambda: st.session_state.update(ex_other=None))


def overview(b: Bundle, classes: list[str], kinds: list[str], lift: bool,
             selected: str | None) -> None:
    st.subheader("Lifecycle")
    st.caption("Main stages in order (blue boxes; the bold arrows are the flow), optional "
               "components (green, dashed) and cross-cutting concerns (orange, cut corners). Other "
               "arrows are typed relations between components: feedback (orange, dashed), "
               "constraints (dotted), reuse, requirements.")
    if not classes:
        st.info("Pick at least one component class in the sidebar.")
        return
    graph(_lifecycle_dot(kb_key(), tuple(classes), tuple(kinds), selected, lift), "lifecycle")


def legend(kinds: list[str]) -> None:
    with st.expander("Relation kinds (legend)"):
        st.table(pd.DataFrame([{"kind": k, "meaning": draw.KIND_MEANING.get(k, ""),
                                "shown": "yes" if k in kinds else "filtered out"}
                               for k in RELATION_KINDS]).set_index("kind"))


def component_panel(b: Bundle, comp: str, families: list[str], kinds: list[str],
                    outside: bool, method: str | None) -> list[str]:
    kb = b.kb
    c = kb.components[comp]
    st.markdown(f"### {c.name} {CLASS_BADGE[c.cls]}")
    st.write(c.summary)
    st.caption("Sources: " + "; ".join(source_link(kb, s) for s in c.sources))
    for p in c.pathways:
        st.markdown(f"- **Pathway {p.name}** (`{p.id}`): {p.summary}")
    methods = [m for m in kb.methods_of(comp) if not families or m.family in families]
    methods.sort(key=lambda m: (m.family, m.name))
    if not methods:
        st.info("No methods in this component" + (" match the family filter." if families else "."))
        return []
    st.dataframe(pd.DataFrame([{"id": m.id, "name": m.name, "family": m.family,
                                "data": m.requires.data.value, "runner": m.runner or "",
                                "summary": m.summary} for m in methods]),
                 hide_index=True, key="ex_methods_table")
    ids = [m.id for m in methods]
    level = st.radio("Draw", ["families", "methods"], horizontal=True, key=f"ex_level_{comp}",
                     index=0 if len(methods) > 12 else 1,
                     help="families: one node per method family, relations counted")
    n_rels, implied, dot = _component_view(kb_key(), comp, tuple(ids), tuple(kinds), outside,
                                           method, level)
    st.caption(f"{len(methods)} methods; {n_rels} relations of the selected kinds drawn"
               + (f" ({implied} `precedes` edges implied by others left out)" if implied else "")
               + ("" if outside else "; links to other components hidden (sidebar)") + ".")
    graph(dot, "component")
    legend(kinds)
    return [m.id for m in methods]


def method_panel(b: Bundle, mid: str, kinds: list[str]) -> None:
    kb, g = b.kb, b.graph
    m = kb.methods[mid]
    data = _describe(kb_key(), mid)
    st.markdown(f"### {m.name}")
    st.markdown(f"`{m.id}` · component `{m.component}` · family `{m.family}` · "
                + (f"runner `{m.runner}`" if m.runner else "no runner (knowledge only here)")
                + ("" if m.plannable else " · not a plan step")
                + f" · defined in `{data['defined_in']}`")
    st.write(m.summary)
    if m.aliases:
        st.caption("Also known as: " + ", ".join(m.aliases))
    relations_view(b, mid, kinds)

    req = data["requirements"]
    left, right = st.columns(2)
    with left:
        st.markdown("**Requirements**")
        lines = [f"- {k.replace('_', ' ')}: {fmt_value(v)}" for k, v in req.items()
                 if k != "data_amount"]
        if req.get("data_amount"):
            amount = req["data_amount"]
            lines.insert(2, f"- data amount: {fmt_value(amount['count'])} {amount['unit']}"
                         + (f" ({amount['note']})" if amount.get("note") else ""))
        if m.requires.note:
            lines.append(f"- note: {m.requires.note}")
        st.markdown("\n".join(lines))
    with right:
        st.markdown("**Links**")
        reuse_in = g.reused_methods().get(mid, [])
        links = {
            "comes before": g.must_follow(mid),
            "comes after": g.must_precede(mid),
            "recovers": sorted({r.dst for r in kb.relations_from(mid)
                                if r.kind.value == "recovers"}),
            "recovered by": data["recovered_by"],
            "conflicts with": data["conflicts_with"],
            "reused in": [c for c in reuse_in if c != m.component],
            "reuses": sorted({r.dst for r in kb.relations_from(mid) if r.kind.value == "reuses"}),
        }
        st.markdown("\n".join(f"- {k}: {id_list(v)}" for k, v in links.items()))

    st.markdown("**Effects and their sources**")
    ev = evidence_rows(kb, mid)
    if ev:
        cols = ["effect", "range", "unit", "when", "metric", "setting", "basis", "source",
                "source title"]
        st.dataframe(pd.DataFrame(ev)[cols], hide_index=True, key="ex_effects")
    else:
        st.caption("No quality, recovery or speed-up figures recorded.")
    transform = {k: v for k, v in m.effects.transform.model_dump(exclude_defaults=True).items()}
    if transform:
        st.markdown("Transform: " + ", ".join(f"`{k}` = {md_text(fmt_value(v))}"
                                              for k, v in transform.items()))
    if m.params:
        with st.expander(f"Parameters ({len(m.params)})"):
            st.dataframe(pd.DataFrame([{"name": n, "type": p.type, "default": fmt_value(p.default),
                                        "range": fmt_value([p.min, p.max]) if p.min is not None
                                        or p.max is not None else "",
                                        "choices": fmt_value(p.choices),
                                        "search": fmt_value(p.search),
                                        "description": p.description}
                                       for n, p in m.params.items()]), hide_index=True)

    rels = [r for r in data["relations"]["out"] + data["relations"]["in"] if r["kind"] in kinds]
    seen, unique = set(), []
    for r in rels:
        key = (r["from"], r["kind"], r["to"])
        if key not in seen:
            seen.add(key)
            unique.append({**r, "sources": ", ".join(r["sources"])})
    st.markdown(f"**Typed relations** ({len(unique)} of the selected kinds)")
    if unique:
        st.dataframe(pd.DataFrame(unique)[["from", "kind", "to", "note", "sources"]],
                     hide_index=True, key="ex_rels")
    st.markdown("**Sources**")
    for s in data.get("sources", []):
        st.markdown("- " + source_link(kb, s["id"]))


def relations_view(b: Bundle, mid: str, kinds: list[str]) -> None:
    """The method at the centre, its direct relations grouped by kind; expand a neighbour to
    see its own relations, one hop further; open it to make it the centre."""
    kb = b.kb
    groups = _groups(kb_key(), mid, tuple(kinds))
    st.markdown("**Direct relations**")
    if not groups:
        st.caption("No relation of the selected kinds touches this method.")
        return
    near = method_view.neighbours(groups)
    st.caption(" · ".join(f"{g.label} {len(g.members)}" for g in groups)
               + ". Only relations that touch this method are drawn; boxes list the related "
                 "records, grouped by kind (arrows follow each relation's direction).")
    key = f"ex_expand_{mid}"
    _keep_valid(key, near, multi=True)
    left, right = st.columns([3, 2])
    expand = left.multiselect("Expand one hop from", near, key=key, max_selections=3,
                              format_func=lambda i: name_of(kb, i),
                              placeholder="a related record, to see its own relations")
    methods_near = [n for n in near if n in kb.methods]
    right.selectbox("Open a related method", [""] + methods_near, key=f"ex_open_{mid}",
                    format_func=lambda i: name_of(kb, i) if i else "–",
                    on_change=_open_related, args=(f"ex_open_{mid}",))
    graph(_method_view(kb_key(), mid, tuple(kinds), tuple(expand)), "method")


def _open_related(key: str) -> None:
    target = st.session_state.get(key)
    if target:
        st.session_state[key] = ""
        open_id(target)


def render() -> None:
    b = bundle()
    kb = b.kb
    st.title("Lifecycle explorer")
    st.caption(f"Knowledge base {kb.version}: {len(kb.components)} components, "
               f"{len(kb.methods)} methods, {len(kb.relations)} relations, "
               f"{len(kb.sources)} sources.")
    classes, families, kinds, outside, lift = sidebar_filters(b)
    with user_errors():
        search_box(b)
    other = st.session_state.get("ex_other")
    if other and kb.kind_of(other):
        with user_errors():
            other_panel(b, other)

    options = _component_options(b, classes, families)
    _keep_valid("ex_component", options)
    overview(b, classes, kinds, lift,
             st.session_state.get("ex_component", options[0] if options else None))
    st.divider()
    if not options:
        st.info("No component matches the filters.")
        return
    comp = st.selectbox("Component", options, key="ex_component",
                        format_func=lambda c: f"{kb.components[c].name} "
                                              f"({kb.components[c].cls.value})")
    pre = st.session_state.get("ex_method")
    methods = component_panel(b, comp, families, kinds, outside, pre)
    if not methods:
        return
    st.divider()
    _keep_valid("ex_method", methods)
    mid = st.selectbox("Method", methods, key="ex_method",
                       format_func=lambda i: f"{kb.methods[i].name} ({i})")
    with user_errors():
        method_panel(b, mid, kinds)
