"""A plan's search-time prediction is its final prediction: the search prices each chain with
the runtime of its deployment step and with evidence weighted by the model's scale, as
`Estimator.predict_chain` does for the plan it reports."""

from __future__ import annotations

import pytest

from slmrec.recommend.search import Search
from slmrec.recommend.space import build_space, kb_index
from slmrec.scenario import load_scenario

CASES = [   # (shipped scenario, model): a llama.cpp deployment; SmolLM2-scale RTN evidence
    ("kb/scenarios/choose-for-laptop.yaml", "qwen2.5-0.5b"),
    ("kb/scenarios/pi-classifier.yaml", "qwen2.5-0.5b"),
    ("kb/scenarios/laptop-teacher.yaml", "smollm2-360m"),
]


@pytest.fixture(scope="module")
def kb():
    from slmrec.kb import load_kb

    return load_kb()


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-3 * max(abs(b), 1e-2)


@pytest.mark.parametrize("path,model", CASES)
def test_search_time_and_final_predictions_agree(kb, path, model):
    sp = build_space(kb_index(kb), load_scenario(path, kb), model)
    top = Search(sp, k=5).run().top
    assert top
    for c in top:
        final = sp.est.predict_chain(list(c.options)).final
        for k in ("size_mb", "inference_memory_mb", "decode_ms_per_token", "prefill_ms"):
            assert _close(c.metrics[k], final[k].value), (c.options, k, c.metrics[k], final[k])
        assert _close(c.q[0], final["quality_loss_pct"].value), (c.options, c.q, final)


def test_search_bounds_cover_a_faster_deployment_runtime(kb):
    # a llama.cpp deployment decodes faster than the default runtime: the bound must not
    # prune chains that end with it
    sp = build_space(kb_index(kb), load_scenario(CASES[0][0], kb), CASES[0][1])
    run = Search(sp, k=5)
    runtimes = {p.runtime for p in run._bound_profiles}
    assert {"runtime-hf-transformers", "runtime-llama-cpp"} <= runtimes
    s = sp.base
    assert run._lower_metrics(s)["decode_ms_per_token"] <= \
        sp.est.metrics(s, sp.est.profile_for("runtime-llama-cpp"))[5] + 1e-9


BOUND_CASES = [   # random scenarios where the bound once cut the best plan (a K-quant format)
    {"task": "random", "base_model": "deepseek-r1-distill-qwen-1.5b",
     "hardware": "laptop-2core-avx2", "tolerance_pct": 24.92, "data": {"labeled": 500},
     "teacher": "logits:lfm2-700m", "budgets": {"memory_mb": 7880, "decode_ms_per_token": 169.7},
     "compute": {"hardware": "jetson-orin-nano-8gb", "scale": "none"},
     "preferences": {"objectives": ["quality", "memory", "latency"], "privacy": False}},
    {"task": "random", "base_model": "smollm3-3b", "hardware": "apple-m1-max-64gb",
     "tolerance_pct": 28.02, "data": {"calibration": 512, "unlabeled": 1e6, "preference": 2000},
     "teacher": "text:qwen3-1.7b", "budgets": {"memory_mb": 8785, "decode_ms_per_token": 156.9},
     "compute": {"hardware": "jetson-orin-nano-8gb", "scale": "calibration"},
     "preferences": {"objectives": ["memory", "latency", "quality"], "privacy": True}},
]


@pytest.mark.parametrize("data", BOUND_CASES)
def test_branch_and_bound_finds_the_exhaustive_best(kb, data):
    # bounds must hold for storage formats: a format is read as stored, and narrower rows fall
    # back to wider types, so a structural step after a K-quant can make the model larger
    from slmrec.recommend.search import exhaustive
    from slmrec.scenario import parse_scenario

    sc = parse_scenario(data, "<random>", kb, "bound-case")
    idx = kb_index(kb)
    fast = Search(build_space(idx, sc, sc.base_model), k=1, pareto=False, max_steps=2).run()
    slow = exhaustive(build_space(idx, sc, sc.base_model, dominance=False), max_steps=2)
    assert slow.top and fast.top
    assert fast.top[0].score == pytest.approx(slow.top[0].score, abs=1e-9)


def test_calibrated_search_agrees_with_the_calibrated_final_prediction(kb):
    # offsets per runtime and per option: the search must bind them as the final prediction does
    from slmrec.calibrate import Calibration

    def rows(method, metric, params, pairs, runtime=None):
        return [{"method": method, "metric": metric, "predicted": p, "measured": m,
                 "context": {"params": params, "runtime": runtime,
                             "hardware": {"profile": "laptop-2core-avx2"}}} for p, m in pairs]

    data = rows("rtn-weight-only", "quality_loss_pct", {"bits": 8, "group_size": 128,
                                                         "embedding_bits": 8}, [(2, 3), (2, 3.2)]) \
        + rows("gguf-k-quants", "decode_ms_per_token", {"bits": 4}, [(40, 60), (50, 80)],
               "runtime-llama-cpp") \
        + rows("rtn-weight-only", "decode_ms_per_token", {"bits": 8, "group_size": 128,
                                                           "embedding_bits": 8}, [(40, 30)])
    cal = Calibration.fit(data, kb=kb)
    sc = load_scenario(CASES[0][0], kb)
    sp = build_space(kb_index(kb), sc, CASES[0][1], calibration=cal)
    top = Search(sp, k=5).run().top
    assert top
    for c in top:
        final = sp.est.predict_chain(list(c.options)).final
        assert _close(c.metrics["decode_ms_per_token"], final["decode_ms_per_token"].value)
        assert _close(c.q[0], final["quality_loss_pct"].value)
