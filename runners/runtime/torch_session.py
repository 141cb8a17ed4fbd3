"""PyTorch session: a causal LM in this process, decoding with its KV cache."""

from __future__ import annotations

import torch


class TorchSession:
    runtime = "pytorch"

    def __init__(self, model, threads: int | None = None):
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.model, self.threads = model.eval(), torch.get_num_threads()
        self.cache = None

    def reset(self) -> None:
        self.cache = None

    @torch.no_grad()
    def _run(self, ids: list[int]):
        out = self.model(input_ids=torch.tensor([ids]), cache=self.cache, use_cache=True)
        self.cache = out.cache
        return out.logits[0].float()

    def prefill(self, ids):
        self.reset()
        return self._run(ids)[-1].numpy()

    def step(self, token: int):
        return self._run([token])[-1].numpy()

    def logits(self, ids):
        self.reset()
        out = self._run(ids).numpy()
        self.reset()
        return out
