"""Runtimes a model is deployed on, behind one small session interface, and the measurements
taken through it: prefill and decode latency, and perplexity, in the runtime itself.

  pytorch      a torch model in this process (runners/evaluate.py's model path)
  onnxruntime  an exported model.onnx (runners/export/onnx.py) on ONNX Runtime's CPU provider
  llama.cpp    an exported .gguf (runners/export/gguf.py) through llama-cpp-python (optional
               dependency: the `deploy` extra builds it from source, see docs/deploy.md)
  executorch   an exported .pte (runners/export/executorch.py) in ExecuTorch's runtime with
               XNNPACK (optional dependency: the `executorch` extra)
"""

from __future__ import annotations

import importlib
import importlib.util

from slmrec.errors import SlmrecError, unknown

RUNTIMES: dict[str, str] = {
    "pytorch": "runners.runtime.torch_session:TorchSession",
    "onnxruntime": "runners.runtime.ort_session:OrtSession",
    "llama.cpp": "runners.runtime.llamacpp_session:LlamaCppSession",
    "executorch": "runners.runtime.executorch_session:ExecuTorchSession",
}
PACKAGE = {"onnxruntime": ("onnxruntime", "pip install onnxruntime==1.32.0"),
           "llama.cpp": ("llama_cpp", "pip install -e '.[deploy]' (builds llama-cpp-python from source)"),
           "executorch": ("executorch", "pip install -e '.[executorch]'")}


def available(runtime: str) -> bool:
    if runtime not in RUNTIMES:
        return False
    mod = PACKAGE.get(runtime)
    return mod is None or importlib.util.find_spec(mod[0]) is not None


def open_session(runtime: str, artifact, threads: int = 1, **kw):
    """A session on `artifact` (a torch model for pytorch, a file path otherwise)."""
    target = RUNTIMES.get(runtime)
    if target is None:
        raise SlmrecError.one("runtime", unknown("runtime", runtime, RUNTIMES))
    if not available(runtime):
        raise SlmrecError.one("runtime", f"'{runtime}' is not installed; {PACKAGE[runtime][1]}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(artifact, threads=threads, **kw)
