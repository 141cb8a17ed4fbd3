"""PyTorch session: a causal LM in this process, decoding with its KV cache."""

from __future__ import annotations

import torch

from runners.runtime.session import CachedSession


class TorchSession(CachedSession):
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
        return out.logits[0].float().numpy()
