"""SparseGPT (Frantar & Alistarh 2023): prune each linear column by column, updating the
not-yet-pruned columns through the inverse Hessian of the layer's calibration inputs so that they
compensate the removed weights (GPTQ's sweep with a mask instead of a rounding grid). Layers are
processed in order, each on the outputs of the already-pruned layers before it, with the Hessian
machinery of runners/quant/gptq.py.

Unstructured: within each block of 128 columns, the weights with the lowest w^2 / [H^-1]_jj^2 are
pruned (the reference's adaptive mask). N:M: in every M consecutive columns of a row, the N
lowest by the same score.

llm-compressor's SparseGPTModifier is the maintained implementation, but llm-compressor 0.14 pins
transformers<=5.17 (we pin 5.24), so it cannot be installed here; bench/library_quantizers.py
measures it beside this one when it is installed without its dependencies.
"""

from __future__ import annotations

import torch

from runners.quant.gptq import _inverse_cholesky, _one_thread, sequential_linears


@torch.no_grad()
def sparsegpt_weight(w: torch.Tensor, h: torch.Tensor, sparsity: float, prune_n: int = 0, prune_m: int = 0,
                     damp: float = 0.01, block: int = 128) -> torch.Tensor:
    """The pruned and compensated weight (same shape and dtype as w) for Hessian h = X^T X."""
    with _one_thread():
        return _sparsegpt(w, h, sparsity, prune_n, prune_m, damp, block).to(w.dtype)


def _sparsegpt(w, h, sparsity, prune_n, prune_m, damp, block):
    w, h = w.float().clone(), h.float().clone()
    cols = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    hinv = _inverse_cholesky(h, damp)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros_like(w[:, i1:i2]), hinv[i1:i2, i1:i2]
        diag = torch.diag(hinv1)
        if prune_n:
            mask = torch.zeros_like(w1, dtype=torch.bool)
        else:
            score = w1**2 / diag[None, :] ** 2
            k = int(score.numel() * sparsity)
            mask = score <= score.flatten().kthvalue(k).values if k else torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if prune_n and i % prune_m == 0:
                score = w1[:, i: i + prune_m] ** 2 / diag[i: i + prune_m][None, :] ** 2
                mask.scatter_(1, i + score.topk(prune_n, dim=1, largest=False).indices, True)
            col = w1[:, i]
            q = col.masked_fill(mask[:, i], 0)
            err = (col - q) / hinv1[i, i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w


@torch.no_grad()
def prune_sparsegpt(model, calib: torch.Tensor, sparsity: float, prune_n: int, prune_m: int, damp: float,
                    batch_size: int = 4, progress=lambda d, t: None) -> int:
    """Prune every nn.Linear inside the decoder blocks in place; returns how many."""
    done = 0
    for _, _, lin, hessian in sequential_linears(model, calib, batch_size, progress):
        lin.weight.data = sparsegpt_weight(lin.weight, hessian, sparsity, prune_n, prune_m, damp)
        done += 1
    return done
