"""Figures of the hypersphere: features on the circle with a von Mises-Fisher density of angles, the
alignment-uniformity plane, and training curves.

Needs matplotlib and scipy (``pip install 'contrasphere[viz]'``); everything renders off-screen (Agg) to PNG.
Wang & Isola's Figure 3 shows CIFAR-10 features of encoders with 2-d outputs on S^1, with a kernel density of the
angles using a von Mises-Fisher kernel (``kappa = 25``); :func:`plot_circle` draws that figure for any 2-d
embeddings, :func:`vmf_density` is the density itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def angles_of(z: Any) -> np.ndarray:
    """Angles in ``[-pi, pi)`` of ``(N, 2)`` embeddings (projected onto the circle; zero rows are an error)."""
    z = _numpy(z, "z")
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"z must have shape (N, 2) to lie on the circle S^1, got {z.shape}; train with 2-d outputs")
    if (np.linalg.norm(z, axis=1) == 0).any():
        raise ValueError("z has all-zero rows, which have no angle")
    return np.arctan2(z[:, 1], z[:, 0])


def vmf_density(angles: Any, grid: Any, *, kappa: float = 25.0) -> np.ndarray:
    r"""Kernel density of ``angles`` on the circle with a von Mises-Fisher kernel, evaluated at ``grid``.

    :math:`\hat p(\theta) = \frac1N \sum_i \frac{e^{\kappa\cos(\theta - \theta_i)}}{2\pi I_0(\kappa)}`, computed with
    the exponentially scaled :math:`I_0` so that large ``kappa`` does not overflow; integrates to 1 over the circle.
    """
    from scipy.special import i0e

    if not (math.isfinite(kappa) and kappa > 0):
        raise ValueError(f"kappa must be a finite number > 0, got {kappa}")
    angles, grid = _numpy(angles, "angles").ravel(), _numpy(grid, "grid").ravel()
    if angles.size == 0:
        raise ValueError("angles is empty: a density needs at least one point")
    kernel = np.exp(kappa * (np.cos(grid[:, None] - angles[None, :]) - 1.0))  # e^{k cos - k}
    return kernel.mean(1) / (2 * math.pi * i0e(kappa))


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - only without the extra
        raise ImportError("figures need matplotlib: pip install 'contrasphere[viz]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_circle(
    z: Any,
    path: str | Path,
    *,
    labels: Any | None = None,
    kappa: float = 25.0,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Features on S^1 and the von Mises-Fisher density of their angles (Wang & Isola, Figure 3), as a PNG.

    Left: the points on the circle (coloured by ``labels`` when given). Right: the density of all angles and, with
    labels, of each class. Returns the path written.
    """
    plt = _pyplot()
    theta = angles_of(z)
    labels_np = None if labels is None else _numpy(labels, "labels").astype(int).ravel()
    if labels_np is not None and labels_np.shape[0] != theta.shape[0]:
        raise ValueError(f"labels needs one entry per point ({theta.shape[0]}), got {labels_np.shape[0]}")
    grid = np.linspace(-math.pi, math.pi, 361)
    fig, (ax_circle, ax_density) = plt.subplots(1, 2, figsize=(8.5, 3.8), gridspec_kw={"width_ratios": [1, 1.4]})
    ring = np.linspace(0, 2 * math.pi, 200)
    ax_circle.plot(np.cos(ring), np.sin(ring), color="0.8", lw=1)
    colours = plt.get_cmap("tab10")
    jitter = 1 + 0.03 * np.random.default_rng(0).standard_normal(theta.shape[0])  # radial only, for visibility
    if labels_np is None:
        ax_circle.scatter(jitter * np.cos(theta), jitter * np.sin(theta), s=2, alpha=0.4, color="C0")
    else:
        for c in np.unique(labels_np):
            keep = labels_np == c
            ax_circle.scatter(
                jitter[keep] * np.cos(theta[keep]),
                jitter[keep] * np.sin(theta[keep]),
                s=2,
                alpha=0.5,
                color=colours(int(c) % 10),
            )
    ax_circle.set_aspect("equal")
    ax_circle.axis("off")
    ax_density.plot(grid, vmf_density(theta, grid, kappa=kappa), color="k", lw=2, label="all")
    if labels_np is not None:
        for c in np.unique(labels_np):
            name = class_names[int(c)] if class_names is not None else str(int(c))
            ax_density.plot(
                grid,
                vmf_density(theta[labels_np == c], grid, kappa=kappa),
                lw=1,
                color=colours(int(c) % 10),
                label=name,
            )
        ax_density.legend(fontsize=6, ncol=2, frameon=False)
    ax_density.axhline(1 / (2 * math.pi), color="0.6", ls="--", lw=1)  # the uniform density
    ax_density.set_xlabel("angle (radians)")
    ax_density.set_ylabel(f"vMF KDE density (kappa={kappa:g})")
    ax_density.set_xlim(-math.pi, math.pi)
    if title:
        fig.suptitle(title)
    return _save(fig, path, plt)


def plot_align_uniform(
    runs: Sequence[Mapping[str, float]], path: str | Path, *, color_key: str = "accuracy", title: str = ""
) -> Path:
    """The alignment-uniformity plane (Wang & Isola, Figure 5): one point per encoder, coloured by ``color_key``.

    Each run is a mapping with ``alignment`` and ``uniformity`` (lower is better for both) and ``color_key``.
    """
    plt = _pyplot()
    if not runs:
        raise ValueError("runs is empty: give one mapping per encoder")
    for i, run in enumerate(runs):
        missing = {"alignment", "uniformity", color_key} - set(run)
        if missing:
            raise ValueError(f"run {i} lacks {sorted(missing)}")
    x = np.array([r["uniformity"] for r in runs], dtype=float)
    y = np.array([r["alignment"] for r in runs], dtype=float)
    c = np.array([r[color_key] for r in runs], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 4))
    points = ax.scatter(x, y, c=c, cmap="viridis", s=30, edgecolors="k", linewidths=0.3)
    fig.colorbar(points, ax=ax, label=color_key)
    ax.set_xlabel("uniformity (lower is better)")
    ax.set_ylabel("alignment (lower is better)")
    if title:
        ax.set_title(title)
    return _save(fig, path, plt)


def plot_curves(
    history: Sequence[Mapping[str, float]],
    path: str | Path,
    *,
    keys: Sequence[str] = ("alignment", "uniformity"),
    x_key: str = "epoch",
    title: str = "",
) -> Path:
    """Curves of ``keys`` (e.g. alignment and uniformity on held-out data) against ``x_key``, one panel each."""
    plt = _pyplot()
    if not history:
        raise ValueError("history is empty: give one mapping per logged step")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(h[x_key], h[key]) for h in history if key in h and x_key in h]
        if not points:
            raise ValueError(f"no entry of history has both {x_key!r} and {key!r}")
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_xlabel(x_key)
        ax.set_ylabel(key)
    if title:
        fig.suptitle(title)
    return _save(fig, path, plt)


def _save(fig, path: str | Path, plt) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
