"""Deployable formats of SmolLM2-135M in the runtimes they ship on: file size, perplexity on a
held-out slice, prefill and decode speed, all as ratios to the fp32 PyTorch model in the same run.

Rows: fp32 / packed slmrec int8 and int4 in PyTorch; the compressed-tensors folders in plain
transformers; ONNX rows in ONNX Runtime (ONNX_ROWS: fp32, onnxruntime's own int8/int4
quantizers, and slmrec's RTN int8 / GPTQ int4 codes carried into MatMulNBits); GGUF F16 / Q8_0 / Q4_0 /
Q4_1, a GPTQ int4 g64 model whose codes are carried into Q4_1 blocks, and llama.cpp's own
Q4_K_M / Q5_K_M / Q6_K, in llama.cpp (when llama-cpp-python is installed: the `deploy` extra). Every runtime gets the
same thread count (BENCH_THREADS, default 1), the same random prompt and greedy decoding with its
KV cache. Latency is measured round-robin (every session once per round, median over rounds) so
that load from other processes on a shared machine falls on all rows alike; the
compressed-tensors rows are decompressed to dense fp32 on load, so only their perplexity and size
are measured. Perplexity is computed from each runtime's own logits on the validation split, which
never overlaps the calibration split GPTQ uses. The "fp32" base is itself dequantised from the
Q4_1 GGUF the bundled package ships (see README, Provenance), so Q4_1 re-quantizes it almost
exactly; quality ratios are against that base.
`BENCH_DEPLOY_ROWS=a,b` limits the table to rows whose label contains one of the strings;
`BENCH_DEPLOY_ONNX_DIR=dir` reuses `dir/{variant}/model.onnx` (see ONNX_ROWS) exported earlier from
the same base with the same settings (the export takes minutes); `BENCH_DEPLOY_ROUNDS`, `BENCH_DEPLOY_BLOCKS` set the latency rounds and perplexity blocks.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench._common import md_table, ratio

MODEL = os.environ.get("BENCH_MODEL", "smollm2-135m")
PPL = {"seq_len": 256, "blocks": int(os.environ.get("BENCH_DEPLOY_BLOCKS", 6))}
LAT = {"prompt_len": 32, "new_tokens": 16}
ROUNDS = int(os.environ.get("BENCH_DEPLOY_ROUNDS", 5))  # latency rounds, every session once per round
GOALS = {"int4": ("decode >= 2x", 2.0, 1.10), "int8": ("decode >= 1.3x", 1.3, 1.01)}


# ONNX rows: (label, bits, variant, MatMulNBits accuracy_level). Variants (built by _onnx_build):
#   fp32       the float graph
#   ort-int8/4 onnxruntime's own MatMulNBitsQuantizer (round-to-nearest, asymmetric, block 32) on it;
#              the head tied to the embeddings is not a constant MatMul there and stays fp32
#   dyn-int8   onnxruntime quantize_dynamic: MatMulInteger, int8 weights per channel, activations
#              int8 per tensor at run time
#   rtn-8-32   slmrec RTN int8 group 32 (embedding + head int8 group 32), codes carried (group 64:
#              ppl x1.008 at acc4, group 32 x1.004 at the same speed, measured: docs/deploy.md)
#   gptq-4-32  slmrec GPTQ int4 group 32, act-order, 8x256 calibration tokens (embedding + head
#              RTN int8 group 32), codes carried
# accuracy_level 4: int8 activations per block (onnxruntime's int8 kernels); 0: fp32 compute.
ONNX_ROWS = [
    ("ONNX fp32", None, "fp32", 0),
    ("ONNX ORT-RTN int8 b32, acc4", "int8", "ort-int8", 4),
    ("ONNX ORT-RTN int4 b32, acc4", "int4", "ort-int4", 4),
    ("ONNX dynamic int8 MatMulInteger", "int8", "dyn-int8", 0),
    ("ONNX slmrec RTN int8 g32 codes, acc0", "int8", "rtn-8-32", 0),
    ("ONNX slmrec RTN int8 g32 codes, acc4", "int8", "rtn-8-32", 4),
    ("ONNX slmrec GPTQ int4 g32 codes, acc0", "int4", "gptq-4-32", 0),
    ("ONNX slmrec GPTQ int4 g32 codes, acc4", "int4", "gptq-4-32", 4),
]
GPTQ_CAL = {"samples": 8, "seq_len": 256}  # calibration split, disjoint from the validation slice


def _onnx_build(variant: str, level: int, model, corpus, wd: Path):
    """(model.onnx at accuracy_level `level`, its files). `BENCH_DEPLOY_ONNX_DIR` reuses
    dir/{variant}/model.onnx exported earlier from the same base with the same settings."""
    import copy

    from runners.export.onnx import FILE, export_onnx, quantize_onnx, with_accuracy_level
    root = Path(os.environ.get("BENCH_DEPLOY_ONNX_DIR", wd / "onnx"))
    path = root / variant / FILE
    if not path.is_file():
        if variant == "fp32":
            export_onnx(model, path.parent)
        elif variant.startswith("ort-"):
            quantize_onnx(_onnx_build("fp32", 0, model, corpus, wd)[0], path, variant[4:], 32)
        elif variant == "dyn-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic
            path.parent.mkdir(parents=True, exist_ok=True)  # its external data goes beside it
            quantize_dynamic(str(_onnx_build("fp32", 0, model, corpus, wd)[0]), str(path), per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"], use_external_data_format=True)
        else:
            from runners.quant.rtn import quantize_embeddings, quantize_rtn
            method, bits, group = variant.split("-")
            m = copy.deepcopy(model)
            if method == "gptq":
                from runners.quant.gptq import quantize_gptq
                calib = corpus.blocks("calibration", GPTQ_CAL["seq_len"], GPTQ_CAL["samples"])
                quantize_gptq(m, calib, int(bits), int(group), 0.01, act_order=True)
            quantize_rtn(m, int(bits), int(group))
            quantize_embeddings(m, 8, int(group))
            export_onnx(m, path.parent)
            del m
    graph = with_accuracy_level(path, level)
    return graph, (graph, *path.parent.glob("*.data"))


def _rows():
    """(label, bits or None, runtime, build(model, tok, corpus, workdir) -> artifact, on-disk path)."""
    from runners.export.gguf import export_gguf

    def torch_quant(bits, gptq=False):
        def build(model, tok, corpus, wd):
            import copy

            from runners.quant.rtn import quantize_embeddings, quantize_rtn
            m = copy.deepcopy(model)
            if gptq:
                from runners.quant.gptq import quantize_gptq
                quantize_gptq(m, corpus.blocks("calibration", 128, 8), bits, 64, 0.01, True)
            quantize_rtn(m, bits, 64)
            quantize_embeddings(m, 8, 64)
            from runners.checkpoint import save_checkpoint
            folder = save_checkpoint(m, tok, wd / f"ct-int{bits}{'-gptq' if gptq else ''}")
            return m, folder
        return build

    def plain_transformers(bits):
        def build(model, tok, corpus, wd):
            from transformers import AutoModelForCausalLM
            folder = wd / f"ct-int{bits}"
            return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval(), folder
        return build

    def onnx(variant, accuracy_level=4):
        """ONNX rows (see _onnx_build): the model.onnx of `variant` at MatMulNBits accuracy_level."""
        def build(model, tok, corpus, wd):
            return _onnx_build(variant, accuracy_level, model, corpus, wd)
        return build

    def gguf(qtype, gptq_bits=None):
        """The float base exported as `qtype`, or (gptq_bits) a GPTQ g64 model exported with
        `auto`, which carries its codes into GGUF blocks as they are (runners/export/gguf_blocks.py)."""
        def build(model, tok, corpus, wd):
            src, stem = model, qtype
            if gptq_bits:
                import copy

                from runners.quant.gptq import quantize_gptq
                from runners.quant.rtn import quantize_embeddings
                src, stem = copy.deepcopy(model), f"gptq{gptq_bits}"
                quantize_gptq(src, corpus.blocks("calibration", 128, 8), gptq_bits, 64, 0.01, True)
                quantize_embeddings(src, 8, 64)
            log: dict = {}
            p = export_gguf(src, tok, wd / f"model.{stem}.gguf", qtype, log=log)
            print(f"   GGUF {stem}: {log['type']}, {log['carried']} weights carried, "
                  f"{len(log['requantized'])} re-quantized", flush=True)
            return p, p
        return build

    return [
        ("fp32", None, "pytorch", lambda m, t, c, wd: (m, None)),
        ("slmrec RTN int8 g64 (packed)", "int8", "pytorch", torch_quant(8)),
        ("slmrec RTN int4 g64 (packed)", "int4", "pytorch", torch_quant(4)),
        ("compressed-tensors int8 g64", "int8", "transformers", plain_transformers(8)),
        ("compressed-tensors int4 g64", "int4", "transformers", plain_transformers(4)),
        *[(label, bits, "onnxruntime", onnx(variant, level)) for label, bits, variant, level in ONNX_ROWS],
        ("GGUF F16", None, "llama.cpp", gguf("F16")),
        ("GGUF Q8_0", "int8", "llama.cpp", gguf("Q8_0")),
        ("GGUF Q4_0", "int4", "llama.cpp", gguf("Q4_0")),
        # the base lies on this grid (see Provenance): reported, kept out of the int4 goal
        ("GGUF Q4_1 (base's own grid: not a fair int4 figure)", None, "llama.cpp", gguf("Q4_1")),
        ("GGUF Q4_1 carrying GPTQ int4 g64 codes", "int4", "llama.cpp", gguf("auto", gptq_bits=4)),
        ("GGUF Q4_K_M (llama.cpp quantizer)", "int4", "llama.cpp", gguf("Q4_K_M")),
        ("GGUF Q5_K_M (llama.cpp quantizer)", None, "llama.cpp", gguf("Q5_K_M")),
        ("GGUF Q6_K (llama.cpp quantizer)", None, "llama.cpp", gguf("Q6_K")),
    ]


def _size_mb(path) -> float | None:
    if path is None:
        return None
    if isinstance(path, (list, tuple)):  # the files of one artifact
        return sum(Path(p).stat().st_size for p in path) / 1e6
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and
                                            p.suffix in (".safetensors", ".onnx", ".data", ".gguf")]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> dict:
    import statistics

    import torch

    from runners.data import load_corpus
    from runners.models import load_model
    from runners.runtime import available, open_session
    from runners.runtime.measure import latency, perplexity

    threads = torch.get_num_threads()
    model, tok = load_model(MODEL, dtype="float32")
    corpus = load_corpus(tok)
    blocks = corpus.blocks("validation", PPL["seq_len"], PPL["blocks"])
    vocab = model.config.vocab_size
    only = [s for s in os.environ.get("BENCH_DEPLOY_ROWS", "").split(",") if s]
    rows, skipped, sessions = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        fp32_size = _size_mb_fp32(model, tok, wd)
        for label, bits, runtime, build in _rows():
            if only and label != "fp32" and not any(s in label for s in only):
                continue
            session_runtime = "pytorch" if runtime == "transformers" else runtime
            if not available(session_runtime):
                skipped.append(f"{label}: {runtime} not installed")
                continue
            t0 = time.perf_counter()
            artifact, path = build(model, tok, corpus, wd)
            build_s = time.perf_counter() - t0
            sess = open_session(session_runtime, artifact, threads=threads)
            ppl = perplexity(sess, blocks)
            rows.append({"label": label, "bits": bits, "runtime": runtime, "ppl": ppl,
                         "size_mb": _size_mb(path) if path is not None else fp32_size,
                         "build_s": build_s, "tensor_types": _gguf_mix(path)})
            print(f"   {label}: ppl {ppl:.3f}, {rows[-1]['size_mb']:.1f} MB", flush=True)
            if runtime != "transformers":
                sessions[label] = sess
            del sess
        print(f"   latency: {ROUNDS} round-robin rounds over {len(sessions)} sessions", flush=True)
        times: dict[str, dict[str, list]] = {k: {"prefill": [], "decode": []} for k in sessions}
        for r in range(ROUNDS):
            for label, sess in sessions.items():
                lat = latency(sess, vocab, repeats=1, seed=r, **LAT)
                times[label]["prefill"].append(lat["prefill_ms"])
                times[label]["decode"].append(lat["decode_ms_per_token"])
        sessions.clear()
    for r in rows:
        t = times.get(r["label"])
        r["prefill_ms"] = statistics.median(t["prefill"]) if t else None
        r["decode_ms_per_token"] = statistics.median(t["decode"]) if t else None
    base = rows[0]
    for r in rows:
        r["ppl_ratio"] = r["ppl"] / base["ppl"]
        r["size_ratio"] = r["size_mb"] / base["size_mb"]
        r["prefill_speedup"] = base["prefill_ms"] / r["prefill_ms"] if r["prefill_ms"] else None
        r["decode_speedup"] = base["decode_ms_per_token"] / r["decode_ms_per_token"] if r["decode_ms_per_token"] else None
    ratios = {}
    for bits, (what, speed, quality) in GOALS.items():
        timed_rows = [r for r in rows if r["bits"] == bits and r["decode_speedup"]]
        cands = [r for r in timed_rows if r["ppl_ratio"] <= quality]
        best = max(cands, key=lambda r: r["decode_speedup"], default=None)
        fastest = max(timed_rows, key=lambda r: r["decode_speedup"], default=None)
        if best:
            note = f"{best['label']} in {best['runtime']}: ppl x{best['ppl_ratio']:.3f} (<= {quality})"
            if best.get("tensor_types"):
                note += f"; tensor types {best['tensor_types']}"
        else:
            note = f"no {bits} row within ppl x{quality}"
            if fastest:
                note += (f"; fastest {fastest['label']} x{fastest['decode_speedup']:.2f} at ppl "
                         f"x{fastest['ppl_ratio']:.3f}")
        entry = ratio(best["decode_speedup"] if best else None, f">= {speed}", note)
        if best is None:
            entry["ok"] = False  # the goal is missed, not unmeasured
        ratios[f"{bits} decode speedup within ppl x{quality}"] = entry
        if fastest:
            ratios[f"{bits} fastest decode speedup (any quality)"] = ratio(
                fastest["decode_speedup"], None, f"{fastest['label']} in {fastest['runtime']}, "
                f"ppl x{fastest['ppl_ratio']:.3f}, size x{fastest['size_ratio']:.3f}")
    table = md_table([[r["label"], r["runtime"], r["size_mb"], r["size_ratio"], r["ppl"], r["ppl_ratio"],
                       r["prefill_speedup"], r["decode_speedup"], r["decode_ms_per_token"]] for r in rows],
                     ["format", "runtime", "size MB", "size ratio", "ppl", "ppl ratio", "prefill x",
                      "decode x", "decode ms/token"])
    md = (table + f"\n\nPerplexity on {PPL['blocks']} validation blocks of {PPL['seq_len']} tokens "
          "(the validation split; GPTQ calibration uses the disjoint calibration split), from each "
          f"runtime's own logits. Latency: {LAT['prompt_len']}-token prompt, {LAT['new_tokens']} greedy "
          f"tokens with the KV cache, median of {ROUNDS} round-robin rounds, {threads} thread(s) in every "
          "runtime. Speed ratios are fp32 PyTorch time over the row's time (higher is faster). The base "
          "is dequantised from a Q4_1 GGUF (see docs/deploy.md, Provenance).")
    mixes = [f"{r['label']}: {r['tensor_types']}" for r in rows if r.get("tensor_types")]
    if mixes:
        md += ("\n\nGGUF tensor types, as shares of the weights (k-quants need rows that are a "
               "multiple of 256; llama.cpp falls back on SmolLM2's 576-wide rows): " + "; ".join(mixes) + ".")
    if only:
        md += f"\n\nRows limited to labels containing {', '.join(only)} (BENCH_DEPLOY_ROWS)."
    if skipped:
        md += "\n\nNot measured: " + "; ".join(skipped) + "."
    return {"title": "deployable formats x runtimes on SmolLM2-135M, ratios to fp32 PyTorch",
            "rows": rows, "skipped": skipped, "ratios": ratios, "markdown": md}


def _size_mb_fp32(model, tok, wd: Path) -> float:
    from runners.checkpoint import save_checkpoint
    return _size_mb(save_checkpoint(model, tok, wd / "fp32"))


def _gguf_mix(path) -> str | None:
    """The tensor types of a .gguf file as shares of its weights, largest first."""
    if not isinstance(path, (str, Path)) or Path(path).suffix != ".gguf":
        return None
    import collections

    import gguf
    count: collections.Counter = collections.Counter()
    for t in gguf.GGUFReader(str(path)).tensors:
        if len(t.shape) > 1:
            count[t.tensor_type.name] += int(t.n_elements)
    total = sum(count.values())
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in count.most_common())
