"""Predict what a chain of methods does to a base model on a hardware target.

Steps of the estimator, one module each: `evidence` (KB ranges, weighted by model scale),
`options` (a method with concrete parameters), `arch` (architecture cards, hardware classes),
`formats` (checkpoint size tensor by tensor), `runtimes` (decode and prefill time per runtime and
hardware class), `state` (the model after some steps), `steps` (what running a step costs),
`predict` (prediction records for a chain), `calibrate` (corrections from measured runs) and
`estimator` (the Estimator that applies steps and reports metrics); `constants` holds the
figures they share. The public names stay importable from `slmrec.estimate`.
"""

from slmrec.estimate.arch import (BITS_PRECISIONS, CAPABILITY_PRECISION, Arch, Workload,
                                  hardware_class)
from slmrec.estimate.constants import (ACT_BYTES_PER_TOKEN_LAYER_HIDDEN, ADAPTER_TRAINABLE_DEFAULT,
                                       BANDWIDTH_EFFICIENCY, COMPUTE_EFFICIENCY,
                                       DEFAULT_STEP_TOKENS, MB, MODEL_METRICS, PREFILL_CHUNK,
                                       PRETRAIN_TOKENS_PER_PARAM, RUNTIME_OVERHEAD_MB,
                                       SPARSE_INDEX_BITS, STEP_METRICS, TOKENS_PER_UNIT,
                                       TRAIN_MICRO_TOKENS, UNITS)
from slmrec.estimate.estimator import Estimator
from slmrec.estimate.predict import ChainPrediction
from slmrec.estimate.evidence import ZERO, Range, match_evidence
from slmrec.estimate.formats import Formats, Shape, formats_of
from slmrec.estimate.options import (STRUCTURE_FIELDS, TRANSFORM_FIELDS, Option, compile_option,
                                     default_params, param_grid)
from slmrec.estimate.state import ModelState, StepCost, compose_quality

__all__ = [
    "ACT_BYTES_PER_TOKEN_LAYER_HIDDEN", "ADAPTER_TRAINABLE_DEFAULT", "BANDWIDTH_EFFICIENCY",
    "BITS_PRECISIONS", "CAPABILITY_PRECISION", "COMPUTE_EFFICIENCY", "DEFAULT_STEP_TOKENS", "MB",
    "MODEL_METRICS", "PREFILL_CHUNK", "PRETRAIN_TOKENS_PER_PARAM", "RUNTIME_OVERHEAD_MB",
    "SPARSE_INDEX_BITS", "STEP_METRICS", "STRUCTURE_FIELDS", "TOKENS_PER_UNIT",
    "TRAIN_MICRO_TOKENS", "TRANSFORM_FIELDS", "UNITS", "ZERO", "Arch", "ChainPrediction",
    "Estimator", "Formats", "ModelState", "Option", "Range", "Shape", "StepCost", "Workload",
    "compile_option", "compose_quality", "default_params", "formats_of", "hardware_class",
    "match_evidence", "param_grid",
]
