"""Figures of the hypersphere: features on the circle with a von Mises-Fisher density of angles, the
alignment-uniformity plane, and training curves.

Needs matplotlib and scipy (``pip install 'contrasphere[viz]'``); everything renders off-screen (Agg) to PNG.
Wang & Isola's Figure 3 shows CIFAR-10 features of encoders with 2-d outputs on S^1, with a kernel density of the
angles using a von Mises-Fisher kernel (``kappa = 25``); :func:`plot_circle` draws that figure for any 2-d
embeddings, :func:`vmf_density` is the density itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from .errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _numpy(x: Any, name: str) -> NDArray[np.float64]:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    array = np.asarray(x, dtype=np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or Inf")
    return array


def angles_of(z: Any) -> NDArray[np.float64]:
    """Angles in ``[-pi, pi)`` of ``(N, 2)`` embeddings (projected onto the circle; zero rows are an error)."""
    points = _numpy(z, "z")
    if points.ndim != 2 or points.shape[1] != 2:
        raise InputError(
            f"z must have shape (N, 2) to lie on the circle S^1, got {points.shape}; train with 2-d outputs"
        )
    if (np.linalg.norm(points, axis=1) == 0).any():
        raise InputError("z has all-zero rows, which have no angle")
    return np.arctan2(points[:, 1], points[:, 0])


def vmf_density(angles: Any, grid: Any, *, kappa: float = 25.0) -> NDArray[np.float64]:
    r"""Kernel density of ``angles`` on the circle with a von Mises-Fisher kernel, evaluated at ``grid``.

    :math:`\hat p(\theta) = \frac1N \sum_i \frac{e^{\kappa\cos(\theta - \theta_i)}}{2\pi I_0(\kappa)}`, computed with
    the exponentially scaled :math:`I_0` so that large ``kappa`` does not overflow; integrates to 1 over the circle.
    """
    from scipy.special import i0e

    if not (math.isfinite(kappa) and kappa > 0):
        raise InputError(f"kappa must be a finite number > 0, got {kappa}")
    angles_np, grid_np = _numpy(angles, "angles").ravel(), _numpy(grid, "grid").ravel()
    if angles_np.size == 0:
        raise InputError("angles is empty: a density needs at least one point")
    kernel = np.exp(kappa * (np.cos(grid_np[:, None] - angles_np[None, :]) - 1.0))  # e^{k cos - k}
    density: NDArray[np.float64] = kernel.mean(1) / (2 * math.pi * i0e(kappa))
    return density


def _pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the off-screen Agg backend (an ImportError that names the extra without it)."""
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - only without the extra
        raise ImportError("figures need matplotlib: pip install 'contrasphere[viz]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _labels(labels: Any | None, n: int) -> NDArray[np.int64] | None:
    if labels is None:
        return None
    labels_np: NDArray[np.int64] = _numpy(labels, "labels").astype(np.int64).ravel()
    if labels_np.shape[0] != n:
        raise InputError(f"labels needs one entry per point ({n}), got {labels_np.shape[0]}")
    return labels_np


def _draw_circle(
    ax_circle: Any,
    ax_density: Any,
    z: Any,
    labels: Any | None,
    *,
    kappa: float,
    class_names: Sequence[str] | None = None,
    legend: bool = True,
) -> None:
    """One panel of Figure 3: the points on the whole unit circle (a collapsed set shows as a dot on it, never
    rescaled into an arc) and the vMF density of their angles, overall and per class."""
    theta = angles_of(z)
    labels_np = _labels(labels, theta.shape[0])
    colours = _pyplot().get_cmap("tab10")
    ring = np.linspace(0, 2 * math.pi, 200)
    ax_circle.plot(np.cos(ring), np.sin(ring), color="0.8", lw=1)
    rng = np.random.default_rng(0)
    jitter = 1 + 0.03 * rng.standard_normal(len(theta))  # radial only, for visibility
    # one scatter in a seeded random order: drawn class by class, the last class painted over all the others
    order = rng.permutation(len(theta))
    colour = "C0" if labels_np is None else colours(labels_np[order] % 10)
    x, y = jitter[order] * np.cos(theta[order]), jitter[order] * np.sin(theta[order])
    ax_circle.scatter(x, y, s=2, alpha=0.6, c=colour, linewidths=0, rasterized=True, zorder=2)
    ax_circle.set_xlim(-1.25, 1.25)
    ax_circle.set_ylim(-1.25, 1.25)
    ax_circle.set_aspect("equal")
    ax_circle.axis("off")
    grid = np.linspace(-math.pi, math.pi, 361)
    ax_density.plot(grid, vmf_density(theta, grid, kappa=kappa), color="k", lw=2, label="all")
    if labels_np is not None:
        for c in np.unique(labels_np):
            name = class_names[int(c)] if class_names is not None else str(int(c))
            density = vmf_density(theta[labels_np == c], grid, kappa=kappa)
            ax_density.plot(grid, density, lw=1, color=colours(int(c) % 10), label=name)
        if legend:
            ax_density.legend(fontsize=6, ncol=2, frameon=False)
    ax_density.axhline(1 / (2 * math.pi), color="0.6", ls="--", lw=1)  # the uniform density
    ax_density.set_xlabel("angle (radians)")
    ax_density.set_xlim(-math.pi, math.pi)


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
    fig, (ax_circle, ax_density) = plt.subplots(1, 2, figsize=(8.5, 3.8), gridspec_kw={"width_ratios": [1, 1.4]})
    _draw_circle(ax_circle, ax_density, z, labels, kappa=kappa, class_names=class_names)
    ax_density.set_ylabel(f"vMF KDE density (kappa={kappa:g})")
    if title:
        fig.suptitle(title)
    return _save(fig, path, plt)


def plot_circles(
    panels: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    kappa: float = 25.0,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Several encoders side by side as in the paper's Figure 3: circles on top, angle densities below.

    Each panel is a mapping with ``z`` (``(N, 2)`` features), optional ``labels`` and a ``title`` (for the paper's
    captions, e.g. the linear accuracy of the 2-d features). With ``class_names``, one legend below the figure names
    the class colours of every panel.
    """
    if not panels:
        raise InputError("panels is empty: give one mapping (z, labels, title) per encoder")
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 6), squeeze=False)
    for col, panel in enumerate(panels):
        _draw_circle(
            axes[0, col], axes[1, col], panel["z"], panel.get("labels"), kappa=kappa, class_names=class_names,
            legend=False,
        )  # fmt: skip
        axes[0, col].set_title(str(panel.get("title", "")), fontsize=9)
    axes[1, 0].set_ylabel(f"vMF KDE density (kappa={kappa:g})")
    if class_names is not None:
        handles, names = axes[1, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
        return _save(fig, path, plt, rect=(0, 0.05, 1, 1))  # room for the legend below
    return _save(fig, path, plt)


def plot_align_uniform(
    runs: Sequence[Mapping[str, float]], path: str | Path, *, color_key: str = "accuracy", title: str = ""
) -> Path:
    """The alignment-uniformity plane (Wang & Isola, Figure 5): one point per encoder, coloured by ``color_key``.

    Each run is a mapping with ``alignment`` and ``uniformity`` (lower is better for both) and ``color_key``.
    """
    plt = _pyplot()
    if not runs:
        raise InputError("runs is empty: give one mapping per encoder")
    for i, run in enumerate(runs):
        missing = {"alignment", "uniformity", color_key} - set(run)
        if missing:
            raise InputError(f"run {i} lacks {sorted(missing)}")
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
        raise InputError("history is empty: give one mapping per logged step")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(h[x_key], h[key]) for h in history if key in h and x_key in h]
        if not points:
            raise InputError(f"no entry of history has both {x_key!r} and {key!r}")
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_xlabel(x_key)
        ax.set_ylabel(key)
    if title:
        fig.suptitle(title)
    return _save(fig, path, plt)


def plot_paths(
    paths: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | Path,
    *,
    start: Mapping[str, float] | None = None,
    x_key: str = "uniformity",
    y_key: str = "alignment",
    label_key: str = "step",
) -> Path:
    """Trajectories of encoders through the alignment-uniformity plane during training (SimCSE's Figure 2).

    ``paths`` maps a name to its measurements in order; the last point of each is annotated with its
    ``label_key``; ``start`` (the common starting encoder) is drawn as a star.
    """
    if not paths:
        raise InputError("paths is empty: give one sequence of measurements per encoder")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, points in paths.items():
        points = [p for p in points if x_key in p and y_key in p]
        if not points:
            raise InputError(f"path {name!r} has no point with both {x_key!r} and {y_key!r}")
        ax.plot([p[x_key] for p in points], [p[y_key] for p in points], marker="o", ms=3, label=name)
        if label_key in points[-1]:
            ax.annotate(f"{points[-1][label_key]:g}", (points[-1][x_key], points[-1][y_key]), fontsize=7)
    if start is not None:
        ax.scatter([start[x_key]], [start[y_key]], marker="*", s=120, color="k", label="start", zorder=3)
    ax.set_xlabel(f"{x_key} (lower is better)")
    ax.set_ylabel(f"{y_key} (lower is better)")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path, plt)


def plot_recall(
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: str | Path,
    *,
    directions: Sequence[str] = ("text_to_image", "image_to_text"),
    ks: Sequence[str] = ("R@1", "R@5", "R@10"),
) -> Path:
    """Retrieval recall@k as grouped bars, one panel per direction, one bar colour per run (fractions in [0, 1])."""
    if not runs:
        raise InputError("runs is empty: give one mapping of recalls per run")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(directions), figsize=(4 * len(directions), 3.2), sharey=True, squeeze=False)
    width = 0.8 / len(runs)
    for ax, direction in zip(axes[0], directions):
        for i, (name, r) in enumerate(runs.items()):
            ax.bar([j + i * width for j in range(len(ks))], [100 * r[direction][k] for k in ks], width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ks))], list(ks))
        ax.set_title(direction.replace("_", " "))
    axes[0, 0].set_ylabel("recall (%)")
    axes[0, -1].legend(fontsize=7, frameon=False)
    return _save(fig, path, plt)


def plot_sweep(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    baselines: Mapping[str, float] | None = None,
    log_x: bool = False,
) -> Path:
    """One or more curves over a swept hyperparameter, with optional horizontal baselines (named dashed lines)."""
    if not series or any(len(ys) != len(x) for ys in series.values()):
        raise InputError("series must map names to one value per x")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (name, ys), marker in zip(series.items(), "os^vD"):
        ax.plot(list(x), list(ys), marker=marker, label=name)
    for name, value in (baselines or {}).items():
        ax.axhline(value, ls="--", lw=1, color="0.5")
        ax.annotate(name, (min(x) if len(x) else 0, value), fontsize=7)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path, plt)


def _save(
    fig: Figure, path: str | Path, plt: ModuleType, rect: tuple[float, float, float, float] = (0, 0, 1, 1)
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=rect)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")  # written whole, then renamed
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
