"""Decode ms/token of SmolLM2-135M in eager PyTorch (this project's runners), fp32 against packed
RTN int8/int4 at groups 32, 64 and 128 (embedding table and head int8 at the same group), with
torch's packed CPU kernels (runners/quant/kernels.py). One pinned thread, variants interleaved,
median of ROUNDS rounds; the load average is recorded beside the times (shared machine).

These rows are this project's CPU measurements of the `runtime-hf-transformers` profile: they go
into bench/data/published_speeds.csv marked slmrec-measured (bench/estimator_accuracy.py fits the
cpu profile on half of them and reports the other half). Run: `python -m bench
packed_decode_formats`.
"""

from __future__ import annotations

import os
import statistics

from bench._common import md_table, ratio

MODEL = os.environ.get("BENCH_MODEL", "smollm2-135m")
PROMPT_TOKENS, NEW_TOKENS, ROUNDS = 64, 24, 3
VARIANTS = [(8, 32), (8, 64), (8, 128), (4, 32), (4, 64), (4, 128)]


def _quantized(bits: int, group: int):
    from runners.models import load_model
    from runners.quant.rtn import quantize_embeddings, quantize_rtn
    model, _ = load_model(MODEL)
    quantize_rtn(model, bits, group)
    quantize_embeddings(model, 8, group)
    return model.eval()


def main() -> dict:
    from bench.qlinear_kernels import _greedy
    from runners.data import load_corpus
    from runners.models import load_model

    load_start = os.getloadavg()[0]
    fp32, tok = load_model(MODEL)
    fp32.eval()
    ids = load_corpus(tok).validation[:PROMPT_TOKENS][None]
    times: dict[str, list[float]] = {"fp32": []}
    models = {"fp32": fp32}
    for bits, group in VARIANTS:
        models[f"int{bits} g{group}"] = _quantized(bits, group)
        times[f"int{bits} g{group}"] = []
    for m in models.values():   # warm-up and the kernels' one-time repacking
        _greedy(m, ids, 4)
    for _ in range(ROUNDS):
        for label, m in models.items():
            times[label].append(_greedy(m, ids, NEW_TOKENS)[1] * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["fp32"]
    load_end = os.getloadavg()[0]
    rows = [[k, round(v, 2), round(base / v, 3)] for k, v in med.items()]
    worst8 = max(med[f"int8 g{g}"] for b, g in VARIANTS if b == 8)
    return {
        "title": f"packed int8/int4 decode vs fp32 on {MODEL}, by group size (eager PyTorch, 1 thread)",
        "ratios": {"int8_slowest_group_decode_speed_vs_fp32": ratio(
            base / worst8, None, f"{worst8:.1f} vs {base:.1f} ms/token")},
        "median_ms_per_token": med, "context": PROMPT_TOKENS + NEW_TOKENS // 2,
        "load_avg_1m": {"start": round(load_start, 2), "end": round(load_end, 2)},
        "markdown": md_table(rows, ["variant", "decode ms/token", "speed × fp32"])
        + f"\n\n{PROMPT_TOKENS}-token validation prompt, {NEW_TOKENS} greedy tokens with the KV cache, "
          f"median of {ROUNDS} interleaved rounds, 1 thread; load average {load_start:.1f} at start, "
          f"{load_end:.1f} at end on a shared machine.",
    }
