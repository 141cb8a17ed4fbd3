"""Quality effects the KB cites as `slmrec-measured`, at the parameter values the recommender
searches: each runner on SmolLM2-135M at those values, perplexity against the fp32 model.

Head pruning is left out: on SmolLM2-135M (9 query heads in 3 KV groups) the runner removes whole
groups' worth of heads, so fractions 0.125 and 0.25 both remove 3 of 9 heads (the 2026-12-01 run
measured both as ppl 22.68 -> 147.0), which the KB already records at fraction 0.333.

The rows and the evaluation are bench/runner_table.py's (same slice, same calibration, same
measurement); only the parameter values differ, so the two tables read side by side. The KB entries
that cite this bench name it in their `setting`.
"""

from __future__ import annotations

from bench import runner_table

CALIB = runner_table.CALIB
ROWS = [
    ("RTN int4 (g32)", "weight-only-quant", {"bits": 4, "group_size": 32}),
    ("RTN int8 (g32)", "weight-only-quant", {"bits": 8, "group_size": 32}),
    ("Wanda 30%", "wanda-prune", {"sparsity": 0.3, **CALIB}),
    ("structured MLP 10%", "structured-prune", {"target": "mlp", "fraction": 0.1, **CALIB}),
    ("structured MLP 20%", "structured-prune", {"target": "mlp", "fraction": 0.2, **CALIB}),
    ("structured MLP 30%", "structured-prune", {"target": "mlp", "fraction": 0.3, **CALIB}),
    ("layer drop 12.5%", "layer-drop", {"fraction": 0.125, **CALIB}),
]


def main() -> dict:
    saved = runner_table.ROWS
    runner_table.ROWS = ROWS
    try:
        result = runner_table.main()
    finally:
        runner_table.ROWS = saved
    result["title"] = (f"KB effects at the searched parameter values on {runner_table.MODEL}: "
                       "perplexity vs fp32")
    result["ratios"] = {}
    return result
