"""Figures: the vMF density is a density, and every plot writes a PNG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.special import i0

from contrasphere import viz


def test_vmf_density_integrates_to_one_and_matches_the_formula():
    grid = np.linspace(-math.pi, math.pi, 20001)
    angles = np.array([0.3, -2.0, 2.9])
    for kappa in (0.5, 25.0, 400.0):  # 400: I0(400) overflows float64, the scaled form does not
        density = viz.vmf_density(angles, grid, kappa=kappa)
        assert trapezoid(density, grid) == pytest.approx(1.0, abs=1e-6)
    direct = np.exp(25 * np.cos(grid[:, None] - angles)).mean(1) / (2 * math.pi * i0(25))
    np.testing.assert_allclose(viz.vmf_density(angles, grid, kappa=25), direct, rtol=1e-10)
    uniform = np.linspace(-math.pi, math.pi, 3600, endpoint=False)  # evenly spread angles: a flat density
    np.testing.assert_allclose(viz.vmf_density(uniform, grid[::100], kappa=25), 1 / (2 * math.pi), rtol=1e-6)


def test_plots_write_pngs(tmp_path):
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(300, 2, generator=g), dim=1)
    labels = torch.randint(0, 3, (300,), generator=g)
    paths = [
        viz.plot_circle(z, tmp_path / "circle.png", labels=labels, title="test"),
        viz.plot_circle(z.numpy() * 5, tmp_path / "plain.png"),
        viz.plot_align_uniform(
            [
                {"alignment": 0.5, "uniformity": -3.0, "accuracy": 0.8},
                {"alignment": 0.9, "uniformity": -2.0, "accuracy": 0.6},
            ],
            tmp_path / "au.png",
        ),
        viz.plot_curves(
            [{"epoch": 1, "alignment": 0.6, "uniformity": -1.0}, {"epoch": 2, "alignment": 0.5, "uniformity": -2.0}],
            tmp_path / "sub" / "curves.png",
        ),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_circle_points_are_drawn_in_a_mixed_order_so_no_class_hides_another(tmp_path):
    """Ten classes on one arc: drawn class by class, the last class covered the other nine; drawn as one scatter in
    a random order, the points painted last come from every class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.repeat(np.arange(10), 200)
    theta = np.random.default_rng(1).uniform(0, 1, labels.size)  # every class on the same arc
    z = np.stack([np.cos(theta), np.sin(theta)], 1)
    fig, (ax_circle, ax_density) = plt.subplots(1, 2)
    viz._draw_circle(ax_circle, ax_density, z, labels, kappa=25.0, legend=False)
    (points,) = ax_circle.collections  # one scatter, not one per class
    colours = points.get_facecolors()
    assert len(colours) == labels.size
    tab10 = plt.get_cmap("tab10")
    last = {int(np.argmin(np.abs(tab10(np.arange(10))[:, :3] - c[:3]).sum(1))) for c in colours[-100:]}
    assert last == set(range(10))  # the 100 points on top belong to all ten classes
    plt.close(fig)
    path = viz.plot_circles(
        [{"z": z, "labels": labels, "title": "a"}, {"z": z[::-1], "labels": labels[::-1], "title": "b"}],
        tmp_path / "circles.png",
        class_names=[f"class {c}" for c in range(10)],
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input():
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        viz.angles_of(np.ones((4, 3)))
    with pytest.raises(ValueError, match="all-zero"):
        viz.angles_of(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="kappa"):
        viz.vmf_density([0.0], [0.0], kappa=0)
    with pytest.raises(ValueError, match="lacks"):
        viz.plot_align_uniform([{"alignment": 1.0}], "unused.png")
    with pytest.raises(ValueError, match="one entry per point"):
        viz.plot_circle(np.ones((3, 2)), "unused.png", labels=[0, 1])
