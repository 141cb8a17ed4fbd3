"""LoRA training throughput: the `lora` runner vs a plain peft training loop.

Same model (SmolLM2-135M), rank 8 on the attention projections, AdamW, batches of 4x128 tokens
from the same corpus; each variant gets a freshly loaded model. Two figures: training tokens/s
(the optimisation loop: first batch to last optimizer step; target >= 1.0x the plain loop's) and
end to end (adapter set-up, loop and, for the runner, its statistics and merge; no target). The
variants alternate and the best of the repeats counts.
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


def plain_loop(model, corpus, seed: int = 0, steps: int = STEPS) -> tuple[float, float]:
    """(end-to-end s, loop s) for `steps` steps of the textbook peft loop."""
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
    t_loop = time.perf_counter()
    for _ in range(steps):
        ids = corpus.sample("train", SEQ, BATCH, gen)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert math.isfinite(float(loss.detach()))
    end = time.perf_counter()
    return end - t0, end - t_loop


def runner(model, tok, corpus, workdir: Path, seed: int = 0) -> tuple[float, float]:
    """(end-to-end s, loop s as the runner's training loop reports it)."""
    from runners.base import StepContext
    from runners.finetune import LoRA

    params = LoRA.Params(rank=RANK, alpha=ALPHA, steps=STEPS, lr=LR, batch_size=BATCH,
                         seq_len=SEQ, merge=False)
    ctx = StepContext(model=model, tokenizer=tok, corpus=corpus, workdir=workdir, seed=seed,
                      log=lambda m: None)
    t0 = time.perf_counter()
    result = LoRA().run(ctx, params)
    return time.perf_counter() - t0, result.metrics["wall_s"]


def main() -> dict:
    from runners.data import load_corpus
    from runners.models import load_model

    repeats = int(os.environ.get("BENCH_REPEATS", 3))
    _, tok = load_model(MODEL)
    corpus = load_corpus(tok)
    tokens = STEPS * BATCH * SEQ
    plain, ours = [], []
    with tempfile.TemporaryDirectory(prefix="slmrec-bench-") as tmp:
        plain_loop(load_model(MODEL)[0], corpus, steps=1)  # warm-up: one-time costs
        for _ in range(repeats):
            plain.append(plain_loop(load_model(MODEL)[0], corpus))
            ours.append(runner(load_model(MODEL)[0], tok, corpus, Path(tmp)))
    p_loop, r_loop = min(x[1] for x in plain), min(x[1] for x in ours)
    p_all, r_all = min(x[0] for x in plain), min(x[0] for x in ours)
    p_tps, r_tps = tokens / p_loop, tokens / r_loop
    return {
        "title": f"lora runner vs a plain peft loop: training tokens/s on {MODEL}",
        "ratios": {
            "lora_tokens_per_s": ratio(r_tps / p_tps, ">= 1.0",
                                       f"{r_tps:.0f} vs {p_tps:.0f} tokens/s in the training "
                                       f"loop (best of {repeats}, {STEPS} steps of {BATCH}x{SEQ})"),
            "lora_end_to_end_speed": ratio(p_all / r_all, None,
                                           f"{r_all:.1f} s vs {p_all:.1f} s with set-up (the "
                                           "runner also computes statistics and merges)")},
        "plain_s": plain, "runner_s": ours, "tokens_per_run": tokens,
        "markdown": md_table([["plain peft loop", round(p_loop, 2), round(p_tps), round(p_all, 2)],
                              ["slmrec lora runner", round(r_loop, 2), round(r_tps),
                               round(r_all, 2)]],
                             ["variant", "loop s (best)", "tokens/s", "end to end s (best)"]),
        "note": "the runner also clips gradients, schedules the learning rate (warm-up, cosine), "
                "checks every loss for NaN and reports progress",
    }
