"""Objectives that correct or reweight the negatives of NT-Xent: debiased and hard-negative contrastive losses.

Both estimate, for each anchor, the negatives' term of the softmax denominator in a way that accounts for false
negatives (same-class samples drawn as negatives, a fraction ``tau_plus`` of the batch) and, for the hard-negative
loss, emphasises the negatives closest to the anchor. Computed in log space through the pairwise engine, so small
temperatures do not overflow as the reference code's ``exp`` does.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from .. import _validate as check
from ..pairwise import acc_dtype, sym_row_logsumexp
from .contrastive import _dot, _ids, _others, _pair


@check.hyperparameters(temperature=check.temperature, tau_plus=check.non_negative, beta=check.non_negative)
def hard_negative_nt_xent(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""Hard-negative contrastive loss (HCL) on a SimCLR batch of ``2N`` views.

    Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021, Eq. 5 and the authors' code. For
    anchor ``i`` with positive score :math:`p = e^{s_{i,p(i)}}` and the ``M = 2N - 2`` other views as negatives
    (scores :math:`s_{ik}`, with :math:`s = \langle z, z'\rangle / \tau`):

    .. math::
        R_i = M \frac{\sum_k e^{(1+\beta) s_{ik}}}{\sum_k e^{\beta s_{ik}}}, \quad
        N_g = \max\Big(\frac{R_i - \tau^+ M p}{1 - \tau^+},\ M e^{-1/\tau}\Big), \quad
        \mathcal{L}_i = -\log \frac{p}{p + N_g},

    averaged over all ``2N`` anchors. ``beta = 0`` gives the debiased loss (:func:`debiased_nt_xent`); ``beta = 0``
    and ``tau_plus = 0`` give NT-Xent on unit vectors (where every :math:`s_{ik} \ge -1/\tau`, so the floor is
    inactive).

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2``. Returns a scalar.

    Args:
        temperature: :math:`\tau > 0` (0.5 in the paper's CIFAR experiments).
        tau_plus: :math:`\tau^+ \in [0, 1)`, the assumed probability that a negative shares the anchor's class
            (0.1 for CIFAR-10's ten classes).
        beta: :math:`\beta \ge 0`, the concentration on hard negatives (1.0 in the paper's CIFAR-10 runs).
        ids: ``(N,)`` integer sample ids, or None: views whose ids are equal are never each other's negatives
            (see :mod:`contrasphere.functional.contrastive`); ``M`` becomes each anchor's count of views of other
            ids, ``2N - 2`` times its id's share of the batch removed.
    """
    if tau_plus >= 1:
        raise ValueError(f"tau_plus is a class prior and must be in [0, 1), got {tau_plus}")
    z_a, z_b = _pair(z_a, z_b, min_rows=2, why="each anchor needs negatives besides its positive")
    n = z_a.shape[0]
    z = torch.cat([z_a, z_b])
    ids = _ids(ids, z_a)
    scale = 1.0 / temperature
    m: Tensor | int
    if ids is None:
        m = 2 * n - 2  # negatives per anchor: every view but the anchor and its partner
        lse = partial(sym_row_logsumexp, z, exclude_diagonal=True, exclude_offsets=(n, -n), block_size=block_size)
    else:  # every view of another id: twice the pairs of other ids
        m = 2 * _others(ids, "the hard-negative loss").repeat(2).to(acc_dtype(z))
        lse = partial(sym_row_logsumexp, z, ids=ids.repeat(2), block_size=block_size)
    log_reweighted = lse(scale=(1.0 + beta) * scale)
    if beta > 0:  # log M + log sum e^{(1+b)s} - log sum e^{b s}
        log_m = math.log(m) if isinstance(m, int) else m.log()
        log_reweighted = log_reweighted + log_m - lse(scale=beta * scale)
    s_pos = (scale * _dot(z_a, z_b)).repeat(2)
    # N_g in log space, shifted by c so that neither exponential overflows
    c = torch.maximum(log_reweighted, s_pos).detach()
    debiased = (torch.exp(log_reweighted - c) - tau_plus * m * torch.exp(s_pos - c)) / (1.0 - tau_plus)
    floor = m * torch.exp(-scale - c)
    log_ng = c + torch.log(torch.maximum(debiased, floor))
    return (torch.logaddexp(s_pos, log_ng) - s_pos).mean()


@check.hyperparameters(temperature=check.temperature, tau_plus=check.non_negative)
def debiased_nt_xent(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""Debiased contrastive loss on a SimCLR batch of ``2N`` views.

    Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020, Eq. 7 and the authors' code: the negatives' sum
    :math:`\sum_k e^{s_{ik}}` over the ``M = 2N - 2`` other views is replaced by
    :math:`N_g = \max\big((\sum_k e^{s_{ik}} - \tau^+ M e^{s_{i,p(i)}}) / (1 - \tau^+),\ M e^{-1/\tau}\big)`,
    which removes the expected contribution of false negatives. It is :func:`hard_negative_nt_xent` with
    ``beta = 0``; ``tau_plus = 0`` gives NT-Xent.

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2``. Returns a scalar.

    Args:
        temperature: :math:`\tau > 0` (0.5 in the paper's CIFAR experiments).
        tau_plus: :math:`\tau^+ \in [0, 1)`, the class prior of false negatives (0.1 for CIFAR-10).
        ids: sample ids, as in :func:`hard_negative_nt_xent`.
    """
    return hard_negative_nt_xent(
        z_a, z_b, temperature=temperature, tau_plus=tau_plus, beta=0.0, ids=ids, block_size=block_size
    )
