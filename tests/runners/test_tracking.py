"""MLflow tracking: a real run through the executor lands in MLflow's SQLite store with its plan,
parameters, per-step measured and predicted metrics and artifacts."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")

PLAN = """\
name: tracked
base_model: {base}
steps:
  - method: bf16-cast
    predicted:
      bits_per_weight: {{value: 16.0}}
  - method: perplexity-eval
"""


def test_a_run_is_logged_to_mlflow(tiny_trained, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from runners.execute import execute
    from slmrec.evidence import RunStore
    from slmrec.plan import parse_plan
    monkeypatch.setenv("SLMREC_MLFLOW", "1")
    monkeypatch.delenv("SLMREC_MLFLOW_URI", raising=False)
    store = RunStore(tmp_path / "store" / "runs.sqlite")
    import yaml
    report = execute(parse_plan(yaml.safe_load(PLAN.format(base=tiny_trained))), out_dir=tmp_path / "run", store=store,
                     progress=False)
    assert report.status == "completed", report.reason
    db = tmp_path / "store" / "mlflow.db"
    assert db.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("slmrec")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["status"] == "completed" and run.data.tags["plan_hash"] == report.plan_hash
    assert run.data.params["step0.method"] == "bf16-cast" and run.data.params["step1.method"] == "perplexity-eval"
    history = client.get_metric_history(run.info.run_id, "bits_per_weight")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)][:2] == \
        [(0, report.base_metrics["bits_per_weight"]), (1, report.steps[0].metrics["bits_per_weight"])]
    assert client.get_metric_history(run.info.run_id, "predicted.bits_per_weight")[0].value == 16.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plan.yaml", "report.json", "report.md"} <= artifacts


def test_tracking_is_off_when_asked(monkeypatch, tmp_path):
    from runners.tracking import log_report
    monkeypatch.setenv("SLMREC_MLFLOW", "0")
    assert log_report(object(), tmp_path) is None
