"""Metrics of the covariance spectrum: effective rank (RankMe), alpha-ReQ (eigen-decay) and LiDAR (several views)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import _validate as check
from ..errors import InputError
from ._common import _CHUNK, _moments, _prepare, _rows, _views


@torch.no_grad()
def effective_rank(z: Any, *, normalize: bool = True, chunk_size: int = _CHUNK) -> float:
    r"""RankMe: the exponential of the entropy of the normalised singular values of the embedding matrix.

    With singular values :math:`\sigma_k` of the ``(N, D)`` matrix and :math:`p_k = \sigma_k / \sum_j \sigma_j`,
    :math:`\exp(-\sum_k p_k \log p_k)` (Garrido et al., "RankMe", ICML 2023, Eq. 1; Roy & Vetterli 2007), with
    :math:`0 \log 0 = 0`. Between 1 (all embeddings on one line) and ``min(N, D)``. The singular values come from
    the eigenvalues of the ``D x D`` Gram matrix, accumulated in float64 chunk by chunk.
    """
    z, inv = _prepare(z, "z", normalize, chunk_size)
    d = z.shape[1]
    gram = torch.zeros(d, d, dtype=torch.float64, device=z.device)
    for start in range(0, z.shape[0], chunk_size):
        rows = _rows(z, inv, start, start + chunk_size, torch.float64)
        gram += rows.T @ rows
    eig = torch.linalg.eigvalsh(gram).clamp_min(0)
    sigma = eig.sqrt()
    sigma = sigma[sigma > sigma.max() * 1e-12]  # eigenvalues at rounding level are zeros
    p = sigma / sigma.sum()
    return float(torch.exp(-(p * p.log()).sum()))


# covariance eigenvalues below this fraction of the mean squared norm (1 on the sphere) are zero up to rounding
# (about 1e-16 in float64; the rounding of float32 or float16 input adds no more than about 1e-14, 1e-7 of its
# norm squared): alpha-ReQ leaves them out of its fit, whose logarithms they would dominate
RANK_RTOL = 1e-10


@torch.no_grad()
def alpha_req(
    z: Any, *, ranks: tuple[int, int] | None = None, normalize: bool = True, chunk_size: int = _CHUNK
) -> float:
    r"""alpha-ReQ: the decay coefficient :math:`\alpha` of a power law :math:`\lambda_i \propto i^{-\alpha}` fitted to
    the eigenspectrum of the embeddings' covariance.

    Agrawal, Mondal, Ghosh & Richards, ":math:`\alpha`-ReQ: Assessing Representation Quality in Self-Supervised
    Learning by measuring eigenspectrum decay", NeurIPS 2022: with the eigenvalues
    :math:`\lambda_1 \ge \lambda_2 \ge \dots` of the covariance of the embeddings (on the sphere), :math:`\alpha` is
    minus the slope of the ordinary least-squares line through :math:`(\log i, \log \lambda_i)`. 0 for a flat
    (isotropic) spectrum; larger is a faster decay, i.e. fewer effective dimensions. The eigenvalues come from
    ``eigh`` of the ``D x D`` covariance (divided by ``N``), accumulated in float64 chunk by chunk.

    **Range of ranks:** ``ranks=(first, last)`` fits ranks ``first..last`` (1-based, inclusive). The default,
    ``None``, fits *every numerically non-zero eigenvalue*: ranks 1 to ``r``, where ``r`` counts the eigenvalues
    above :data:`RANK_RTOL` (1e-10) times the mean squared norm, which is 1 on the sphere (the others are zero up
    to rounding, for instance the ``D - N + 1`` of a set with fewer rows than dimensions, and their logarithms
    would dominate the fit). The authors' package reptrix fits ranks 6 to 100 by default, with weights ``1/i``;
    ``ranks=(6, 100)`` fits the same ranks here (unweighted). Raises if fewer than 2 eigenvalues are non-zero.
    """
    return _alpha_req(z, ranks, normalize, chunk_size)[0]


def _alpha_req(z: Any, ranks: tuple[int, int] | None, normalize: bool, chunk_size: int) -> tuple[float, int, int]:
    """alpha-ReQ and the first and last rank it was fitted over."""
    z, inv = _prepare(
        z,
        "z",
        normalize,
        chunk_size,
        min_rows=3,
        why="alpha-ReQ fits a line to the covariance spectrum, which needs 2 non-zero eigenvalues",
    )
    mean, cov = _moments(z, inv, chunk_size)
    eig = torch.linalg.eigvalsh(cov).flip(0)  # descending
    nonzero = int((eig > RANK_RTOL * (mean @ mean + cov.diagonal().sum())).sum())
    if ranks is None:
        first, last = 1, nonzero
    else:
        if not isinstance(ranks, (tuple, list)) or len(ranks) != 2:
            raise InputError(f"ranks must be a pair (first, last) of 1-based ranks, or None, got {ranks!r}")
        first = check.integer(ranks[0], "ranks[0]")
        last = check.integer(ranks[1], "ranks[1]", first + 1)
        if last > z.shape[1]:
            raise InputError(f"ranks end at {last} but the embeddings have dimension {z.shape[1]}")
    if last - first + 1 < 2 or last > nonzero:
        raise InputError(
            f"alpha-ReQ fits a line through at least 2 non-zero eigenvalues, but the covariance of z has only "
            f"{nonzero} (of {z.shape[1]}) above {RANK_RTOL:g} of the mean squared norm"
            + (f", so ranks {first}..{last} cannot be fitted" if ranks is not None else "")
            + "; the embeddings have (nearly) collapsed onto a point or a line, or there are too few of them"
        )
    x = torch.arange(first, last + 1, dtype=torch.float64, device=eig.device).log()
    y = eig[first - 1 : last].log()
    x, y = x - x.mean(), y - y.mean()
    return float(-(x @ y) / (x @ x)), first, last


@torch.no_grad()
def lidar(
    views: Any, *, delta: float = 1e-4, eps: float = 1e-8, normalize: bool = True, chunk_size: int = _CHUNK
) -> float:
    r"""LiDAR: the effective rank of the linear-discriminant (LDA) matrix of the surrogate task "which sample is this
    a view of", with the samples as classes and their views as the members.

    Thilak et al., "LiDAR: Sensing Linear Probing Performance in Joint Embedding SSL Architectures", ICLR 2024,
    Eqs. 1-4. ``views`` holds ``V >= 2`` views of each of ``N >= 2`` samples: a ``(V, N, D)`` tensor or array, or
    a list of ``V`` ``(N, D)`` ones (row ``n`` of every view is the same sample). With :math:`e_{n,v}` the
    embeddings (on the sphere), :math:`\mu_n = \frac1V \sum_v e_{n,v}` and :math:`\mu = \frac1N \sum_n \mu_n`,

    .. math::
        \Sigma_b = \tfrac{1}{N-1} \textstyle\sum_n (\mu_n - \mu)(\mu_n - \mu)^\top, \qquad
        \Sigma_w = \tfrac{1}{N(V-1)} \textstyle\sum_{n,v} (e_{n,v} - \mu_n)(e_{n,v} - \mu_n)^\top + \delta I,

        \Sigma_{\mathrm{LiDAR}} = \Sigma_w^{-1/2} \Sigma_b \Sigma_w^{-1/2}, \qquad
        p_i = \frac{\lambda_i + \epsilon}{\sum_j (\lambda_j + \epsilon)}, \qquad
        \mathrm{LiDAR} = \exp\bigl(-\textstyle\sum_i p_i \log p_i\bigr)

    with :math:`\lambda_i` the eigenvalues of :math:`\Sigma_{\mathrm{LiDAR}}`; ``delta`` (:math:`\delta`) and
    ``eps`` (:math:`\epsilon`) default to the paper's 1e-4 and 1e-8. Between 1 and ``D``; at most about
    ``min(D, N - 1)``, the rank of :math:`\Sigma_b`. Both covariances are accumulated in float64 over chunks of
    samples (``O(V * chunk * D + D^2)`` memory); :math:`\Sigma_w^{-1/2}` comes from ``eigh``. As every metric here,
    it measures the embeddings projected onto the sphere unless ``normalize=False`` (the paper applies the same
    formula to raw features).
    """
    delta = check.positive(delta, "delta")
    eps = check.non_negative(eps, "eps")
    zs, invs = _views(views, normalize, chunk_size)
    v, n, d = len(zs), zs[0].shape[0], zs[0].shape[1]
    rows = max(1, chunk_size // v)  # samples per chunk: V * rows embeddings at a time

    def block(start: int) -> Tensor:  # (V, rows, D), on the sphere, float64
        return torch.stack([_rows(z, inv, start, start + rows, torch.float64) for z, inv in zip(zs, invs)])

    grand = torch.zeros(d, dtype=torch.float64, device=zs[0].device)
    for start in range(0, n, rows):
        grand += block(start).sum((0, 1))
    grand /= n * v  # the mean of the sample means (every sample has V views)
    between = torch.zeros(d, d, dtype=torch.float64, device=grand.device)
    within = torch.zeros_like(between)
    for start in range(0, n, rows):
        e = block(start)
        means = e.mean(0)
        centred = means - grand
        between += centred.T @ centred
        spread = (e - means).reshape(-1, d)
        within += spread.T @ spread
    between /= n - 1
    within /= n * (v - 1)
    # Sigma_w + delta I shares the eigenvectors of Sigma_w; its eigenvalues are those of Sigma_w (>= 0) plus delta
    w, q = torch.linalg.eigh(within)
    inv_sqrt = (q * (w.clamp_min(0) + delta).rsqrt()) @ q.T
    lda = inv_sqrt @ between @ inv_sqrt
    lam = torch.linalg.eigvalsh((lda + lda.T) / 2).clamp_min(0) + eps
    p = lam / lam.sum()
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))
