"""Memory of a training step on the device where it runs, beyond what the estimator counts.

The estimator prices the trained model (weights, gradients, optimizer states, activations) and a
resident teacher. Preference and RL steps also hold frozen copies of the model: a DPO/KTO
reference (`cost.teacher_resident` without a teacher requirement), or the reference, reward and
value models of RLHF (`cost.resident_frozen_models`). Each frozen copy is held in bf16.
"""

from __future__ import annotations

from slmrec.estimate import ModelState, Option
from slmrec.kb import KB

FROZEN_BYTES_PER_PARAM = 2.0   # bf16 weights, no gradients or optimizer states
MB = 1e6


def frozen_models(kb: KB, o: Option) -> int:
    m = kb.methods[o.method]
    n = m.cost.resident_frozen_models
    if not n and m.cost.teacher_resident and m.requires.teacher.value == "none":
        n = 1   # a frozen reference copy of the model being trained
    return n


def frozen_mb(kb: KB, o: Option, s: ModelState) -> float:
    n = frozen_models(kb, o)
    return n * s.params * FROZEN_BYTES_PER_PARAM / MB if n else 0.0
