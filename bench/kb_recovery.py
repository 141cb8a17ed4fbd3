"""Recovery the KB cites as `slmrec-measured`: a compression step, then a training step, on
SmolLM2-135M; the fraction of the perplexity loss the training step wins back.

recovery = (ppl_compressed - ppl_recovered) / (ppl_compressed - ppl_base). The training steps see
the bundled corpus's training split, so part of what they win back is in-domain adaptation: each
training step also runs on the uncompressed model (the "control" rows) so the two can be told
apart. Evaluation is bench/runner_table.py's (same validation slice and measurement).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench import runner_table
from bench._common import md_table

CALIB = runner_table.CALIB
TRAIN = {"steps": 20, "batch_size": 2, "seq_len": 128}
PRUNE = {
    "MLP 25%": ("structured-prune", {"target": "mlp", "fraction": 0.25, **CALIB}),
    "Wanda 50%": ("wanda-prune", {"sparsity": 0.5, **CALIB}),
}
HEAL = {
    "LoRA r8": ("lora", dict(TRAIN)),
    "logit distillation": ("logit-distill", {**TRAIN, "keep_sparsity": True}),
    "continued pre-training": ("causal-lm-train", {**TRAIN, "lr": 1e-4}),
}
# (compression, training); None: the control row (training on the uncompressed model). Kept to
# the chains the KB cites: every row costs minutes of CPU on the shared 2-core machine.
CHAINS = [
    ("MLP 25%", "LoRA r8"), ("MLP 25%", "logit distillation"), ("MLP 25%", "continued pre-training"),
    ("Wanda 50%", "logit distillation"),
    (None, "LoRA r8"), (None, "logit distillation"), (None, "continued pre-training"),
]


def _step(rid: str, params: dict, model, tok, corpus, workdir: Path, load_teacher):
    from runners.base import StepContext
    from runners.registry import get_runner_class

    cls = get_runner_class(rid)
    ctx = StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=workdir, seed=0,
                      log=lambda m: None, load_teacher=load_teacher if cls.needs_teacher else None)
    out = cls().run(ctx, cls.Params(**params))
    return out.model, out.tokenizer or tok


def main() -> dict:
    from runners.data import load_corpus
    from runners.models import load_model

    model, tok = load_model(runner_table.MODEL)
    corpus = load_corpus(tok)
    rows, table = [], []
    with tempfile.TemporaryDirectory(prefix="slmrec-bench-") as tmp:
        work = Path(tmp)
        runner_table._evaluate(model, tok, corpus, work)  # warm-up
        base = runner_table._evaluate(model, tok, corpus, work)["ppl"]
        del model
        teacher: list = []

        def load_teacher():
            if not teacher:
                teacher.append(load_model(runner_table.MODEL))
            return teacher[0]

        for prune, heal in CHAINS:
            label = f"{prune or 'uncompressed'} -> {heal}"
            print(f"   {label}", flush=True)
            model, tok = load_model(runner_table.MODEL)
            t0 = time.perf_counter()
            ppl_c = base
            if prune:
                rid, params = PRUNE[prune]
                model, tok = _step(rid, params, model, tok, corpus, work, load_teacher)
                ppl_c = runner_table._evaluate(model, tok, corpus, work)["ppl"]
            rid, params = HEAL[heal]
            model, tok = _step(rid, params, model, tok, corpus, work, load_teacher)
            ppl_r = runner_table._evaluate(model, tok, corpus, work)["ppl"]
            rec = (ppl_c - ppl_r) / (ppl_c - base) if prune and ppl_c != base else None
            rows.append({"compression": prune, "training": heal, "ppl_base": base,
                         "ppl_compressed": ppl_c, "ppl_recovered": ppl_r, "recovery": rec,
                         "params": {"compression": PRUNE[prune][1] if prune else None,
                                    "training": params},
                         "wall_s": round(time.perf_counter() - t0, 1)})
            print(f"     ppl {ppl_c:.2f} -> {ppl_r:.2f}", flush=True)
            table.append([prune or "none (control)", heal, round(ppl_c, 2), round(ppl_r, 2),
                          "–" if rec is None else round(rec, 3)])
            del model
    return {
        "title": f"recovery after compression on {runner_table.MODEL}: share of the perplexity "
                 "loss won back",
        "ratios": {}, "baseline": {"ppl": base}, "rows": rows, "train": TRAIN,
        "markdown": md_table(table, ["compression", "training (20 steps)", "ppl after compression",
                                     "ppl after training", "recovery"])
        + f"\n\nBase ppl {base:.2f}. Control rows train the uncompressed model: the in-domain gain "
          "every training row also contains.",
    }
