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


def pareto_frame(kb: KB, rec) -> pd.DataFrame:
    rows = []
    for p in rec.pareto or []:
        rows.append({"series": "Pareto front", "label": "", "steps": chain_text(kb, p["steps"]),
                     "base model": p.get("base_model"), "quality": p["quality_loss_pct"],
                     "low": None, "high": None, "memory": p["inference_memory_mb"],
                     "latency": p["decode_ms_per_token"], "size": p.get("size_mb")})
    for rank, plan in enumerate(rec.plans, start=1):
        q, ql, qh = _pred(plan, "quality_loss_pct")
        rows.append({"series": "ranked plan", "label": f"#{rank}",
                     "steps": chain_text(kb, plan.steps), "base model": plan.base_model,
                     "quality": q, "low": ql, "high": qh,
                     "memory": _pred(plan, "inference_memory_mb")[0],
                     "latency": _pred(plan, "decode_ms_per_token")[0],
                     "size": _pred(plan, "size_mb")[0]})
    return pd.DataFrame(rows)


def pareto_chart(frame: pd.DataFrame, limits: dict[str, float | None]) -> alt.HConcatChart:
    """Predicted quality loss against inference memory and against decode latency; the
    budgets are drawn as red rules, the ranked plans labelled #1, #2, ..."""
    colour = alt.Color("series:N", title=None,
                       scale=alt.Scale(domain=["Pareto front", "ranked plan"],
                                       range=["#4c78a8", "#f58518"]),
                       legend=alt.Legend(orient="top"))
    tooltip = ["label", "steps", "base model", alt.Tooltip("quality:Q", format=".2f"),
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
            base.mark_text(dx=12, dy=-10, fontWeight="bold", color="#b35c00").encode(
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


def plan_detail(plan, kb: KB) -> None:
    cols = st.columns(len(HEADLINE))
    for col, (metric, label, unit) in zip(cols, HEADLINE):
        v, lo, hi = _pred(plan, metric)
        col.metric(label, "–" if v is None else f"{fmt_value(round(v, 2))} {unit}",
                   help=f"range {fmt_range(lo, hi)} {unit}" if lo is not None else None)
    for v in plan.violations:
        st.warning(f"breaks: {v}")
    for note in plan.notes:
        st.info(note)
    if not plan.steps:
        st.write("No step: the base model already meets every constraint.")
    for i, step in enumerate(plan.steps, start=1):
        m = kb.methods.get(step.method)
        name = m.name if m else step.method
        with st.container(border=True):
            st.markdown(f"#### Step {i}: {name}")
            params = ", ".join(f"`{k}` = {fmt_value(v)}" for k, v in step.params.items())
            st.caption(f"`{step.method}`" + (f" · {m.component} · {m.family}" if m else "")
                       + (f" · {params}" if params else ""))
            for why in step.why:
                st.markdown(f"- {why}")
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
                      mime="application/x-yaml", key="rec_download", type="primary")
    b.button("Run it (Runs page)", key="rec_to_runs", on_click=_choose_for_runs, args=(text,))
    with st.expander("Plan YAML"):
        st.code(text, language="yaml")


def _slug(name: str | None) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in (name or "plan"))


def show(rec, kb: KB) -> None:
    sc = rec.scenario
    if not rec.feasible:
        st.warning("No plan meets every constraint; the closest plan is shown. Binding:")
        for b in rec.binding:
            st.markdown(f"- {b}")
    elif not rec.plans:
        st.warning("The recommender returned no plan.")
        return
    stats = rec.stats or {}
    st.caption(f"Scenario '{md_text(sc.name)}': {len(rec.plans)} ranked plans, "
               f"{stats.get('chains_evaluated', '?')} chains evaluated over "
               f"{stats.get('options', '?')} options in {stats.get('seconds', '?')} s "
               f"(KB {rec.kb_version}).")

    st.subheader("Ranked plans")
    st.dataframe(plans_frame(kb, rec), hide_index=True, key="rec_plans_table")

    frame = pareto_frame(kb, rec)
    if not frame.empty and frame["quality"].notna().any():
        st.subheader("Pareto front: predicted quality against memory and latency")
        st.altair_chart(pareto_chart(frame, _limits(rec, kb)))
        st.caption("Blue: plans no other plan beats on quality, memory and latency at once. "
                   "Orange: the ranked plans, with their quality range. Red dashed: the budgets "
                   "and the tolerance.")

    st.subheader("Plan")
    labels = {i: f"#{i + 1}: {chain_text(kb, p.steps)}" for i, p in enumerate(rec.plans)}
    if st.session_state.get("rec_plan") not in labels:
        st.session_state.pop("rec_plan", None)
    idx = st.selectbox("Show plan", list(labels), key="rec_plan", format_func=labels.get)
    plan_detail(rec.plans[idx], kb)

    st.subheader("Why not: the rejected methods")
    if rec.rejected:
        kinds = sorted({r.kind for r in rec.rejected})
        chosen = st.multiselect("Reason kind", kinds, key="rec_reject_kinds",
                                placeholder="all kinds")
        rows = [{"method": r.method, "component": r.component or "", "kind": r.kind,
                 "why not": r.reason, "sources": ", ".join(r.sources)}
                for r in rec.rejected if not chosen or r.kind in chosen]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="rec_rejected")
    else:
        st.caption("No method was rejected.")

    st.subheader("What if: counterfactuals")
    if rec.counterfactuals:
        st.dataframe(pd.DataFrame([{"relax": c.relax, "to": fmt_value(c.to), "then": c.change}
                                   for c in rec.counterfactuals]), hide_index=True,
                     key="rec_counterfactuals")
    else:
        st.caption("No single relaxation changes the top plan.")
