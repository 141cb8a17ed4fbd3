"""Prefill/decode latency and perplexity measured through a runtime session (see __init__.py).

A session has: reset(); prefill(ids: list[int]) -> last-position logits (numpy, vocab);
step(token: int) -> logits of the new position; logits(ids) -> (len(ids), vocab) logits of a
fresh sequence; runtime (its name) and threads.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def latency(session, vocab: int, prompt_len: int = 64, new_tokens: int = 16, repeats: int = 3,
            seed: int = 0) -> dict:
    """Median prefill ms for prompt_len random tokens and median ms per greedily decoded token
    (KV cache), after one untimed warm-up run."""
    rng = np.random.default_rng(seed)
    ids = [int(t) for t in rng.integers(0, vocab, prompt_len)]
    prefill, decode = [], []
    for r in range(repeats + 1):
        session.reset()
        t0 = time.perf_counter()
        logits = session.prefill(ids)
        t1 = time.perf_counter()
        for _ in range(new_tokens):
            logits = session.step(int(np.argmax(logits)))
        t2 = time.perf_counter()
        if r:  # the first run warms caches and allocators
            prefill.append(t1 - t0)
            decode.append((t2 - t1) / max(1, new_tokens))
    return {"prefill_ms": 1000 * statistics.median(prefill),
            "decode_ms_per_token": 1000 * statistics.median(decode),
            "runtime": session.runtime, "threads": session.threads}


def perplexity(session, blocks) -> float:
    """exp(mean next-token NLL) over token blocks (a (n, seq) tensor or list of lists)."""
    nll, count = 0.0, 0
    for block in blocks:
        ids = [int(t) for t in block]
        logits = np.asarray(session.logits(ids), dtype=np.float64)[:-1]
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(len(ids) - 1), ids[1:]].sum())
        count += len(ids) - 1
    return float(np.exp(nll / count))


def measure_deployed(artifacts: dict, vocab: int, corpus, params) -> tuple[dict, str] | None:
    """Perplexity and latency of an exported artifact in the runtime it names
    (artifacts["runtime"], artifacts["model"]), with the evaluate parameters `params`
    (seq_len, ppl_blocks, prompt_len, decode_tokens, repeats). None for a PyTorch artifact (the
    executor's own probe measures those); a note instead of figures when the runtime is missing."""
    from runners.runtime import PACKAGE, available, open_session
    runtime = (artifacts or {}).get("runtime")
    if not runtime or runtime == "pytorch" or "model" not in artifacts:
        return None
    if not available(runtime):
        return {}, (f"{runtime} is not installed ({PACKAGE[runtime][1]}): perplexity and latency "
                    "above are the PyTorch model's, not the exported file's")
    sess = open_session(runtime, artifacts["model"])
    blocks = corpus.blocks("validation", params.seq_len, params.ppl_blocks)
    ppl = perplexity(sess, blocks)
    lat = latency(sess, vocab, params.prompt_len, params.decode_tokens, params.repeats)
    metrics = {"ppl": ppl, "probe_ppl": ppl, "prefill_ms": lat["prefill_ms"],
               "decode_ms_per_token": lat["decode_ms_per_token"]}
    return metrics, (f"perplexity and latency measured on the exported file in {runtime} "
                     f"({lat['threads']} thread(s)), not in PyTorch")


def generate(session, tokenizer, prompt: str, new_tokens: int = 24) -> str:
    """Greedy continuation of `prompt` in the session's runtime (stops at the tokenizer's EOS)."""
    ids = tokenizer(prompt)["input_ids"]
    logits = session.prefill(ids)
    out: list[int] = []
    for _ in range(new_tokens):
        nxt = int(np.argmax(logits))
        if nxt == tokenizer.eos_token_id:
            break
        out.append(nxt)
        logits = session.step(nxt)
    return tokenizer.decode(out)
