"""Metrics of positions on the sphere: alignment, uniformity (Wang & Isola), anisotropy, the Wasserstein
uniformity of Fang et al., and the gap and spreads between two paired modalities."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import _validate as check
from ..errors import InputError
from . import _common
from ._common import _CHUNK, _chunk, _mean, _moments, _pairs, _prepare, _rows, _subset, _sums, _tensor


@torch.no_grad()
def alignment(
    z_a: Any,
    z_b: Any | None = None,
    *,
    pairs: Any | None = None,
    alpha: float = 2.0,
    normalize: bool = True,
    chunk_size: int = _CHUNK,
) -> float:
    r"""Mean of :math:`\lVert z_a - z_b\rVert^\alpha` over positive pairs, on the unit sphere. Lower is better.

    Either give two ``(N, D)`` sets whose rows are paired (``z_a``, ``z_b``), or one ``(N, D)`` set ``z_a`` and
    ``pairs``, a ``(P, 2)`` integer array of row indices of positive pairs. Ranges from 0 to :math:`2^\alpha`.
    """
    alpha = check.positive(alpha, "alpha")
    if (z_b is None) == (pairs is None):
        raise InputError("give exactly one of z_b (row i pairs with row i) and pairs (a (P, 2) array of indices)")
    z_a, inv_a = _prepare(z_a, "z_a", normalize, chunk_size)
    if z_b is not None:
        z_b, inv_b = _prepare(z_b, "z_b", normalize, chunk_size)
        check.same_shape(z_a, z_b, "z_a", "z_b")
        index_a = index_b = torch.arange(z_a.shape[0], device=z_a.device)
    else:
        pairs = _pairs(pairs, z_a.shape[0])
        z_b, inv_b = z_a, inv_a
        index_a, index_b = pairs[:, 0].to(z_a.device), pairs[:, 1].to(z_a.device)
    total = 0.0
    for start in range(0, index_a.shape[0], chunk_size):
        ia, ib = index_a[start : start + chunk_size], index_b[start : start + chunk_size]
        a = z_a[ia].double() * inv_a[ia].unsqueeze(1)
        b = z_b[ib].double() * inv_b[ib].unsqueeze(1)
        total += float(torch.linalg.vector_norm(a - b, dim=1).pow(alpha).sum())
    return total / index_a.shape[0]


@torch.no_grad()
def uniformity(
    z: Any,
    *,
    t: float = 2.0,
    normalize: bool = True,
    max_points: int | None = None,
    seed: int = 0,
    block_size: int = 4096,
) -> float:
    r"""Log of the mean of :math:`e^{-t\lVert z_i - z_j\rVert^2}` over all pairs ``i < j``, on the unit sphere.

    At most 0; lower is more uniform; at best about ``-2t`` in high dimension (see
    :func:`contrasphere.functional.uniformity_optimum`). Exact: the pairs are visited in ``block_size`` squares of
    the upper triangle with a running log-sum-exp, so memory is ``O(block_size**2)`` whatever ``N`` is, and the cost
    is ``N**2 D`` multiply-adds. ``max_points`` measures a uniformly drawn subset (seeded by ``seed``) instead, for
    very large sets.
    """
    t = check.scale(t, "t")
    z, inv = _prepare(
        z, "z", normalize, _common._CHUNK, min_rows=2, why="uniformity averages over pairs of distinct embeddings"
    )
    z, inv = _subset(z, inv, max_points, seed)
    _chunk(block_size)
    n = z.shape[0]
    chunk = _common._CHUNK  # read at call time: tests shrink it
    sq_norm = torch.cat([_rows(z, inv, s, s + chunk).pow(2).sum(1) for s in range(0, n, chunk)])
    total = -math.inf
    for i in range(0, n, block_size):
        a = _rows(z, inv, i, i + block_size)
        for j in range(i, n, block_size):
            b = a if j == i else _rows(z, inv, j, j + block_size)
            sq = (sq_norm[i : i + block_size, None] + sq_norm[None, j : j + block_size] - 2.0 * (a @ b.T)).clamp_min(0)
            scores = sq.mul_(-t)
            if j == i:  # only the strict upper triangle of a diagonal block
                scores = scores[torch.triu(torch.ones_like(scores, dtype=torch.bool), diagonal=1)]
            if scores.numel():
                total = float(np.logaddexp(total, float(torch.logsumexp(scores.flatten().double(), dim=0))))
    return total - math.log(n * (n - 1) / 2)


@torch.no_grad()
def anisotropy(
    z: Any, *, normalize: bool = True, max_points: int | None = None, seed: int = 0, chunk_size: int = _CHUNK
) -> float:
    r"""The mean cosine similarity of pairs of distinct embeddings, :math:`\frac{1}{N(N-1)}\sum_{i \ne j}
    \langle u_i, u_j\rangle` with :math:`u_i` on the unit sphere. 0 for an isotropic set, 1 when every embedding
    points the same way; at least :math:`-1/(N-1)`.

    Ethayarajh, "How Contextual are Contextualized Word Representations?", EMNLP 2019 (the anisotropy baseline:
    the expected cosine similarity of two randomly drawn representations, estimated there from sampled pairs); the
    degenerate, narrow-cone geometry of Gao et al., "Representation Degeneration Problem in Training Natural
    Language Generation Models", ICLR 2019. Here it is exact over all :math:`N(N-1)` ordered pairs, in closed
    form and ``O(N D)``:

    .. math:: \frac{\lVert \sum_i u_i \rVert^2 - \sum_i \lVert u_i \rVert^2}{N (N - 1)}

    (:math:`\sum_i \lVert u_i\rVert^2 = N` on the sphere). For points drawn uniformly on :math:`S^{D-1}` its mean
    is 0 and its standard deviation :math:`1/\sqrt{D \cdot N(N-1)/2}`. ``max_points`` measures a uniformly drawn
    subset (seeded by ``seed``) instead, as :func:`uniformity` does.
    """
    z, inv = _prepare(
        z, "z", normalize, chunk_size, min_rows=2, why="anisotropy averages over pairs of distinct embeddings"
    )
    z, inv = _subset(z, inv, max_points, seed)
    total, sq = _sums(z, inv, chunk_size)
    n = z.shape[0]
    return float((total @ total - sq) / (n * (n - 1)))


@torch.no_grad()
def wasserstein_uniformity(z: Any, *, normalize: bool = True, chunk_size: int = _CHUNK) -> float:
    r"""Minus the 2-Wasserstein distance between the Gaussian fitted to the embeddings and :math:`N(0, I/D)`.

    Fang, Li, Sun & Wang, "Rethinking the Uniformity Metric in Self-Supervised Learning", ICLR 2024: the uniform
    distribution on :math:`S^{D-1}` is approximated by the isotropic Gaussian :math:`N(0, I/D)`, the embeddings
    (on the sphere) by the Gaussian of their mean :math:`\mu` and covariance :math:`\Sigma`, and the distance
    between the two Gaussians is

    .. math:: \mathcal{W}_2 = \sqrt{\lVert\mu\rVert^2 + 1 + \operatorname{tr}\Sigma
              - \tfrac{2}{\sqrt{D}} \operatorname{tr}\Sigma^{1/2}}

    **Sign:** this returns :math:`-\mathcal{W}_2`, the quantity the paper proposes as its uniformity metric, so
    that, as there, *higher is more uniform*: 0 when the fitted Gaussian is exactly :math:`N(0, I/D)`, and
    :math:`-\sqrt 2` (the least) when all embeddings coincide (on the sphere :math:`\lVert\mu\rVert^2 +
    \operatorname{tr}\Sigma = 1`). Unlike :func:`uniformity` it is sensitive to dimensional collapse: points spread
    uniformly over a ``k``-dimensional subspace give :math:`-\sqrt{2 - 2\sqrt{k/D}}`. :math:`\Sigma` is the
    maximum-likelihood covariance (divided by ``N``, as the authors' code computes it), accumulated in float64
    chunk by chunk, and :math:`\operatorname{tr}\Sigma^{1/2}` is the sum of the square roots of its eigenvalues
    (``eigh`` of the symmetric ``D x D`` matrix; rounding-level negative eigenvalues are clipped to 0).
    """
    z, inv = _prepare(z, "z", normalize, chunk_size, min_rows=2, why="a covariance needs at least 2 embeddings")
    mean, cov = _moments(z, inv, chunk_size)
    eig = torch.linalg.eigvalsh(cov).clamp_min(0)
    squared = mean @ mean + 1 + cov.diagonal().sum() - 2 / math.sqrt(z.shape[1]) * eig.sqrt().sum()
    return -math.sqrt(max(float(squared), 0.0))


@torch.no_grad()
def modality_gap(z_a: Any, z_b: Any, *, normalize: bool = True, chunk_size: int = _CHUNK) -> float:
    r"""The distance between the mean embeddings of two modalities, :math:`\lVert \bar z_a - \bar z_b\rVert_2`.

    Liang et al., "Mind the Gap: Understanding the Modality Gap in Multi-modal Contrastive Representation
    Learning", NeurIPS 2022, Section 4. Between 0 and 2 on the sphere. The two sets need the same dimension but not
    the same size.
    """
    z_a, inv_a = _prepare(z_a, "z_a", normalize, chunk_size)
    z_b, inv_b = _prepare(z_b, "z_b", normalize, chunk_size)
    check.same_dim(z_a, z_b, "z_a", "z_b")
    return float(torch.linalg.vector_norm(_mean(z_a, inv_a, chunk_size) - _mean(z_b, inv_b, chunk_size)))


@torch.no_grad()
def modality_spread(z_a: Any, z_b: Any, *, normalize: bool = True, chunk_size: int = _CHUNK) -> dict[str, float]:
    r"""Mean cosine similarities across and within two paired modalities, and the gap between their means.

    For paired sets (row ``i`` of ``z_a``, an image, matches row ``i`` of ``z_b``, its caption), each in closed form
    and ``O(N D)`` like :func:`anisotropy`:

    - ``matching``: :math:`\frac1N \sum_i \langle a_i, b_i\rangle`, the matching cross-modal pairs;
    - ``non_matching``: :math:`\frac{1}{N(N-1)} \sum_{i \ne j} \langle a_i, b_j\rangle
      = \frac{\langle \sum_i a_i, \sum_j b_j\rangle - \sum_i \langle a_i, b_i\rangle}{N(N-1)}`;
    - ``intra_a``, ``intra_b``: the mean cosine of distinct pairs within each modality (:func:`anisotropy`);
    - ``modality_gap``: :func:`modality_gap`, :math:`\lVert \bar a - \bar b\rVert`.

    Liang et al., "Mind the Gap: Understanding the Modality Gap in Multi-modal Contrastive Representation
    Learning", NeurIPS 2022 (CLIP's modalities occupy two narrow cones: high ``intra_a`` and ``intra_b``, a
    non-matching cosine well above 0); the same averages appear in the analyses of the contrastive gap (Fahim et
    al., "It's Not a Modality Gap: Characterizing and Addressing the Contrastive Gap", 2024) and of intra-modal
    misalignment (Mistretta et al., "Cross the Gap: Exposing the Intra-modal Misalignment in CLIP via Modality
    Inversion", ICLR 2025). All on the unit sphere; ``z_a`` and ``z_b`` need the same shape (paired rows) and at
    least 2 rows.
    """
    z_a, inv_a = _prepare(z_a, "z_a", normalize, chunk_size, min_rows=2, why="non-matching pairs need 2 rows")
    z_b, inv_b = _prepare(z_b, "z_b", normalize, chunk_size, min_rows=2, why="non-matching pairs need 2 rows")
    check.same_shape(z_a, z_b, "z_a", "z_b")
    n = z_a.shape[0]
    sum_a, sq_a = _sums(z_a, inv_a, chunk_size)
    sum_b, sq_b = _sums(z_b, inv_b, chunk_size)
    matched = torch.zeros((), dtype=torch.float64, device=z_a.device)
    for start in range(0, n, chunk_size):
        a = _rows(z_a, inv_a, start, start + chunk_size, torch.float64)
        matched += (a * _rows(z_b, inv_b, start, start + chunk_size, torch.float64)).sum()
    pairs = n * (n - 1)
    return {
        "matching": float(matched / n),
        "non_matching": float((sum_a @ sum_b - matched) / pairs),
        "intra_a": float((sum_a @ sum_a - sq_a) / pairs),
        "intra_b": float((sum_b @ sum_b - sq_b) / pairs),
        "modality_gap": float(torch.linalg.vector_norm((sum_a - sum_b) / n)),
    }


@torch.no_grad()
def norm_stats(z: Any, *, chunk_size: int = _CHUNK) -> dict[str, float]:
    """Mean, standard deviation, minimum and maximum of the embeddings' Euclidean norms (before any projection)."""
    z = check.embeddings(_tensor(z, "z"), "z", keep_dtype=True)
    _chunk(chunk_size)
    norms = torch.cat([torch.linalg.vector_norm(c.double(), dim=1) for c in torch.split(z, chunk_size)])
    std = float(norms.std(unbiased=False))
    return {"mean": float(norms.mean()), "std": std, "min": float(norms.min()), "max": float(norms.max())}
