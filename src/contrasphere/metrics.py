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
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import _validate as check
from .functional.align_uniform import uniformity_optimum

NORM_TOLERANCE = 1e-3
_CHUNK = 65536


def _tensor(z: Any, name: str) -> Tensor:
    if isinstance(z, np.ndarray):
        z = torch.from_numpy(z)
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of shape (N, D), got {type(z).__name__}")
    return z.detach()


def _inverse_norms(z: Tensor, name: str, normalize: bool, chunk_size: int) -> Tensor:
    """Per-row factors that put ``z`` on the unit sphere (all ones when it is there already), in float64."""
    norms = torch.cat([torch.linalg.vector_norm(c.double(), dim=1) for c in torch.split(z, chunk_size)])
    if normalize:
        zero = norms == 0
        if zero.any():
            raise ValueError(
                f"{name} has {int(zero.sum())} all-zero row(s) (e.g. row {int(zero.nonzero()[0])}), which have no "
                "direction to project onto the sphere; drop them before measuring"
            )
        return 1.0 / norms
    worst = float((norms - 1).abs().max())
    if worst > NORM_TOLERANCE:
        raise ValueError(
            f"{name} is not on the unit sphere (norms range from {float(norms.min()):.4g} to "
            f"{float(norms.max()):.4g}); alignment and uniformity are defined on the sphere, so pass normalize=True "
            "to project the embeddings first (or normalise them yourself)"
        )
    return torch.ones_like(norms)


def _prepare(
    z: Any, name: str, normalize: bool, chunk_size: int, min_rows: int = 1, why: str = ""
) -> tuple[Tensor, Tensor]:
    z = check.embeddings(_tensor(z, name), name, min_rows=min_rows, why=why)
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
        raise ValueError("give exactly one of z_b (row i pairs with row i) and pairs (a (P, 2) array of indices)")
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
        raise ValueError(
            f"pairs must have shape (P, 2) with P >= 1, one row per positive pair, got {tuple(pairs.shape)}"
        )
    if pairs.is_floating_point() or pairs.dtype == torch.bool:
        raise TypeError(f"pairs must hold integer row indices, got dtype {pairs.dtype}")
    pairs = pairs.long()
    if int(pairs.min()) < 0 or int(pairs.max()) >= n:
        raise ValueError(
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
    if max_points is not None:
        check.integer(max_points, "max_points", 2, " or None")
        if max_points < z.shape[0]:
            keep = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points]
            z, inv = z[keep.to(z.device)], inv[keep]
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
def norm_stats(z: Any, *, chunk_size: int = _CHUNK) -> dict[str, float]:
    """Mean, standard deviation, minimum and maximum of the embeddings' Euclidean norms (before any projection)."""
    z = check.embeddings(_tensor(z, "z"), "z")
    _chunk(chunk_size)
    norms = torch.cat([torch.linalg.vector_norm(c.double(), dim=1) for c in torch.split(z, chunk_size)])
    std = float(norms.std(unbiased=False))
    return {"mean": float(norms.mean()), "std": std, "min": float(norms.min()), "max": float(norms.max())}


def report(
    z: Any,
    positives: Any | None = None,
    *,
    pairs: Any | None = None,
    alpha: float = 2.0,
    t: float = 2.0,
    normalize: bool = True,
    max_points: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of one set of embeddings (and of its positives, if given) in one JSON-ready dict.

    ``positives`` is an ``(N, D)`` set paired row by row with ``z``; ``pairs`` a ``(P, 2)`` index of positive pairs
    within ``z``. With neither, alignment is left out. ``uniformity`` is measured on ``z`` alone.
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
    if positives is not None:
        out["modality_gap"] = modality_gap(z, positives, normalize=normalize)
    return out


def _has_scipy() -> bool:
    try:
        import scipy.special  # noqa: F401
    except ImportError:
        return False
    return True
