"""Calibration of the estimator on measured runs (kept importable here; the implementation is
the estimator's calibration step, `slmrec.estimate.calibrate`)."""

from slmrec.estimate.calibrate import (FORMAT, LINEAR_METRICS, LOG_METRICS, MIN_ROWS, Calibration,
                                       Context, Correction, MetricFit, row_context)

__all__ = ["FORMAT", "LINEAR_METRICS", "LOG_METRICS", "MIN_ROWS", "Calibration", "Context",
           "Correction", "MetricFit", "row_context"]
