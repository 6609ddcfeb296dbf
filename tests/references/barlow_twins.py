"""Zbontar et al. (Barlow Twins), ICML 2021: the loss of the authors' code (github.com/facebookresearch/barlowtwins)."""

from __future__ import annotations

import torch


def off_diagonal(x):  # Barlow Twins' code
    n, _ = x.shape
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_reference(z1, z2, lambd):
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False, dtype=z1.dtype).train()
    c = bn(z1).T @ bn(z2)
    c = c / z1.shape[0]
    on_diag = torch.diagonal(c).add(-1).pow(2).sum()
    return on_diag + lambd * off_diagonal(c).pow(2).sum()
