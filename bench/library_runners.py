"""Library-backed runners against their hand-written predecessors, and lm-eval around the demo plan.

1. Fine-tuning: the hand-written `lora` runner vs the `peft` runner (same LoRA through PEFT's
   generic path) vs TRL's SFTTrainer with a LoRA adapter (`trl`, trainer sft), on SmolLM2-135M:
   same rank, steps, learning rate and batch of 4x128 train-split tokens; quality is our
   validation perplexity afterwards (8 blocks of 256 tokens), time is the runner's wall time.
2. Distillation: the hand-written `logit-distill` runner vs TRL's GKDTrainer (`trl-distill`) from
   the bundled model (teacher) into a student made from it by dropping half its decoder blocks
   (`layer-drop`, so the tokenizers match): same steps, learning rate, batch size and sequence
   length; GKD off-policy (`lmbda=0`: the dataset's own continuations, no sampling) and on-policy
   (`lmbda=1, beta=0.5`: the student's own samples and the generalised JSD, as the KB's
   on-policy-distillation binds it); our runner at temperature 1 and alpha 1 is the same forward
   KL as the off-policy row. Quality is
   validation perplexity (8x256) and KL(teacher||student) on the same 2x256 validation blocks,
   time is the runner's wall time.
3. Evaluation: our perplexity loop vs lm-eval's rolling log-likelihood (byte perplexity, bits per
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
KD_STEPS = int(os.environ.get("BENCH_KD_STEPS", 20))
KD_LR = 5e-5
PARTS = os.environ.get("BENCH_LIB_PARTS", "finetune,distill,eval").split(",")


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


def distill_variants(base, tok, corpus, tmp: Path) -> list[dict]:
    """Our logit distillation vs TRL GKD, same student, teacher, steps, lr, batch and length."""
    from runners.distill import mean_kl
    from runners.evaluate import perplexity
    from runners.registry import get_runner
    from runners.training import set_seed
    drop = get_runner("layer-drop")
    student0 = copy.deepcopy(base)
    set_seed(0)
    drop.run(_ctx(student0, tok, corpus, tmp / "drop"), drop.Params(fraction=0.5))
    probe = corpus.blocks("validation", 256, 2)
    common = dict(steps=KD_STEPS, lr=KD_LR, batch_size=BATCH)
    gkd = dict(trainer="gkd", max_length=SEQ, examples=KD_STEPS * BATCH, eval_examples=4, **common)
    variants = [
        ("hand-written logit-distill (T=1, alpha=1: forward KL)", "logit-distill",
         dict(seq_len=SEQ, temperature=1.0, alpha=1.0, **common)),
        ("TRL GKD off-policy (lmbda=0, beta=0: forward KL)", "trl-distill",
         dict(options="lmbda=0.0, beta=0.0, temperature=1.0", **gkd)),
        ("TRL GKD on-policy (lmbda=1, beta=0.5, KB on-policy-distillation)", "trl-distill",
         dict(options="lmbda=1.0, beta=0.5", **gkd)),
    ]
    rows = [{"variant": "student before distillation (layer-drop 50%)", "runner": "layer-drop", "wall_s": 0.0,
             "train_s": 0.0, "ppl": perplexity(student0, corpus, 256, 8), "kl": mean_kl(student0, base, probe)}]
    for label, rid, params in variants:
        runner = get_runner(rid)
        set_seed(0)
        ctx = _ctx(copy.deepcopy(student0), tok, corpus, tmp / f"kd-{len(rows)}")
        ctx.load_teacher = lambda: (base, tok)
        t0 = time.perf_counter()
        res = runner.run(ctx, runner.Params(**params))
        rows.append({"variant": label, "runner": rid, "wall_s": time.perf_counter() - t0,
                     "train_s": res.metrics["wall_s"],
                     "ppl": perplexity(res.model, corpus, 256, 8), "kl": mean_kl(res.model, base, probe)})
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
    out: dict = {"title": f"library runners vs hand-written ones; lm-eval around the demo plan ({MODEL})",
                 "ratios": {}, "parts": PARTS}
    md = []
    with tempfile.TemporaryDirectory(prefix="slmrec-bench-") as tmp:
        tmp = Path(tmp)
        if "finetune" in PARTS:
            out["finetune"] = ft = finetune_variants(base, tok, corpus, tmp)
            hand, lib_peft, lib_trl = ft
            out["ratios"].update({
                "peft_vs_handwritten_lora_ppl": ratio(lib_peft["ppl_after"] / hand["ppl_after"], "<= 1.02",
                                                      "validation perplexity after the same LoRA training"),
                "peft_vs_handwritten_lora_time": ratio(lib_peft["wall_s"] / hand["wall_s"], "<= 1.2",
                                                       "runner wall time, one run each, the hand-written one first "
                                                       "(it pays first-call costs; both run the same loop)"),
                "trl_sft_vs_handwritten_lora_ppl": ratio(lib_trl["ppl_after"] / hand["ppl_after"], None,
                                                         "TRL's own loop: its data windows and scheduler differ"),
                "trl_sft_vs_handwritten_lora_time": ratio(lib_trl["wall_s"] / hand["wall_s"], None, "runner wall time"),
            })
            md.append(md_table([[r["variant"], r["runner"], round(r["wall_s"], 1), round(r["ppl_before"], 2),
                                 round(r["ppl_after"], 2)] for r in ft],
                               ["fine-tuning variant", "runner", "wall s", "val ppl before", "val ppl after"]))
        if "distill" in PARTS:
            out["distill"] = kd = distill_variants(base, tok, corpus, tmp)
            _, hand, off, on = kd
            out["ratios"].update({
                "gkd_offpolicy_vs_logit_distill_ppl": ratio(off["ppl"] / hand["ppl"], None,
                                                            f"validation perplexity after {KD_STEPS} steps each"),
                "gkd_offpolicy_vs_logit_distill_kl": ratio(off["kl"] / hand["kl"], None, "KL(teacher||student), validation"),
                "gkd_offpolicy_vs_logit_distill_time": ratio(off["train_s"] / hand["train_s"], None,
                                                             "training-loop wall time (the runners' own before/after "
                                                             "measurements excluded)"),
                "gkd_onpolicy_vs_logit_distill_ppl": ratio(on["ppl"] / hand["ppl"], None, "validation perplexity"),
                "gkd_onpolicy_vs_logit_distill_time": ratio(on["train_s"] / hand["train_s"], None,
                                                            "training-loop wall time (includes the student's sampling)"),
            })
            md.append(md_table([[r["variant"], r["runner"], round(r["train_s"], 1), round(r["wall_s"], 1), round(r["ppl"], 2),
                                 round(r["kl"], 4)] for r in kd],
                               ["distillation variant", "runner", "train s", "runner wall s", "val ppl",
                                "val KL(teacher||student)"]))
        if "eval" in PARTS:
            out["eval_before"] = before = evaluations(base, tok, corpus, tmp / "eval-base")
            steps, demo = demo_plan_model(tmp)
            out["eval_after"] = after = evaluations(demo, tok, corpus, tmp / "eval-demo")
            out["demo_steps"] = steps
            out["ratios"].update({
                "demo_ppl_ratio_ours": ratio(after["ppl_ours"] / before["ppl_ours"], None, f"after/before the demo plan ({steps})"),
                "demo_byte_ppl_ratio_lm_eval": ratio(after["byte_perplexity"] / before["byte_perplexity"], None,
                                                     "lm-eval's rolling byte perplexity, after/before"),
                "demo_continuation_acc_delta": ratio(after["continuation_acc"] - before["continuation_acc"], None,
                                                     f"lm-eval 4-way continuation accuracy, after minus before ({EXAMPLES} examples)"),
            })
            ev_keys = ["ppl_ours", "byte_perplexity", "bits_per_byte", "word_perplexity", "continuation_acc",
                       "continuation_acc_norm", "ours_s", "lm_eval_s"]
            md.append(md_table([[k, round(before[k], 4), round(after[k], 4), round(after[k] / before[k], 4)]
                                for k in ev_keys if k in before],
                               ["metric (validation split)", "fp32 model", f"after demo plan ({steps})", "ratio"]))
    out["markdown"] = "\n\n".join(md)
    return _carry_over(out)


RESULT = Path(__file__).resolve().parent / "results" / "library_runners.json"
PART_KEYS = {"finetune": ("finetune", "peft_", "trl_sft_"), "distill": ("distill", "gkd_"),
             "eval": ("eval_before", "eval_after", "demo_steps", "demo_")}


def _carry_over(out: dict) -> dict:
    """A run of some parts (BENCH_LIB_PARTS) keeps the other parts' figures from the previous
    result file, saying so, rather than dropping them."""
    import json
    if set(PART_KEYS) <= set(PARTS) or not RESULT.is_file():
        return out
    prev = json.loads(RESULT.read_text(encoding="utf-8"))
    carried = []
    for part, keys in PART_KEYS.items():
        if part in PARTS:
            continue
        for k in keys:
            if k in prev and not k.endswith("_"):
                out[k] = prev[k]
            for rk, rv in (prev.get("ratios") or {}).items():
                if rk.startswith(k):
                    out["ratios"][rk] = rv
        carried.append(part)
    if carried:
        out["carried_over"] = {"parts": carried, "from_run_started": prev.get("started"),
                               "markdown": prev.get("markdown", "")}
        out["markdown"] += (f"\n\n(Parts {', '.join(carried)} carried over from the run started "
                            f"{prev.get('started')}:)\n\n" + prev.get("markdown", ""))
    return out
