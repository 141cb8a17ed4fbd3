"""Every runner on SmolLM2-135M: size, perplexity and latency as ratios against the fp32 model.

Each runner starts from a freshly loaded fp32 model and is followed by the same evaluation
(perplexity on a fixed validation slice, prefill and per-token decode latency, size from the
stored bytes). Training runners take a few steps only: their rows show cost and direction, not
what a full run reaches. `BENCH_RUNNERS=a,b` limits the table to some rows.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench._common import md_table, ratio

MODEL = os.environ.get("BENCH_MODEL", "smollm2-135m")
EVAL = {"seq_len": 256, "ppl_blocks": 4, "batch_size": 4, "prompt_len": 32, "decode_tokens": 8,
        "repeats": 3, "latency": True, "serialise": False}  # latency: median of 3
SHORT = {"steps": 5, "batch_size": 2, "seq_len": 128}
CALIB = {"samples": 8, "seq_len": 128}
# (row label, runner id, params)
ROWS = [
    ("bf16 cast", "cast", {"dtype": "bf16"}),
    ("fp16 cast", "cast", {"dtype": "fp16"}),
    ("dynamic int8", "dynamic-int8", {}),
    ("RTN int8 (g128)", "weight-only-quant", {"bits": 8}),
    ("RTN int4 (g128)", "weight-only-quant", {"bits": 4}),
    ("GPTQ int4 (g128)", "gptq", {"bits": 4, **CALIB}),
    ("magnitude 50% (per layer)", "magnitude-prune", {"sparsity": 0.5}),
    ("Wanda 50%", "wanda-prune", {"sparsity": 0.5, **CALIB}),
    ("structured MLP 25%", "structured-prune", {"target": "mlp", "fraction": 0.25, **CALIB}),
    ("layer drop 25%", "layer-drop", {"fraction": 0.25, **CALIB}),
    ("LoRA r8, 5 steps (merged)", "lora", SHORT),
    ("full fine-tune, 5 steps", "full-finetune", SHORT),
    ("causal-LM training, 5 steps", "causal-lm-train", SHORT),
    ("logit distillation, 5 steps", "logit-distill", SHORT),
    ("sequence distillation, 5 steps", "sequence-distill",
     {**SHORT, "prompts": 4, "new_tokens": 16, "seq_len": 64}),
    ("load pretrained", "load-pretrained", {}),
    ("export", "export", {}),
    ("init from config (untrained)", "init-from-config", {}),
]


def _evaluate(model, tok, corpus, workdir: Path) -> dict:
    from runners.base import StepContext
    from runners.evaluate import Evaluate

    ctx = StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=workdir, seed=0,
                      log=lambda m: None)
    return Evaluate().run(ctx, Evaluate.Params(**EVAL)).metrics


def main() -> dict:
    from runners.base import StepContext
    from runners.data import load_corpus
    from runners.models import load_model
    from runners.registry import get_runner_class

    only = {s for s in os.environ.get("BENCH_RUNNERS", "").split(",") if s}
    rows = [r for r in ROWS if not only or r[1] in only or r[0] in only]
    model, tok = load_model(MODEL)
    corpus = load_corpus(tok)
    results = []
    with tempfile.TemporaryDirectory(prefix="slmrec-bench-") as tmp:
        _evaluate(model, tok, corpus, Path(tmp))  # warm-up: first calls pay one-time costs
        base = _evaluate(model, tok, corpus, Path(tmp))
        results.append({"row": "fp32 (baseline)", "runner": None, "step_s": 0.0, **base})
        del model
        teacher: list = []

        def load_teacher():
            if not teacher:
                teacher.append(load_model(MODEL))
            return teacher[0]

        for label, rid, params in rows:
            model, tok = load_model(MODEL)
            cls = get_runner_class(rid)
            workdir = Path(tmp) / rid
            workdir.mkdir(exist_ok=True)
            ctx = StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=workdir, seed=0,
                              log=lambda m: None,
                              load_teacher=load_teacher if cls.needs_teacher else None)
            print(f"   {label}", flush=True)
            t0 = time.perf_counter()
            try:
                out = cls().run(ctx, cls.Params(**params))
            except Exception as exc:  # noqa: BLE001  (one failing runner is a row, not a crash)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                results.append({"row": label, "runner": rid,
                                "error": f"{type(exc).__name__}: {first}".replace("|", "/")})
                continue
            step_s = time.perf_counter() - t0
            metrics = _evaluate(out.model, out.tokenizer or tok, corpus, workdir)
            results.append({"row": label, "runner": rid, "params": params, "step_s": step_s,
                            **metrics})
            del model, out
    table, worst = [], {}
    for r in results:
        if "error" in r:
            table.append([r["row"], r["runner"], "error", "", "", "", "", r["error"][:80]])
            continue
        rel = {k: r[k] / base[k] for k in ("size_mb", "ppl", "prefill_ms", "decode_ms_per_token")
               if r.get(k) is not None and base.get(k)}
        r["vs_fp32"] = rel
        table.append([r["row"], r["runner"] or "–", round(r["size_mb"], 1),
                      round(rel.get("size_mb", 0), 3), round(r["ppl"], 2), round(rel.get("ppl", 0), 3),
                      round(rel.get("decode_ms_per_token", 0), 2), round(r["step_s"], 1)])
        if r["runner"] and "size_mb" in rel:
            worst[r["row"]] = rel
    quant = {k: v for k, v in worst.items() if k.startswith(("RTN int8", "dynamic int8"))}
    ratios = {f"size {k}": ratio(v["size_mb"], None, "size vs fp32") for k, v in quant.items()}
    return {
        "title": f"every runner on {MODEL}: size, perplexity, latency vs fp32",
        "ratios": ratios, "baseline": base, "rows": results, "eval": EVAL,
        "markdown": md_table(table, ["variant", "runner", "size MB", "size ×", "ppl", "ppl ×",
                                     "decode ×", "step s"])
        + "\n\nRatios are against the fp32 model on the same slice; decode is per generated "
          "token with a KV cache on this machine's CPU threads.",
    }
