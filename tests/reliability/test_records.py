"""Schema-layer validation of the KB, scenarios (files and app forms), plans and calibration
files: every hostile value is refused with one line naming the file and the field."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from slmrec.errors import SlmrecError
from tests.reliability.conftest import one_line

NAN, INF = float("nan"), float("inf")

HARDWARE = {"id": "hw-x", "name": "X", "kind": "cpu", "memory_gb": 8, "memory_bandwidth_gbs": 50,
            "peak_tflops": {"fp32": 1.0}, "precisions": ["fp32"], "sources": ["test-docs"]}
MODEL = {"id": "m-x", "name": "M", "family": "m", "architecture": "llama", "params": 1e8,
         "layers": 4, "hidden": 256, "intermediate": 512, "heads": 4, "kv_heads": 2,
         "vocab": 1000, "context": 2048, "tied_embeddings": True, "tokenizer": "m",
         "license": "mit", "sources": ["test-docs"]}
METHOD = {"id": "q-x", "name": "Q", "component": "compression", "family": "quant", "summary": "q",
          "sources": ["test-docs"],
          "effects": {"transform": {"weight_bits": 4, "sparsity": 0.5},
                      "quality": [{"low": 1, "high": 2, "source": "test-docs"}]},
          "params": {"bits": {"type": "int", "default": 4, "min": 2, "max": 8}}}


def _set(rec: dict, path: str, value) -> dict:
    rec = copy.deepcopy(rec)
    *head, last = path.split(".")
    cur = rec
    for k in head:
        cur = cur[int(k)] if isinstance(cur, list) else cur[k]
    cur[int(last) if isinstance(cur, list) else last] = value
    return rec


KB_CASES = [
    # (id, section, record, field path, value)
    ("hw-peak-zero", "hardware", HARDWARE, "peak_tflops.fp32", 0),
    ("hw-peak-negative", "hardware", HARDWARE, "peak_tflops.fp32", -5),
    ("hw-peak-inf", "hardware", HARDWARE, "peak_tflops.fp32", INF),
    ("hw-peak-nan", "hardware", HARDWARE, "peak_tflops.fp32", NAN),
    ("hw-peak-huge", "hardware", HARDWARE, "peak_tflops.fp32", 1e300),
    ("hw-peak-string", "hardware", HARDWARE, "peak_tflops.fp32", "fast"),
    ("hw-memory-zero", "hardware", HARDWARE, "memory_gb", 0),
    ("hw-memory-inf", "hardware", HARDWARE, "memory_gb", INF),
    ("hw-memory-huge", "hardware", HARDWARE, "memory_gb", 1e30),
    ("hw-memory-nan", "hardware", HARDWARE, "memory_gb", NAN),
    ("hw-bandwidth-negative", "hardware", HARDWARE, "memory_bandwidth_gbs", -1),
    ("hw-bandwidth-inf", "hardware", HARDWARE, "memory_bandwidth_gbs", INF),
    ("hw-bandwidth-list", "hardware", HARDWARE, "memory_bandwidth_gbs", [1, 2]),
    ("hw-cores-zero", "hardware", HARDWARE, "cores", 0),
    ("hw-tdp-negative", "hardware", HARDWARE, "tdp_w", -10),
    ("model-params-nan", "models", MODEL, "params", NAN),
    ("model-params-inf", "models", MODEL, "params", INF),
    ("model-context-huge", "models", MODEL, "context", 10**300),
    ("model-context-zero", "models", MODEL, "context", 0),
    ("model-layers-negative", "models", MODEL, "layers", -2),
    ("model-hidden-float-string", "models", MODEL, "hidden", "wide"),
    ("model-vocab-huge", "models", MODEL, "vocab", 10**12),
    ("model-head-dim-zero", "models", MODEL, "head_dim", 0),
    ("method-weight-bits-negative", "methods", METHOD, "effects.transform.weight_bits", -4),
    ("method-weight-bits-zero", "methods", METHOD, "effects.transform.weight_bits", 0),
    ("method-weight-bits-nan", "methods", METHOD, "effects.transform.weight_bits", NAN),
    ("method-sparsity-over-one", "methods", METHOD, "effects.transform.sparsity", 1.5),
    ("method-sparsity-negative", "methods", METHOD, "effects.transform.sparsity", -0.1),
    ("method-group-size-zero", "methods", METHOD, "effects.transform.group_size", 0),
    ("method-rank-fraction-2", "methods", METHOD, "effects.transform.rank_fraction", 2),
    ("method-kv-heads-negative", "methods", METHOD, "effects.transform.kv_heads", -1),
    ("method-quality-low-nan", "methods", METHOD, "effects.quality.0.low", NAN),
    ("method-quality-high-inf", "methods", METHOD, "effects.quality.0.high", INF),
    ("method-quality-low-string", "methods", METHOD, "effects.quality.0.low", "small"),
    ("method-param-default-nan", "methods", METHOD, "params.bits.default", NAN),
    ("method-param-min-inf", "methods", METHOD, "params.bits.min", -INF),
    ("method-cost-tokens-negative", "methods", METHOD, "cost", {"tokens": -5}),
    ("method-trainable-fraction-3", "methods", METHOD, "cost", {"trainable_fraction": 3}),
    ("method-bits-during-100", "methods", METHOD, "cost", {"weight_bits_during": 100}),
]


@pytest.mark.parametrize("section,record,path,value", [c[1:] for c in KB_CASES],
                         ids=[c[0] for c in KB_CASES])
def test_kb_records_refuse_unphysical_numbers(tmp_path, kb_dir, section, record, path, value):
    from slmrec.kb import load_kb

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    text = yaml.safe_dump({section: [_set(record, path, value)]}, sort_keys=False)
    (overlay / "bad.yaml").write_text(text)
    with pytest.raises(SlmrecError) as exc:
        load_kb([kb_dir, overlay], shipped=False)
    one_line(exc.value, "bad.yaml", path.split(".")[0])


def test_kb_baselines_load(tmp_path, kb_dir):
    """The unmutated records are valid: each refusal above is the mutation's doing."""
    from slmrec.kb import load_kb

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "ok.yaml").write_text(yaml.safe_dump(
        {"hardware": [HARDWARE], "models": [MODEL], "methods": [METHOD]}, sort_keys=False))
    kb = load_kb([kb_dir, overlay], shipped=False)
    assert "hw-x" in kb.hardware and "m-x" in kb.models and "q-x" in kb.methods


def test_kb_duplicate_key_in_a_record(tmp_path, kb_dir):
    from slmrec.kb import load_kb

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "dup.yaml").write_text("hardware:\n  - id: hw-d\n    memory_gb: 8\n    memory_gb: 1e9\n")
    with pytest.raises(SlmrecError) as exc:
        load_kb([kb_dir, overlay], shipped=False)
    one_line(exc.value, "dup.yaml:4", "duplicate key 'memory_gb'")


# ---- scenarios: files and the app's form (both go through parse_scenario) -----------------------

SCENARIO = {"task": "t", "base_model": "smollm2-135m", "hardware": "laptop-2core-avx2",
            "workload": {"context": 2048, "prompt_tokens": 256, "batch": 1},
            "budgets": {"memory_mb": 250}, "tolerance_pct": 10, "data": {"calibration": 128}}
CUSTOM_HW = {"name": "box", "kind": "cpu", "memory_gb": 8, "memory_bandwidth_gbs": 20,
             "peak_tflops": {"fp32": 0.5}, "precisions": ["fp32"]}

SCENARIO_CASES = [
    ("context-overflow", "workload.context", 1e300),
    ("context-huge-int", "workload.context", 10**300),
    ("context-zero", "workload.context", 0),
    ("context-negative", "workload.context", -1),
    ("context-string", "workload.context", "long"),
    ("prompt-nan", "workload.prompt_tokens", NAN),
    ("batch-zero", "workload.batch", 0),
    ("batch-huge", "workload.batch", 10**12),
    ("budget-memory-nan", "budgets.memory_mb", NAN),
    ("budget-memory-inf", "budgets.memory_mb", INF),
    ("budget-memory-negative", "budgets.memory_mb", -250),
    ("budget-latency-zero", "budgets", {"decode_ms_per_token": 0}),
    ("tolerance-nan", "tolerance_pct", NAN),
    ("tolerance-negative", "tolerance_pct", -1),
    ("base-bits-zero", "base_bits", 0),
    ("base-bits-100", "base_bits", 100),
    ("data-nan", "data.calibration", NAN),
    ("data-negative", "data.calibration", -5),
    ("data-inf", "data", {"unlabeled": INF}),
    ("max-steps-100", "preferences", {"max_steps": 100}),
    ("custom-peak-zero", "hardware", {**CUSTOM_HW, "peak_tflops": {"fp32": 0}}),
    ("custom-peak-inf", "hardware", {**CUSTOM_HW, "peak_tflops": {"fp32": INF}}),
    ("custom-memory-huge", "hardware", {**CUSTOM_HW, "memory_gb": 1e300}),
    ("custom-memory-negative", "hardware", {**CUSTOM_HW, "memory_gb": -8}),
    ("custom-bandwidth-nan", "hardware", {**CUSTOM_HW, "memory_bandwidth_gbs": NAN}),
    ("compute-hours-zero", "compute", {"hours": 0}),
    ("compute-memory-inf", "compute", {"memory_mb": INF}),
]


def _scenario(path: str, value) -> dict:
    sc = copy.deepcopy(SCENARIO)
    *head, last = path.split(".")
    cur = sc
    for k in head:
        cur = cur.setdefault(k, {})
    cur[last] = value
    return sc


@pytest.mark.parametrize("path,value", [c[1:] for c in SCENARIO_CASES],
                         ids=[c[0] for c in SCENARIO_CASES])
@pytest.mark.parametrize("origin", ["<form>", "file"])
def test_scenarios_refuse_unphysical_numbers(tmp_path, shipped_kb, origin, path, value):
    from slmrec.scenario import load_scenario, parse_scenario

    data = _scenario(path, value)
    with pytest.raises(SlmrecError) as exc:
        if origin == "<form>":
            parse_scenario(data, "<form>", shipped_kb, "form")
        else:
            f = tmp_path / "sc.yaml"
            f.write_text(yaml.safe_dump(data))
            load_scenario(f, shipped_kb)
    one_line(exc.value, "<form>" if origin == "<form>" else "sc.yaml", path.split(".")[0])


def test_scenario_baseline_is_valid(shipped_kb):
    from slmrec.scenario import parse_scenario

    assert parse_scenario(SCENARIO, "<form>", shipped_kb, "ok").workload.context == 2048
    assert parse_scenario({**SCENARIO, "hardware": CUSTOM_HW}, "<form>", shipped_kb, "ok")


# ---- plans ------------------------------------------------------------------------------------

def _plan(**over) -> dict:
    base = {"name": "p", "base_model": "big-7b", "steps": [{"method": "train"}, {"method": "rtn"}]}
    base.update(over)
    return base


PLAN_CASES = [
    ("format-99", _plan(format=99), "format"),
    ("format-string", _plan(format="one"), "format"),
    ("format-true", _plan(format=True), "format"),
    ("format-zero", _plan(format=0), "format"),
    ("steps-65", _plan(steps=[{"method": "rtn"}] * 65), "at most 64"),
    ("steps-50000", _plan(steps=[{"method": "rtn"}] * 50_000), "at most 64"),
    ("predicted-nan", _plan(predicted={"size_mb": {"value": NAN}}), "finite"),
    ("predicted-inf-high", _plan(predicted={"size_mb": {"value": 1, "high": INF}}), "finite"),
    ("step-predicted-nan", _plan(steps=[{"method": "rtn", "predicted": {"ppl": {"low": NAN}}}]),
     "finite"),
    ("param-nan", _plan(steps=[{"method": "train", "params": {"lr": NAN}}]), "finite"),
    ("param-inf", _plan(steps=[{"method": "train", "params": {"lr": INF}}]), "finite"),
    ("score-nan", _plan(score=NAN), "finite"),
    ("param-negative-bits", _plan(steps=[{"method": "rtn", "params": {"bits": -4}}]),
     "must be one of"),
    ("param-huge-int", _plan(steps=[{"method": "train", "params": {"steps": 10**30}}]),
     "out of range"),
    ("param-string-for-int", _plan(steps=[{"method": "train", "params": {"steps": "x" * 5000}}]),
     "expected int"),
    ("param-unknown", _plan(steps=[{"method": "train", "params": {"stepz": 3}}]),
     "did you mean 'steps'"),
    ("method-unknown", _plan(steps=[{"method": "trian"}]), "did you mean 'train'"),
    ("order-violated", _plan(steps=[{"method": "rtn"}, {"method": "train"}]), "must come before"),
    ("no-steps", _plan(steps=[]), "at least one step"),
    ("steps-not-a-list", _plan(steps="train"), "steps"),
    ("unknown-field", _plan(stepz=[]), "unknown field"),
    ("not-a-mapping", ["train"], "must be a mapping"),
]


@pytest.mark.parametrize("data,needle", [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES])
def test_plans_are_refused_with_one_line_each(tmp_path, tiny_kb, data, needle):
    from slmrec.plan import load_plan

    f = tmp_path / "plan.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SlmrecError) as exc:
        load_plan(f, tiny_kb)
    text = one_line(exc.value, "plan.yaml", needle)
    assert len(text) < 2000  # 50,000 steps: one line, not one per step


def test_plan_with_duplicate_keys_is_refused(tmp_path, tiny_kb):
    from slmrec.plan import load_plan

    f = tmp_path / "plan.yaml"
    f.write_text("name: p\nbase_model: big-7b\nsteps:\n  - method: train\n    method: rtn\n")
    with pytest.raises(SlmrecError) as exc:
        load_plan(f, tiny_kb)
    one_line(exc.value, "plan.yaml:5", "duplicate key 'method'")


# ---- calibration files ---------------------------------------------------------------------------

GOOD_FIT = {"kind": "log", "offsets": {"method:rtn": 0.05}, "rows": {"method:rtn": 2.0},
            "raw": {"method:rtn": 0.1}, "scale": 0.0, "alpha": 2.0, "resid": 0.1, "n": 5}
CAL_CASES = [
    ("scale-string", {"scale": "0.1"}, "fits.ppl.scale"),
    ("scale-list", {"scale": [0.1]}, "fits.ppl.scale"),
    ("scale-nan", {"scale": NAN}, "fits.ppl.scale"),
    ("scale-bool", {"scale": True}, "fits.ppl.scale"),
    ("alpha-inf", {"alpha": INF}, "fits.ppl.alpha"),
    ("offset-huge-log", {"offsets": {"method:rtn": 1e6}}, "within +-50"),
    ("alpha-null", {"alpha": None}, "fits.ppl.alpha"),
    ("kind-unknown", {"kind": "cubic"}, "fits.ppl.kind"),
    ("kind-number", {"kind": 3}, "fits.ppl.kind"),
    ("resid-negative", {"resid": -1}, "fits.ppl.resid"),
    ("resid-string", {"resid": "small"}, "fits.ppl.resid"),
    ("n-float", {"n": 2.5}, "fits.ppl.n"),
    ("n-negative", {"n": -1}, "fits.ppl.n"),
    ("offsets-list", {"offsets": [1, 2]}, "fits.ppl.offsets"),
    ("offsets-string-value", {"offsets": {"method:rtn": "x"}}, "fits.ppl.offsets.method:rtn"),
    ("offsets-nan", {"offsets": {"method:rtn": NAN}}, "fits.ppl.offsets.method:rtn"),
    ("unknown-field", {"slope": 1}, "unknown field"),
]


@pytest.mark.parametrize("change,needle", [c[1:] for c in CAL_CASES], ids=[c[0] for c in CAL_CASES])
def test_calibration_fits_are_type_checked(tmp_path, change, needle):
    from slmrec.calibrate import FORMAT, Calibration

    f = tmp_path / "cal.json"
    f.write_text(json.dumps({"format": FORMAT, "rows_used": 5,
                             "fits": {"ppl": {**GOOD_FIT, **change}}}))
    with pytest.raises(SlmrecError) as exc:
        Calibration.load(f)
    one_line(exc.value, "cal.json", needle)


@pytest.mark.parametrize("doc,needle", [
    ("[]", "expected a calibration json"),
    ("{\"format\": 99, \"fits\": {}}", "expected a calibration json"),
    ("{\"format\": FMT, \"fits\": []}", "expected a calibration json"),
    ("{\"format\": FMT, \"fits\": {\"ppl\": 3}}", "expected a mapping"),
    ("{\"format\": FMT, \"fits\": {}, \"rows_used\": \"many\"}", "rows_used"),
    ("{not json", "not a calibration json"),
    ("", "not a calibration json"),
], ids=["list", "format-99", "fits-list", "fit-number", "rows-string", "broken-json", "empty"])
def test_calibration_documents_are_checked(tmp_path, doc, needle):
    from slmrec.calibrate import FORMAT, Calibration

    f = tmp_path / "cal.json"
    f.write_text(doc.replace("FMT", json.dumps(FORMAT)))
    with pytest.raises(SlmrecError) as exc:
        Calibration.load(f)
    one_line(exc.value, "cal.json", needle)


def test_calibration_baseline_loads(tmp_path):
    from slmrec.calibrate import FORMAT, Calibration

    f = tmp_path / "cal.json"
    f.write_text(json.dumps({"format": FORMAT, "rows_used": 5, "fits": {"ppl": GOOD_FIT}}))
    assert Calibration.load(f).fits["ppl"].offsets == {"method:rtn": 0.05}
