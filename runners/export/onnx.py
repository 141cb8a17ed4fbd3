"""ONNX export of a decoder-only causal LM with an explicit KV cache, for ONNX Runtime, and its
weight-only quantization with onnxruntime's own tools (MatMulNBits: int4 or int8 weights in
blocks of `block_size`, fp32 activations).

Graph inputs:  input_ids int64 [1, seq], past.{i}.key / past.{i}.value float [1, kv_heads, past, head_dim]
Graph outputs: logits float [1, seq, vocab], present.{i}.key / present.{i}.value (past + seq positions)
The first call passes past tensors with 0 positions (prefill); each later call feeds the presents
back (decode). Exported with torch.onnx (the dynamo exporter), opset 18.

Weights packed by slmrec's RTN/GPTQ runners keep their integer codes: the graph is exported from
the dequantised model, then every such MatMul becomes MatMulNBits (and a quantized embedding table
GatherBlockQuantized) written from the codes, scales and zero points (runners/export/onnx_codes.py),
so the file computes what slmrec's own model computes, with no second rounding. A grid MatMulNBits
cannot express (group size not a power of two from 16 to 256) is refused with a one-line error.
`quant` (int8/int4) quantizes the MatMuls that are still float with onnxruntime's own
round-to-nearest MatMulNBitsQuantizer; `accuracy_level` 4 makes MatMulNBits compute with int8
activations (onnxruntime's int8 kernels), 0 in fp32.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from slmrec.errors import SlmrecError

OPSET = 18
FILE = "model.onnx"


class _WithCache(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def forward(self, input_ids, *past):
        from transformers import DynamicCache
        cache = DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, cache=cache, use_cache=True)
        flat = []
        for i in range(self.layers):
            flat += [out.cache.layers[i].keys, out.cache.layers[i].values]
        return (out.logits, *flat)


def cache_shape(config) -> tuple[int, int]:
    """(kv heads, head dim) of the model's KV cache."""
    heads = config.num_attention_heads
    return (getattr(config, "num_key_value_heads", None) or heads,
            getattr(config, "head_dim", None) or config.hidden_size // heads)


def _float_copy(model):
    """A float copy of the model (packed slmrec weights dequantised into nn.Linear/nn.Embedding)."""
    import copy

    from runners.models import replace_module
    from runners.quant.qlinear import QuantEmbedding, QuantLinear
    if hasattr(model, "peft_config"):
        raise SlmrecError.one("export", "merge the LoRA adapters first (lora with merge: true)")
    if any("quantized" in type(m).__module__ for m in model.modules()):
        raise SlmrecError.one("export", "a torch.ao dynamic-int8 model has no ONNX export here; export "
                              "the float model with onnx_quant: int8 instead")
    m = copy.deepcopy(model).float().eval()
    for name, mod in list(m.named_modules()):
        if isinstance(mod, QuantEmbedding):
            emb = nn.Embedding(mod.num_embeddings, mod.embedding_dim)
            emb.weight.data = mod.table.dequantize(torch.float32)
            replace_module(m, name, emb)
    for name, mod in list(m.named_modules()):
        if isinstance(mod, QuantLinear):
            lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
            lin.weight.data = mod.dequantize(torch.float32)
            if mod.bias is not None:
                lin.bias.data = mod.bias.detach().float()
            replace_module(m, name, lin)
    m.config.use_cache = True
    return m


def export_onnx(model, folder, quant: str = "none", block_size: int = 32, accuracy_level: int = 0) -> Path:
    """Write folder/model.onnx (+ its external weights file); returns the model's path."""
    import warnings

    from runners.export.codes import quantized_weights
    from runners.export.onnx_codes import grid_problem
    weights = quantized_weights(model)
    problem = next(filter(None, map(grid_problem, weights)), None)
    if problem:
        raise SlmrecError.one("export", problem)
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    m = _float_copy(model)
    kv, hd = cache_shape(m.config)
    layers = m.config.num_hidden_layers
    names = [f"past.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    ids = torch.zeros(1, 3, dtype=torch.long)
    past = tuple(torch.zeros(1, kv, 2, hd) for _ in names)
    seq, plen = torch.export.Dim("seq", min=1, max=4096), torch.export.Dim("past", min=0, max=4096)
    dynamic = {"input_ids": {1: seq}, "past": tuple({2: plen} for _ in names)}
    raw = folder / ("float.onnx" if quant != "none" or weights else FILE)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(_WithCache(m), (ids, *past), dynamo=True, opset_version=OPSET,
                                 input_names=["input_ids", *names],
                                 output_names=["logits", *[n.replace("past", "present") for n in names]],
                                 dynamic_shapes={"input_ids": dynamic["input_ids"], "past": dynamic["past"]},
                                 optimize=True, verbose=False)
    prog.save(str(raw), external_data=True)
    del prog, m
    if weights:
        carried = folder / (FILE if quant == "none" else "carried.onnx")
        _carry(raw, carried, weights, accuracy_level)
        _remove(raw)
        raw = carried
    if quant == "none":
        return raw
    out = quantize_onnx(raw, folder / FILE, quant, block_size, accuracy_level)
    _remove(raw)
    return out


def _remove(path: Path) -> None:
    path.unlink()
    (path.parent / (path.name + ".data")).unlink(missing_ok=True)


def _carry(src: Path, dst: Path, weights, accuracy_level: int) -> None:
    import onnx

    from runners.export.onnx_codes import carry_codes
    proto = onnx.load(str(src))
    carry_codes(proto, weights, accuracy_level)
    onnx.save(proto, str(dst), save_as_external_data=True, location=dst.name + ".data")


def quantize_onnx(src: Path, dst: Path, quant: str, block_size: int = 32, accuracy_level: int = 0) -> Path:
    """int4 / int8 weight-only round-to-nearest quantization of every float MatMul weight
    (onnxruntime's MatMulNBitsQuantizer, asymmetric blocks along K)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    from onnxruntime.quantization.quant_utils import QuantFormat
    import logging
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    bits = {"int4": 4, "int8": 8}[quant]
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    cfg = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=False, bits=bits,
                                       quant_format=QuantFormat.QOperator, accuracy_level=accuracy_level or None)
    q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=cfg)
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=True)
    return dst


def with_accuracy_level(src, level: int) -> Path:
    """A copy of the graph at `src` whose MatMulNBits nodes compute at accuracy_level `level`
    (0 fp32, 4 int8 activations), next to it and sharing its external weights file; returns its path."""
    import onnx
    src = Path(src)
    dst = src.parent / f"{src.stem}.acc{level}.onnx"
    proto = onnx.load(str(src), load_external_data=False)
    for node in proto.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend(kept)
            if level:
                node.attribute.append(onnx.helper.make_attribute("accuracy_level", level))
    onnx.save(proto, str(dst))
    return dst
