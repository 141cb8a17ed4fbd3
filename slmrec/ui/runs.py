"""Runs: the run store's runs, predicted against measured per step, and launching a plan.

A launch runs `slmrec run PLAN.yaml` in a child process (so torch never loads into the app and a
crash cannot take the app down); the page follows it through the run store and its log.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from slmrec.errors import SlmrecError
from slmrec.evidence import RunStore, default_store_path
from slmrec.plan import parse_plan, validate_plan
from slmrec import safeyaml
from slmrec.ui.common import (
    bundle,
    fmt_range,
    fmt_value,
    md_code,
    md_text,
    optional,
    show_problems,
    user_errors,
)

STATUS_BADGE = {"completed": ":green-badge[completed]", "failed": ":red-badge[failed]",
                "running": ":blue-badge[running]", "interrupted": ":orange-badge[interrupted]"}


def store_path() -> Path:
    return default_store_path()


def open_store(create: bool = False) -> RunStore | None:
    path = store_path()
    if not path.exists() and not create:
        return None
    return RunStore(path)


# ---- predicted against measured ------------------------------------------------------------


def measurement_frame(run: dict) -> pd.DataFrame:
    rows = []
    for m in run["measurements"]:
        step = "final model" if m["step_index"] is None else f"{m['step_index'] + 1}. {m['method']}"
        order = 10_000 if m["step_index"] is None else m["step_index"]
        rows.append({"step": step, "order": order, "metric": m["metric"],
                     "predicted": m["predicted"], "low": m["predicted_low"],
                     "high": m["predicted_high"], "measured": m["measured"]})
    return pd.DataFrame(rows, columns=["step", "order", "metric", "predicted", "low", "high",
                                       "measured"])


# Charted by default, when measured: quality, latency, memory and size (bookkeeping such as
# checkpoint_s or measure_s only on request).
HEADLINE_METRICS = ("quality_loss_pct", "probe_ppl", "ppl", "decode_ms_per_token", "prefill_ms",
                    "inference_memory_mb", "peak_memory_mb", "size_mb")


# A quality loss in % is charted as the perplexity factor it stands for, 1 + loss / 100, so
# measured / predicted stays a ratio of like quantities (its label gives the gap in points).
PERCENT_METRICS = ("quality_loss_pct", "step_quality_loss_pct")


def default_metrics(frame: pd.DataFrame) -> list[str]:
    """The headline metrics that have both a prediction and a measurement; failing that, the
    measured headline metrics."""
    both = set(frame.dropna(subset=["predicted", "measured"])["metric"])
    measured = set(frame.dropna(subset=["measured"])["metric"])
    pick = [m for m in HEADLINE_METRICS if m in both] or \
        [m for m in HEADLINE_METRICS if m in measured]
    return pick or sorted(both)[:4]


def ratio_frame(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """measured / predicted per step and metric, with the predicted range as low / predicted
    and high / predicted: every metric on one scale, where 1 is a perfect prediction."""
    data = frame[frame["metric"].isin(metrics)].dropna(subset=["predicted", "measured"]).copy()
    pct = data["metric"].isin(PERCENT_METRICS)
    miss = [f"{m - p:+.2f} pp" for m, p in zip(data["measured"], data["predicted"])]
    for col in ("predicted", "low", "high", "measured"):  # % loss -> perplexity factor
        data[f"_{col}"] = data[col].where(~pct, 1 + data[col] / 100)
    data["ratio"] = data["_measured"] / data["_predicted"]
    data["band_low"] = (data["_low"] / data["_predicted"]).where(data["_low"] > 0)
    data["band_high"] = (data["_high"] / data["_predicted"]).where(data["_high"] > 0)
    data["miss"] = [m if p else f"{r:.3g}×" for m, p, r in zip(miss, pct, data["ratio"])]
    ok = (data["_predicted"] > 0) & (data["_measured"] > 0)
    return data[ok].drop(columns=[c for c in data.columns if c.startswith("_")])


def comparison_chart(frame: pd.DataFrame, metrics: list[str]) -> alt.Chart | None:
    """One log axis for every metric: measured / predicted (1 = exact), the predicted range
    drawn as a band around 1, so a 0.004% miss sits on the line and a 174× miss far off it."""
    data = ratio_frame(frame, metrics)
    if data.empty:
        return None
    steps = list(data.sort_values("order")["step"].drop_duplicates())
    lo = min(data["ratio"].min(), data["band_low"].min(skipna=True) if data["band_low"].notna().any()
             else 1.0, 1.0)
    hi = max(data["ratio"].max(), data["band_high"].max(skipna=True)
             if data["band_high"].notna().any() else 1.0, 1.0)
    scale = alt.Scale(type="log", domain=[lo / 1.5, hi * 1.5])
    y = alt.Y("metric:N", title=None, sort=[m for m in HEADLINE_METRICS if m in metrics]
              + sorted(set(metrics) - set(HEADLINE_METRICS)))
    offset = alt.YOffset("step:N", sort=steps)
    tip = ["step", "metric", "predicted", "low", "high", "measured",
           alt.Tooltip("ratio:Q", title="measured / predicted", format=".3g")]
    base = alt.Chart(data).encode(y=y, yOffset=offset)
    band = base.mark_bar(height=10, opacity=0.3, color="#4c78a8").encode(
        x=alt.X("band_low:Q", scale=scale, title="measured / predicted (log scale; 1 = as "
                                                  "predicted; band = the predicted range)"),
        x2="band_high:Q", tooltip=tip)
    one = alt.Chart(pd.DataFrame({"x": [1.0]})).mark_rule(color="#333333").encode(x="x:Q")
    points = base.mark_point(size=80, filled=True).encode(
        x=alt.X("ratio:Q", scale=scale),
        color=alt.Color("step:N", sort=steps, legend=alt.Legend(orient="top", title=None)),
        tooltip=tip)
    labels = base.mark_text(dx=8, align="left", fontSize=11).encode(
        x=alt.X("ratio:Q", scale=scale), text="miss:N")
    height = 60 + 26 * len(set(data["metric"])) * len(steps)  # a row per step and metric
    return alt.layer(band, one, points, labels).properties(height=height)


def run_detail(store: RunStore, run_id: int) -> None:
    run = store.run(run_id)
    st.markdown(f"### Run {run['id']}: {md_text(run['name'] or 'unnamed plan')} "
                f"{STATUS_BADGE.get(run['status'], run['status'])}")
    if run["reason"]:
        (st.error if run["status"] == "failed" else st.warning)(md_text(run["reason"]))
    st.caption(f"base model {md_code(run['base_model'])} · plan hash {md_code(run['plan_hash'])} "
               f"· KB {md_code(run['kb_version'] or '–')} · seed {md_text(run['seed'])} · "
               f"created {md_text(run['created'])} · "
               f"finished {md_text(run['finished'] or '–')} · folder "
               f"{md_code(run['out_dir'] or '–')}")
    if run["steps"]:
        st.dataframe(pd.DataFrame([{
            "#": s["step_index"] + 1, "method": s["method"], "runner": s["runner"] or "",
            "status": s["status"], "wall s": s["wall_s"], "params": fmt_value(s["params"]),
            "reason": s["reason"] or ""} for s in run["steps"]]), hide_index=True,
            key="runs_steps")
    frame = measurement_frame(run)
    if frame.empty:
        st.info("No measurements recorded for this run.")
    else:
        metrics = st.multiselect("Metrics to chart", sorted(frame["metric"].unique()),
                                 default=default_metrics(frame), key=f"runs_metrics_{run_id}")
        st.markdown("**Measured against predicted, every metric on one log scale** (a point on "
                    "the line at 1 is an exact prediction; the band is the predicted range)")
        chart = comparison_chart(frame, metrics) if metrics else None
        if chart is not None:
            st.altair_chart(chart, key=f"runs_chart_{run_id}")
        elif metrics:
            st.caption("None of these metrics has both a prediction and a measurement.")
        table = frame.sort_values(["order", "metric"]).drop(columns="order")
        table["range"] = [fmt_range(lo, hi) if pd.notna(lo) or pd.notna(hi) else ""
                          for lo, hi in zip(table["low"], table["high"])]
        table["measured / predicted"] = [m / p if pd.notna(m) and pd.notna(p) and p else None
                                         for m, p in zip(table["measured"], table["predicted"])]
        st.dataframe(table[["step", "metric", "predicted", "range", "measured",
                            "measured / predicted"]], hide_index=True, key="runs_measurements")
    with st.expander("Plan YAML"):
        st.code(run["plan_yaml"], language="yaml")
        st.download_button("Download the plan YAML", run["plan_yaml"],
                           file_name=f"run-{run['id']}-plan.yaml", mime="application/x-yaml",
                           key=f"runs_dl_{run_id}")


# ---- launching -----------------------------------------------------------------------------


CHOSEN = "the plan chosen on the Recommend page"
PASTE = "paste or upload a plan YAML"
SCENARIO_PREFIX = "the top plan for scenario "


def _plan_choices() -> list[str]:
    """The chosen plan (if any), the top plan of each named scenario, or a pasted plan."""
    out = [CHOSEN] if st.session_state.get("rec_chosen_yaml") else []
    scenario = optional("slmrec.scenario")
    if scenario is not None and optional("slmrec.recommend") is not None:
        out += [f"{SCENARIO_PREFIX}'{n}'" for n in sorted(scenario.list_scenarios(bundle().kb))]
    return out + [PASTE]


def _plan_text(pick: str) -> str | None:
    if pick == CHOSEN:
        return st.session_state.get("rec_chosen_yaml")
    if pick.startswith(SCENARIO_PREFIX):
        from slmrec.recommend import recommend

        name = pick[len(SCENARIO_PREFIX):].strip("'")
        rec = recommend(name, bundle().kb, top_k=1)  # a user error surfaces inline
        return rec.top.to_yaml() if rec.top is not None else None
    return None


def launch_command(plan_file: Path, model: str | None, out: Path, store: Path) -> list[str]:
    cmd = ["slmrec", "run", str(plan_file), "--out", str(out), "--store", str(store), "--quiet"]
    if model:
        cmd[3:3] = ["--model", model]
    return cmd


def _bundled_models() -> list[str]:
    models = optional("runners.models")  # imports no torch at module level
    return sorted(getattr(models, "BUNDLED_MODELS", {})) if models else []


def launch_panel() -> None:
    st.subheader("Launch a plan")
    choices = _plan_choices()
    if st.session_state.get("runs_plan_pick") not in choices:
        st.session_state.pop("runs_plan_pick", None)
    pick = st.selectbox("Plan", choices, key="runs_plan_pick")
    if pick == PASTE:
        up = st.file_uploader("Plan YAML", type=["yaml", "yml"], key="runs_upload")
        text = up.getvalue().decode("utf-8", "replace") if up is not None else \
            st.text_area("…or paste it", key="runs_paste", height=200)
    else:
        text = _plan_text(pick)
        if text:
            with st.expander("Plan YAML"):
                st.code(text, language="yaml")
    if not text or not text.strip():
        st.caption("A plan comes from the Recommend page (choose a plan there), from "
                   "`slmrec recommend`, or by hand.")
        return
    try:
        data = safeyaml.load(text)[0]  # bounded: duplicate keys and alias bombs refused
    except safeyaml.YamlProblem as exc:
        st.error(md_text(f"<plan>{':' + str(exc.line) if exc.line else ''}: {exc.message}"))
        return
    try:
        plan = parse_plan(data, "<plan>")
        problems = validate_plan(plan, bundle().kb, "<plan>")
        if problems:
            raise SlmrecError(problems)
    except SlmrecError as exc:
        show_problems(exc)
        return
    bundled = [m for m in _bundled_models() if m != plan.base_model]
    model_opts = [f"the plan's base model ({plan.base_model})"] + bundled
    # Keyed to the plan: a new plan starts again from its own base model.
    plan_key = hashlib.sha1(plan.to_yaml().encode()).hexdigest()[:12]
    model_pick = st.selectbox("Run it on", model_opts, index=0, key=f"runs_model_{plan_key}",
                              help="the plan was built for its base model; a bundled model "
                                   "runs offline on this machine")
    if model_pick == model_opts[0] and bundled and plan.base_model not in _bundled_models():
        st.caption(f"`{md_text(plan.base_model)}` must be on this machine (a local folder or the "
                   f"Hugging Face cache) to run here; {', '.join(bundled)} runs offline.")
    model = None if model_pick == model_opts[0] else model_pick
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in (plan.name or "plan"))
    runs_root = Path(os.environ.get("SLMREC_RUNS_DIR", "runs")).resolve()
    out = runs_root / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    plan_file = out.with_name(out.name + ".plan.yaml")
    cmd = launch_command(plan_file, model, out, store_path())
    st.markdown("Run it from a terminal with the plan saved as `PLAN.yaml`, or here in a child "
                "process:")
    st.code(shlex.join(cmd).replace(str(plan_file), "PLAN.yaml"), language="bash")
    st.download_button("Download PLAN.yaml", plan.to_yaml(), file_name="PLAN.yaml",
                       mime="application/x-yaml", key="runs_plan_download")
    running = st.session_state.get("runs_proc")
    busy = running is not None and running["proc"].poll() is None
    if st.button("Run here", key="runs_launch", type="primary", disabled=busy,
                 help="starts `slmrec run` as a separate process; results go to the run store"):
        out.parent.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(plan.to_yaml(), encoding="utf-8")
        log = out.with_name(out.name + ".log")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "SLMREC_STORE": str(store_path())}
        argv = [sys.executable, "-m", "slmrec"] + cmd[1:]
        with open(log, "w", encoding="utf-8") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        st.session_state["runs_proc"] = {"proc": proc, "out": str(out), "log": str(log),
                                         "steps": len(plan.steps), "name": plan.name or stem}
    follow()


def _tail(path: str, n: int = 12) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    # tqdm writes carriage returns; keep the last state of each line.
    return [ln.split("\r")[-1] for ln in lines if ln.strip()][-n:]


def _run_for(out: str) -> dict | None:
    store = open_store()
    if store is None:
        return None
    return next((r for r in store.runs() if r["out_dir"] == out), None)


def follow() -> None:
    """Show the launched run's progress until its process ends."""
    job = st.session_state.get("runs_proc")
    if not job:
        return
    proc: subprocess.Popen = job["proc"]
    total = max(job["steps"], 1)
    box = st.status(f"Running {md_text(job['name'])}", expanded=True)
    bar = box.progress(0.0, text="starting")
    log_area = box.empty()
    while True:
        code = proc.poll()
        run = _run_for(job["out"])
        done = run["steps_completed"] if run else 0
        tail = _tail(job["log"])
        bar.progress(min(done / total, 1.0),
                     text=f"{done} of {total} steps done" + (f" · run {run['id']}" if run else ""))
        log_area.code("\n".join(tail) or "…", language=None)
        if code is not None:
            break
        time.sleep(0.5)
    if code == 0:
        box.update(label=f"{md_text(job['name'])}: completed", state="complete")
    else:
        box.update(label=f"{md_text(job['name'])}: exit code {code}", state="error")
    errors = [ln[len("error: "):] for ln in _tail(job["log"], 400) if ln.startswith("error: ")]
    st.session_state["runs_last"] = {"name": job["name"], "code": code, "log": job["log"],
                                     "run": run["id"] if run else None, "errors": errors}
    del st.session_state["runs_proc"]
    if run:
        st.session_state["runs_select_next"] = run["id"]
    st.rerun()


def last_launch() -> None:
    """What the last launch from this session ended with."""
    last = st.session_state.get("runs_last")
    if not last:
        return
    where = f"run {last['run']}" if last["run"] is not None else "the run"
    if last["code"] == 0:
        st.success(f"{md_text(last['name'])}: {where} completed; it is open above.")
    else:
        st.error(f"{md_text(last['name'])}: {where} ended with exit code {last['code']} (log: "
                 f"`{last['log']}`).")
        for line in last["errors"]:
            st.error(line)


# ---- page ----------------------------------------------------------------------------------


def render() -> None:
    st.title("Runs")
    path = store_path()
    st.caption(f"Run store: `{path}` (set `$SLMREC_STORE` to use another).")
    store = None
    with user_errors():
        store = open_store()
    runs = store.runs() if store is not None else []
    if not runs:
        st.info("No runs recorded yet. Launch a plan below, or run `slmrec run PLAN.yaml`.")
    else:
        st.dataframe(pd.DataFrame([{
            "id": r["id"],
            "status": r["status"] + (" (stale: process gone)" if r.get("stale") else ""),
            "plan": r["name"] or "–", "base model": r["base_model"],
            "steps done": r["steps_completed"],
            "created (UTC)": r["created"][:19].replace("T", " "),
            "reason": r["reason"] or ""} for r in runs]), hide_index=True, key="runs_table")
        ids = [r["id"] for r in runs]
        nxt = st.session_state.pop("runs_select_next", None)
        if nxt in ids:
            st.session_state["runs_selected"] = nxt
        if st.session_state.get("runs_selected") not in ids:
            st.session_state.pop("runs_selected", None)
        by_id = {r["id"]: r for r in runs}
        rid = st.selectbox("Open a run", ids, key="runs_selected",
                           format_func=lambda i: f"run {i}: {by_id[i]['name'] or 'unnamed'} "
                                                 f"({by_id[i]['status']})")
        with user_errors():
            run_detail(store, rid)
    st.divider()
    last_launch()
    with user_errors():
        launch_panel()
