"""Carry slmrec's packed GPTQ/RTN codes into GGUF blocks without re-quantizing them.

A packed weight (runners/quant/qlinear.py) is w = (code - zero) * scale per (row, group of
`group_size` input columns), scale fp16, zero an integer. ggml's 32-wide blocks (ggml-common.h):

  Q4_0  fp16 d, 16 bytes of nibbles       w = d * (q - 8)      carries 4-bit codes whose zero is 8
  Q4_1  fp16 d, fp16 m, 16 bytes nibbles  w = d * q + m        carries any 4-bit codes: d = scale,
                                                               m = -scale * zero rounded to fp16
  Q8_0  fp16 d, 32 int8                   w = d * q            carries codes with code - zero in
                                                               [-128, 127] (every 4-bit grid)

A group spans whole blocks when group_size is a multiple of 32 and the row length is too, so the
codes and scales are copied as they are: d is the stored scale, q the stored code. Q4_0 and Q8_0
then dequantise to exactly the slmrec weights; Q4_1 to within the fp16 rounding of its min
(at most 2^-11 * 15 * scale, under 1% of one quantization step). Anything else returns None and
the caller re-quantizes the dequantised weights (and says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 32
# GGUF type each packed width is carried into when the caller asks for `auto`, first that fits
CARRIERS = {4: ("Q4_0", "Q4_1"), 8: ("Q8_0",)}


@dataclass
class Codes:
    """Unpacked codes (rows, cols) and per-(row, group) scale / zero of one packed weight."""
    codes: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    bits: int
    group_size: int

    @classmethod
    def of(cls, q) -> "Codes":
        """From a runners/export/codes.py QuantizedWeight."""
        return cls(q.codes.numpy().astype(np.uint8), q.scale.float().numpy(), q.zero.float().numpy(),
                   q.bits, q.group_size)

    def rows(self, fn) -> "Codes":
        """The same codes with `fn` (a row permutation) applied to every array."""
        return Codes(fn(self.codes), fn(self.scale), fn(self.zero), self.bits, self.group_size)

    def dequantize(self) -> np.ndarray:
        s, z = (np.repeat(a, self.group_size, axis=1)[:, : self.codes.shape[1]] for a in (self.scale, self.zero))
        return ((self.codes.astype(np.float32) - z) * s).astype(np.float32)

    def per_block(self, a: np.ndarray) -> np.ndarray:
        """(rows, groups) -> (rows, blocks): the value of each 32-wide block's group."""
        return np.repeat(a, self.group_size // BLOCK, axis=1)[:, : self.codes.shape[1] // BLOCK]


def why_not(c: Codes, qtype: str) -> str | None:
    """None when `qtype` carries these codes, else the reason it does not."""
    cols = c.codes.shape[1]
    if qtype not in ("Q4_0", "Q4_1", "Q8_0"):
        return f"{qtype} has no block layout for group-wise integer codes"
    if c.group_size % BLOCK or cols % BLOCK:
        return f"group size {c.group_size} / row length {cols} is not a whole number of {BLOCK}-wide blocks"
    if qtype in ("Q4_0", "Q4_1") and c.bits != 4:
        return f"{qtype} holds 4-bit codes; these are {c.bits}-bit"
    if qtype == "Q4_0" and not np.all(c.zero == 8):
        return "Q4_0 is symmetric (zero point 8); these codes are asymmetric"
    if qtype == "Q8_0":
        q = c.codes.astype(np.int16) - np.repeat(c.zero, c.group_size, axis=1)[:, :cols].astype(np.int16)
        if q.min() < -128 or q.max() > 127:
            return "code - zero leaves the int8 range of Q8_0 (an asymmetric 8-bit grid)"
    return None


def _nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) values 0..15 -> (n, 16) bytes: q[j] low nibble, q[j + 16] high (ggml's order)."""
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def _half_bytes(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, 1).astype(np.float16).view(np.uint8)


def carry(c: Codes, qtype: str) -> np.ndarray | None:
    """Raw GGUF block bytes (rows, blocks * block bytes) holding these codes, or None."""
    if why_not(c, qtype):
        return None
    rows, cols = c.codes.shape
    blocks = c.codes.reshape(-1, BLOCK)  # rows * cols / 32 blocks, row-major like ggml
    d = _half_bytes(c.per_block(c.scale))
    if qtype == "Q4_0":
        out = np.concatenate([d, _nibbles(blocks)], axis=1)
    elif qtype == "Q4_1":
        m = _half_bytes(-c.per_block(c.scale) * c.per_block(c.zero))
        out = np.concatenate([d, m, _nibbles(blocks)], axis=1)
    else:  # Q8_0
        z = np.repeat(c.per_block(c.zero).reshape(-1, 1), BLOCK, axis=1)
        q = (blocks.astype(np.int16) - z.astype(np.int16)).astype(np.int8).view(np.uint8)
        out = np.concatenate([d, q], axis=1)
    return np.ascontiguousarray(out.reshape(rows, -1))


def auto_type(codes: list[Codes]) -> str | None:
    """The GGUF type that carries every packed weight of the model (CARRIERS, in order), or None."""
    widths = {c.bits for c in codes}
    if not widths:
        return None
    for qtype in CARRIERS.get(max(widths), ()):
        if all(why_not(c, qtype) is None for c in codes):
            return qtype
    return None
