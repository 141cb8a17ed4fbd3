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
