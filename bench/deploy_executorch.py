"""SmolLM2-135M as ExecuTorch programs (.pte lowered to XNNPACK) in ExecuTorch's runtime, beside the
fp32 PyTorch model in the same run: file size, perplexity on the held-out slice deploy_formats uses
(PPL there: validation split), prefill and decode speed (LAT there), as ratios to fp32 PyTorch.

Rows: fp32 PyTorch (baseline); ExecuTorch fp32; ExecuTorch 8da8w (torchao: int8 dynamic
activations, int8 weights per channel); ExecuTorch 8da4w (int8 dynamic activations, int4 weights
per group of 32). The embedding table stays fp32 in every program. Every runtime runs with the
same thread count (torch's, BENCH_THREADS), the same random prompt and greedy decoding with its KV
cache (static, EXPORT_LEN positions in the programs); latency round-robin (every session once per
round, median over ROUNDS rounds) as in deploy_formats. Without the optional `executorch` extra
there are no rows, only a note. `BENCH_ET_ROWS=a,b` limits the ExecuTorch rows to quant names.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import md_table, ratio
from bench.deploy_formats import LAT, MODEL, PPL, ROUNDS, _size_mb_fp32

QUANTS = [("ExecuTorch fp32 (XNNPACK)", None, "none"), ("ExecuTorch 8da8w (XNNPACK)", "int8", "8da8w"),
          ("ExecuTorch 8da4w g32 (XNNPACK)", "int4", "8da4w")]
EXPORT_LEN = max(PPL["seq_len"], LAT["prompt_len"] + LAT["new_tokens"] + 1)


def main() -> dict:
    title = "ExecuTorch (.pte, XNNPACK) on SmolLM2-135M, ratios to fp32 PyTorch"
    if importlib.util.find_spec("executorch") is None:
        return {"title": title, "rows": [], "ratios": {},
                "markdown": "Not measured: ExecuTorch is not installed (pip install -e '.[executorch]')."}
    import torch

    from runners.data import load_corpus
    from runners.export.executorch import export_executorch
    from runners.models import load_model
    from runners.runtime import open_session
    from runners.runtime.measure import latency, perplexity

    threads = torch.get_num_threads()
    model, tok = load_model(MODEL, dtype="float32")
    blocks = load_corpus(tok).blocks("validation", PPL["seq_len"], PPL["blocks"])
    vocab = model.config.vocab_size
    only = [s for s in os.environ.get("BENCH_ET_ROWS", "").split(",") if s]
    rows, sessions = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        plan = [("fp32 PyTorch", None, None)] + [q for q in QUANTS if not only or q[2] in only]
        for label, bits, quant in plan:
            t0 = time.perf_counter()
            if quant is None:
                sess, size = open_session("pytorch", model, threads=threads), _size_mb_fp32(model, tok, wd)
            else:
                path = export_executorch(model, wd / f"{quant}.pte", quant, max_seq_len=EXPORT_LEN)
                sess, size = open_session("executorch", path, threads=threads), path.stat().st_size / 1e6
            build_s = time.perf_counter() - t0
            ppl = perplexity(sess, blocks)
            rows.append({"label": label, "bits": bits, "runtime": sess.runtime, "quant": quant, "ppl": ppl,
                         "size_mb": size, "build_s": build_s})
            sessions[label] = sess
            print(f"   {label}: ppl {ppl:.3f}, {size:.1f} MB, built in {build_s:.0f} s", flush=True)
        times = {k: {"prefill": [], "decode": []} for k in sessions}
        for r in range(ROUNDS):
            for label, sess in sessions.items():
                lat = latency(sess, vocab, repeats=1, seed=r, **LAT)
                times[label]["prefill"].append(lat["prefill_ms"])
                times[label]["decode"].append(lat["decode_ms_per_token"])
        sessions.clear()
    base = rows[0]
    for r in rows:
        t = times[r["label"]]
        r["prefill_ms"], r["decode_ms_per_token"] = statistics.median(t["prefill"]), statistics.median(t["decode"])
    for r in rows:
        r["ppl_ratio"], r["size_ratio"] = r["ppl"] / base["ppl"], r["size_mb"] / base["size_mb"]
        r["prefill_speedup"] = base["prefill_ms"] / r["prefill_ms"]
        r["decode_speedup"] = base["decode_ms_per_token"] / r["decode_ms_per_token"]
    ratios = {}
    for r in rows[1:]:
        key = r["quant"]
        ratios[f"{key} decode speedup"] = ratio(r["decode_speedup"], None, f"{r['label']}, ppl x{r['ppl_ratio']:.3f}, "
                                                f"size x{r['size_ratio']:.3f}")
        ratios[f"{key} ppl ratio"] = ratio(r["ppl_ratio"], None, f"{r['label']}, validation slice")
    table = md_table([[r["label"], r["runtime"], r["size_mb"], r["size_ratio"], r["ppl"], r["ppl_ratio"],
                       r["prefill_ms"], r["prefill_speedup"], r["decode_ms_per_token"], r["decode_speedup"]]
                      for r in rows],
                     ["format", "runtime", "size MB", "size ratio", "ppl", "ppl ratio", "prefill ms",
                      "prefill x", "decode ms/token", "decode x"])
    md = (table + f"\n\nPerplexity on {PPL['blocks']} validation blocks of {PPL['seq_len']} tokens (the "
          "slice bench/deploy_formats.py uses), from each runtime's own logits. Latency: "
          f"{LAT['prompt_len']}-token prompt, {LAT['new_tokens']} greedy tokens with the KV cache (static, "
          f"{EXPORT_LEN} positions in the programs), median of {ROUNDS} round-robin rounds, {threads} thread(s). "
          "Speed ratios are fp32 PyTorch time over the row's time (higher is faster).")
    return {"title": title, "rows": rows, "ratios": ratios, "markdown": md}
