"""Suite-wide settings: MLflow tracking (on by default for real runs) is off in tests, except
where a test turns it on (tests/runners/test_tracking.py); creating its SQLite store costs seconds."""

import os

os.environ.setdefault("SLMREC_MLFLOW", "0")
