"""Shared pieces of the metrics: input checks, projection onto the sphere, chunked passes over rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _validate as check
from ..errors import InputError, InputTypeError

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


def _sums(z: Tensor, inv: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """The sum of the rows of ``z`` on the sphere and the sum of their squared norms, in float64."""
    total = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
    sq = torch.zeros((), dtype=torch.float64, device=z.device)
    for start in range(0, z.shape[0], chunk_size):
        rows = _rows(z, inv, start, start + chunk_size, torch.float64)
        total += rows.sum(0)
        sq += rows.pow(2).sum()
    return total, sq


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


def _mean(z: Tensor, inv: Tensor, chunk_size: int) -> Tensor:
    sums = [_rows(z, inv, s, s + chunk_size, torch.float64).sum(0) for s in range(0, z.shape[0], chunk_size)]
    return sum(sums[1:], sums[0]) / z.shape[0]


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


def _has_scipy() -> bool:
    try:
        import scipy.special  # noqa: F401
    except ImportError:
        return False
    return True
