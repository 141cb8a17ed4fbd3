"""Carry slmrec's RTN/GPTQ integer codes into an exported ONNX graph, without quantizing again.

Every MatMul whose constant weight is a packed slmrec linear (dequantised for the export) becomes an
onnxruntime `com.microsoft.MatMulNBits` node whose initializers are written from the codes
(runners/export/codes.py); the embedding table's Gather becomes `GatherBlockQuantized` from its
codes. MatMulNBits dequantises block b of column n as (q - zero_point) * scale, blocks running
along K (the input width), which is slmrec's grid exactly when:
  bits       4 or 8
  group size a power of two from 16 to 256 (MatMulNBits `block_size`); a partial last group is
             padded, as MatMulNBits pads K
  zero point an integer per group (slmrec's are uint8), scale one float per group (fp16 -> fp32)
Anything else raises a one-line error naming the layer and what would be valid: a grid is never
re-quantized silently.

MatMulNBits layout (onnxruntime contrib ops, also written by its MatMulNBitsQuantizer):
  B            uint8 [N, k_blocks, block_size * bits / 8]; 4-bit codes two per byte, low nibble first
  scales       float [N, k_blocks]
  zero_points  uint8 [N, ceil(k_blocks * bits / 8)]; 4-bit zero points two per byte per row
`accuracy_level` 0 computes in fp32 (the weights dequantised); 4 quantizes the activations to int8
per block at run time and uses the int8 dot-product kernels (see docs/deploy.md for its cost).
"""

from __future__ import annotations

import hashlib

import numpy as np

from runners.export.codes import QuantizedWeight
from slmrec.errors import SlmrecError

BLOCK_SIZES = (16, 32, 64, 128, 256)
BITS = (4, 8)
DOMAIN = "com.microsoft"


def grid_problem(q: QuantizedWeight) -> str | None:
    """Why q's grid has no MatMulNBits form, or None when it has one."""
    if q.bits not in BITS:
        return f"{q.name} is int{q.bits}; MatMulNBits carries int4 or int8 codes"
    if q.group_size not in BLOCK_SIZES:
        return (f"{q.name} is quantized in groups of {q.group_size}; MatMulNBits needs a power-of-two "
                f"block along K ({', '.join(map(str, BLOCK_SIZES))}): quantize with one of those "
                "group sizes, or export the float model with onnx_quant")
    return None


def _pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 (rows, cols) codes -> (rows, ceil(cols * bits / 8)) bytes, 4-bit low nibble first."""
    if bits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.shape[1] % 2:
        codes = np.pad(codes, ((0, 0), (0, 1)))
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def nbits_tensors(q: QuantizedWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, scales, zero_points) of MatMulNBits for linear q (out N, in K)."""
    n, k = q.shape
    blocks = q.groups
    codes = q.codes.numpy()
    zero = q.zero.numpy().astype(np.uint8)
    pad = blocks * q.group_size - k
    if pad:  # padded columns: code == zero point, so they dequantise to 0
        codes = np.concatenate([codes, np.repeat(zero[:, -1:], pad, axis=1)], axis=1)
    b = _pack_rows(codes, q.bits).reshape(n, blocks, q.group_size * q.bits // 8)
    return b, q.scale.numpy().astype(np.float32), _pack_rows(zero, q.bits)


def _key(array: np.ndarray) -> tuple:
    a = np.ascontiguousarray(array, dtype=np.float32)
    return a.shape, hashlib.sha1(a.tobytes()).hexdigest()


def _unique(name: str, nodes) -> str:
    taken = {n.name for n in nodes}
    i, out = 1, name
    while out in taken:
        out, i = f"{name}.{i}", i + 1
    return out


def carry_codes(model_proto, weights: list[QuantizedWeight], accuracy_level: int = 0) -> dict[str, int]:
    """Rewrite `model_proto` (an onnx.ModelProto exported from the dequantised model) in place:
    MatMul -> MatMulNBits and Gather -> GatherBlockQuantized from the codes. Returns counts."""
    from onnx import helper, numpy_helper
    problems = [p for p in map(grid_problem, weights) if p]
    if problems:
        raise SlmrecError.one("export", problems[0])
    graph = model_proto.graph
    inits = {t.name: t for t in graph.initializer}
    linears: dict[tuple, list[QuantizedWeight]] = {}
    tables: dict[tuple, list[QuantizedWeight]] = {}
    for q in weights:  # weights equal once dequantised may share one initializer in the graph
        if q.kind == "linear":
            linears.setdefault(_key(q.dequantize().t().numpy()), []).append(q)
        else:
            tables.setdefault(_key(q.dequantize().numpy()), []).append(q)
    found: set[str] = set()
    written: set[str] = set()
    nodes, dropped = [], set()
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" else (
            inits.get(node.input[0]) if node.op_type == "Gather" else None)
        q = None
        if w is not None and len(w.dims) == 2:
            table = linears if node.op_type == "MatMul" else tables
            same = table.get(_key(numpy_helper.to_array(w)), [])
            q = same[0] if same else None
            found.update(x.name for x in same)
        if q is None:
            nodes.append(node)
            continue
        dropped.add(w.name)
        b, scales, zeros = nbits_tensors(q)
        if q.kind == "embedding":  # GatherBlockQuantized with uint8 data: (vocab, packed hidden)
            b = b.reshape(q.shape[0], -1)
        base = f"{q.name}.{'nbits' if q.kind == 'linear' else 'gbq'}"
        names = [f"{base}.{s}" for s in ("q", "scales", "zero_points")]
        if names[0] not in written:
            written.add(names[0])
            for name, arr in zip(names, (b, scales, zeros)):
                graph.initializer.append(numpy_helper.from_array(arr, name))
        if node.op_type == "MatMul":
            attrs = {"K": q.shape[1], "N": q.shape[0], "bits": q.bits, "block_size": q.group_size}
            if accuracy_level:
                attrs["accuracy_level"] = accuracy_level
            nodes.append(helper.make_node("MatMulNBits", [node.input[0], *names], list(node.output),
                                          name=_unique(f"{q.name}.MatMulNBits", nodes), domain=DOMAIN, **attrs))
        else:
            nodes.append(helper.make_node("GatherBlockQuantized", [names[0], node.input[1], *names[1:]],
                                          list(node.output), name=_unique(f"{q.name}.GatherBlockQuantized", nodes),
                                          domain=DOMAIN, gather_axis=0, quantize_axis=1,
                                          block_size=q.group_size, bits=q.bits))
    missing = [q.name for q in weights if q.name not in found]
    if missing:
        raise SlmrecError.one("export", f"no MatMul/Gather in the exported graph holds the weight of "
                              f"{missing[0]} (and {len(missing) - 1} more); its codes cannot be carried")
    used = {i for n in nodes for i in n.input}
    keep = [t for t in graph.initializer if t.name not in dropped or t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == DOMAIN for o in model_proto.opset_import):
        model_proto.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return {"MatMulNBits": sum(q.kind == "linear" for q in weights),
            "GatherBlockQuantized": sum(q.kind == "embedding" for q in weights)}
