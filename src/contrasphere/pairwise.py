"""Reductions over all pairs of two sets of embeddings.

Almost every objective in contrasphere reduces over an ``N x M`` matrix of pair scores: a row log-sum-exp
(InfoNCE and its relatives), a global log-sum-exp (uniformity) or an element-wise sum (SigLIP). This module holds
those reductions in one place, so that every loss and metric computes them the same way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sq_dists(x: Tensor, y: Tensor) -> Tensor:
    r"""Squared Euclidean distances :math:`\lVert x_i - y_j\rVert^2` through one matrix product, ``(N, M)``.

    Uses :math:`\lVert x\rVert^2 + \lVert y\rVert^2 - 2\langle x, y\rangle`, clamped at 0 against rounding.
    """
    sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.T)
    return sq.clamp_min(0.0)


def offdiag_logsumexp(scores: Tensor) -> Tensor:
    """Log-sum-exp over every entry of a square ``(N, N)`` matrix except its diagonal; a scalar."""
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    return torch.logsumexp(scores.masked_fill(eye, -math.inf).flatten(), dim=0)
