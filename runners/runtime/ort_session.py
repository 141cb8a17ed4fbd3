"""ONNX Runtime session on a model.onnx written by runners/export/onnx.py (explicit KV cache)."""

from __future__ import annotations

import numpy as np

from runners.runtime.session import CachedSession


class OrtSession(CachedSession):
    runtime = "onnxruntime"

    def __init__(self, path, threads: int = 1):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        self.threads = threads
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.past_names = [i.name for i in self.sess.get_inputs() if i.name.startswith("past.")]
        shape = next(i.shape for i in self.sess.get_inputs() if i.name.startswith("past."))
        self.kv_shape = (1, shape[1], 0, shape[3])  # heads and head_dim are static
        self.out_names = [o.name for o in self.sess.get_outputs()]
        self.reset()

    def reset(self) -> None:
        self.past = {n: np.zeros(self.kv_shape, np.float32) for n in self.past_names}

    def _run(self, ids: list[int]) -> np.ndarray:
        outs = self.sess.run(None, {"input_ids": np.asarray([ids], np.int64), **self.past})
        self.past = {n.replace("present.", "past."): o for n, o in zip(self.out_names[1:], outs[1:])}
        return outs[0][0]
