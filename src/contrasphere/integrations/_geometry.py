"""What the trainer callbacks measure on a set of positive pairs (torch only, shared by :mod:`.hf` and
:mod:`.lightning`)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _validate as check
from .. import metrics
from ..errors import InputError, InputTypeError

NAMES = ("alignment", "uniformity", "effective_rank")


def pair_geometry(
    z_a: Tensor,
    z_b: Tensor,
    *,
    alpha: float = 2.0,
    t: float = 2.0,
    normalize: bool = True,
    max_points: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Alignment of the pairs ``(z_a[i], z_b[i])``, and uniformity and effective rank of all ``2N`` embeddings.

    ``alignment`` is :func:`contrasphere.metrics.alignment` ``(z_a, z_b, alpha=alpha)``; ``uniformity`` is
    :func:`contrasphere.metrics.uniformity` ``(cat([z_a, z_b]), t=t, max_points=max_points, seed=seed)`` and
    ``effective_rank`` :func:`contrasphere.metrics.effective_rank` ``(cat([z_a, z_b]))``, the held-out protocol of
    Wang & Isola (2020) that contrasphere's own trainer follows (uniformity over every embedding of the held-out
    set, both sides of each pair).
    """
    z_a = check.embeddings(z_a, "z_a", keep_dtype=True)
    z_b = check.embeddings(z_b, "z_b", keep_dtype=True)
    check.same_shape(z_a, z_b, "z_a", "z_b")
    both = torch.cat([z_a, z_b])
    return {
        "alignment": metrics.alignment(z_a, z_b, alpha=alpha, normalize=normalize),
        "uniformity": metrics.uniformity(both, t=t, normalize=normalize, max_points=max_points, seed=seed),
        "effective_rank": metrics.effective_rank(both, normalize=normalize),
    }


def check_settings(alpha: float, t: float, max_points: int | None) -> tuple[float, float, int | None]:
    """Validate the metrics' keyword arguments when a callback is built, not at its first evaluation."""
    alpha = check.positive(alpha, "alpha")
    t = check.scale(t, "t")
    if max_points is not None:
        max_points = check.integer(max_points, "max_points", 2, " or None")
    return alpha, t, max_points


def check_normalize(normalize: object) -> bool:
    if not isinstance(normalize, bool):
        raise InputTypeError(f"normalize must be True or False, got {normalize!r}")
    return normalize


def as_embeddings(value: object, what: str) -> Tensor:
    """``value`` as a detached ``(B, D)`` floating-point tensor, or an error that says what ``what`` should be."""
    if not isinstance(value, Tensor):
        raise InputTypeError(f"{what} must be a torch.Tensor of shape (B, D), got {type(value).__name__}")
    if value.ndim != 2 or value.shape[1] == 0:
        raise InputError(
            f"{what} must have shape (B, D) (a batch of B embeddings of dimension D), got shape "
            f"{tuple(value.shape)}; pool or flatten the features first"
        )
    if not value.is_floating_point():
        raise InputTypeError(f"{what} must be a floating-point tensor, got dtype {value.dtype}")
    return value.detach()
