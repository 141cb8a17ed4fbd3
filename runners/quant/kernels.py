"""torch's packed CPU kernels for QuantLinear, chosen at run time for short inputs (decoding).

- int4: `aten._weight_int4pack_mm_for_cpu`. Its grid is w = (q - 8) * scale + zero per group, so
  our w = (q - z) * s becomes scale s, zero (8 - z) * s. The kernel's group must divide ours and
  the input width: group 64 tiles our group 128 over SmolLM2's 576-wide inputs (4.5 groups of
  128), each of our scales repeated over the kernel groups it covers. Activations are cast to
  bf16 around the call only: with fp32 activations the kernel takes a slow path.
- int8: the same int4 kernel, once, on the codes split into nibbles q = 16 hi + lo: the weight
  becomes [hi | lo] (k doubled, x fed twice), hi on scale 16 s, lo on scale s, and the kernel's
  zeros carry the zero point: (hi - 8) 16 s + (128 - z) s + (lo - 8) s + 8 s = (q - z) s. At one
  thread on SmolLM2's layer shapes this took 0.04-0.10 ms a decode row against 0.23-0.51 ms for
  the former path (`aten._weight_int8pack_mm`, one call per group plus a zero-point term) and
  0.02-0.27 ms for fp32 F.linear (docs/estimator.md, "int8 decode kernel"). The price is the
  bf16 rounding of activations and scales: on random SmolLM2-shaped layers the output moves from
  exact dequantise + matmul by about 3e-3 of its norm, next to int8 rounding's own 4.5e-3 (int4's
  is 8e-2, so there it is negligible); greedy tokens match the exact path (tests, bench).

Both run only for calls with at most KERNEL_MAX_ROWS rows (decoding and short prompts):
bench/qlinear_kernels.py times the
kernels against dequantise + F.linear per row count and records where the kernel stops winning.
The repacked copy is built at first use and rebuilt when the stored codes change in place; it is
not part of the state dict. SLMREC_QLINEAR_KERNELS=0 (or KERNELS_ENABLED False) turns it off.
"""

from __future__ import annotations

import os

import torch

KERNEL_MAX_ROWS = 64  # bench/qlinear_kernels.py: the kernel beat dequantise + F.linear up to 64 rows, not at 256
KERNELS_ENABLED = os.environ.get("SLMREC_QLINEAR_KERNELS", "1") != "0"
INT4_KERNEL_GROUPS = (128, 64, 32)  # the CPU int4 kernel's group sizes, largest tried first
INT4_MM = torch.ops.aten._weight_int4pack_mm_for_cpu  # the one matmul both paths call
_UNAVAILABLE: set[int] = set()  # bits whose kernel failed on this build: not tried again


def _key(m) -> tuple:
    return tuple((t.data_ptr(), t._version) for t in (m.qweight, m.scales, m.zeros))


def packed_kernel(m):
    """A callable x (rows, in) -> (rows, out) for QuantLinear m, or None to dequantise instead."""
    if not KERNELS_ENABLED or m.bits in _UNAVAILABLE:
        return None
    cached = m.__dict__.get("_kernel")
    key = _key(m)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        kernel = (_int4 if m.bits == 4 else _int8)(m)
    except (RuntimeError, AttributeError, NotImplementedError):  # op missing or refused on this build
        _UNAVAILABLE.add(m.bits)
        kernel = None
    if kernel is not None and not _agrees(m, kernel):
        kernel = None
    m.__dict__["_kernel"] = (key, kernel)
    return kernel


@torch.no_grad()
def _agrees(m, kernel) -> bool:
    """The kernel matches dequantise + matmul on a fixed probe (within bf16 rounding): a shape
    the kernel mishandles on this build falls back instead of returning wrong numbers."""
    x = torch.randn(2, m.in_features, generator=torch.Generator().manual_seed(0))
    ref = x @ m.dequantize(torch.float32).t()
    err = (kernel(x) - ref).abs().max()
    return bool(torch.isfinite(err)) and float(err) <= 0.02 * float(ref.abs().max()) + 1e-6


def _codes(m) -> torch.Tensor:
    from runners.quant.qlinear import unpack
    return unpack(m.qweight, m.bits, m.in_features)


def _int4(m):
    n, k, g = m.out_features, m.in_features, m.group_size
    kg = next((c for c in INT4_KERNEL_GROUPS if g % c == 0 and k % c == 0), None)
    if kg is None:
        return None  # no kernel group tiles this layer: dequantise
    codes = _codes(m).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.contiguous(), 1)
    s = m.scales.float().repeat_interleave(g // kg, dim=1)[:, : k // kg]
    z = m.zeros.float().repeat_interleave(g // kg, dim=1)[:, : k // kg]
    scale_zero = torch.stack((s, (8 - z) * s), dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    op = INT4_MM

    def run(x: torch.Tensor) -> torch.Tensor:
        return op(x.to(torch.bfloat16), packed, kg, scale_zero).to(x.dtype)
    return run


def _int8(m):
    n, k, g = m.out_features, m.in_features, m.group_size
    kg = next((c for c in INT4_KERNEL_GROUPS if g % c == 0 and k % c == 0), None)
    if kg is None:
        return None  # no kernel group tiles this layer: dequantise
    codes = _codes(m).to(torch.int32)
    both = torch.cat((codes >> 4, codes & 15), dim=1).contiguous()  # [hi | lo], (n, 2k)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(both, 1)
    s = m.scales.float().repeat_interleave(g // kg, dim=1)[:, : k // kg]
    z = m.zeros.float().repeat_interleave(g // kg, dim=1)[:, : k // kg]
    scale = torch.cat((16 * s, s), dim=1)
    zero = torch.cat(((128 - z) * s, 8 * s), dim=1)
    scale_zero = torch.stack((scale, zero), dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    op = INT4_MM

    def run(x: torch.Tensor) -> torch.Tensor:
        xb = x.to(torch.bfloat16)
        return op(torch.cat((xb, xb), dim=1), packed, kg, scale_zero).to(x.dtype)
    return run
