"""ExecuTorch export of a decoder-only causal LM: one `.pte` program lowered to the XNNPACK backend,
with a static KV cache held inside the program, for ExecuTorch's runtime (on device or in Python,
runners/runtime/executorch_session.py).

The graph comes from transformers' own recipe (transformers.integrations.executorch:
TorchExportableModuleWithStaticCache): forward(input_ids [1, seq], cache_position [seq]) ->
logits [1, seq, vocab], the key/value cache a mutable buffer of `max_seq_len` positions. `seq` is
dynamic (1..max_seq_len), so one method serves prefill (positions 0..n-1) and decode (one token at
position n). torch.export (strict) -> executorch.exir.to_edge_transform_and_lower with the
XnnpackPartitioner -> to_executorch.

`quant` applies torchao's XNNPACK recipe to every nn.Linear before export:
  8da4w  int8 dynamic per-token activations, int4 symmetric weights per group (`group_size`)
  8da8w  int8 dynamic per-token activations, int8 symmetric weights per output channel
The embedding table stays fp32 (XNNPACK has no embedding kernel; the portable gather runs it).
A tied head is untied by the quantization (the head quantized, the table not).
Weights packed by slmrec's RTN/GPTQ steps are dequantised first (their codes are not carried:
torchao re-quantizes the float weights). ExecuTorch is the optional `executorch` extra.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from slmrec.errors import SlmrecError

QUANT = ("none", "8da4w", "8da8w")
INSTALL = "ExecuTorch is not installed: pip install -e '.[executorch]' (executorch==1.5.1, torchao==0.18.0)"


def require() -> None:
    """A one-line error naming the extra when executorch (or torchao) is missing."""
    if importlib.util.find_spec("executorch") is None or importlib.util.find_spec("torchao") is None:
        raise SlmrecError.one("export", INSTALL)


def _quantize(model, quant: str, group_size: int) -> None:
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig
    if quant == "8da4w":
        cfg = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group_size))
    else:
        cfg = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    head = model.get_output_embeddings()
    if head is not None and head.weight is model.get_input_embeddings().weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone())  # untie: the table stays fp32
    quantize_(model, cfg, filter_fn=lambda m, _: isinstance(m, torch.nn.Linear)
              and m.in_features % (group_size if quant == "8da4w" else 1) == 0)


def exported_program(model, max_seq_len: int = 512, quant: str = "none", group_size: int = 32):
    """The torch.export program (strict) of `model` with a static cache of `max_seq_len` positions."""
    import warnings

    from transformers import GenerationConfig
    from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

    from runners.export.onnx import _float_copy
    if quant not in QUANT:
        raise SlmrecError.one("export", f"executorch quant '{quant}' is not one of {', '.join(QUANT)}")
    m = _float_copy(model)
    m.generation_config = GenerationConfig(use_cache=True, cache_implementation="static")
    if quant != "none":
        _quantize(m, quant, group_size)
    wrapped = TorchExportableModuleWithStaticCache(m, batch_size=1, max_cache_len=max_seq_len)
    seq = torch.export.Dim("seq", min=1, max=max_seq_len)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # strict: the non-strict trace of the mutated cache buffers fails in run_decompositions
        # under torch 2.13 ("expected compiled_fn to be GraphModule"), see docs/deploy.md
        return torch.export.export(wrapped, args=(), kwargs={"input_ids": ids, "cache_position": torch.arange(4)},
                                   dynamic_shapes={"input_ids": {1: seq}, "cache_position": {0: seq}},
                                   strict=True)


def export_executorch(model, path, quant: str = "none", max_seq_len: int = 512, group_size: int = 32) -> Path:
    """Write `path` (.pte, XNNPACK-lowered); returns it."""
    import warnings

    require()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    if hasattr(model, "peft_config"):
        raise SlmrecError.one("export", "merge the LoRA adapters first (lora with merge: true)")
    ep = exported_program(model, max_seq_len, quant, group_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
        program = edge.to_executorch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(program.buffer)
    return path
