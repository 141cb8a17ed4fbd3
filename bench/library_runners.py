"""Library-backed runners against their hand-written predecessors, and lm-eval around the demo plan.

1. Fine-tuning: the hand-written `lora` runner vs the `peft` runner (same LoRA through PEFT's
   generic path) vs TRL's SFTTrainer with a LoRA adapter (`trl`, trainer sft), on SmolLM2-135M:
   same rank, steps, learning rate and batch of 4x128 train-split tokens; quality is our
   validation perplexity afterwards (8 blocks of 256 tokens), time is the runner's wall time.
2. Evaluation: our perplexity loop vs lm-eval's rolling log-likelihood (byte perplexity, bits per
   byte) on the fp32 model and after the demo plan (the `bundled-demo` scenario's top plan,
   executed), plus lm-eval's 4-way continuation accuracy; all on the validation split (lm-eval's
   examples decontaminated against train and calibration text).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path

from bench._common import md_table, ratio

MODEL = os.environ.get("BENCH_MODEL", "smollm2-135m")
STEPS = int(os.environ.get("BENCH_LIB_STEPS", 10))
EXAMPLES = int(os.environ.get("BENCH_LMEVAL_EXAMPLES", 64))
RANK, LR, BATCH, SEQ = 8, 1e-3, 4, 128


def _ctx(model, tok, corpus, workdir):
    from runners.base import StepContext
    return StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=Path(workdir), log=lambda m: None)


def finetune_variants(base, tok, corpus, tmp: Path) -> list[dict]:
    from runners.evaluate import perplexity
    from runners.registry import get_runner
    variants = [
        ("hand-written lora runner", "lora", dict(rank=RANK, alpha=2.0 * RANK, targets="attention+mlp", steps=STEPS,
                                                  lr=LR, batch_size=BATCH, seq_len=SEQ)),
        ("peft runner (adapter lora)", "peft", dict(adapter="lora", rank=RANK, alpha=2.0 * RANK, targets="attention+mlp",
                                                    steps=STEPS, lr=LR, batch_size=BATCH, seq_len=SEQ)),
        ("trl SFTTrainer + LoRA", "trl", dict(trainer="sft", adapter_rank=RANK, steps=STEPS, lr=LR, batch_size=BATCH,
                                              max_length=SEQ, examples=STEPS * BATCH, eval_examples=4,
                                              options="lr_scheduler_type=cosine, warmup_steps=1, max_grad_norm=1.0")),
    ]
    before = perplexity(base, corpus, 256, 8)
    rows = []
    for label, rid, params in variants:
        runner = get_runner(rid)
        t0 = time.perf_counter()
        res = runner.run(_ctx(copy.deepcopy(base), tok, corpus, tmp / rid), runner.Params(**params))
        wall = time.perf_counter() - t0
        rows.append({"variant": label, "runner": rid, "wall_s": wall, "ppl_before": before,
                     "ppl_after": perplexity(res.model, corpus, 256, 8)})
    return rows


def demo_plan_model(tmp: Path):
    """The bundled-demo scenario's top plan, executed on the bundled model: (plan text, model)."""
    from runners.execute import execute
    from runners.models import load_checkpoint
    from slmrec.kb import load_kb
    from slmrec.recommend import recommend
    kb = load_kb()
    rec = recommend("bundled-demo", kb, top_k=1)
    report = execute(rec.top, kb=kb, model=MODEL, out_dir=tmp / "demo", store=False, progress=False,
                     log=lambda m: None)
    if not report.ok:
        raise RuntimeError(f"demo plan failed: {report.reason}")
    ckpt = next(s.checkpoint for s in reversed(report.steps) if s.checkpoint)
    steps = ", ".join(s.method for s in report.steps)
    return steps, load_checkpoint(tmp / "demo" / ckpt)[0]


def evaluations(model, tok, corpus, tmp: Path) -> dict:
    from runners.evaluate import perplexity
    from runners.lmeval import LMEvalParams, evaluate
    t0 = time.perf_counter()
    ours = perplexity(model, corpus, 256, 8)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    lm = evaluate(model, tok, corpus, LMEvalParams(examples=EXAMPLES, batch_size=8), tmp)
    return {"ppl_ours": ours, "ours_s": t_ours, "lm_eval_s": time.perf_counter() - t0,
            **{k.split("/", 1)[1] if "rolling" in k else "continuation_" + k.split("/", 1)[1]: v for k, v in lm.items()}}


def main() -> dict:
    import torch

    from runners.data import load_corpus
    from runners.models import load_model
    torch.manual_seed(0)
    base, tok = load_model(MODEL)
    corpus = load_corpus(tok)
    with tempfile.TemporaryDirectory(prefix="slmrec-bench-") as tmp:
        tmp = Path(tmp)
        ft = finetune_variants(base, tok, corpus, tmp)
        before = evaluations(base, tok, corpus, tmp / "eval-base")
        steps, demo = demo_plan_model(tmp)
        after = evaluations(demo, tok, corpus, tmp / "eval-demo")
    hand, lib_peft, lib_trl = ft
    ft_rows = [[r["variant"], r["runner"], round(r["wall_s"], 1), round(r["ppl_before"], 2), round(r["ppl_after"], 2)]
               for r in ft]
    ev_keys = ["ppl_ours", "byte_perplexity", "bits_per_byte", "word_perplexity", "continuation_acc",
               "continuation_acc_norm", "ours_s", "lm_eval_s"]
    ev_rows = [[k, round(before[k], 4), round(after[k], 4), round(after[k] / before[k], 4)] for k in ev_keys if k in before]
    return {
        "title": f"library runners vs hand-written ones; lm-eval around the demo plan ({MODEL})",
        "ratios": {
            "peft_vs_handwritten_lora_ppl": ratio(lib_peft["ppl_after"] / hand["ppl_after"], "<= 1.02",
                                                  "validation perplexity after the same LoRA training"),
            "peft_vs_handwritten_lora_time": ratio(lib_peft["wall_s"] / hand["wall_s"], "<= 1.2",
                                                   "runner wall time, one run each, the hand-written one first "
                                                   "(it pays first-call costs; both run the same loop)"),
            "trl_sft_vs_handwritten_lora_ppl": ratio(lib_trl["ppl_after"] / hand["ppl_after"], None,
                                                     "TRL's own loop: its data windows and scheduler differ"),
            "trl_sft_vs_handwritten_lora_time": ratio(lib_trl["wall_s"] / hand["wall_s"], None, "runner wall time"),
            "demo_ppl_ratio_ours": ratio(after["ppl_ours"] / before["ppl_ours"], None, f"after/before the demo plan ({steps})"),
            "demo_byte_ppl_ratio_lm_eval": ratio(after["byte_perplexity"] / before["byte_perplexity"], None,
                                                 "lm-eval's rolling byte perplexity, after/before"),
            "demo_continuation_acc_delta": ratio(after["continuation_acc"] - before["continuation_acc"], None,
                                                 f"lm-eval 4-way continuation accuracy, after minus before ({EXAMPLES} examples)"),
        },
        "finetune": ft, "eval_before": before, "eval_after": after, "demo_steps": steps,
        "markdown": md_table(ft_rows, ["fine-tuning variant", "runner", "wall s", "val ppl before", "val ppl after"])
        + "\n\n" + md_table(ev_rows, ["metric (validation split)", "fp32 model", f"after demo plan ({steps})", "ratio"]),
    }
