"""Recommender scaling on synthetic KBs of 1k, 5k and 10k methods (bench/synthetic_kb.py).

For each size: the time of a whole recommendation (search, why and why not for every method,
counterfactuals, Pareto front) for three example scenarios, cold (first call: the KB index is
built) and warm (index cached). Reports the growth exponent between 1k and 10k methods
(1.0 = linear; target close to linear) and the 10k warm time against the 2 s target.
"""

from __future__ import annotations

import math
import statistics
import time

from bench._common import md_table, ratio

SIZES = (1000, 5000, 10000)
SCENARIOS = ("phone-assistant", "pi-classifier", "laptop-teacher")


def main() -> dict:
    from bench.synthetic_kb import build_kb
    from slmrec.kb import load_kb
    from slmrec.recommend import recommend
    from slmrec.scenario import load_scenario

    base = load_kb()
    scenarios = [load_scenario(n, base) for n in SCENARIOS]
    rows, warm_by_size, cold_by_size = [], {}, {}
    for n in SIZES:
        t0 = time.perf_counter()
        kb = build_kb(n, base=base)
        build_s = time.perf_counter() - t0
        colds, warms, nodes = [], [], []
        for sc in scenarios:
            t0 = time.perf_counter()
            rec = recommend(sc, kb)
            colds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rec = recommend(sc, kb)
            warms.append(time.perf_counter() - t0)
            nodes.append(rec.stats.get("nodes", 0))
            kb.__dict__.pop("_recommend_index", None)   # the next scenario is cold again
        warm_by_size[n] = statistics.median(warms)
        cold_by_size[n] = statistics.median(colds)
        rows.append([n, len(kb.relations), round(build_s, 2), round(cold_by_size[n], 3),
                     round(warm_by_size[n], 3), statistics.median(nodes)])
    lo, hi = SIZES[0], SIZES[-1]
    growth = math.log(warm_by_size[hi] / warm_by_size[lo]) / math.log(hi / lo)
    growth_cold = math.log(cold_by_size[hi] / cold_by_size[lo]) / math.log(hi / lo)
    return {
        "title": "recommendation time on synthetic KBs of 1k, 5k and 10k methods",
        "warm_s": warm_by_size, "cold_s": cold_by_size,
        "ratios": {
            "warm_10k_over_2s": ratio(warm_by_size[hi] / 2.0, "<= 1.0",
                                      f"median warm time at 10k methods: {warm_by_size[hi]:.2f} s"),
            "growth_exponent_warm": ratio(growth, "<= 1.3",
                                          "log(t10k/t1k)/log(10): 1.0 is linear"),
            "growth_exponent_cold": ratio(growth_cold, None, "with the KB index built in the call"),
        },
        "markdown": md_table(rows, ["methods", "relations", "KB build s", "cold s (median)",
                                    "warm s (median)", "search nodes (median)"]),
    }


if __name__ == "__main__":
    from bench.__main__ import run_one

    run_one("recommend_scaling")
