"""The estimator's constants (documented in docs/estimator.md; calibration corrects what they
miss)."""

from __future__ import annotations

from slmrec.schema import ComputeScale

MB = 1e6                      # sizes and memory are reported in MB = 10^6 bytes
BANDWIDTH_EFFICIENCY = 0.7    # without runtime profiles in the KB: share of peak bandwidth
COMPUTE_EFFICIENCY = 0.5      # share of peak FLOP/s a training step reaches
RUNTIME_OVERHEAD_MB = {"cpu": 50.0, "soc": 50.0, "npu": 50.0, "gpu": 500.0}
PREFILL_CHUNK = 512           # tokens whose activations are live at once during prefill
TRAIN_MICRO_TOKENS = 2048     # tokens per micro-batch when a step trains
ACT_BYTES_PER_TOKEN_LAYER_HIDDEN = 34.0   # training activations, bytes per token*layer*hidden
ADAPTER_TRAINABLE_DEFAULT = 0.01          # trainable share when a step trains adapters
# Tokens a step processes when its method gives neither cost.tokens nor requires.data_amount.
DEFAULT_STEP_TOKENS = {ComputeScale.none: 0.0, ComputeScale.calibration: 128 * 512.0,
                       ComputeScale.fine_tune: 1e7, ComputeScale.continued_pretraining: 1e9}
PRETRAIN_TOKENS_PER_PARAM = 20.0          # Chinchilla compute-optimal
# Tokens one unit of a data amount stands for (shared with slmrec.scenario).
TOKENS_PER_UNIT = {"tokens": 1.0, "samples": 512.0, "examples": 256.0, "pairs": 512.0}
SPARSE_INDEX_BITS = {"semi-structured": 2.0, "unstructured": 1.0}

MODEL_METRICS = ("params", "bits_per_weight", "sparsity", "size_mb", "inference_memory_mb",
                 "decode_ms_per_token", "prefill_ms", "quality_loss_pct")
STEP_METRICS = ("step_peak_memory_mb", "step_tflop", "step_hours")
UNITS = {"params": "count", "bits_per_weight": "bits", "sparsity": "fraction", "size_mb": "MB",
         "inference_memory_mb": "MB", "decode_ms_per_token": "ms", "prefill_ms": "ms",
         "quality_loss_pct": "%", "step_peak_memory_mb": "MB", "step_tflop": "TFLOP",
         "step_hours": "h", "throughput_tok_s": "tokens/s"}


