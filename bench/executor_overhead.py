"""Executor overhead: `execute()` of a plan vs a plain torch/peft script doing the same steps.

Same model (SmolLM2-135M), same data, same seed, one after the other in one process: LoRA
(rank 8 on the attention projections, 20 steps of 4x128 tokens, merged), weight-only int8 (RTN,
group 128), then evaluation (perplexity on the validation slice, prefill/decode latency). The
plain script saves its final model once; the executor also validates the plan, measures the
input model and the model after every step, checkpoints every step, writes state, reports and the
run store. Target: executor wall time <= 1.15x the plain script's.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench._common import md_table, ratio

MODEL = os.environ.get("BENCH_MODEL", "smollm2-135m")
LORA = {"rank": 8, "alpha": 16.0, "steps": int(os.environ.get("BENCH_LORA_STEPS", 20)),
        "lr": 1e-3, "batch_size": 4, "seq_len": 128}
QUANT = {"bits": 8, "group_size": 128}
EVAL = {"serialise": False}


def plain_script(out: Path, seed: int = 0) -> dict:
    """What a user would write by hand with torch and peft (no slmrec executor)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from runners.checkpoint import save_checkpoint
    from runners.data import load_corpus
    from runners.evaluate import EvaluateParams, latency, perplexity
    from runners.models import load_model
    from runners.prune import block_linears
    from runners.quant.rtn import quantize_embeddings, quantize_rtn
    from runners.quantize import WeightOnlyParams

    t0 = time.perf_counter()
    model, tok = load_model(MODEL)
    corpus = load_corpus(tok, seed=seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    names = [n for n, _ in block_linears(model) if "attn" in n or "attention" in n]
    model = get_peft_model(model, LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"],
                                             target_modules=names, task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LORA["lr"])
    steps, warm = LORA["steps"], max(1, LORA["steps"] // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    model.train()
    for _ in range(steps):
        ids = corpus.sample("train", LORA["seq_len"], LORA["batch_size"], gen)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    model = model.merge_and_unload().eval()
    quantize_rtn(model, QUANT["bits"], QUANT["group_size"])
    quantize_embeddings(model, WeightOnlyParams(**QUANT).embedding_bits, QUANT["group_size"])
    ev = EvaluateParams(**EVAL)
    ppl = perplexity(model, corpus, ev.seq_len, ev.ppl_blocks, ev.batch_size)
    lat = latency(model, len(tok), ev.prompt_len, ev.decode_tokens, ev.repeats)
    save_checkpoint(model, tok, out / "final")
    return {"wall_s": time.perf_counter() - t0, "ppl": ppl, **lat}


def with_executor(out: Path, kb, seed: int = 0) -> dict:
    from runners.execute import execute
    from slmrec.plan import parse_plan

    plan = parse_plan({"name": "bench-overhead", "base_model": MODEL, "steps": [
        {"method": "lora", "params": LORA}, {"method": "weight-only-quant", "params": QUANT},
        {"method": "evaluate", "params": EVAL}]})
    t0 = time.perf_counter()
    report = execute(plan, kb=kb, out_dir=out / "run", store=out / "runs.sqlite", seed=seed,
                     progress=False, log=lambda msg: None)
    wall = time.perf_counter() - t0
    assert report.ok, report.reason
    steps = {s.method: {k: round(s.metrics.get(k, 0), 3) for k in
                        ("wall_s", "measure_s", "checkpoint_s")} for s in report.steps}
    return {"wall_s": wall, "ppl": report.final_metrics["ppl"],
            "decode_ms_per_token": report.final_metrics["decode_ms_per_token"], "steps": steps,
            "step_wall_s": sum(s.wall_s or 0 for s in report.steps)}


def main() -> dict:
    import torch

    from bench._kb import load_runner_kb
    from runners.models import load_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    repeats = int(os.environ.get("BENCH_REPEATS", 1))
    tmp = Path(tempfile.mkdtemp(prefix="slmrec-bench-"))
    try:
        kb = load_runner_kb(tmp / "kb")
        load_model(MODEL)  # warm-up: converts the bundled model once, fills the page cache
        plain, execd = [], []
        for i in range(repeats):
            plain.append(plain_script(tmp / f"plain-{i}"))
            execd.append(with_executor(tmp / f"exec-{i}", kb))
            shutil.rmtree(tmp / f"plain-{i}", ignore_errors=True)
            shutil.rmtree(tmp / f"exec-{i}", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    p = min(r["wall_s"] for r in plain)
    e = min(r["wall_s"] for r in execd)
    last = execd[-1]
    rows = [["plain torch/peft script", round(p, 2), round(plain[-1]["ppl"], 3), "–", "–"],
            ["slmrec executor", round(e, 2), round(last["ppl"], 3),
             round(sum(s["measure_s"] for s in last["steps"].values()), 2),
             round(sum(s["checkpoint_s"] for s in last["steps"].values()), 2)]]
    return {
        "title": "executor vs a plain torch/peft script (LoRA 20 steps, int8 RTN, eval) on "
                 f"{MODEL}",
        "ratios": {"executor_wall_time": ratio(e / p, "<= 1.15",
                                               f"{e:.1f} s vs {p:.1f} s (best of {repeats})")},
        "plain": plain, "executor": execd, "params": {"lora": LORA, "quant": QUANT, "eval": EVAL},
        "markdown": md_table(rows, ["variant", "wall s", "ppl", "measuring s",
                                    "checkpointing s"]),
    }
