"""Oracle benchmark: does the estimator pick plans that, executed, meet their constraints?

A bounded plan space (one compression step or none, then a latency evaluation) is executed in
full on each model - tiny Llama-style models built from a config here, and SmolLM2-135M - on
this machine (hardware profile `laptop-2core-avx2`, runtime profile of the project's runners).
Each scenario is a model plus constraints (size, inference memory, decode latency, quality loss)
and an objective. For each scenario:

- top plan: the feasible plan with the best objective under the estimator's predictions
  (`Estimator.predict_chain`, the recommender's estimator, over the same bounded space);
- oracle: the best plan among every executed plan that measured inside the constraints.

Reported: the share of scenarios whose top plan, executed, meets every constraint; the median
regret of the top plan's measured objective against the oracle's best; compute of estimating
every plan plus one validating run against the oracle's executing them all; the estimator's error
per metric before and after calibration, with calibration fitted on the other models' runs
(leave-one-model-out, so no run is corrected by itself). Run: `python -m bench oracle`
(ORACLE_SMOLLM2=0 leaves SmolLM2-135M out; ORACLE_REUSE=path re-scores that run's executions,
and ORACLE_RERUN=rtn8,... executes those plans and the base again on top of it: a quick check
after a runner change, whose re-run figures sit beside others taken at another load; a full run
is the reference).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import ratio

HARDWARE = "laptop-2core-avx2"
TINY = {  # name: tiny_model config (random weights: quality is the probe perplexity of an
          # untrained model, so quality constraints are only meaningful on SmolLM2)
    "tiny-a": dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512),
    "tiny-b": dict(layers=4, hidden=128, heads=4, kv_heads=2, intermediate=256, vocab=512),
    "tiny-c": dict(layers=4, hidden=256, heads=8, kv_heads=4, intermediate=512, vocab=1024),
    "tiny-d": dict(layers=6, hidden=256, heads=8, kv_heads=2, intermediate=768, vocab=1024),
}
PLANS = [  # (label, steps) - every plan ends with a latency evaluation
    ("base", []),
    ("bf16", [{"method": "bf16-cast"}]),
    ("rtn8", [{"method": "rtn-weight-only", "params": {"bits": 8, "group_size": 32}}]),
    ("rtn4", [{"method": "rtn-weight-only", "params": {"bits": 4, "group_size": 32}}]),
    ("dyn8", [{"method": "dynamic-int8"}]),
    ("prune30", [{"method": "magnitude-pruning", "params": {"sparsity": 0.3}}]),
    ("width25", [{"method": "structured-width-pruning", "params": {"fraction": 0.25}}]),
    ("drop25", [{"method": "layer-dropping", "params": {"fraction": 0.25}}]),
    # second settings of the same methods: calibration on one run can inform the other
    ("rtn4g128", [{"method": "rtn-weight-only", "params": {"bits": 4, "group_size": 128}}]),
    ("prune50", [{"method": "magnitude-pruning", "params": {"sparsity": 0.5}}]),
    ("width12", [{"method": "structured-width-pruning", "params": {"fraction": 0.125}}]),
    ("drop12", [{"method": "layer-dropping", "params": {"fraction": 0.125}}]),
]
EVAL = {"method": "latency-throughput-eval"}   # the evaluate runner's defaults
PROMPT, DECODE = 64, 16                          # its prompt_len and decode_tokens
METRICS = ("size_mb", "inference_memory_mb", "decode_ms_per_token", "quality_loss_pct")


def _scenarios(models: list[str]) -> list[dict]:
    """Five constraint sets per model, relative to the measured-free base prediction."""
    out = []
    for m in models:
        q_ok = m == "smollm2-135m"
        out += [
            {"model": m, "objective": "size_mb", "limits": {"size_mb": 0.6}},
            {"model": m, "objective": "decode_ms_per_token", "limits": {"size_mb": 1.05}},
            {"model": m, "objective": "size_mb",
             "limits": {"quality_loss_pct": 20.0 if q_ok else 1e9, "decode_ms_per_token": 1.5}},
            {"model": m, "objective": "inference_memory_mb", "limits": {"size_mb": 0.9}},
            {"model": m, "objective": "size_mb",
             "limits": {"quality_loss_pct": 5.0 if q_ok else 1e9}},
        ]
    return out   # limits on size/memory/decode are fractions of the base model's measured value


def _plan(base: str, steps: list[dict], name: str) -> dict:
    return {"name": name, "base_model": base, "hardware": HARDWARE,
            "steps": [*steps, EVAL]}


def _execute_all(kb, models: dict[str, str], work: Path,
                 labels: set[str] | None = None) -> tuple[dict, float]:
    from runners.execute import execute
    from slmrec.plan import Plan

    measured: dict[tuple[str, str], dict] = {}
    t0 = time.perf_counter()
    for m, path in models.items():
        for label, steps in PLANS:
            if labels is not None and label not in labels:
                continue
            plan = Plan.model_validate(_plan(path, steps, f"oracle-{m}-{label}"))
            rep = execute(plan, out_dir=work / m / label, kb=kb, store=False, progress=False,
                          log=lambda *_: None)
            measured[(m, label)] = dict(rep.final_metrics) if rep.status == "completed" else {}
            measured[(m, label)]["_status"] = rep.status
            measured[(m, label)]["_load"] = os.getloadavg()[0]
            measured[(m, label)]["_wall_s"] = time.perf_counter() - t0
    return measured, time.perf_counter() - t0


def _predict_all(kb, models: dict[str, str]) -> tuple[dict, float]:
    from slmrec.estimate import Arch, Estimator, Workload, compile_option, default_params

    preds: dict[tuple[str, str], dict] = {}
    t0 = time.perf_counter()
    hw = kb.hardware[HARDWARE]
    wl = Workload(context=PROMPT + DECODE, prompt_tokens=PROMPT, batch=1)
    for m, path in models.items():
        arch = Arch.from_card(kb.models[m]) if m in kb.models else Arch.from_config(Path(path), m)
        for label, steps in PLANS:
            est = Estimator(kb, arch, hw, wl, base_bits=32.0)
            opts = []
            for s in steps:
                meth = kb.methods[s["method"]]
                opts.append(compile_option(meth, {**default_params(meth), **s.get("params", {})}))
            final = est.predict_chain(opts).final
            preds[(m, label)] = {k: final[k].value for k in METRICS if k in final}
            preds[(m, label)]["_method"] = steps[-1]["method"] if steps else "plan"
            preds[(m, label)]["_params"] = dict(opts[-1].params) if opts else {}
            preds[(m, label)]["_model_params"] = arch.params
    return preds, time.perf_counter() - t0


def _feasible(vals: dict, sc: dict, base: dict) -> bool:
    for k, lim in sc["limits"].items():
        v = vals.get(k)
        if v is None:
            return False
        bound = lim if k == "quality_loss_pct" else lim * base[k]
        if v > bound:
            return False
    return True


def _choose(table: dict, sc: dict, base: dict) -> str | None:
    ok = [(vals[sc["objective"]], label) for (m, label), vals in table.items()
          if m == sc["model"] and sc["objective"] in vals and _feasible(vals, sc, base)]
    return min(ok)[1] if ok else None


def _errors(preds: dict, measured: dict, cal_for) -> dict:
    """Median |pred/measured - 1| per metric (quality: of the perplexity ratios 1 + loss/100,
    i.e. the relative error of the predicted perplexity)."""
    out: dict[str, dict] = {}
    for metric in METRICS:
        before, after = [], []
        for key, p in preds.items():
            meas = measured.get(key, {}).get(metric)
            if meas is None or p.get(metric) is None:
                continue
            if metric == "quality_loss_pct" and key[0] in TINY:
                continue
            cal = cal_for(key)
            v = p[metric]
            got = cal.correct(metric, v, p["_method"], params=p["_params"]) if cal else None
            c = got[0] if got is not None else v
            if metric == "quality_loss_pct":
                before.append(abs((1 + v / 100) / (1 + meas / 100) - 1))
                after.append(abs((1 + c / 100) / (1 + meas / 100) - 1))
            elif meas > 0:
                before.append(abs(v / meas - 1))
                after.append(abs(c / meas - 1))
        if before:
            out[metric] = {"n": len(before), "median_before": statistics.median(before),
                           "median_after": statistics.median(after)}
    return out


SAME_COMPUTE = ("base", "prune30", "prune50")   # unstructured zeros, no sparse kernels: the
                                              # decode work of the base model


def _spread(measured: dict) -> dict:
    """How far measurement alone moves decode ms/token: plans that do the base model's decode
    work, median |plan/base - 1| over the models."""
    dec = []
    for (m, label), v in measured.items():
        base = measured.get((m, "base"), {}).get("decode_ms_per_token")
        if label in SAME_COMPUTE[1:] and base and v.get("decode_ms_per_token"):
            dec.append(abs(v["decode_ms_per_token"] / base - 1))
    return {"decode_ms_per_token": statistics.median(dec) if dec else None}


def main() -> dict:
    from slmrec.kb import load_kb

    kb = load_kb()
    work = Path(tempfile.mkdtemp(prefix="slmrec-oracle-"))
    try:
        return _run(kb, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(kb, work: Path) -> dict:
    from runners.models import save_checkpoint, tiny_model
    from slmrec.calibrate import Calibration

    models: dict[str, str] = {}
    only = [m for m in os.environ.get("ORACLE_MODELS", "").split(",") if m]
    for name, cfg in TINY.items():
        if only and name not in only:
            continue
        model, tok = tiny_model(**cfg)
        models[name] = str(save_checkpoint(model, tok, work / "models" / name))
    if os.environ.get("ORACLE_SMOLLM2", "1") != "0" and (not only or "smollm2-135m" in only):
        models["smollm2-135m"] = "smollm2-135m"
    preds, t_pred = _predict_all(kb, models)
    reuse = os.environ.get("ORACLE_REUSE")   # re-score a previous run's executions (development)
    if reuse:
        import json

        old = json.loads(Path(reuse).read_text(encoding="utf-8"))
        measured = {tuple(k.split("/", 1)): v for k, v in old["measured"].items()}
        t_oracle = old.get("oracle_s") or old["wall_s"]
        reuse_note = f"started {old.get('started')}, oracle executions {t_oracle:.0f} s"
        rerun = {x for x in os.environ.get("ORACLE_RERUN", "").split(",") if x}
        if rerun:   # plans whose runner changed since: executed again, side by side with the base
            fresh, _ = _execute_all(kb, models, work / "runs", rerun | {"base"})
            for k, v in fresh.items():   # compute figures stay those of the full run
                v["_wall_s"] = measured.get(k, {}).get("_wall_s", v["_wall_s"])
            measured.update(fresh)
            reuse_note += (f"; plans {', '.join(sorted(rerun | {'base'}))} executed again in this "
                           f"run")
    else:
        measured, t_oracle = _execute_all(kb, models, work / "runs")
    scenarios = _scenarios(list(models))
    results, regrets, met = [], [], 0
    one_run = statistics.median(
        [measured[k]["_wall_s"] - measured.get(prev, {}).get("_wall_s", 0.0)
         for prev, k in zip([None, *measured], measured)])
    # calibration on this machine's runs: for each model, fitted on the OTHER models' runs only
    # (leave-one-model-out), so no run is corrected by itself. Quality rows of the tiny models
    # (random weights: their perplexity change is not a quality loss) are left out; SmolLM2's
    # quality rows are corrected leave-one-run-out (its other plans).
    cores = os.cpu_count() or 1
    rows = [{"method": preds[k]["_method"], "metric": metric, "predicted": preds[k].get(metric),
             "measured": v.get(metric), "model": k[0], "plan": k[1],
             "loaded": (v.get("_load") or 0) > cores,
             "context": {"params": preds[k]["_params"],
                         "base_params": preds[k]["_model_params"]}}
            for k, v in measured.items() for metric in METRICS
            if not (metric == "quality_loss_pct" and k[0] in TINY)]
    cals = {k: Calibration.fit([r for r in rows if r["model"] != k[0] or
                                (r["metric"] == "quality_loss_pct" and r["plan"] != k[1])], kb=kb)
            for k in measured}

    def cal_for(key):
        return cals[key].bind(kb, "cpu", "runtime-hf-transformers",
                              preds[key]["_model_params"])

    corrected = {}
    for key, p in preds.items():
        c = dict(p)
        for metric in METRICS:
            got = cal_for(key).correct(metric, p[metric], p["_method"], params=p["_params"]) \
                if p.get(metric) is not None else None
            if got is not None:
                c[metric] = got[0]
        corrected[key] = c
    done = {k: v for k, v in measured.items() if v.get("_status") == "completed"}

    def score(table):
        results, regrets, met = [], [], 0
        for sc in scenarios:
            base_meas = measured[(sc["model"], "base")]
            top = _choose(table, sc, base_meas)
            best = _choose(done, sc, base_meas)
            top_meas = measured.get((sc["model"], top), {}) if top else {}
            ok = bool(top) and _feasible(top_meas, sc, base_meas)
            met += ok
            regret = None
            if top and best and ok:
                regret = top_meas[sc["objective"]] / done[(sc["model"], best)][sc["objective"]] - 1
                regrets.append(regret)
            results.append({**sc, "top": top, "oracle_best": best, "top_meets": ok,
                            "regret": regret})
        return results, regrets, met

    raw_results, raw_regrets, raw_met = score(preds)
    results, regrets, met = score(corrected)
    errors = _errors(preds, measured, cal_for)
    errors = {k: v for k, v in errors.items()}
    share = met / len(scenarios)
    compute = (t_pred + one_run) / t_oracle if t_oracle else None
    md = ([f"Executions reused from a previous full run ({reuse_note}); this run re-scored them.",
           ""] if reuse else []) + ["Top plan chosen with predictions calibrated on the other models' runs (uncalibrated "
          f"choice: {raw_met} of {len(scenarios)} meet their constraints, median regret "
          f"{100 * statistics.median(raw_regrets) if raw_regrets else float('nan'):.1f}%). Limits "
          "on size, memory and decode are fractions of the base model's measured value; quality "
          "limits apply to SmolLM2 only (the tiny models have random weights).", "",
          "| scenario | objective | limits | top plan | oracle best | top meets | regret |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        reg = "–" if r["regret"] is None else f"{100 * r['regret']:.1f}%"
        lim = ", ".join(f"{k} {v:g}" for k, v in r["limits"].items() if v < 1e8)
        md.append(f"| {r['model']} | {r['objective']} | {lim} | {r['top']} | "
                  f"{r['oracle_best']} | {r['top_meets']} | {reg} |")
    spread = _spread(measured)
    md += ["", "| metric | rows | median error before calibration | after | measurement spread |",
           "| --- | --- | --- | --- | --- |"]
    for k, v in errors.items():
        sp = spread.get(k)
        md.append(f"| {k} | {v['n']} | {v['median_before']:.3f} | {v['median_after']:.3f} | "
                  f"{'–' if sp is None else f'{sp:.3f}'} |")
    md += ["", "Measurement spread: decode, the median |plan/base - 1| of plans that do the base "
           "model's decode work (magnitude pruning leaves dense matrices: " + ", ".join(
               SAME_COMPUTE[1:]) + "). An error at or below the spread is what measurement alone "
           "gives on this machine; no correction can halve it."]
    halved = {k: (v["median_after"] <= 0.5 * v["median_before"]) for k, v in errors.items()}
    return {
        "title": "top plan vs an oracle executing every plan of a bounded space",
        "ratios": {
            "top_plan_meets_constraints": ratio(share, ">= 0.9", f"{met} of {len(scenarios)} "
                                                "scenarios"),
            "median_regret": ratio(statistics.median(regrets) if regrets else None, "<= 0.05",
                                   f"over {len(regrets)} scenarios whose top plan is feasible"),
            "compute_over_oracle": ratio(compute, "<= 0.1", f"estimate all + one run "
                                         f"{t_pred + one_run:.1f} s vs oracle {t_oracle:.1f} s"),
            "latency_error_after_over_before": ratio(
                (errors["decode_ms_per_token"]["median_after"]
                 / errors["decode_ms_per_token"]["median_before"])
                if errors.get("decode_ms_per_token", {}).get("median_before") else None,
                "<= 0.5", "decode ms/token, leave-one-model-out calibration"),
            "quality_error_after_over_before": ratio(
                (errors["quality_loss_pct"]["median_after"] / errors["quality_loss_pct"]["median_before"])
                if errors.get("quality_loss_pct", {}).get("median_before") else None,
                "<= 0.5", "predicted perplexity, SmolLM2, leave-one-run-out calibration"),
        },
        "scenarios": results, "scenarios_uncalibrated": raw_results, "errors": errors,
        "calibration_halves": halved, "measurement_spread": spread, "oracle_s": t_oracle,
        "predict_s": t_pred,
        "reused_executions_from": reuse or None,
        "predicted": {f"{k[0]}/{k[1]}": v for k, v in preds.items()},
        "measured": {f"{k[0]}/{k[1]}": v for k, v in measured.items()},
        "markdown": "\n".join(md),
    }
