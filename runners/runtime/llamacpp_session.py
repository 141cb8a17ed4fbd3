"""llama.cpp session on a .gguf written by runners/export/gguf.py, through llama-cpp-python."""

from __future__ import annotations

import weakref

import numpy as np


class LlamaCppSession:
    runtime = "llama.cpp"

    def __init__(self, path, threads: int = 1, n_ctx: int = 512):
        from llama_cpp import Llama
        self.threads = threads
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         n_batch=n_ctx, logits_all=True, verbose=False)
        # free the model while the interpreter still runs: llama-cpp-python's own __del__ at
        # shutdown finds its C bindings already torn down and prints a TypeError traceback
        weakref.finalize(self, self.llm.close)

    def reset(self) -> None:
        self.llm.reset()

    def prefill(self, ids):
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[self.llm.n_tokens - 1])

    def step(self, token: int):
        self.llm.eval([token])
        return np.array(self.llm.scores[self.llm.n_tokens - 1])

    def logits(self, ids):
        self.llm.reset()
        self.llm.eval(ids)
        out = np.array(self.llm.scores[: self.llm.n_tokens])
        self.llm.reset()
        return out
