"""GPTQ (Frantar et al. 2022): quantize each linear column by column, feeding every column's
rounding error back into the not-yet-quantized columns through the inverse Hessian of the layer's
calibration inputs. Layers are processed in order, each on the outputs of the already-quantized
layers before it. Without activation ordering, each group's scale and zero point come from the
weights as the error feedback has updated them when the sweep reaches the group (as the reference
implementation does); with it (largest Hessian diagonal first) groups are static, computed from the
original weight, so that one scale still covers each contiguous group. Linears fed the very same
input tensor (q/k/v, gate/up) share one Hessian.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from runners.models import decoder_layers, replace_module
from runners.quant.qlinear import QuantLinear, group_params


class _Captured(Exception):
    pass


@contextlib.contextmanager
def _one_thread():
    """GPTQ's per-weight work is small linear algebra and thousands of small ops, where thread
    hand-offs cost more than they save: with 2 threads the column loop ran 20x slower on busy
    shared cores, and torch.cholesky_inverse of a 1536x1536 matrix took 3.6 s instead of 0.03 s
    (measured, torch 2.13 CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def gptq_weight(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int, damp: float = 0.01,
                block: int = 128, act_order: bool = True):
    """(codes uint8 (out, in), scale (out, G), zero (out, G)) for weight w given Hessian h = X^T X."""
    with _one_thread():
        return _gptq_weight(w, h, bits, group_size, damp, block, act_order)


def _gptq_weight(w, h, bits, group_size, damp, block, act_order):
    w, h = w.float().clone(), h.float().clone()
    n = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    if act_order:
        scale, zero = group_params(w, bits, group_size)
        perm = torch.argsort(torch.diag(h), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
        cols = perm // group_size
        grid = _Grid(bits, group_size, scale[:, cols].t().contiguous(), zero[:, cols].t().contiguous())
    else:
        perm = torch.arange(n)
        grid = _Grid(bits, group_size)
    hinv = _inverse_cholesky(h, damp)
    codes = torch.zeros_like(w)
    _columns(w, hinv, codes, grid, block)
    if not act_order:
        scale, zero = grid.scale, grid.zero
    codes = codes[:, torch.argsort(perm)]
    return codes.to(torch.uint8), scale, zero


class _Grid:
    """Per-column scale and zero (transposed: one row per column). Static when given; otherwise
    each group's is computed when the sweep reaches its first column, from the weights as updated
    so far (columns of the current block as they were when the block started, like the
    reference implementation)."""

    def __init__(self, bits: int, group_size: int, st=None, zt=None):
        self.bits, self.group_size, self.qmax = bits, group_size, 2**bits - 1
        self.st, self.zt = st, zt
        self.lazy = st is None
        self.scale_cols: list[torch.Tensor] = []
        self.zero_cols: list[torch.Tensor] = []

    def at(self, j: int, wt: torch.Tensor):
        """(scale, zero) rows for column j; wt is the transposed weight (in, out)."""
        if not self.lazy:
            return self.st[j], self.zt[j]
        if j % self.group_size == 0:
            s, z = group_params(wt[j: j + self.group_size].t(), self.bits, self.group_size)
            self.scale_cols.append(s[:, 0])
            self.zero_cols.append(z[:, 0])
        return self.scale_cols[-1], self.zero_cols[-1]

    @property
    def scale(self) -> torch.Tensor:
        return torch.stack(self.scale_cols, dim=1)

    @property
    def zero(self) -> torch.Tensor:
        return torch.stack(self.zero_cols, dim=1)


def _columns(w, hinv, codes, grid: _Grid, block: int) -> None:
    """The GPTQ sweep (in place): quantize column i, spread its error over columns > i.
    Works on transposed copies so that each column is a contiguous row."""
    n = w.shape[1]
    wt = w.t().contiguous()
    qt = torch.empty_like(wt)
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        w1, err1, hinv1 = wt[i1:i2].clone(), torch.empty_like(wt[i1:i2]), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[i]
            s, z = grid.at(i1 + i, wt)
            q = (col / s + z).round_().clamp_(0, grid.qmax)
            qt[i1 + i] = q
            err = (col - (q - z) * s) / hinv1[i, i]
            w1[i:] -= hinv1[i, i:, None] * err[None, :]
            err1[i] = err
        wt[i2:] -= hinv[i1:i2, i2:].t() @ err1
    codes.copy_(qt.t())


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of H^-1, raising the damping until H is positive definite."""
    mean_diag = torch.diag(h).mean()
    eye = torch.eye(len(h))
    for attempt in range(6):
        try:
            lower = torch.linalg.cholesky(h + damp * (10**attempt) * mean_diag * eye)
            return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
        except torch.linalg.LinAlgError:
            continue
    raise RuntimeError("GPTQ: Hessian not positive definite even with strong damping")


def sequential_linears(model, calib: torch.Tensor, batch_size: int = 4, progress=lambda d, t: None):
    """Yield (block, name, linear, Hessian of its input) for every nn.Linear of the decoder blocks,
    block by block. The caller edits or replaces each linear before the next is yielded, and the
    next block's inputs are the outputs of the block as edited: the sequential order GPTQ and
    SparseGPT share."""
    owner, attr = decoder_layers(model)
    layers = getattr(owner, attr)
    inputs = _capture_first_layer(model, layers[0], calib, batch_size)
    for li, layer in enumerate(layers):
        names = [n for n, m in layer.named_modules() if type(m) is nn.Linear]
        hessians = _layer_hessians(layer, names, inputs)
        for n in names:
            yield layer, n, layer.get_submodule(n), hessians[n]
        inputs = [(_with_hidden(args, _hidden(layer(*args, **kwargs))), kwargs) for args, kwargs in inputs]
        progress(li + 1, len(layers))


@torch.no_grad()
def quantize_gptq(model, calib: torch.Tensor, bits: int, group_size: int, damp: float, act_order: bool,
                  batch_size: int = 4, skip=(), progress=lambda d, t: None) -> int:
    """Replace every nn.Linear inside the decoder blocks by a GPTQ QuantLinear; returns how many."""
    done = 0
    for layer, n, lin, hessian in sequential_linears(model, calib, batch_size, progress):
        codes, scale, zero = gptq_weight(lin.weight, hessian, bits, group_size, damp, act_order=act_order)
        replace_module(layer, n, QuantLinear.from_codes(codes, scale, zero, bits, group_size, lin.bias))
        done += 1
    return done


def _layer_hessians(layer, names: list[str], inputs) -> dict[str, torch.Tensor]:
    """Mean X^T X of each linear's input over the calibration batches. Linears that receive the
    very same input tensor in a forward pass (q/k/v, gate/up) share one Hessian, built once."""
    hess: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(names, 0)
    owner: dict[str, str] = {}
    batch: dict[int, tuple[torch.Tensor, str]] = {}  # id(input) -> (input kept alive, first user)

    def hook(name):
        def fn(mod, args, out):
            x = args[0]
            first = batch.setdefault(id(x), (x, name))[1]
            owner[name] = first
            if first != name:
                return
            flat = x.detach().reshape(-1, x.shape[-1]).float()
            hess[name] = hess[name] + flat.T @ flat if name in hess else flat.T @ flat
            counts[name] += len(flat)
        return fn

    handles = [layer.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        for args, kwargs in inputs:
            batch.clear()
            layer(*args, **kwargs)
    finally:
        batch.clear()
        for hnd in handles:
            hnd.remove()
    means = {n: hess[n] / max(1, counts[n]) for n in hess}
    unused = {n: torch.zeros(layer.get_submodule(n).in_features, layer.get_submodule(n).in_features)
              for n in names if n not in owner}  # never called: every column is treated as dead
    return {n: unused[n] if n in unused else means[owner[n]] for n in names}


def _capture_first_layer(model, first, calib, batch_size):
    """(args, kwargs) that the first decoder block receives for each calibration batch."""
    captured = []

    def grab(mod, args, kwargs):
        captured.append((args, dict(kwargs)))
        raise _Captured

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for i in range(0, len(calib), batch_size):
            try:
                model(input_ids=calib[i: i + batch_size], use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    out = []
    for args, kwargs in captured:
        kwargs.pop("past_key_values", None), kwargs.pop("cache", None)
        kwargs["use_cache"] = False
        if not args:  # hidden states passed by keyword: move them to args for uniform handling
            args = (kwargs.pop("hidden_states"),)
        out.append((args, kwargs))
    return out


def _hidden(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _with_hidden(args, hidden):
    return (hidden,) + tuple(args[1:])
