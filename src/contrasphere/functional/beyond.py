"""Objectives beyond InfoNCE: redundancy reduction, the spectral contrastive loss, and SwAV's swapped prediction."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _validate as check
from .contrastive import _pair


@check.hyperparameters(lambd=check.positive, eps=check.positive)
def barlow_twins(z_a: Tensor, z_b: Tensor, *, lambd: float = 0.0051, eps: float = 1e-5) -> Tensor:
    r"""Barlow Twins: drive the cross-correlation of the two views' standardised embeddings to the identity.

    With :math:`\hat z = (z - \mu) / \sqrt{\sigma^2 + \epsilon}` standardised over the batch (batch norm without
    affine parameters) and :math:`C = \hat z_a^\top \hat z_b / N` (``D x D``):
    :math:`\mathcal{L} = \sum_i (1 - C_{ii})^2 + \lambda \sum_{i \ne j} C_{ij}^2` (Zbontar et al., "Barlow Twins:
    Self-Supervised Learning via Redundancy Reduction", ICML 2021, Eq. 1 and the authors' code).

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2`` (the standardisation needs a variance). Returns a scalar.

    Args:
        lambd: :math:`\lambda > 0`, the weight of the redundancy term (0.0051 in the paper).
        eps: added to the variance, as batch norm does.
    """
    z_a, z_b = _pair(z_a, z_b, min_rows=2, why="the batch standardisation needs a variance")
    dtype = torch.float64 if z_a.dtype == torch.float64 else torch.float32
    a = F.batch_norm(z_a.to(dtype), None, None, training=True, eps=eps)
    b = F.batch_norm(z_b.to(dtype), None, None, training=True, eps=eps)
    c = a.T @ b / z_a.shape[0]
    on_diag = (c.diagonal() - 1).pow(2).sum()
    return on_diag + lambd * (c.pow(2).sum() - c.diagonal().pow(2).sum())


@check.hyperparameters(mu=check.optional(check.positive))
def spectral_contrastive(z_a: Tensor, z_b: Tensor, *, mu: float | None = 1.0) -> Tensor:
    r"""The spectral contrastive loss: a low-rank factorisation of the augmentation graph's adjacency.

    :math:`\mathcal{L} = -\frac{2}{N}\sum_i \langle a_i, b_i\rangle + \frac{1}{N(N-1)}\sum_{i \ne j}
    \langle a_i, b_j\rangle^2` (HaoChen et al., "Provable Guarantees for Self-Supervised Deep Learning with Spectral
    Contrastive Loss", NeurIPS 2021, Eq. 5, estimated on a batch with the other samples' views as negatives). The
    squared sum is :math:`\langle A^\top A, B^\top B\rangle_F` minus its diagonal terms: ``O(N D^2)``, no ``N x N``
    matrix. Unlike InfoNCE the embeddings are not normalised; like the authors' code, embeddings whose norm exceeds
    :math:`\sqrt{\mu}` are scaled back to that norm (``mu=None`` leaves them as they are).

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2``. Returns a scalar.
    """
    z_a, z_b = _pair(z_a, z_b, min_rows=2, why="the negative term averages over pairs of different samples")
    dtype = torch.float64 if z_a.dtype == torch.float64 else torch.float32
    a, b = z_a.to(dtype), z_b.to(dtype)
    if mu is not None:
        radius = math.sqrt(mu)
        # min(1, radius / norm) as radius / max(norm, radius): an all-zero row gets the factor 1 and a finite
        # gradient (radius / 0 = inf, clamped, would send 0 * inf = NaN back through the norm to the whole encoder)
        a = a * (radius / torch.linalg.vector_norm(a, dim=1, keepdim=True).clamp_min(radius))
        b = b * (radius / torch.linalg.vector_norm(b, dim=1, keepdim=True).clamp_min(radius))
    n = a.shape[0]
    positive = (a * b).sum(1)
    all_squares = ((a.T @ a) * (b.T @ b)).sum()  # sum_ij <a_i, b_j>^2
    return -2.0 * positive.mean() + (all_squares - positive.pow(2).sum()) / (n * (n - 1))


@check.hyperparameters(epsilon=check.temperature, iterations=check.integer)
@torch.no_grad()
def sinkhorn(scores: Tensor, *, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    r"""SwAV's equipartitioned soft assignments of ``N`` samples to ``K`` prototypes (Sinkhorn-Knopp).

    Starts from :math:`Q \propto \exp(S / \epsilon)` and alternately normalises prototypes (each gets mass ``1/K``)
    and samples (each ``1/N``), ``iterations`` times, as the SwAV code does; computed in log space, so small
    ``epsilon`` does not overflow. Returns ``(N, K)`` assignments whose rows sum to 1. No gradient.
    """
    n, k = scores.shape
    log_q = scores.float() / epsilon if scores.dtype != torch.float64 else scores / epsilon
    log_q = log_q - torch.logsumexp(log_q.flatten(), 0)
    for _ in range(iterations):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(k)  # prototypes: 1/K each
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(n)  # samples: 1/N each
    return torch.exp(log_q + math.log(n))


@check.hyperparameters(temperature=check.temperature, epsilon=check.temperature, sinkhorn_iterations=check.integer)
def swav(
    z_a: Tensor,
    z_b: Tensor,
    prototypes: Tensor,
    *,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
) -> Tensor:
    r"""SwAV's swapped prediction: predict one view's prototype assignment (code) from the other view.

    With scores :math:`s = z c^\top` against the ``K`` prototypes and codes :math:`q = \mathrm{sinkhorn}(s)`
    (no gradient), :math:`\mathcal{L} = -\frac{1}{2N}\sum_i \big(\sum_k q_{a,ik} \log p_{b,ik} + \sum_k q_{b,ik}
    \log p_{a,ik}\big)` with :math:`p = \mathrm{softmax}(s / \tau)` (Caron et al., "Unsupervised Learning of Visual
    Features by Contrasting Cluster Assignments", NeurIPS 2020, Eq. 1-3 and the authors' code, two crops).

    Shape:
        z_a, z_b: ``(N, D)`` unit vectors; prototypes: ``(K, D)`` unit vectors (see
        :class:`contrasphere.losses.SwAVLoss`, which holds them). Returns a scalar.

    Args:
        temperature: :math:`\tau` (0.1); epsilon: the Sinkhorn regularisation (0.05); sinkhorn_iterations: 3.
    """
    z_a, z_b = _pair(z_a, z_b)
    prototypes = check.embeddings(prototypes, "prototypes", min_rows=2, why="assignments need two prototypes")
    check.same_dim(z_a, prototypes, "z_a", "prototypes")
    dtype = torch.float64 if z_a.dtype == torch.float64 else torch.float32
    c = prototypes.to(dtype)
    s_a, s_b = z_a.to(dtype) @ c.T, z_b.to(dtype) @ c.T
    q_a = sinkhorn(s_a.detach(), epsilon=epsilon, iterations=sinkhorn_iterations)
    q_b = sinkhorn(s_b.detach(), epsilon=epsilon, iterations=sinkhorn_iterations)
    swapped = (q_a * F.log_softmax(s_b / temperature, dim=1)).sum(1) + (
        q_b * F.log_softmax(s_a / temperature, dim=1)
    ).sum(1)
    return -swapped.mean() / 2
