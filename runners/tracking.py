"""MLflow tracking of finished runs, in MLflow's embedded SQLite store beside the run store.

Every run becomes one MLflow run in the experiment `slmrec`: tags (status, base model, plan hash,
KB version), the plan's parameters per step (`step<i>.<method>.<param>`), the measured metrics of
the input model (step 0) and of each step (step i+1) and the plan's predictions as
`predicted.<quantity>`, with plan.yaml, report.json and report.md as artifacts. The slmrec run
store (slmrec/evidence.py) stays the source the calibrator reads; MLflow is a view for people who
already use it:

    mlflow ui --backend-store-uri sqlite:///$HOME/.local/share/slmrec/mlflow.db --host 127.0.0.1

`SLMREC_MLFLOW=0` turns tracking off; `SLMREC_MLFLOW_URI` names another tracking URI.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

EXPERIMENT = "slmrec"


def enabled() -> bool:
    return os.environ.get("SLMREC_MLFLOW", "1").strip().lower() not in {"0", "off", "false", "no", ""}


def tracking_uri(store_path: str | os.PathLike | None) -> str:
    """$SLMREC_MLFLOW_URI, else sqlite:///<folder of the run store>/mlflow.db."""
    if os.environ.get("SLMREC_MLFLOW_URI"):
        return os.environ["SLMREC_MLFLOW_URI"]
    from slmrec.evidence import default_store_path
    folder = Path(store_path).expanduser().parent if store_path else default_store_path().expanduser().parent
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'mlflow.db').resolve()}"


def _key(text: str) -> str:
    """MLflow keys allow letters, digits, _ - . space / only."""
    return re.sub(r"[^\w\-. /]", "_", text)[:250]


def _finite(metrics: dict) -> dict[str, float]:
    return {_key(k): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def log_report(report, out_dir: str | os.PathLike, store_path: str | os.PathLike | None = None) -> str | None:
    """Log a finished RunReport to MLflow; return the MLflow run id (None when tracking is off)."""
    if not enabled():
        return None
    import mlflow
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    out = Path(out_dir)
    client_uri = tracking_uri(store_path)
    mlflow.set_tracking_uri(client_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        artifacts = Path(client_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        exp_id = mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts.resolve().as_uri())
    else:
        exp_id = experiment.experiment_id
    name = f"{report.plan_name or 'plan'}-{report.plan_hash[:8]}"
    tags = {"status": report.status, "base_model": report.base_model, "plan_hash": report.plan_hash,
            "kb_version": str(report.kb_version), "out_dir": str(out), "slmrec_run_id": str(report.run_id)}
    with mlflow.start_run(experiment_id=exp_id, run_name=name, tags=tags) as run:
        params = {"seed": report.seed, "base_model": report.base_model}
        for s in report.steps:
            params[f"step{s.index}.method"] = s.method
            params.update({_key(f"step{s.index}.{s.method}.{k}"): str(v)[:500] for k, v in s.params.items()})
        mlflow.log_params(params)
        mlflow.log_metrics(_finite(report.base_metrics), step=0)
        for s in report.steps:
            metrics = _finite(s.metrics)
            metrics.update({f"predicted.{k}": v for k, v in _finite(
                {k: p.get("value") for k, p in s.predicted.items() if isinstance(p, dict)}).items()})
            if metrics:
                mlflow.log_metrics(metrics, step=s.index + 1)
        final = _finite(report.final_metrics)
        final.update({f"predicted.{k}": v for k, v in _finite(
            {k: p.get("value") for k, p in report.final_predicted.items() if isinstance(p, dict)}).items()})
        mlflow.log_metrics({f"final.{k}": v for k, v in final.items()})
        for name in ("plan.yaml", "report.json", "report.md"):
            if (out / name).exists():
                mlflow.log_artifact(str(out / name))
        return run.info.run_id
