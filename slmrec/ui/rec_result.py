"""Drawing a `slmrec.recommend.Recommendation`: ranked plans, the Pareto chart, each plan's steps
with the why, the rejected methods with the why-not, the counterfactuals, the plan YAML."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from slmrec.kb import KB
from slmrec.ui.common import fmt_range, fmt_value, md_text

TOP_K = 3
HEADLINE = [("quality_loss_pct", "Quality loss", "%"),
            ("inference_memory_mb", "Inference memory", "MB"),
            ("decode_ms_per_token", "Decode latency", "ms/token"),
            ("size_mb", "Size on disk", "MB")]


def run(recommend: ModuleType, kb: KB, scenario) -> Any:
    """The one call into the recommender."""
    return recommend.recommend(scenario, kb, top_k=TOP_K)


def chain_text(kb: KB, steps: list) -> str:
    def one(method: str, params: dict) -> str:
        p = ", ".join(f"{k}={fmt_value(v)}" for k, v in (params or {}).items())
        return method + (f"({p})" if p else "")

    parts = [one(s.method, s.params) if hasattr(s, "method") else one(s["method"], s.get("params"))
             for s in steps]
    return " → ".join(parts) or "the base model unchanged"


def _pred(plan, metric: str):
    p = plan.predicted.get(metric)
    return (p.value, p.low, p.high) if p is not None else (None, None, None)


def plans_frame(kb: KB, rec) -> pd.DataFrame:
    rows = []
    for rank, plan in enumerate(rec.plans, start=1):
        q, ql, qh = _pred(plan, "quality_loss_pct")
        rows.append({"rank": rank, "plan": plan.name, "base model": plan.base_model,
                     "steps": chain_text(kb, plan.steps), "quality loss %": q,
                     "quality range": fmt_range(ql, qh),
                     "memory MB": _pred(plan, "inference_memory_mb")[0],
                     "decode ms/token": _pred(plan, "decode_ms_per_token")[0],
                     "size MB": _pred(plan, "size_mb")[0], "score": plan.score,
                     "feasible": plan.feasible})
    return pd.DataFrame(rows)


def _chain_key(base_model, steps) -> tuple:
    def one(x):
        method = x.method if hasattr(x, "method") else x["method"]
        params = x.params if hasattr(x, "params") else x.get("params") or {}
        return (method, tuple(sorted((k, str(v)) for k, v in (params or {}).items())))

    return (base_model, tuple(one(x) for x in steps))


def pareto_frame(kb: KB, rec) -> pd.DataFrame:
    """One row per point drawn, each with a name: the ranked plans are #1, #2, ...; a point of
    the Pareto front that is also a ranked plan is that plan (marked as on the front); the other
    front points are F1, F2, ... and are listed under the chart."""
    rows, ranked = [], {}
    for rank, plan in enumerate(rec.plans, start=1):
        q, ql, qh = _pred(plan, "quality_loss_pct")
        ranked[_chain_key(plan.base_model, plan.steps)] = len(rows)
        rows.append({"series": "ranked plan", "label": f"#{rank}",
                     "steps": chain_text(kb, plan.steps), "base model": plan.base_model,
                     "quality": q, "low": ql, "high": qh,
                     "memory": _pred(plan, "inference_memory_mb")[0],
                     "latency": _pred(plan, "decode_ms_per_token")[0],
                     "size": _pred(plan, "size_mb")[0]})
    n = 0
    for p in rec.pareto or []:
        at = ranked.get(_chain_key(p.get("base_model"), p["steps"]))
        if at is not None:
            rows[at]["series"] = "ranked plan, on the front"
            continue
        n += 1
        rows.append({"series": "front only", "label": f"F{n}",
                     "steps": chain_text(kb, p["steps"]), "base model": p.get("base_model"),
                     "quality": p["quality_loss_pct"], "low": None, "high": None,
                     "memory": p["inference_memory_mb"], "latency": p["decode_ms_per_token"],
                     "size": p.get("size_mb")})
    return pd.DataFrame(rows, columns=["series", "label", "steps", "base model", "quality",
                                       "low", "high", "memory", "latency", "size"])


SERIES = ["ranked plan, on the front", "ranked plan", "front only"]


def pareto_chart(frame: pd.DataFrame, limits: dict[str, float | None]) -> alt.HConcatChart:
    """Predicted quality loss against inference memory and against decode latency; every point
    carries its name (#1, #2, ... for the ranked plans, F1, F2, ... for the other points of the
    Pareto front); the budgets are red rules."""
    colour = alt.Color("series:N", title=None,
                       scale=alt.Scale(domain=SERIES, range=["#d35400", "#f5a623", "#4c78a8"]),
                       legend=alt.Legend(orient="top"))
    tooltip = ["label", "series", "steps", "base model", alt.Tooltip("quality:Q", format=".2f"),
               alt.Tooltip("memory:Q", format=",.0f"), alt.Tooltip("latency:Q", format=".2f"),
               alt.Tooltip("size:Q", format=",.0f")]
    panels = []
    for x, title, limit in (("memory", "inference memory (MB)", limits.get("memory")),
                            ("latency", "decode latency (ms/token)", limits.get("latency"))):
        base = alt.Chart(frame).encode(x=alt.X(f"{x}:Q", title=title,
                                               scale=alt.Scale(zero=False)))
        layers = [
            base.mark_rule(color="#f58518", opacity=0.6).encode(y="low:Q", y2="high:Q"),
            base.mark_circle(size=120, opacity=0.85).encode(
                y=alt.Y("quality:Q", title="predicted quality loss (%)",
                        scale=alt.Scale(zero=False)),
                color=colour, tooltip=tooltip),
            base.mark_text(dx=12, dy=-10, fontWeight="bold", color="#333333").encode(
                y="quality:Q", text="label:N"),
        ]
        if limit:
            layers.append(alt.Chart(pd.DataFrame({"v": [limit]})).mark_rule(
                color="#c0392b", strokeDash=[6, 4]).encode(x="v:Q"))
        if limits.get("tolerance") is not None:
            layers.append(alt.Chart(pd.DataFrame({"v": [limits["tolerance"]]})).mark_rule(
                color="#c0392b", strokeDash=[2, 3]).encode(y="v:Q"))
        panels.append(alt.layer(*layers).properties(width=380, height=260))
    return alt.hconcat(*panels)


def _limits(rec, kb: KB) -> dict[str, float | None]:
    sc = rec.scenario
    try:
        memory = sc.memory_budget_mb(kb)
    except Exception:  # noqa: BLE001 (a custom target without figures: no line)
        memory = sc.budgets.memory_mb
    return {"memory": memory, "latency": sc.budgets.decode_ms_per_token,
            "tolerance": sc.tolerance_pct}


def _prediction_rows(predicted: dict, kb: KB) -> pd.DataFrame:
    rows = []
    for metric, p in predicted.items():
        rows.append({"metric": metric, "value": p.value, "range": fmt_range(p.low, p.high),
                     "unit": p.unit, "basis": p.basis, "sources": ", ".join(p.sources),
                     "note": p.note or ""})
    return pd.DataFrame(rows)


def _choose_for_runs(yaml_text: str) -> None:
    st.session_state["rec_chosen_yaml"] = yaml_text
    st.session_state["runs_plan_pick"] = "the plan chosen on the Recommend page"  # runs.CHOSEN
    st.session_state["page"] = "Runs"


def plan_detail(plan, kb: KB, token: str) -> None:
    cols = st.columns(len(HEADLINE))
    for col, (metric, label, unit) in zip(cols, HEADLINE):
        v, lo, hi = _pred(plan, metric)
        col.metric(label, "–" if v is None else f"{fmt_value(round(v, 2))} {unit}",
                   help=f"range {fmt_range(lo, hi)} {unit}" if lo is not None else None)
    for v in plan.violations:
        st.warning(f"breaks: {md_text(v)}")
    for note in plan.notes:
        st.info(md_text(note))
    if not plan.steps:
        st.write("No step: the base model already meets every constraint.")
    for i, step in enumerate(plan.steps, start=1):
        m = kb.methods.get(step.method)
        name = m.name if m else step.method
        with st.container(border=True):
            st.markdown(f"#### Step {i}: {md_text(name)}")
            params = ", ".join(f"`{k}` = {fmt_value(v)}" for k, v in step.params.items())
            st.caption(f"`{step.method}`" + (f" · {m.component} · {m.family}" if m else "")
                       + (f" · {params}" if params else ""))
            for why in step.why:
                st.markdown(f"- {md_text(why)}")
            if step.predicted:
                with st.expander("Predicted after this step"):
                    st.dataframe(_prediction_rows(step.predicted, kb), hide_index=True)
            if step.sources:
                st.caption("Sources: " + ", ".join(f"`{s}`" for s in step.sources))
    with st.expander("Predicted for the final model"):
        st.dataframe(_prediction_rows(plan.predicted, kb), hide_index=True)
    text = plan.to_yaml()
    a, b = st.columns(2)
    a.download_button("Download the plan YAML", text, file_name=f"{_slug(plan.name)}.plan.yaml",
                      mime="application/x-yaml", key=f"rec_download_{token}", type="primary")
    b.button("Run it (Runs page)", key=f"rec_to_runs_{token}", on_click=_choose_for_runs,
             args=(text,))
    with st.expander("Plan YAML"):
        st.code(text, language="yaml")


def _slug(name: str | None) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in (name or "plan"))


def show(rec, kb: KB, token: str) -> None:
    """Draw a recommendation; `token` names it, so that every widget here belongs to this one
    answer (another scenario's answer gets fresh widgets, never a stale choice)."""
    sc = rec.scenario
    if not rec.feasible:
        st.warning("No plan meets every constraint; the closest plan is shown. Binding:")
        for b in rec.binding:
            st.markdown(f"- {md_text(b)}")
    elif not rec.plans:
        st.warning("The recommender returned no plan.")
        return
    stats = rec.stats or {}
    st.caption(f"Scenario '{md_text(sc.name)}': {len(rec.plans)} ranked plans, "
               f"{stats.get('chains_evaluated', '?')} chains evaluated over "
               f"{stats.get('options', '?')} options in {stats.get('seconds', '?')} s "
               f"(KB {rec.kb_version}).")

    st.subheader("Ranked plans")
    st.dataframe(plans_frame(kb, rec), hide_index=True, key=f"rec_plans_table_{token}")

    frame = pareto_frame(kb, rec)
    if not frame.empty and frame["quality"].notna().any():
        st.subheader("Pareto front: predicted quality against memory and latency")
        st.altair_chart(pareto_chart(frame, _limits(rec, kb)), key=f"rec_pareto_{token}")
        st.caption("Every point is named. #1, #2, ...: the ranked plans, with their predicted "
                   "quality range (dark orange when no other plan beats them on quality, memory "
                   "and latency at once: the Pareto front). F1, F2, ...: other plans on the "
                   "front, listed below. Red dashed: the budgets and the tolerance.")
        others = frame[frame["series"] == "front only"]
        if not others.empty:
            st.dataframe(others[["label", "steps", "base model", "quality", "memory", "latency",
                                 "size"]], hide_index=True, key=f"rec_front_{token}")

    st.subheader("Plan")
    labels = {i: f"#{i + 1}: {chain_text(kb, p.steps)}" for i, p in enumerate(rec.plans)}
    idx = st.selectbox("Show plan", list(labels), key=f"rec_plan_{token}",
                       format_func=labels.get)
    plan_detail(rec.plans[idx], kb, f"{token}_{idx}")

    st.subheader("Why not: the rejected methods")
    if rec.rejected:
        kinds = sorted({r.kind for r in rec.rejected})
        chosen = st.multiselect("Reason kind", kinds, key=f"rec_reject_kinds_{token}",
                                placeholder="all kinds")
        rows = [{"method": r.method, "component": r.component or "", "kind": r.kind,
                 "why not": r.reason, "sources": ", ".join(r.sources)}
                for r in rec.rejected if not chosen or r.kind in chosen]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key=f"rec_rejected_{token}")
    else:
        st.caption("No method was rejected.")

    st.subheader("What if: counterfactuals")
    if rec.counterfactuals:
        st.dataframe(pd.DataFrame([{"relax": c.relax, "to": fmt_value(c.to), "then": c.change}
                                   for c in rec.counterfactuals]), hide_index=True,
                     key=f"rec_counterfactuals_{token}")
    else:
        st.caption("No single relaxation changes the top plan.")
