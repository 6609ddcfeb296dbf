"""Alignment, uniformity and related quantities as metrics of any set of embeddings.

These are measurements, not losses: they run without gradients, in chunks (memory grows with the chunk, not with
the number of pairs, so a million 128-d embeddings fit), accumulate in float64 where it matters, and return Python
floats. They accept torch tensors or NumPy arrays.

**Un-normalised input.** Wang & Isola define alignment and uniformity on the unit sphere; on raw features the same
formulas return numbers that mean nothing (squared distances in the hundreds). So every metric that depends on the
scale takes ``normalize``:

- ``normalize=True`` (the default) projects each embedding onto the sphere first (``z / ||z||``), which is what
  the paper's encoders do as their last layer; a zero vector cannot be projected and is an error;
- ``normalize=False`` measures the embeddings as given, but only if they already lie on the sphere (every norm
  within ``1e-3`` of 1); otherwise it raises and says to pass ``normalize=True``.

Either way no metric silently returns a value computed off the sphere. :func:`norm_stats` reports the norms
themselves, so a report shows how far from the sphere the raw features were.

**Beyond alignment and uniformity**, the geometry measured in the later literature, each exact and chunked:
:func:`anisotropy` (mean cosine of distinct pairs), :func:`wasserstein_uniformity` (Fang et al. 2024),
:func:`effective_rank` (RankMe), :func:`alpha_req` (eigenspectrum decay), :func:`lidar` (the rank of the LDA
matrix of several views per sample), :func:`modality_gap` and :func:`modality_spread` (two paired modalities).
Memory is ``O(N D + D^2)`` at most (``O(chunk * D + D^2)`` for the passes over rows), never ``N x N``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import _validate as check
from .errors import InputError, InputTypeError
from .functional.align_uniform import uniformity_optimum

NORM_TOLERANCE = 1e-3
_CHUNK = 65536


def _tensor(z: Any, name: str) -> Tensor:
    if isinstance(z, np.ndarray):
        z = torch.from_numpy(z)
    if not isinstance(z, Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor or numpy.ndarray of shape (N, D), got {type(z).__name__}")
    return z.detach()


def _inverse_norms(z: Tensor, name: str, normalize: bool, chunk_size: int) -> Tensor:
    """Per-row factors that put ``z`` on the unit sphere (all ones when it is there already), in float64."""
    norms = torch.cat([torch.linalg.vector_norm(c.double(), dim=1) for c in torch.split(z, chunk_size)])
    if normalize:
        zero = norms == 0
        if zero.any():
            raise InputError(
                f"{name} has {int(zero.sum())} all-zero row(s) (e.g. row {int(zero.nonzero()[0])}), which have no "
                "direction to project onto the sphere; drop them before measuring"
            )
        return 1.0 / norms
    worst = float((norms - 1).abs().max())
    if worst > NORM_TOLERANCE:
        raise InputError(
            f"{name} is not on the unit sphere (norms range from {float(norms.min()):.4g} to "
            f"{float(norms.max()):.4g}); alignment and uniformity are defined on the sphere, so pass normalize=True "
            "to project the embeddings first (or normalise them yourself)"
        )
    return torch.ones_like(norms)


def _prepare(
    z: Any, name: str, normalize: bool, chunk_size: int, min_rows: int = 1, why: str = ""
) -> tuple[Tensor, Tensor]:
    # as given, half precision too: every pass below converts one chunk at a time (a float32 copy of a 4M x 128
    # float16 file is 2 GB), and check.embeddings looks for NaN/Inf in chunks
    z = check.embeddings(_tensor(z, name), name, min_rows=min_rows, why=why, keep_dtype=True)
    _chunk(chunk_size)
    return z, _inverse_norms(z, name, normalize, chunk_size)


def _chunk(chunk_size: int) -> None:
    check.integer(chunk_size, "chunk_size")


def _rows(z: Tensor, inv: Tensor, start: int, stop: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Rows ``start:stop`` of ``z`` projected onto the sphere, in ``dtype`` (float64 input stays float64)."""
    dtype = torch.float64 if z.dtype == torch.float64 else dtype
    return z[start:stop].to(dtype) * inv[start:stop].to(dtype).unsqueeze(1)


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


def _pairs(value: Any, n: int) -> Tensor:
    pairs = _tensor(value, "pairs")
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise InputError(
            f"pairs must have shape (P, 2) with P >= 1, one row per positive pair, got {tuple(pairs.shape)}"
        )
    if pairs.is_floating_point() or pairs.dtype == torch.bool:
        raise InputTypeError(f"pairs must hold integer row indices, got dtype {pairs.dtype}")
    pairs = pairs.long()
    if int(pairs.min()) < 0 or int(pairs.max()) >= n:
        raise InputError(
            f"pairs index rows {int(pairs.min())}..{int(pairs.max())} but the embeddings have {n} rows (0..{n - 1})"
        )
    return pairs


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
        z, "z", normalize, _CHUNK, min_rows=2, why="uniformity averages over pairs of distinct embeddings"
    )
    z, inv = _subset(z, inv, max_points, seed)
    _chunk(block_size)
    n = z.shape[0]
    sq_norm = torch.cat([_rows(z, inv, s, s + _CHUNK).pow(2).sum(1) for s in range(0, n, _CHUNK)])
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


def _sums(z: Tensor, inv: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """The sum of the rows of ``z`` on the sphere and the sum of their squared norms, in float64."""
    total = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
    sq = torch.zeros((), dtype=torch.float64, device=z.device)
    for start in range(0, z.shape[0], chunk_size):
        rows = _rows(z, inv, start, start + chunk_size, torch.float64)
        total += rows.sum(0)
        sq += rows.pow(2).sum()
    return total, sq


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


def _moments(z: Tensor, inv: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Mean and covariance (divided by ``N``) of the rows of ``z`` on the sphere: float64, two passes, ``O(D^2)``."""
    mean = _mean(z, inv, chunk_size)
    cov = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64, device=z.device)
    for start in range(0, z.shape[0], chunk_size):
        rows = _rows(z, inv, start, start + chunk_size, torch.float64) - mean
        cov += rows.T @ rows
    return mean, cov / z.shape[0]


def _subset(z: Tensor, inv: Tensor, max_points: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """A uniformly drawn subset of ``max_points`` rows (seeded by ``seed``), or all rows if there are no more."""
    if max_points is None:
        return z, inv
    check.integer(max_points, "max_points", 2, " or None")
    if max_points >= z.shape[0]:
        return z, inv
    keep = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points]
    return z[keep.to(z.device)], inv[keep.to(inv.device)]


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


def _views(views: Any, normalize: bool, chunk_size: int) -> tuple[list[Tensor], list[Tensor]]:
    """Check ``views`` (``(V, N, D)``, or ``V`` arrays of ``(N, D)``): each view as given and its inverse norms."""
    if isinstance(views, (list, tuple)):
        given = list(views)
    else:
        stacked = _tensor(views, "views")
        if stacked.ndim != 3:
            raise InputError(
                "views must have shape (V, N, D) (V views of each of N samples, row n of every view the same "
                f"sample) or be a list of V (N, D) arrays, got shape {tuple(stacked.shape)}"
            )
        given = list(stacked.unbind(0))
    if len(given) < 2:
        raise InputError(
            f"views holds {len(given)} view(s) of each sample but LiDAR needs at least 2: the spread of a sample's "
            "views around their mean is its within-class covariance"
        )
    zs: list[Tensor] = []
    invs: list[Tensor] = []
    for i, view in enumerate(given):
        z, inv = _prepare(
            view,
            f"views[{i}]",
            normalize,
            chunk_size,
            min_rows=2,
            why="LiDAR's between-class covariance needs at least 2 samples",
        )
        if zs:
            check.same_shape(zs[0], z, "views[0]", f"views[{i}]")
        zs.append(z)
        invs.append(inv)
    return zs, invs


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


def _mean(z: Tensor, inv: Tensor, chunk_size: int) -> Tensor:
    sums = [_rows(z, inv, s, s + chunk_size, torch.float64).sum(0) for s in range(0, z.shape[0], chunk_size)]
    return sum(sums[1:], sums[0]) / z.shape[0]


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


def report(
    z: Any,
    positives: Any | None = None,
    *,
    views: Any | None = None,
    pairs: Any | None = None,
    alpha: float = 2.0,
    t: float = 2.0,
    normalize: bool = True,
    max_points: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of one set of embeddings (and of its positives and views, if given) in one JSON-ready dict.

    ``positives`` is an ``(N, D)`` set paired row by row with ``z``; ``pairs`` a ``(P, 2)`` index of positive pairs
    within ``z``. With neither, alignment is left out. ``uniformity`` is measured on ``z`` alone (on a subset of
    ``max_points`` if given); ``anisotropy``, ``wasserstein_uniformity``, ``alpha_req`` and ``effective_rank`` on
    all of ``z``; ``lidar`` on ``views`` (``(V, N, D)`` or a list of ``V`` ``(N, D)`` sets), only when they are
    given. ``alpha_req`` is ``None`` when the covariance of ``z`` has fewer than 2 non-zero eigenvalues (a set
    collapsed onto a point or a line, or fewer than 3 embeddings): there is no decay to fit.
    """
    z = _tensor(z, "z")
    n, d = (z.shape[0], z.shape[1]) if z.ndim == 2 else (0, 0)
    out: dict[str, Any] = {"n": n, "dim": d, "normalize": normalize, "alpha": alpha, "t": t}
    out["norms"] = norm_stats(z)
    if positives is not None or pairs is not None:
        out["alignment"] = alignment(z, positives, pairs=pairs, alpha=alpha, normalize=normalize)
        out["n_pairs"] = n if positives is not None else int(_tensor(pairs, "pairs").shape[0])
    out["uniformity"] = uniformity(z, t=t, normalize=normalize, max_points=max_points, seed=seed)
    out["uniformity_points"] = n if max_points is None else min(n, max_points)
    out["uniformity_optimum"] = uniformity_optimum(d, t) if _has_scipy() and d >= 2 else None
    out["effective_rank"] = effective_rank(z, normalize=normalize)
    out["anisotropy"] = anisotropy(z, normalize=normalize)
    out["wasserstein_uniformity"] = wasserstein_uniformity(z, normalize=normalize)
    try:  # z has passed every check above, so the only error left is a spectrum with no decay to fit
        out["alpha_req"], *ranks = _alpha_req(z, None, normalize, _CHUNK)
    except InputError:
        out["alpha_req"], ranks = None, []
    out["alpha_req_ranks"] = ranks or None
    if positives is not None:
        out["modality_gap"] = modality_gap(z, positives, normalize=normalize)
        out["modality_spread"] = modality_spread(z, positives, normalize=normalize)
    if views is not None:
        out["lidar"] = lidar(views, normalize=normalize)
        if isinstance(views, (list, tuple)):
            out["lidar_views"], out["lidar_samples"] = len(views), int(_tensor(views[0], "views[0]").shape[0])
        else:
            out["lidar_views"], out["lidar_samples"] = (int(size) for size in _tensor(views, "views").shape[:2])
    return out


def _has_scipy() -> bool:
    try:
        import scipy.special  # noqa: F401
    except ImportError:
        return False
    return True
