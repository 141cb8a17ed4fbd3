"""Library quantizers against our own, on CPU: int4 weights, group 64, every linear of SmolLM2-135M.

Three ways to the same format (4-bit weights, one scale and zero point per 64 weights along the
input dimension, embedding table and tied head kept float):
- `rtn`: our round-to-nearest (runners/quant/rtn.py through the weight-only-quant runner);
- `gptq`: our GPTQ (runners/quant/gptq.py through the gptq runner, act-order, 8x256 tokens of the
  calibration split, as bench/kb_figures.py uses);
- `hqq`: HQQ (hqq==0.2.8.post1, `hqq.core.quantize.Quantizer.quantize` on device "cpu", optimize=True,
  no calibration data), dequantized back into each nn.Linear for evaluation.

Each is applied to a freshly loaded model and scored on the same fixed slice, the first 4,096
tokens of the validation split (16x256, as bench/kb_figures.py), against the unchanged model on the
same tokens. Quantization wall time on the bench's thread count (1 by default). The bundled
"fp32" baseline is itself a Q4_1 GGUF dequantised to fp32 (see bench/kb_figures.py).

Run: `python -m bench library_quantizers`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench._common import md_table, ratio

MODEL = "smollm2-135m"
BITS, GROUP = 4, 64
EVAL = {"seq_len": 256, "n_blocks": 16, "batch_size": 4}  # validation[0:4096]
CAL = {"samples": 8, "seq_len": 256}  # 2,048 of the calibration split's tokens
HQQ_VERSION = "0.2.8.post1"


def _runner(rid: str, params: dict, corpus, workdir: Path):
    from runners.base import StepContext
    from runners.models import load_model
    from runners.registry import get_runner_class
    from runners.training import set_seed

    model, tok = load_model(MODEL)
    cls = get_runner_class(rid)
    set_seed(0)
    ctx = StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=workdir, seed=0,
                      log=lambda m: None, load_teacher=None)
    t0 = time.perf_counter()
    out = cls().run(ctx, cls.Params(**params))
    return out.model, time.perf_counter() - t0


def _hqq(corpus, workdir: Path):
    import torch
    from hqq.core.quantize import Quantizer

    from runners.models import load_model
    from runners.quant.rtn import linear_names

    model, _ = load_model(MODEL)
    names = linear_names(model)  # the same linears our runners quantize (tied head excluded)
    t0 = time.perf_counter()
    with torch.no_grad():
        for name in names:
            lin = model.get_submodule(name)
            w = lin.weight.data
            wq, meta = Quantizer.quantize(w, nbits=BITS, group_size=GROUP, axis=1, optimize=True,
                                          bitpack=False, compute_dtype=torch.float32, device="cpu")
            lin.weight.data = Quantizer.dequantize(wq, meta).reshape(w.shape).to(w.dtype).contiguous()
    return model, time.perf_counter() - t0


METHODS = {
    "rtn (ours)": lambda corpus, wd: _runner(
        "weight-only-quant", {"bits": BITS, "group_size": GROUP, "embedding_bits": None}, corpus, wd),
    "gptq (ours)": lambda corpus, wd: _runner(
        "gptq", {"bits": BITS, "group_size": GROUP, "embedding_bits": None, **CAL}, corpus, wd),
    f"hqq {HQQ_VERSION}": _hqq,
}


def main() -> dict:
    import torch

    from runners.data import load_corpus
    from runners.evaluate import perplexity_report
    from runners.models import load_model

    model, tok = load_model(MODEL)
    corpus = load_corpus(tok)
    base = perplexity_report(model, corpus, **EVAL)
    del model
    results, rows = {}, [["fp32 (bundled)", round(base.ppl, 3), 1.0, "–", "–"]]
    with tempfile.TemporaryDirectory(prefix="slmrec-libquant-") as tmp:
        for key, fn in METHODS.items():
            print(f"   {key}", flush=True)
            workdir = Path(tmp) / key.split()[0]
            workdir.mkdir()
            model, wall = fn(corpus, workdir)
            rep = perplexity_report(model, corpus, **EVAL)
            del model
            r, lo, hi = rep.ratio(base)
            results[key] = {"ppl": round(rep.ppl, 3), "ratio": round(r, 4), "low": round(lo, 4),
                            "high": round(hi, 4), "parts": [round(p, 3) for p in rep.parts],
                            "quantize_s": round(wall, 2)}
            rows.append([key, round(rep.ppl, 3), round(r, 4), f"{lo:.4f}..{hi:.4f}", round(wall, 1)])
    ours, lib = results["gptq (ours)"], results[f"hqq {HQQ_VERSION}"]
    return {
        "title": f"library vs own int{BITS} g{GROUP} quantizers on {MODEL}, validation[0:4096]",
        "slice": base.slice, "tokens": base.tokens, "base": {"ppl": round(base.ppl, 3)},
        "methods": results, "eval": EVAL, "calibration": CAL, "threads": torch.get_num_threads(),
        "ratios": {
            "hqq_ppl_over_gptq_ppl": ratio(round(lib["ppl"] / ours["ppl"], 4), None,
                                           "HQQ perplexity / our GPTQ perplexity, same slice; <= 1 would favour the library"),
            "hqq_ppl_over_rtn_ppl": ratio(round(lib["ppl"] / results["rtn (ours)"]["ppl"], 4), None,
                                          "HQQ perplexity / our RTN perplexity, same slice"),
        },
        "markdown": md_table(rows, ["method", "ppl", "ratio to fp32", "spread over 4 parts", "quantize s"])
        + f"\n\nint{BITS}, group {GROUP}, every linear except the tied head; embedding kept float. "
          f"Perplexity on {base.slice}; GPTQ calibrates on {CAL['samples']}x{CAL['seq_len']} tokens "
          "of the calibration split (disjoint from validation); HQQ and RTN use no data.",
    }
