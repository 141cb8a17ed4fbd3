"""LoRA training throughput: the `lora` runner vs a plain peft training loop.

Same model (SmolLM2-135M), rank 8 on the attention projections, AdamW, batches of 4x128 tokens
from the same corpus; each variant gets a freshly loaded model and is timed from adapter set-up
to the last optimizer step (model loading excluded). The variants alternate and the best of the
repeats counts. Target: runner tokens/s >= 1.0x the plain loop's.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

from bench._common import md_table, ratio

MODEL = os.environ.get("BENCH_MODEL", "smollm2-135m")
STEPS = int(os.environ.get("BENCH_LORA_STEPS", 10))
BATCH, SEQ, RANK, ALPHA, LR = 4, 128, 8, 16.0, 1e-3


def plain_loop(model, corpus, seed: int = 0, steps: int = STEPS) -> float:
    """Seconds for STEPS steps of the textbook peft loop (set-up included)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from runners.prune import block_linears

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    names = [n for n, _ in block_linears(model) if "attn" in n or "attention" in n]
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=names,
                                             task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    model.train()
    for _ in range(steps):
        ids = corpus.sample("train", SEQ, BATCH, gen)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert math.isfinite(float(loss.detach()))
    return time.perf_counter() - t0


def runner(model, tok, corpus, workdir: Path, seed: int = 0) -> float:
    from runners.base import StepContext
    from runners.finetune import LoRA

    params = LoRA.Params(rank=RANK, alpha=ALPHA, steps=STEPS, lr=LR, batch_size=BATCH,
                         seq_len=SEQ, merge=False)
    ctx = StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=workdir, seed=seed,
                      log=lambda m: None)
    t0 = time.perf_counter()
    LoRA().run(ctx, params)
    return time.perf_counter() - t0


def main() -> dict:
    from runners.data import load_corpus
    from runners.models import load_model

    repeats = int(os.environ.get("BENCH_REPEATS", 2))
    _, tok = load_model(MODEL)
    corpus = load_corpus(tok)
    tokens = STEPS * BATCH * SEQ
    plain, ours = [], []
    with tempfile.TemporaryDirectory(prefix="slmrec-bench-") as tmp:
        plain_loop(load_model(MODEL)[0], corpus, steps=1)  # warm-up: one-time costs
        for _ in range(repeats):
            plain.append(plain_loop(load_model(MODEL)[0], corpus))
            ours.append(runner(load_model(MODEL)[0], tok, corpus, Path(tmp)))
    p_tps, r_tps = tokens / min(plain), tokens / min(ours)
    return {
        "title": f"lora runner vs a plain peft loop: training tokens/s on {MODEL}",
        "ratios": {"lora_tokens_per_s": ratio(r_tps / p_tps, ">= 1.0",
                                              f"{r_tps:.0f} vs {p_tps:.0f} tokens/s "
                                              f"(best of {repeats}, {STEPS} steps of {BATCH}x{SEQ})")},
        "plain_s": plain, "runner_s": ours, "tokens_per_run": tokens,
        "markdown": md_table([["plain peft loop", round(min(plain), 2), round(p_tps)],
                              ["slmrec lora runner", round(min(ours), 2), round(r_tps)]],
                             ["variant", "best s", "tokens/s"]),
        "note": "the runner also clips gradients, schedules the learning rate (warm-up, cosine), "
                "checks every loss for NaN and reports progress",
    }
