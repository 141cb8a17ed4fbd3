"""Recommend: a named scenario or a form in; ranked plans, the Pareto chart, each plan's steps with
the why, rejected methods with the why-not, counterfactuals and the plan YAML out.

All the deciding happens in `slmrec.scenario` and `slmrec.recommend`; this page only collects the
scenario and draws what comes back (see `slmrec.ui.rec_result`).
"""

from __future__ import annotations

import hashlib
import json
import os

import streamlit as st

from slmrec.errors import SlmrecError
from slmrec.ui.common import bundle, md_text, missing, optional, show_problems
from slmrec.ui import rec_result

DATA_FIELDS = [("calibration", "Calibration samples", 1.0),
               ("unlabeled", "Unlabeled domain tokens", 1e6),
               ("labeled", "Labeled examples", 100.0),
               ("preference", "Preference pairs", 100.0)]
BUDGETS = [("memory_mb", "Inference memory budget (MB)"),
           ("decode_ms_per_token", "Decode latency budget (ms/token)"),
           ("size_mb", "Size on disk budget (MB)"),
           ("prefill_ms", "Prefill latency budget (ms)")]
OBJECTIVES = ["quality", "memory", "latency", "size", "prefill", "cost"]
LOCAL = "a local folder…"
CUSTOM = "custom figures…"
# Initial form values (set through session state, so that "Start from" can overwrite them).
FORM_DEFAULTS = {
    "rf_name": "custom", "rf_task": "", "rf_base_path": "", "rf_hw_kind": "cpu",
    "rf_hw_mem": 8.0, "rf_hw_bw": 50.0, "rf_hw_tflops": 1.0, "rf_hw_prec": ["fp32", "fp16", "int8"],
    **{f"rf_{k}": None for k, _ in BUDGETS}, "rf_tol": 5.0, "rf_max_steps": 5,
    **{f"rf_data_{k}": 0.0 for k, _, _ in DATA_FIELDS}, "rf_teacher": "none",
    "rf_teacher_model": "", "rf_context": 2048, "rf_batch": 1,
    "rf_objectives": ["quality", "memory", "latency"], "rf_privacy": False, "rf_include": [],
    "rf_exclude": [],
}


# ---- the form ------------------------------------------------------------------------------


def _fill_form_from(name: str) -> None:
    """Callback: copy a named scenario into the form's widgets."""
    scenario = optional("slmrec.scenario")
    kb = bundle().kb
    if not name or scenario is None:
        return
    try:
        sc = scenario.load_scenario(name, kb)
    except SlmrecError as exc:
        st.session_state["rf_load_error"] = exc
        return
    ss = st.session_state
    ss["rf_name"] = f"{sc.name or name}-edited"
    ss["rf_task"] = sc.task
    if sc.base_model in kb.models or sc.base_model == "choose":
        ss["rf_base"] = sc.base_model
    else:
        ss["rf_base"], ss["rf_base_path"] = LOCAL, sc.base_model
    if isinstance(sc.hardware, str):
        ss["rf_hw"] = sc.hardware
    else:
        ss["rf_hw"] = CUSTOM
        ss["rf_hw_kind"] = sc.hardware.kind
        ss["rf_hw_mem"] = float(sc.hardware.memory_gb)
        ss["rf_hw_bw"] = float(sc.hardware.memory_bandwidth_gbs)
        ss["rf_hw_prec"] = [p.value for p in sc.hardware.precisions]
        ss["rf_hw_tflops"] = float(max(sc.hardware.peak_tflops.values()))
    for key, _ in BUDGETS:
        v = getattr(sc.budgets, key)
        ss[f"rf_{key}"] = None if v is None else float(v)
    ss["rf_tol"] = float(sc.tolerance_pct)
    for key, _, _ in DATA_FIELDS:
        ss[f"rf_data_{key}"] = float(getattr(sc.data, key))
    ss["rf_teacher"] = sc.teacher.access.value
    ss["rf_teacher_model"] = sc.teacher.model or ""
    ss["rf_objectives"] = list(sc.preferences.objectives)
    ss["rf_privacy"] = sc.preferences.privacy
    ss["rf_include"] = [m for m in sc.preferences.include if m in kb.methods]
    ss["rf_exclude"] = [m for m in sc.preferences.exclude if m in kb.methods]
    ss["rf_max_steps"] = int(sc.preferences.max_steps)
    ss["rf_context"] = int(sc.workload.context)
    ss["rf_batch"] = int(sc.workload.batch)


def default_base_model(kb) -> str:
    """The bundled model (it runs offline here) when the catalog has it, else the smallest."""
    models = optional("runners.models")  # imports no torch at module level
    bundled = [m for m in getattr(models, "BUNDLED_MODELS", {}) if m in kb.models]
    if bundled:
        return bundled[0]
    return min(kb.models.values(), key=lambda m: m.params).id if kb.models else "choose"


def default_hardware(kb) -> str:
    """This machine's class: the CPU profile whose core count is nearest this machine's."""
    cores = os.cpu_count() or 1
    cpus = [h for h in kb.hardware.values() if h.kind == "cpu"] or list(kb.hardware.values())
    if not cpus:
        return CUSTOM
    return min(cpus, key=lambda h: (abs((getattr(h, "cores", None) or cores) - cores),
                                    h.memory_gb, h.id)).id


def _form(names: list[str]) -> dict | None:
    """The scenario form; returns the scenario mapping when submitted and complete, else shows
    what is missing next to the form and returns None."""
    kb = bundle().kb
    st.session_state.setdefault("rf_base", default_base_model(kb))
    st.session_state.setdefault("rf_hw", default_hardware(kb))
    st.selectbox("Start from", [""] + names, key="rf_from",
                 format_func=lambda n: n or "an empty form",
                 on_change=lambda: _fill_form_from(st.session_state["rf_from"]))
    for key, value in FORM_DEFAULTS.items():
        st.session_state.setdefault(key, value)
    err = st.session_state.pop("rf_load_error", None)
    if err is not None:
        show_problems(err)
    models = sorted(kb.models) + ["choose", LOCAL]
    hardware = sorted(kb.hardware) + [CUSTOM]
    methods = sorted(kb.methods)
    with st.form("rec_form"):
        a, b = st.columns(2)
        a.text_input("Scenario name", key="rf_name")
        b.text_input("Task (required)", key="rf_task",
                     placeholder="e.g. on-device assistant for support tickets",
                     help="what the model is for: the recommender needs it")
        a.selectbox("Base model", models, key="rf_base",
                    format_func=lambda m: f"{kb.models[m].name} ({m})" if m in kb.models else m,
                    help="'choose' lets the recommender pick among the catalog models")
        b.text_input("Local model folder (used instead of the base model when filled in)",
                     key="rf_base_path", placeholder="/path/to/hf-model")
        a.selectbox("Target hardware", hardware, key="rf_hw",
                    format_func=lambda h: f"{kb.hardware[h].name} ({h})" if h in kb.hardware else h)
        with b.expander("Custom hardware figures"):
            st.selectbox("Kind", ["cpu", "gpu", "soc", "npu"], key="rf_hw_kind")
            st.number_input("Memory (GB)", min_value=0.0, key="rf_hw_mem")
            st.number_input("Memory bandwidth (GB/s)", min_value=0.0, key="rf_hw_bw")
            st.number_input("Peak TFLOPS (16-bit)", min_value=0.0, key="rf_hw_tflops")
            st.multiselect("Native precisions", ["fp32", "fp16", "bf16", "int8", "int4", "fp8"],
                           key="rf_hw_prec")
        st.markdown("**Budgets** (leave empty for none)")
        cols = st.columns(4)
        for col, (key, label) in zip(cols, BUDGETS):
            col.number_input(label, min_value=0.0, key=f"rf_{key}", placeholder="none")
        a, b = st.columns(2)
        a.number_input("Quality tolerance (% relative loss allowed)", min_value=0.0,
                       max_value=100.0, step=0.5, key="rf_tol")
        b.number_input("Max steps", min_value=1, max_value=12, key="rf_max_steps")
        st.markdown("**Data you hold**")
        cols = st.columns(4)
        for col, (key, label, step) in zip(cols, DATA_FIELDS):
            col.number_input(label, min_value=0.0, step=step, key=f"rf_data_{key}")
        a, b = st.columns(2)
        a.selectbox("Teacher access", ["none", "text", "logits"], key="rf_teacher")
        b.text_input("Teacher model (catalog id or folder)", key="rf_teacher_model")
        with st.expander("Workload and preferences"):
            c1, c2 = st.columns(2)
            c1.number_input("Context (tokens in the KV cache)", min_value=1, key="rf_context")
            c2.number_input("Batch", min_value=1, key="rf_batch")
            st.multiselect("Objectives, most important first", OBJECTIVES, key="rf_objectives")
            st.checkbox("Privacy: data stays on the device", key="rf_privacy")
            st.multiselect("Methods the plan must contain", methods, key="rf_include")
            st.multiselect("Methods the plan must not use", methods, key="rf_exclude")
        submitted = st.form_submit_button("Recommend", type="primary", key="rf_go")
    if not submitted:
        return None
    missing_fields = form_problems(st.session_state)
    for problem in missing_fields:
        st.error(problem)
    return None if missing_fields else form_to_scenario(st.session_state)


def form_problems(ss) -> list[str]:
    """What the form lacks before a scenario can be made from it, one line each."""
    out = []
    if not (ss.get("rf_task") or "").strip():
        out.append("Task is required: say what the model is for (e.g. 'on-device assistant "
                   "for support tickets').")
    if ss.get("rf_base") == LOCAL and not (ss.get("rf_base_path") or "").strip():
        out.append("Local model folder is empty: give the folder of a Hugging Face model, or "
                   "pick a base model from the catalog.")
    return out


def form_to_scenario(ss) -> dict:
    """The form's values as a scenario mapping (validated by slmrec.scenario, not here)."""
    base = ss.get("rf_base")
    folder = (ss.get("rf_base_path") or "").strip()
    if folder or base == LOCAL:  # a folder filled in wins over the catalog pick
        base = folder
    hw = ss.get("rf_hw")
    if hw == CUSTOM:
        tflops = float(ss.get("rf_hw_tflops") or 0)
        precisions = list(ss.get("rf_hw_prec") or [])
        hw = {"name": "custom hardware", "kind": ss.get("rf_hw_kind", "cpu"),
              "memory_gb": ss.get("rf_hw_mem"), "memory_bandwidth_gbs": ss.get("rf_hw_bw"),
              "precisions": precisions,
              "peak_tflops": {p: tflops * (2 if p in ("int8", "fp8") else 4 if p == "int4"
                                           else 0.5 if p == "fp32" else 1) for p in precisions}}
    data = {
        "name": (ss.get("rf_name") or "custom").strip() or "custom",
        "task": (ss.get("rf_task") or "").strip(),
        "base_model": base or "",
        "hardware": hw,
        "budgets": {k: ss.get(f"rf_{k}") for k, _ in BUDGETS if ss.get(f"rf_{k}")},
        "tolerance_pct": ss.get("rf_tol"),
        "data": {k: ss.get(f"rf_data_{k}") for k, _, _ in DATA_FIELDS if ss.get(f"rf_data_{k}")},
        "workload": {"context": ss.get("rf_context"), "batch": ss.get("rf_batch")},
        "preferences": {"objectives": list(ss.get("rf_objectives") or []),
                        "privacy": bool(ss.get("rf_privacy")),
                        "include": list(ss.get("rf_include") or []),
                        "exclude": list(ss.get("rf_exclude") or []),
                        "max_steps": ss.get("rf_max_steps")},
    }
    access = ss.get("rf_teacher", "none")
    if access != "none":
        data["teacher"] = {"access": access, "model": (ss.get("rf_teacher_model") or "").strip()
                           or None}
    return data


# ---- the page ------------------------------------------------------------------------------


def render() -> None:
    st.title("Recommend")
    scenario = optional("slmrec.scenario")
    recommend = optional("slmrec.recommend")
    if scenario is None:
        missing("The Recommend page", "slmrec.scenario")
        return
    kb = bundle().kb
    names = sorted(scenario.list_scenarios(kb))
    mode = st.radio("Scenario", ["a named scenario", "the form"], horizontal=True,
                    key="rec_mode", index=0 if names else 1)
    sc = None
    if mode == "a named scenario":
        if not names:
            st.info("No named scenarios in kb/scenarios/ yet; use the form.")
            return
        name = st.selectbox("Named scenario", names, key="rec_scenario", bind="query-params")
        try:
            sc = scenario.load_scenario(name, kb)
        except SlmrecError as exc:
            show_problems(exc)
            return
        st.caption(md_text(sc.description or sc.task))
        st.markdown(f"**{md_text(sc.summary())}**")
        with st.expander("Scenario YAML"):
            st.code(scenario.dump_yaml(sc), language="yaml")
        token = _token("named", name, kb.version)
        go = st.button("Recommend", type="primary", key="rec_go")
    else:
        data = _form(names)
        go = data is not None
        token = st.session_state.get("rec_form_token")
        if go:
            token = st.session_state["rec_form_token"] = _token("form", data, kb.version)
            try:
                sc = scenario.parse_scenario(data, "<form>", kb, data.get("name") or None)
            except SlmrecError as exc:
                show_problems(exc)
                return
            st.markdown(f"**{md_text(sc.summary())}**")
    if recommend is None:
        missing("Ranking plans", "slmrec.recommend")
        return
    results = st.session_state.setdefault("rec_results", {})
    if go and sc is not None:
        with st.spinner("Searching chains of methods…"):
            try:
                results[token] = rec_result.run(recommend, kb, sc)
            except SlmrecError as exc:
                show_problems(exc)
                results.pop(token, None)
                return
        for old in [t for t in results if t != token][:-4]:  # keep a few answers, not all
            del results[old]
    result = results.get(token) if token else None
    if result is None:
        st.caption("Press Recommend to rank plans for this scenario.")
        return
    rec_result.show(result, kb, token)


def _token(*parts) -> str:
    """A short name for one scenario as asked: the answer and its widgets are keyed to it."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
