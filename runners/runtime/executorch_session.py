"""ExecuTorch session on a .pte written by runners/export/executorch.py, in ExecuTorch's Python
runtime (executorch.runtime: the same C++ runtime and XNNPACK kernels a device links). The KV cache
lives inside the program; the session tracks the next cache position."""

from __future__ import annotations

import numpy as np
import torch

from runners.runtime.session import CachedSession


class ExecuTorchSession(CachedSession):
    runtime = "executorch"

    def __init__(self, path, threads: int = 1):
        from executorch.runtime import Runtime
        # XNNPACK's thread pool follows the process-wide setting of the executorch extension
        # (its default is one thread per core); the session reports the count it runs with
        from executorch.extension.pybindings import portable_lib
        portable_lib._unsafe_reset_threadpool(threads)
        self.threads = portable_lib._threadpool_get_thread_count()
        self.method = Runtime.get().load_program(str(path)).load_method("forward")
        self.pos = 0

    def reset(self) -> None:
        self.pos = 0

    def _run(self, ids: list[int]) -> np.ndarray:
        n = len(ids)
        out = self.method.execute([torch.tensor([ids], dtype=torch.long),
                                   torch.arange(self.pos, self.pos + n, dtype=torch.long)])
        self.pos += n
        return out[0][0].float().numpy()
