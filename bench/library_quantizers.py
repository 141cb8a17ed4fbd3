"""Library quantizers and sparsifiers against our own, on CPU, on every linear of SmolLM2-135M.

Three sections, each method applied to a freshly loaded model and scored on the same fixed slice,
the first 4,096 tokens of the validation split (16x256, as bench/kb_figures.py), against the
unchanged model on the same tokens. Calibrated methods all use the same 8x256 tokens of the
calibration split (disjoint from validation). The embedding table and the tied head stay float.

- int4: 4-bit weights, one scale and zero point per 64 weights along the input dimension.
  Ours: RTN (runners/quant/rtn.py) and GPTQ (runners/quant/gptq.py, act-order). Libraries: HQQ
  (`Quantizer.quantize`, optimize=True, no data), optimum-quanto (`quantize(weights=qint4)` with
  its default MaxOptimizer, group size set to 64, then `freeze`), llm-compressor's GPTQModifier
  (asymmetric int4 group 64, static act-order; only when llmcompressor is importable, see below).
- int8: what replaces the `dynamic-int8` runner (torch.ao `quantize_dynamic`, deprecated):
  optimum-quanto int8 weights alone (W8A16) and int8 weights with int8 activations calibrated on
  the calibration tokens (W8A8). `eval_s` is the wall time of the perplexity pass, a CPU speed proxy.
- sparsity: 50% unstructured and 2:4. Ours: magnitude per linear and Wanda per output row
  (runners/prune.py). Library: llm-compressor's SparseGPTModifier and WandaModifier.

torchao 0.18.0 installs without changing torch but, once installed, prints load failures of its
CUDA-only extensions on every import of transformers and PEFT; the int8 row runs when it is
importable (`pip install --no-deps --target /tmp/tao torchao==0.18.0`, then on PYTHONPATH).

llm-compressor 0.14.0.1 pins transformers<=5.17.0 and compressed-tensors==0.19.0 (we pin 5.24.0 and
0.20.1), so it cannot be a dependency; it imports and runs beside our pins when installed without
its dependencies: `pip install --no-deps --target /tmp/llmc llmcompressor==0.14.0.1` and
`PYTHONPATH=/tmp/llmc python -m bench library_quantizers`. Without it those rows are skipped.

Run: `python -m bench library_quantizers`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

from bench._common import md_table, ratio

MODEL = "smollm2-135m"
BITS, GROUP = 4, 64
EVAL = {"seq_len": 256, "n_blocks": 16, "batch_size": 4}  # validation[0:4096]
CAL = {"samples": 8, "seq_len": 256}  # 2,048 of the calibration split's tokens
HQQ_VERSION = "0.2.8.post1"
QUANTO_VERSION = "0.2.7"
LLMC_VERSION = "0.14.0.1"
LLMC = "llm-compressor"
TORCHAO = "torchao 0.18.0"


def _fresh():
    from runners.models import load_model
    return load_model(MODEL)


def _runner(rid: str, params: dict):
    def run(corpus, workdir: Path):
        from runners.base import StepContext
        from runners.registry import get_runner_class
        from runners.training import set_seed

        model, tok = _fresh()
        cls = get_runner_class(rid)
        set_seed(0)
        ctx = StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=workdir, seed=0,
                          log=lambda m: None, load_teacher=None)
        t0 = time.perf_counter()
        out = cls().run(ctx, cls.Params(**params))
        return out.model, time.perf_counter() - t0
    return run


def _hqq(corpus, workdir: Path):
    import torch
    from hqq.core.quantize import Quantizer

    from runners.quant.rtn import linear_names

    model, _ = _fresh()
    t0 = time.perf_counter()
    with torch.no_grad():
        for name in linear_names(model):  # the same linears our runners quantize (tied head excluded)
            lin = model.get_submodule(name)
            w = lin.weight.data
            wq, meta = Quantizer.quantize(w, nbits=BITS, group_size=GROUP, axis=1, optimize=True,
                                          bitpack=False, compute_dtype=torch.float32, device="cpu")
            lin.weight.data = Quantizer.dequantize(wq, meta).reshape(w.shape).to(w.dtype).contiguous()
    return model, time.perf_counter() - t0


def _quanto(weights: str, activations: str | None = None, group: int | None = None):
    def run(corpus, workdir: Path):
        import torch
        from optimum import quanto

        from runners.quant.rtn import linear_names

        model, _ = _fresh()
        kw = {"activations": getattr(quanto, activations)} if activations else {}
        t0 = time.perf_counter()
        quanto.quantize(model, weights=getattr(quanto, weights), include=linear_names(model), **kw)
        if group:  # quanto picks 128 for int4; the bench compares at 64
            for m in model.modules():
                if isinstance(m, quanto.QModuleMixin):
                    m.weight_group_size = group
        if activations:  # static activation scales from the calibration tokens
            calib = corpus.blocks("calibration", CAL["seq_len"], CAL["samples"])
            with torch.no_grad(), quanto.Calibration():
                for i in range(0, len(calib), 4):
                    model(input_ids=calib[i: i + 4])
        quanto.freeze(model)
        return model, time.perf_counter() - t0
    return run


def _llmc(modifier: str, **kw):
    """llm-compressor's oneshot with one modifier on the calibration tokens (fake-quant / masked
    weights in place); runs only where llmcompressor is importable."""
    def run(corpus, workdir: Path):
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers import pruning, quantization

        model, tok = _fresh()
        calib = corpus.blocks("calibration", CAL["seq_len"], CAL["samples"])
        ds = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": [[1] * calib.shape[1]] * len(calib)})
        cls = getattr(pruning, modifier, None) or getattr(quantization, modifier)
        recipe = cls(ignore=["re:.*lm_head"], **kw)
        t0 = time.perf_counter()
        oneshot(model=model, processor=tok, dataset=ds, recipe=recipe, num_calibration_samples=len(calib),
                max_seq_length=calib.shape[1], output_dir=None)
        return model, time.perf_counter() - t0
    return run


def _torchao(config: str):
    """torchao's `quantize_` with one config on the linears our runners quantize."""
    def run(corpus, workdir: Path):
        import torchao.quantization as tq

        from runners.quant.rtn import linear_names

        model, _ = _fresh()
        names = set(linear_names(model))
        t0 = time.perf_counter()
        tq.quantize_(model, getattr(tq, config)(), filter_fn=lambda m, fqn: fqn in names)
        return model, time.perf_counter() - t0
    return run


LLMC_GPTQ = {"config_groups": {"g": {"targets": ["Linear"], "weights": {
    "num_bits": BITS, "type": "int", "symmetric": False, "strategy": "group", "group_size": GROUP,
    "actorder": "static"}}}}
INT4 = {
    "rtn (ours)": _runner("weight-only-quant", {"bits": BITS, "group_size": GROUP, "embedding_bits": None}),
    "gptq (ours)": _runner("gptq", {"bits": BITS, "group_size": GROUP, "embedding_bits": None, **CAL}),
    f"hqq {HQQ_VERSION}": _hqq,
    f"quanto {QUANTO_VERSION} qint4": _quanto("qint4", group=GROUP),
    f"{LLMC} {LLMC_VERSION} GPTQModifier": _llmc("GPTQModifier", **LLMC_GPTQ),
}
INT8 = {
    "torch.ao dynamic int8 (ours, dynamic-int8)": _runner("dynamic-int8", {}),
    f"quanto {QUANTO_VERSION} W8A16 (qint8 weights)": _quanto("qint8"),
    f"quanto {QUANTO_VERSION} W8A8 (qint8 weights + calibrated activations)": _quanto("qint8", "qint8"),
    f"{TORCHAO} Int8DynamicActivationInt8Weight (per-token dynamic activations)":
        _torchao("Int8DynamicActivationInt8WeightConfig"),
}
SPARSITY = {
    "magnitude 50% (ours)": _runner("magnitude-prune", {"sparsity": 0.5, "scope": "layer"}),
    "wanda 50% (ours)": _runner("wanda-prune", {"sparsity": 0.5, **CAL}),
    "magnitude 2:4 (ours)": _runner("magnitude-prune", {"pattern": "2:4"}),
    "wanda 2:4 (ours)": _runner("wanda-prune", {"pattern": "2:4", **CAL}),
    "sparsegpt 50% (ours)": _runner("sparsegpt-prune", {"sparsity": 0.5, **CAL}),
    "sparsegpt 2:4 (ours)": _runner("sparsegpt-prune", {"pattern": "2:4", **CAL}),
    f"{LLMC} SparseGPT 50%": _llmc("SparseGPTModifier", sparsity=0.5, targets=["Linear"]),
    f"{LLMC} SparseGPT 2:4": _llmc("SparseGPTModifier", sparsity=0.5, mask_structure="2:4", targets=["Linear"]),
    f"{LLMC} Wanda 50%": _llmc("WandaPruningModifier", sparsity=0.5, targets=["Linear"]),
}
SECTIONS = {"int4": INT4, "int8": INT8, "sparsity": SPARSITY}
RUN = os.environ.get("BENCH_LIBQ_SECTIONS", ",".join(SECTIONS)).split(",")
RESULT = Path(__file__).resolve().parent / "results" / "library_quantizers.json"


def _measure(fn, corpus, workdir: Path, base) -> dict:
    import torch

    from runners.evaluate import perplexity_report
    from runners.prune import block_linears

    model, wall = fn(corpus, workdir)
    t0 = time.perf_counter()
    rep = perplexity_report(model, corpus, **EVAL)
    eval_s = time.perf_counter() - t0
    zeros = [float((m.weight == 0).float().mean()) for _, m in block_linears(model)
             if type(m.weight) in (torch.Tensor, torch.nn.Parameter)] or [0.0]  # plain float weights only
    del model
    r, lo, hi = rep.ratio(base)
    return {"ppl": round(rep.ppl, 3), "ratio": round(r, 4), "low": round(lo, 4), "high": round(hi, 4),
            "parts": [round(p, 3) for p in rep.parts], "apply_s": round(wall, 2), "eval_s": round(eval_s, 2),
            "block_linear_zero_fraction": round(sum(zeros) / len(zeros), 4)}


def _div(results: dict, a: str, b: str, key: str = "ppl") -> float | None:
    if a in results and b in results:
        return round(results[a][key] / results[b][key], 4)
    return None


def main() -> dict:
    import torch

    from runners.data import load_corpus
    from runners.evaluate import perplexity_report

    has_llmc = importlib.util.find_spec("llmcompressor") is not None
    has_torchao = importlib.util.find_spec("torchao") is not None
    model, tok = _fresh()
    corpus = load_corpus(tok)
    t0 = time.perf_counter()
    base = perplexity_report(model, corpus, **EVAL)
    base_eval_s = time.perf_counter() - t0
    del model
    results: dict[str, dict] = {}
    skipped: list[str] = []
    md = []
    prev = json.loads(RESULT.read_text(encoding="utf-8")) if RESULT.is_file() else {}
    carried = [s for s in SECTIONS if s not in RUN]
    with tempfile.TemporaryDirectory(prefix="slmrec-libquant-") as tmp:
        for section, methods in SECTIONS.items():
            rows = [["fp32 (bundled)", round(base.ppl, 3), 1.0, "–", "–", round(base_eval_s, 1)]]
            if section in carried:  # BENCH_LIBQ_SECTIONS ran other sections: keep this one's figures
                old = {k: v for k, v in (prev.get("methods") or {}).items() if v.get("section") == section}
                results.update(old)
                rows += [[k, v["ppl"], v["ratio"], f"{v['low']:.4f}..{v['high']:.4f}", v["apply_s"], v["eval_s"]]
                         for k, v in old.items()]
                md.append(f"**{section}** (carried over from the run started {prev.get('started')})\n\n"
                          + md_table(rows, ["method", "ppl", "ratio to fp32", "spread over 4 parts", "apply s", "eval s"]))
                continue
            for key, fn in methods.items():
                if (LLMC in key and not has_llmc) or (TORCHAO in key and not has_torchao):
                    skipped.append(key)
                    continue
                print(f"   {section}: {key}", flush=True)
                workdir = Path(tmp) / f"{section}-{len(results)}"
                workdir.mkdir()
                res = results[key] = {"section": section, **_measure(fn, corpus, workdir, base)}
                rows.append([key, res["ppl"], res["ratio"], f"{res['low']:.4f}..{res['high']:.4f}",
                             res["apply_s"], res["eval_s"]])
            md.append(f"**{section}**\n\n" + md_table(rows, ["method", "ppl", "ratio to fp32", "spread over 4 parts",
                                                              "apply s", "eval s"]))
    q4, q8 = f"quanto {QUANTO_VERSION} qint4", f"quanto {QUANTO_VERSION} W8A8 (qint8 weights + calibrated activations)"
    dyn, w8 = "torch.ao dynamic int8 (ours, dynamic-int8)", f"quanto {QUANTO_VERSION} W8A16 (qint8 weights)"
    tao = f"{TORCHAO} Int8DynamicActivationInt8Weight (per-token dynamic activations)"
    ratios = {
        "hqq_ppl_over_gptq_ppl": (_div(results, f"hqq {HQQ_VERSION}", "gptq (ours)"), "HQQ / our GPTQ perplexity"),
        "hqq_ppl_over_rtn_ppl": (_div(results, f"hqq {HQQ_VERSION}", "rtn (ours)"), "HQQ / our RTN perplexity"),
        "quanto_int4_ppl_over_rtn_ppl": (_div(results, q4, "rtn (ours)"), "quanto qint4 / our RTN perplexity"),
        "llmc_gptq_ppl_over_gptq_ppl": (_div(results, f"{LLMC} {LLMC_VERSION} GPTQModifier", "gptq (ours)"),
                                        "llm-compressor GPTQ / our GPTQ perplexity"),
        "quanto_w8a8_ppl_over_dynamic_int8_ppl": (_div(results, q8, dyn), "quanto W8A8 / torch.ao dynamic int8 perplexity"),
        "quanto_w8a16_ppl_over_dynamic_int8_ppl": (_div(results, w8, dyn), "quanto W8A16 / torch.ao dynamic int8 perplexity"),
        "torchao_int8_dynamic_ppl_over_dynamic_int8_ppl": (_div(results, tao, dyn),
                                                           "torchao int8 dynamic / torch.ao dynamic int8 perplexity"),
        "torchao_int8_dynamic_eval_time_over_dynamic_int8": (_div(results, tao, dyn, "eval_s"),
                                                             "perplexity-pass wall time ratio"),
        "quanto_w8a8_eval_time_over_dynamic_int8": (_div(results, q8, dyn, "eval_s"), "perplexity-pass wall time ratio"),
        "own_sparsegpt_50_ppl_over_llmc_sparsegpt_50": (_div(results, "sparsegpt 50% (ours)", f"{LLMC} SparseGPT 50%"),
                                                        "our SparseGPT / llm-compressor SparseGPT perplexity at 50%"),
        "own_sparsegpt_24_ppl_over_llmc_sparsegpt_24": (_div(results, "sparsegpt 2:4 (ours)", f"{LLMC} SparseGPT 2:4"),
                                                        "our SparseGPT / llm-compressor SparseGPT perplexity at 2:4"),
        "sparsegpt_50_ppl_over_wanda_50": (_div(results, f"{LLMC} SparseGPT 50%", "wanda 50% (ours)"),
                                           "llm-compressor SparseGPT / our Wanda perplexity at 50%"),
        "sparsegpt_24_ppl_over_wanda_24": (_div(results, f"{LLMC} SparseGPT 2:4", "wanda 2:4 (ours)"),
                                           "llm-compressor SparseGPT / our Wanda perplexity at 2:4"),
        "llmc_wanda_ppl_over_wanda": (_div(results, f"{LLMC} Wanda 50%", "wanda 50% (ours)"),
                                      "llm-compressor Wanda / our Wanda perplexity at 50% (same criterion)"),
    }
    return {
        "title": f"library vs own quantizers and sparsifiers on {MODEL}, validation[0:4096]",
        "slice": base.slice, "tokens": base.tokens, "base": {"ppl": round(base.ppl, 3), "eval_s": round(base_eval_s, 2)},
        "methods": results, "skipped": skipped, "sections_run": [s for s in SECTIONS if s not in carried], "eval": EVAL, "calibration": CAL, "threads": torch.get_num_threads(),
        "ratios": {k: ratio(v, None, note + ", same slice") for k, (v, note) in ratios.items() if v is not None},
        "markdown": "\n\n".join(md)
        + f"\n\nint4 rows: group {GROUP}, every linear except the tied head; embedding kept float. Perplexity on "
          f"{base.slice}; calibrated methods use {CAL['samples']}x{CAL['seq_len']} tokens of the calibration split "
          "(disjoint from validation)." + (f" Skipped (not installed): {', '.join(skipped)}." if skipped else ""),
    }
