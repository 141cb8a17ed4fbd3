"""The session interface shared by runtimes that keep their own KV cache: a runtime supplies
`_run(ids)` (logits of each new position as a numpy array, the cache growing by `ids`) and
`reset()` (an empty cache); prefill, step and whole-sequence logits follow from those two."""

from __future__ import annotations


class CachedSession:
    def reset(self) -> None:
        raise NotImplementedError

    def _run(self, ids: list[int]):
        raise NotImplementedError

    def prefill(self, ids):
        self.reset()
        return self._run(ids)[-1]

    def step(self, token: int):
        return self._run([token])[-1]

    def logits(self, ids):
        self.reset()
        out = self._run(ids)
        self.reset()
        return out
