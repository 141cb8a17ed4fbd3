"""A plan that ends in a deployable file: the executor runs the shipped KB's export methods and
measures the exported file in the runtime it names, and says which runtime it measured."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")


def test_plan_ending_in_gguf_export_is_measured_in_its_runtime(tmp_path, monkeypatch):
    from runners.execute import execute
    from runners.models import save_checkpoint, tiny_model
    from runners.runtime import available
    from slmrec.kb import load_kb
    from slmrec.plan import load_plan
    monkeypatch.setenv("SLMREC_STORE", str(tmp_path / "runs.sqlite"))
    model, tok = tiny_model(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=512)
    base = save_checkpoint(model, tok, tmp_path / "tiny")
    plan = {"name": "deploy", "base_model": str(base),
            "steps": [{"method": "gguf-export", "params": {"gguf_type": "Q4_0"}}]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    kb = load_kb()
    report = execute(load_plan(tmp_path / "plan.yaml", kb), kb=kb, out_dir=tmp_path / "run", progress=False)
    assert report.status == "completed", report.reason
    step = report.steps[0]
    assert step.artifacts["runtime"] == "llama.cpp" and step.artifacts["model"].endswith(".Q4_0.gguf")
    assert step.metrics["size_mb"] < report.base_metrics["size_mb"] / 3
    if available("llama.cpp"):
        assert any("measured on the exported file in llama.cpp" in n for n in step.notes)
        assert step.metrics["ppl"] != report.base_metrics["ppl"]  # the Q4_0 file's, not PyTorch's
    else:
        assert any("llama.cpp is not installed" in n for n in step.notes)
