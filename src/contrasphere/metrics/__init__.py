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

Layout: :mod:`.sphere` (positions on the sphere), :mod:`.spectrum` (covariance spectra), :mod:`._common`
(checks and chunked passes); :func:`report` gathers them all.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..functional.align_uniform import uniformity_optimum
from . import _common
from ._common import NORM_TOLERANCE, _has_scipy, _tensor
from .spectrum import _alpha_req, alpha_req, effective_rank, lidar
from .sphere import alignment, anisotropy, modality_gap, modality_spread, norm_stats, uniformity, wasserstein_uniformity

__all__ = [
    "NORM_TOLERANCE",
    "alignment",
    "alpha_req",
    "anisotropy",
    "effective_rank",
    "lidar",
    "modality_gap",
    "modality_spread",
    "norm_stats",
    "report",
    "uniformity",
    "wasserstein_uniformity",
]


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
        out["alpha_req"], *ranks = _alpha_req(z, None, normalize, _common._CHUNK)
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
