"""GPTQ (Frantar et al. 2022): quantize each linear column by column, feeding every column's
rounding error back into the not-yet-quantized columns through the inverse Hessian of the layer's
calibration inputs. Layers are processed in order, each on the outputs of the already-quantized
layers before it. Groups are static (computed from the original weight) so that activation
ordering (largest Hessian diagonal first) keeps one scale per contiguous group.
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
    scale, zero = group_params(w, bits, group_size)
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(n)
    w, h = w[:, perm], h[perm][:, perm]
    cols = perm // group_size
    s_col, z_col = scale[:, cols], zero[:, cols]
    qmax = 2**bits - 1
    hinv = _inverse_cholesky(h, damp)
    codes = torch.zeros_like(w)
    _columns(w, hinv, codes, s_col, z_col, qmax, block)
    codes = codes[:, torch.argsort(perm)]
    return codes.to(torch.uint8), scale, zero


def _columns(w, hinv, codes, s_col, z_col, qmax: int, block: int) -> None:
    """The GPTQ sweep (in place): quantize column i, spread its error over columns > i.
    Works on transposed copies so that each column is a contiguous row."""
    n = w.shape[1]
    wt, st, zt = w.t().contiguous(), s_col.t().contiguous(), z_col.t().contiguous()
    qt = torch.empty_like(wt)
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        w1, err1, hinv1 = wt[i1:i2].clone(), torch.empty_like(wt[i1:i2]), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col, s, z = w1[i], st[i1 + i], zt[i1 + i]
            q = (col / s + z).round_().clamp_(0, qmax)
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


@torch.no_grad()
def quantize_gptq(model, calib: torch.Tensor, bits: int, group_size: int, damp: float, act_order: bool,
                  batch_size: int = 4, skip=(), progress=lambda d, t: None) -> int:
    """Replace every nn.Linear inside the decoder blocks by a GPTQ QuantLinear; returns how many."""
    owner, attr = decoder_layers(model)
    layers = getattr(owner, attr)
    inputs = _capture_first_layer(model, layers[0], calib, batch_size)
    done = 0
    for li, layer in enumerate(layers):
        names = [n for n, m in layer.named_modules() if type(m) is nn.Linear]
        hess = {n: torch.zeros(layer.get_submodule(n).in_features, layer.get_submodule(n).in_features) for n in names}
        counts = dict.fromkeys(names, 0)

        def hook(name):
            def fn(mod, args, out):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
                hess[name] += x.T @ x
                counts[name] += len(x)
            return fn

        handles = [layer.get_submodule(n).register_forward_hook(hook(n)) for n in names]
        for args, kwargs in inputs:
            layer(*args, **kwargs)
        for hnd in handles:
            hnd.remove()
        for n in names:
            lin = layer.get_submodule(n)
            codes, scale, zero = gptq_weight(lin.weight, hess[n] / max(1, counts[n]), bits, group_size,
                                             damp, act_order=act_order)
            replace_module(layer, n, QuantLinear.from_codes(codes, scale, zero, bits, group_size, lin.bias))
            done += 1
        inputs = [(_with_hidden(args, _hidden(layer(*args, **kwargs))), kwargs) for args, kwargs in inputs]
        progress(li + 1, len(layers))
    return done


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
