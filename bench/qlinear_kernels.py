"""Packed int4/int8 weights on SmolLM2-135M: decode and prefill speed against fp32 in the same
run, with torch's packed CPU kernels (runners/quant/kernels.py) and without them.

The fp32 baseline is the bundled Q4_1 GGUF dequantised to fp32. Quantized variants are RTN int4
or int8 (group 128) with the tied embedding table and head in int8 (group 128): the kernel speed
does not depend on how the codes were chosen (GPTQ codes have the same layout). Decode is greedy
with a KV cache from a validation-text prompt; the kernel path must give the same greedy tokens as
dequantise + F.linear on the same codes. A per-row sweep on single layers records where the kernel
stops beating dequantise + F.linear: the dispatch rule KERNEL_MAX_ROWS comes from it. Variants are
measured in interleaved rounds (median of ROUNDS) on one pinned thread; the load average is
recorded beside the times, since the machine is shared.
"""

from __future__ import annotations

import os
import statistics
import time

from bench._common import md_table, ratio

MODEL = os.environ.get("BENCH_MODEL", "smollm2-135m")
PROMPT_TOKENS, LONG_PROMPT, NEW_TOKENS, ROUNDS = 64, 256, 24, 3
SWEEP_ROWS = (1, 4, 16, 64, 256)


def _greedy(model, ids, new_tokens: int) -> tuple[float, float, list[int]]:
    """(prefill s, decode s per token, generated ids) with a KV cache."""
    import torch
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        prefill = time.perf_counter() - t0
        past, nxt = out.cache, out.logits[:, -1:].argmax(-1)
        tokens = [int(nxt)]
        t0 = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(input_ids=nxt, cache=past, use_cache=True)
            past, nxt = out.cache, out.logits[:, -1:].argmax(-1)
            tokens.append(int(nxt))
        decode = (time.perf_counter() - t0) / max(1, new_tokens - 1)
    return prefill, decode, tokens


def _quantized(bits: int):
    from runners.models import load_model
    from runners.quant.rtn import quantize_embeddings, quantize_rtn
    model, _ = load_model(MODEL)
    quantize_rtn(model, bits, 128)
    quantize_embeddings(model, 8, 128)
    return model.eval()


def _sweep(layer) -> list[dict]:
    """ms per call of the kernel and of dequantise + F.linear for growing row counts."""
    import torch
    import torch.nn.functional as F

    from runners.quant import kernels
    kernel = kernels.packed_kernel(layer)
    out = []
    with torch.no_grad():
        for rows in SWEEP_ROWS:
            x = torch.randn(rows, layer.in_features)
            times = {}
            for name, fn in (("kernel", lambda: kernel(x)),
                             ("dequant", lambda: F.linear(x, layer.dequantize(x.dtype)))):
                fn()
                reps = 5
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                times[name] = 1000 * (time.perf_counter() - t0) / reps
            out.append({"rows": rows, "kernel_ms": times["kernel"], "dequant_ms": times["dequant"]})
    return out


def main() -> dict:
    import torch

    from runners.data import load_corpus
    from runners.models import load_model
    from runners.quant import kernels

    load_start = os.getloadavg()[0]
    fp32, tok = load_model(MODEL)
    fp32.eval()
    corpus = load_corpus(tok)
    ids = corpus.validation[:PROMPT_TOKENS][None]
    models = {"fp32": fp32, "int4": _quantized(4), "int8": _quantized(8)}
    variants = [("fp32", "fp32", True), ("int4 kernels", "int4", True), ("int4 dequantise", "int4", False),
                ("int8 kernels", "int8", True), ("int8 dequantise", "int8", False)]
    long_ids = corpus.validation[:LONG_PROMPT][None]
    times: dict[str, dict[str, list]] = {v: {"prefill": [], "decode": [], "prefill_long": []}
                                         for v, _, _ in variants}
    tokens: dict[str, list[int]] = {}
    for label, key, use in variants:  # warm-up (and the kernels' one-time repacking)
        kernels.KERNELS_ENABLED = use
        tokens[label] = _greedy(models[key], ids, 4)[2]
    for _ in range(ROUNDS):
        for label, key, use in variants:
            kernels.KERNELS_ENABLED = use
            prefill, decode, toks = _greedy(models[key], ids, NEW_TOKENS)
            times[label]["prefill"].append(prefill)
            times[label]["decode"].append(decode)
            tokens[label] = toks
            with torch.no_grad():
                t0 = time.perf_counter()
                models[key](input_ids=long_ids, use_cache=True)
                times[label]["prefill_long"].append(time.perf_counter() - t0)
    kernels.KERNELS_ENABLED = True
    med = {v: {k: 1000 * statistics.median(t) for k, t in d.items()} for v, d in times.items()}
    base = med["fp32"]
    rows, sweep = [], {}
    for label, key, use in variants:
        same = next((i for i, (a, b) in enumerate(zip(tokens[label], tokens["fp32"])) if a != b), NEW_TOKENS)
        rows.append([label, round(med[label]["prefill"], 1), round(base["prefill"] / med[label]["prefill"], 3),
                     round(med[label]["prefill_long"], 1), round(base["prefill_long"] / med[label]["prefill_long"], 3),
                     round(med[label]["decode"], 2), round(base["decode"] / med[label]["decode"], 3), same])
    q4 = models["int4"].model.layers[0].mlp.up_proj
    q8 = models["int8"].model.layers[0].mlp.up_proj
    head = models["int8"].lm_head
    sweep = {"int4 up_proj 1536x576": _sweep(q4), "int8 up_proj 1536x576": _sweep(q8),
             "int8 head 49152x576": _sweep(head)}
    crossover = {name: max([r["rows"] for r in s if r["kernel_ms"] < r["dequant_ms"]], default=0)
                 for name, s in sweep.items()}
    same4 = tokens["int4 kernels"] == tokens["int4 dequantise"]
    same8 = tokens["int8 kernels"] == tokens["int8 dequantise"]
    ratios = {
        "int4_decode_speed_vs_fp32": ratio(base["decode"] / med["int4 kernels"]["decode"], ">= 1.7",
                                           f"{med['int4 kernels']['decode']:.1f} vs {base['decode']:.1f} ms/token"),
        "int8_decode_speed_vs_fp32": ratio(base["decode"] / med["int8 kernels"]["decode"], None,
                                           f"{med['int8 kernels']['decode']:.1f} vs {base['decode']:.1f} ms/token"),
        "int4_prefill_speed_vs_fp32": ratio(base["prefill"] / med["int4 kernels"]["prefill"], None,
                                            f"{PROMPT_TOKENS}-token prompt (kernels up to {kernels.KERNEL_MAX_ROWS} rows)"),
        "int8_prefill_speed_vs_fp32": ratio(base["prefill"] / med["int8 kernels"]["prefill"], None,
                                            f"{PROMPT_TOKENS}-token prompt (kernels up to {kernels.KERNEL_MAX_ROWS} rows)"),
        "int4_prefill_long_speed_vs_fp32": ratio(base["prefill_long"] / med["int4 kernels"]["prefill_long"], None,
                                                 f"{LONG_PROMPT}-token prompt: dequantise + F.linear"),
        "int4_decode_kernel_vs_dequantise": ratio(med["int4 dequantise"]["decode"] / med["int4 kernels"]["decode"],
                                                  None, "same codes, kernels on / off"),
        "greedy_tokens_kernel_equal_dequantise": ratio(float(same4 and same8), ">= 1",
                                                       f"int4 {same4}, int8 {same8} over {NEW_TOKENS} tokens"),
    }
    sweep_rows = [[name, r["rows"], round(r["kernel_ms"], 3), round(r["dequant_ms"], 3)]
                  for name, s in sweep.items() for r in s]
    load_end = os.getloadavg()[0]
    return {
        "title": f"packed int4/int8 decode and prefill vs fp32 on {MODEL}",
        "ratios": ratios, "median_ms": med, "tokens": tokens, "sweep": sweep,
        "kernel_max_rows": kernels.KERNEL_MAX_ROWS, "kernel_wins_up_to_rows": crossover,
        "load_avg_1m": {"start": round(load_start, 2), "end": round(load_end, 2)},
        "markdown": md_table(rows, ["variant", f"prefill {PROMPT_TOKENS} ms", "speed ×",
                                    f"prefill {LONG_PROMPT} ms", "speed ×", "decode ms/token",
                                    "decode speed ×", "greedy tokens as fp32 before the first difference"])
        + f"\n\nBaseline: the bundled Q4_1 GGUF dequantised to fp32. Speed × is fp32 time over the "
          f"variant's ({torch.get_num_threads()} thread, median of {ROUNDS} interleaved rounds, "
          f"{PROMPT_TOKENS}-token prompt, {NEW_TOKENS} greedy tokens; load average "
          f"{load_start:.1f} at start, {load_end:.1f} at end on a shared machine).\n\n"
        + md_table(sweep_rows, ["layer", "rows", "kernel ms", "dequantise + F.linear ms"])
        + f"\n\nThe kernel wins up to {crossover} rows; dispatch uses it for at most "
          f"{kernels.KERNEL_MAX_ROWS} rows.",
    }
