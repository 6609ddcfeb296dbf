"""Metrics: chunked and tiled computation against the dense losses and direct formulas; the un-normalised policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import near, sphere

from contrasphere import functional as CF
from contrasphere import metrics
from contrasphere.errors import InputError


@pytest.mark.parametrize("block_size", [1, 7, 64, 4096])
def test_uniformity_tiles_match_the_dense_loss(block_size):
    z = sphere(150, 10, seed=31)  # 150 is not a multiple of 7 or 64: uneven last tiles
    dense = CF.uniformity(z, t=2.0).item()
    assert metrics.uniformity(z, block_size=block_size) == pytest.approx(dense, abs=1e-10)
    assert metrics.uniformity(z.float(), t=5.0, block_size=block_size) == pytest.approx(
        CF.uniformity(z, t=5.0).item(), abs=1e-5
    )


def test_uniformity_subset_and_numpy_input():
    z = sphere(500, 6, seed=32)
    full = metrics.uniformity(z.numpy())
    assert full == pytest.approx(CF.uniformity(z).item(), abs=1e-10)
    sub = metrics.uniformity(z, max_points=200, seed=3)
    assert sub == metrics.uniformity(z, max_points=200, seed=3)  # seeded
    assert sub != full and abs(sub - full) < 0.1  # a nearby estimate from 200 points
    assert metrics.uniformity(z, max_points=10_000) == full  # larger than N: exact


def test_alignment_rows_pairs_and_chunks():
    z_a = sphere(103, 8, seed=33)
    z_b = near(z_a, 0.3)
    dense = CF.alignment(z_a, z_b, alpha=1.5).item()
    assert metrics.alignment(z_a, z_b, alpha=1.5, chunk_size=10) == pytest.approx(dense, abs=1e-12)
    both = torch.cat([z_a, z_b])
    pairs = torch.stack([torch.arange(103), torch.arange(103, 206)], dim=1)
    assert metrics.alignment(both, pairs=pairs, alpha=1.5, chunk_size=9) == pytest.approx(dense, abs=1e-12)
    assert metrics.alignment(both, pairs=pairs.numpy(), alpha=1.5) == pytest.approx(dense, abs=1e-12)


def test_unnormalised_input_is_projected_or_refused():
    z_a = sphere(50, 5, seed=34)
    z_b = near(z_a, 0.4)
    scales = torch.rand(50, 1, dtype=torch.float64) * 90 + 10  # norms 10..100, as raw features have
    on_sphere = (metrics.alignment(z_a, z_b), metrics.uniformity(z_a), metrics.effective_rank(z_a))
    raw = (
        metrics.alignment(z_a * scales, z_b * 3),
        metrics.uniformity(z_a * scales),
        metrics.effective_rank(z_a * scales),
    )
    assert raw == pytest.approx(on_sphere, abs=1e-10)  # measured after projection: never in the hundreds
    for fn in (
        lambda: metrics.uniformity(z_a * scales, normalize=False),
        lambda: metrics.alignment(z_a * scales, z_b, normalize=False),
        lambda: metrics.effective_rank(z_a * 2, normalize=False),
    ):
        with pytest.raises(ValueError, match="not on the unit sphere.*normalize=True"):
            fn()
    assert metrics.uniformity(z_a, normalize=False) == pytest.approx(on_sphere[1])
    with pytest.raises(ValueError, match="all-zero row"):
        metrics.uniformity(torch.cat([z_a, torch.zeros(1, 5, dtype=torch.float64)]))


def test_effective_rank_against_svd_and_closed_forms():
    z = F.normalize(torch.randn(300, 20, dtype=torch.float64) * torch.linspace(0.1, 3, 20), dim=1)
    s = torch.linalg.svdvals(z)
    p = s / s.sum()
    direct = math.exp(-(p * p.log()).sum().item())
    assert metrics.effective_rank(z, chunk_size=37) == pytest.approx(direct, rel=1e-9)
    assert metrics.effective_rank(torch.eye(12)) == pytest.approx(12.0)  # equal singular values: full rank
    line = torch.tensor([[1.0, 0.0, 0.0]]).repeat(10, 1) * torch.tensor([[1.0], [-1.0]]).repeat(5, 1)
    assert metrics.effective_rank(line) == pytest.approx(1.0)  # every point on one line


def test_modality_gap_and_norms():
    z_a = sphere(80, 6, seed=35)
    z_b = sphere(60, 6, seed=36)
    direct = (z_a.mean(0) - z_b.mean(0)).norm().item()
    assert metrics.modality_gap(z_a, z_b, chunk_size=11) == pytest.approx(direct, abs=1e-12)
    shifted = F.normalize(z_b + torch.tensor([3.0, 0, 0, 0, 0, 0], dtype=torch.float64), dim=1)
    assert metrics.modality_gap(z_a, shifted) > direct + 0.5
    raw = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert metrics.norm_stats(raw, chunk_size=1) == pytest.approx({"mean": 3.0, "std": 2.0, "min": 1.0, "max": 5.0})
    with pytest.raises(ValueError, match="same embedding dimension"):
        metrics.modality_gap(z_a, sphere(5, 3))


def test_metrics_are_finite_in_half_precision():
    z_a = sphere(400, 32, seed=37, dtype=torch.float32)
    z_b = near(z_a, 0.2)
    views = torch.stack([z_a, z_b, near(z_a, 0.2, seed=2)])
    ref = metrics.report(z_a, z_b, views=views)
    for dtype in (torch.float16, torch.bfloat16):
        got = metrics.report(z_a.to(dtype), z_b.to(dtype), views=views.to(dtype))
        for key in ("alignment", "uniformity", "effective_rank", "modality_gap", "anisotropy"):
            assert math.isfinite(got[key]) and got[key] == pytest.approx(ref[key], rel=2e-2, abs=2e-2)
        for key in ("wasserstein_uniformity", "alpha_req", "lidar"):
            assert math.isfinite(got[key]) and got[key] == pytest.approx(ref[key], rel=5e-2, abs=5e-2)
        assert got["modality_spread"] == pytest.approx(ref["modality_spread"], abs=2e-2)


def test_report_and_bad_input():
    z = sphere(40, 4, seed=38)
    out = metrics.report(z, pairs=np.array([[0, 1], [2, 3]]))
    assert out["n_pairs"] == 2 and out["n"] == 40 and out["dim"] == 4 and "modality_gap" not in out
    assert out["uniformity"] >= out["uniformity_optimum"] - 0.2
    with pytest.raises(ValueError, match="exactly one of"):
        metrics.alignment(z)
    with pytest.raises(ValueError, match="pairs index rows"):
        metrics.alignment(z, pairs=torch.tensor([[0, 40]]))
    with pytest.raises(ValueError, match=r"shape \(P, 2\)"):
        metrics.alignment(z, pairs=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.uniformity(z[:1])
    with pytest.raises(TypeError, match="numpy.ndarray"):
        metrics.uniformity([[1.0, 0.0]])
    with pytest.raises(ValueError, match="NaN or Inf"):
        metrics.uniformity(torch.tensor([[1.0, 0.0], [math.inf, 0.0]]))
    with pytest.raises(ValueError, match="max_points"):
        metrics.uniformity(z, max_points=1)
    with pytest.raises(ValueError, match="chunk_size"):
        metrics.effective_rank(z, chunk_size=0)


def test_large_inputs_are_checked_and_read_in_chunks(monkeypatch):
    """The NaN/Inf check and every pass over the rows hold one chunk at a time, never a copy or a mask of the whole
    input (the NaN/Inf check of ``contrasphere metrics`` on a 4M x 128 file made two whole-size masks: 6.1 GB peak).
    """
    from contrasphere import _validate as check

    n, d, rows = 4000, 16, 100
    z = sphere(n, d, seed=41).half()  # half precision: promoting the whole input to float32 would show too
    positives = near(z.double(), 0.2).half()

    def measure():
        return {
            "alignment": metrics.alignment(z, positives, chunk_size=rows),
            "uniformity": metrics.uniformity(z, block_size=rows),
            "effective_rank": metrics.effective_rank(z, chunk_size=rows),
            "modality_gap": metrics.modality_gap(z, positives, chunk_size=rows),
            "norms": metrics.norm_stats(z, chunk_size=rows)["mean"],
            "anisotropy": metrics.anisotropy(z, chunk_size=rows),
            "wasserstein_uniformity": metrics.wasserstein_uniformity(z, chunk_size=rows),
            "alpha_req": metrics.alpha_req(z, chunk_size=rows),
            "lidar": metrics.lidar(torch.stack([z, positives]), chunk_size=rows),
            **metrics.modality_spread(z, positives, chunk_size=rows),
        }

    want = measure()
    monkeypatch.setattr(check, "FINITE_CHUNK", rows * d)
    monkeypatch.setattr(metrics._common, "_CHUNK", rows)
    sizes = []

    def spy(original):
        def recorded(*args, **kwargs):
            out = original(*args, **kwargs)
            sizes.append(out.numel())
            return out

        return recorded

    monkeypatch.setattr(torch, "isfinite", spy(torch.isfinite))
    for method in ("float", "double", "to"):
        monkeypatch.setattr(torch.Tensor, method, spy(getattr(torch.Tensor, method)))
    got = measure()
    assert got == pytest.approx(want, rel=1e-12)
    assert sizes and max(sizes) <= rows * rows < n * d  # a chunk of rows (or one uniformity tile), not the input

    # a NaN in the last chunk: found, and reported as the whole-tensor check reported it
    bad = z.clone()
    bad[-1, -1] = math.nan
    bad[-1, 0] = math.inf
    with pytest.raises(ValueError) as chunked:
        metrics.report(bad)
    monkeypatch.setattr(check, "FINITE_CHUNK", 10**9)
    with pytest.raises(ValueError) as whole:
        metrics.report(bad)
    assert str(chunked.value) == str(whole.value)
    assert "z contains 2 NaN or Inf value(s) out of 64000" in str(chunked.value)


# --- the geometry beyond alignment and uniformity ------------------------------------------------------------------
def rotation(d: int, seed: int = 0) -> torch.Tensor:
    """A random ``d x d`` orthogonal matrix."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]


def exact_spectrum(spectrum, *, seed: int = 0) -> torch.Tensor:
    """Unit vectors with mean exactly 0 and covariance (divided by N) exactly ``Q diag(spectrum / sum) Q^T``.

    Row ``i`` is ``sum_k h_ik sqrt(lambda_k) q_k`` with ``h`` the columns 2..D+1 of a Sylvester Hadamard matrix:
    entries +-1 (so every row has norm ``sqrt(sum lambda) = 1``), columns orthogonal (covariance) and summing to 0
    (mean), ``Q`` a random rotation.
    """
    lam = torch.as_tensor(spectrum, dtype=torch.float64)
    lam = lam / lam.sum()
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] <= lam.numel():
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h[:, 1 : lam.numel() + 1] * lam.sqrt()) @ rotation(lam.numel(), seed).T


def on_subspace(n: int, k: int, d: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` points uniform on the unit sphere of a random ``k``-dimensional subspace of ``R^d``."""
    flat = torch.cat([sphere(n, k, seed=seed), torch.zeros(n, d - k, dtype=torch.float64)], 1)
    return flat @ rotation(d, seed).T


def test_anisotropy_matches_a_direct_loop():
    z = sphere(37, 6, seed=51) * (torch.rand(37, 1, dtype=torch.float64) * 50 + 1)  # raw norms: projected first
    u = F.normalize(z, dim=1)
    direct = sum(float(u[i] @ u[j]) for i in range(37) for j in range(37) if i != j) / (37 * 36)
    assert metrics.anisotropy(z, chunk_size=5) == pytest.approx(direct, abs=1e-14)
    assert metrics.anisotropy(z.numpy()) == pytest.approx(direct, abs=1e-14)
    assert metrics.anisotropy(z.float()) == pytest.approx(direct, abs=1e-6)
    keep = torch.randperm(37, generator=torch.Generator().manual_seed(4))[:20]  # the subset uniformity draws too
    sub = metrics.anisotropy(z, max_points=20, seed=4)
    assert sub == pytest.approx(metrics.anisotropy(z[keep]), abs=1e-14) and sub != pytest.approx(direct)
    assert metrics.anisotropy(z, max_points=1000) == metrics.anisotropy(z)


def test_anisotropy_limits():
    direction = sphere(1, 9, seed=52)
    assert metrics.anisotropy(direction * torch.rand(30, 1, dtype=torch.float64) + 0.0) == pytest.approx(1.0)
    assert metrics.anisotropy(torch.cat([direction, -direction])) == pytest.approx(-1.0)  # the least: -1/(N-1)
    assert metrics.anisotropy(torch.eye(5)) == pytest.approx(0.0, abs=1e-15)
    # uniform points on S^{D-1}: mean 0, standard deviation 1 / sqrt(D * #pairs) (the pair cosines are uncorrelated)
    n, d = 40, 8
    sd = 1 / math.sqrt(d * n * (n - 1) / 2)
    draws = torch.tensor([metrics.anisotropy(sphere(n, d, seed=1000 + s)) for s in range(400)])
    assert abs(float(draws.mean())) < 4 * sd / math.sqrt(400)
    assert float(draws.std()) == pytest.approx(sd, rel=0.15)
    # (a draw is (chi^2_D / D - 1) / (N - 1) nearly, skewed for small D; nearly normal for large D)
    for seed in range(5):
        n, d = 500, 128
        assert abs(metrics.anisotropy(sphere(n, d, seed=seed))) < 4 / math.sqrt(d * n * (n - 1) / 2)


def test_wasserstein_uniformity_matches_scipy():
    from references.wasserstein_uniformity import w2_closed_form, w2_to_isotropic

    g = torch.Generator().manual_seed(53)
    z = torch.randn(60, 7, generator=g, dtype=torch.float64) * torch.linspace(0.2, 2, 7) + 0.5  # a mean too
    u = F.normalize(z, dim=1).numpy()
    want = w2_to_isotropic(u)
    assert want == pytest.approx(w2_closed_form(u), abs=1e-10)  # the paper's simplification of the general form
    assert metrics.wasserstein_uniformity(z, chunk_size=7) == pytest.approx(-want, abs=1e-10)  # minus W2
    assert metrics.wasserstein_uniformity(z.numpy()) == pytest.approx(-want, abs=1e-10)
    assert metrics.wasserstein_uniformity(z.float()) == pytest.approx(-want, abs=1e-5)


def test_wasserstein_uniformity_closed_forms():
    d = 16
    # the fitted Gaussian is exactly N(0, I/D): 0, the best
    assert metrics.wasserstein_uniformity(exact_spectrum(torch.ones(d))) == pytest.approx(0.0, abs=1e-7)
    assert metrics.wasserstein_uniformity(torch.cat([torch.eye(d), -torch.eye(d)])) == pytest.approx(0.0, abs=1e-7)
    # one point: mu is a unit vector, Sigma = 0, so W2^2 = 1 + 1: the least, -sqrt(2)
    assert metrics.wasserstein_uniformity(sphere(1, d).repeat(10, 1)) == pytest.approx(-math.sqrt(2), abs=1e-12)
    # isotropic on a k-dimensional subspace: Sigma = I_k / k, W2^2 = 2 - 2 sqrt(k / D)
    for k in (1, 2, 5, 8, 15):
        z = exact_spectrum(torch.cat([torch.ones(k), torch.zeros(d - k)]), seed=k)
        assert metrics.wasserstein_uniformity(z) == pytest.approx(-math.sqrt(2 - 2 * math.sqrt(k / d)), abs=1e-7)
    # any spectrum: W2^2 = 2 - 2 / sqrt(D) sum_k sqrt(lambda_k)
    lam = torch.arange(1, d + 1, dtype=torch.float64) ** -1.5
    want = -math.sqrt(2 - 2 / math.sqrt(d) * float((lam / lam.sum()).sqrt().sum()))
    assert metrics.wasserstein_uniformity(exact_spectrum(lam, seed=3)) == pytest.approx(want, abs=1e-10)


def test_wasserstein_uniformity_sees_dimensional_collapse():
    """Fang et al.'s point: as the embeddings collapse onto fewer dimensions, -W2 falls steadily while Wang &
    Isola's uniformity barely moves from its optimum."""
    d, n = 64, 2000
    ks = (64, 48, 32, 16)
    w2 = [metrics.wasserstein_uniformity(on_subspace(n, k, d, seed=k)) for k in ks]
    lu = [metrics.uniformity(on_subspace(n, k, d, seed=k)) for k in ks]
    assert all(a > b for a, b in zip(w2, w2[1:]))  # monotone: every step of collapse lowers -W2
    for k, value in zip(ks[1:], w2[1:]):
        assert value == pytest.approx(-math.sqrt(2 - 2 * math.sqrt(k / d)), abs=0.03)
    optimum = CF.uniformity_optimum(d, 2.0)
    w2_moved = (w2[0] - w2[-1]) / math.sqrt(2)  # share of its range [-sqrt 2, 0]
    lu_moved = (lu[-1] - lu[0]) / -optimum  # share of its range [optimum, 0]
    assert w2_moved > 0.6 and lu_moved < 0.1 and w2_moved > 6 * lu_moved


def test_alpha_req_matches_a_direct_fit():
    from references.alpha_req import alpha_reference

    g = torch.Generator().manual_seed(54)
    z = torch.randn(200, 12, generator=g, dtype=torch.float64) * torch.arange(1, 13) ** -0.8 + 0.1
    u = F.normalize(z, dim=1).numpy()
    assert metrics.alpha_req(z, chunk_size=17) == pytest.approx(alpha_reference(u), abs=1e-10)
    assert metrics.alpha_req(z.numpy(), ranks=(3, 9)) == pytest.approx(alpha_reference(u, 3, 9), abs=1e-10)
    assert metrics.alpha_req(z.float()) == pytest.approx(alpha_reference(u), abs=1e-4)
    # fewer rows than dimensions: the D - N + 1 zero eigenvalues are left out of the default fit
    few = z[:6]
    assert metrics.alpha_req(few) == pytest.approx(alpha_reference(F.normalize(few, dim=1), 1, 5), abs=1e-8)


def test_alpha_req_recovers_a_known_spectrum():
    d = 32
    ranks = torch.arange(1, d + 1, dtype=torch.float64)
    for a in (0.5, 1.0, 2.0, 3.0):  # exactly lambda_i ~ i^-a: exactly a
        assert metrics.alpha_req(exact_spectrum(ranks**-a, seed=int(a))) == pytest.approx(a, abs=1e-9)
    assert metrics.alpha_req(exact_spectrum(torch.ones(d))) == pytest.approx(0.0, abs=1e-9)  # flat
    # sampled: random +-1 signs on a random orthogonal basis (every row a unit vector), 100,000 samples
    g = torch.Generator().manual_seed(55)
    for a in (0.5, 1.0, 2.0):
        lam = ranks**-a / (ranks**-a).sum()
        signs = torch.randint(0, 2, (100_000, d), generator=g).double() * 2 - 1
        assert metrics.alpha_req((signs * lam.sqrt()) @ rotation(d, 7).T) == pytest.approx(a, abs=0.02)
    isotropic = torch.randn(100_000, d, generator=g, dtype=torch.float64)  # uniform on the sphere once projected
    assert abs(metrics.alpha_req(isotropic)) < 0.05
    # a known range: a spectrum that bends at rank 8 gives each part's slope
    bent = torch.cat([ranks[:8] ** -0.5, 8**-0.5 * (ranks[8:] / 8) ** -2.0])
    assert metrics.alpha_req(exact_spectrum(bent), ranks=(1, 8)) == pytest.approx(0.5, abs=1e-9)
    assert metrics.alpha_req(exact_spectrum(bent), ranks=(8, 32)) == pytest.approx(2.0, abs=1e-9)


def test_lidar_matches_a_direct_computation():
    from references.lidar import lidar_generalized, lidar_reference

    g = torch.Generator().manual_seed(56)
    means = torch.randn(25, 6, generator=g, dtype=torch.float64) * torch.linspace(0.3, 1.5, 6)
    views = means + 0.4 * torch.randn(3, 25, 6, generator=g, dtype=torch.float64)  # (V, N, D)
    u = F.normalize(views, dim=-1).numpy()
    want = lidar_reference(u)
    assert want == pytest.approx(lidar_generalized(u), rel=1e-9)
    assert metrics.lidar(views, chunk_size=4) == pytest.approx(want, rel=1e-10)
    assert metrics.lidar(list(views.numpy())) == pytest.approx(want, rel=1e-10)  # a list of (N, D) views
    assert metrics.lidar(views.float()) == pytest.approx(want, rel=1e-4)
    other = dict(delta=1e-2, eps=1e-3)
    assert metrics.lidar(views, **other) == pytest.approx(lidar_reference(u, **other), rel=1e-10)
    assert metrics.lidar(views, eps=0.0) == pytest.approx(lidar_reference(u, eps=0.0), rel=1e-10)
    # already on the sphere: normalize=False measures the same
    assert metrics.lidar(torch.from_numpy(u), normalize=False) == pytest.approx(want, rel=1e-10)


def lidar_case(d: int, k: int, *, n: int = 2000, v: int = 4, noise: float = 0.05, seed: int = 0) -> float:
    """LiDAR of views that are their sample's mean plus isotropic noise, the means Gaussian in a ``k``-dim subspace."""
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([torch.randn(n, k, generator=g, dtype=torch.float64), torch.zeros(n, d - k)], 1)
    means = means @ rotation(d, seed).T
    return metrics.lidar(means + noise * torch.randn(v, n, d, generator=g, dtype=torch.float64))


def test_lidar_limits():
    # sample means isotropic in D dimensions, views = mean + isotropic noise: every direction discriminates, ~D
    for d in (8, 16):
        assert 0.98 * d < lidar_case(d, d) <= d
    # means confined to a k-dimensional subspace: ~k (the rest sees only the noise of each sample's mean)
    for d, k in ((16, 1), (16, 4), (32, 8)):
        assert k <= lidar_case(d, k) < k + 0.5
    # every view of a sample identical to the others: Sigma_w = delta I, LiDAR is the effective rank of Sigma_b
    z = exact_spectrum(torch.ones(8))  # 16 samples, Sigma_b isotropic
    assert metrics.lidar(torch.stack([z, z, z])) == pytest.approx(8.0, abs=1e-6)
    z = exact_spectrum(torch.tensor([1.0, 1, 1, 0, 0, 0, 0, 0]))
    assert metrics.lidar(torch.stack([z, z])) == pytest.approx(3.0, abs=1e-3)


def test_modality_spread_matches_direct_loops():
    a = sphere(23, 5, seed=57) * 3
    b = near(F.normalize(a, dim=1), 0.8, seed=58) * 0.5
    ua, ub = F.normalize(a, dim=1), F.normalize(b, dim=1)
    n = 23
    others = [(i, j) for i in range(n) for j in range(n) if i != j]
    want = {
        "matching": sum(float(ua[i] @ ub[i]) for i in range(n)) / n,
        "non_matching": sum(float(ua[i] @ ub[j]) for i, j in others) / len(others),
        "intra_a": sum(float(ua[i] @ ua[j]) for i, j in others) / len(others),
        "intra_b": sum(float(ub[i] @ ub[j]) for i, j in others) / len(others),
        "modality_gap": float((ua.mean(0) - ub.mean(0)).norm()),
    }
    got = metrics.modality_spread(a, b, chunk_size=4)
    assert got == pytest.approx(want, abs=1e-14)
    assert got["intra_a"] == pytest.approx(metrics.anisotropy(a), abs=1e-14)
    assert got["modality_gap"] == pytest.approx(metrics.modality_gap(a, b), abs=1e-14)
    assert metrics.modality_spread(a.numpy(), b.float()) == pytest.approx(want, abs=1e-6)
    # limits: one modality is the other (no gap), or its antipode
    same = metrics.modality_spread(a, a)
    assert same["matching"] == pytest.approx(1.0) and same["modality_gap"] == 0.0
    assert same["non_matching"] == pytest.approx(same["intra_a"]) == same["intra_b"]
    flipped = metrics.modality_spread(a, -a)
    assert flipped["matching"] == pytest.approx(-1.0) and flipped["non_matching"] == pytest.approx(-same["intra_a"])


def test_report_includes_the_geometry():
    z = sphere(120, 6, seed=59)
    views = torch.stack([near(z, 0.2, seed=s) for s in range(3)])
    out = metrics.report(z, near(z, 0.3), views=views)
    assert out["anisotropy"] == metrics.anisotropy(z)
    assert out["wasserstein_uniformity"] == metrics.wasserstein_uniformity(z)
    assert out["alpha_req"] == metrics.alpha_req(z) and out["alpha_req_ranks"] == [1, 6]
    assert out["lidar"] == metrics.lidar(views) and (out["lidar_views"], out["lidar_samples"]) == (3, 120)
    assert out["modality_spread"] == metrics.modality_spread(z, near(z, 0.3))
    assert metrics.report(z, views=list(views))["lidar_views"] == 3
    plain = metrics.report(z)
    assert "lidar" not in plain and "modality_spread" not in plain and "alpha_req" in plain
    collapsed = metrics.report(sphere(1, 6).repeat(5, 1))  # one point: no spectrum to fit, reported as None
    assert collapsed["alpha_req"] is None and collapsed["alpha_req_ranks"] is None
    assert collapsed["anisotropy"] == pytest.approx(1.0) and collapsed["effective_rank"] == pytest.approx(1.0)


def test_geometry_bad_input():
    z = sphere(10, 4, seed=60)
    nan = z.clone()
    nan[3, 1] = math.nan
    views = torch.stack([z, near(z, 0.1)])
    for fn in (metrics.anisotropy, metrics.wasserstein_uniformity, metrics.alpha_req):
        with pytest.raises(InputError, match="NaN or Inf"):
            fn(nan)
        with pytest.raises(InputError, match=r"shape \(B, D\)"):
            fn(views)
        with pytest.raises(InputError, match="at least"):
            fn(z[:1])
        with pytest.raises(InputError, match="not on the unit sphere"):
            fn(z * 2, normalize=False)
    with pytest.raises(InputError, match="max_points"):
        metrics.anisotropy(z, max_points=1)
    with pytest.raises(InputError, match="at least 3"):
        metrics.alpha_req(z[:2])
    with pytest.raises(InputError, match="has only 0 .* collapsed"):
        metrics.alpha_req(sphere(1, 4).repeat(6, 1) * torch.linspace(1, 2, 6)[:, None])  # one point once projected
    with pytest.raises(InputError, match="has only 1 .* collapsed"):
        metrics.alpha_req(sphere(1, 4).repeat(6, 1) * torch.linspace(-1, 1, 6)[:, None])  # one line: two points
    with pytest.raises(InputError, match="ranks 1..3 cannot"):
        metrics.alpha_req(z[:3], ranks=(1, 3))  # 3 rows: rank 2 once centred
    with pytest.raises(InputError, match="ranks\\[1\\] must be an integer >= 3"):
        metrics.alpha_req(z, ranks=(2, 2))
    with pytest.raises(InputError, match="dimension 4"):
        metrics.alpha_req(z, ranks=(1, 5))
    with pytest.raises(InputError, match="pair"):
        metrics.alpha_req(z, ranks=3)
    with pytest.raises(InputError, match=r"shape \(V, N, D\)"):
        metrics.lidar(z)
    with pytest.raises(InputError, match="at least 2: the spread"):
        metrics.lidar(views[:1])
    with pytest.raises(InputError, match="at least 2"):
        metrics.lidar(views[:, :1])
    with pytest.raises(InputError, match="same shape"):
        metrics.lidar([z, z[:9]])
    with pytest.raises(InputError, match=r"views\[1\] contains 1 NaN"):
        metrics.lidar([z, nan])
    with pytest.raises(InputError, match="delta"):
        metrics.lidar(views, delta=0.0)
    with pytest.raises(InputError, match="eps"):
        metrics.lidar(views, eps=-1e-8)
    with pytest.raises(InputError, match="same shape"):
        metrics.modality_spread(z, z[:5])
    with pytest.raises(InputError, match="at least 2"):
        metrics.modality_spread(z[:1], z[:1])
    with pytest.raises(InputError, match="NaN or Inf"):
        metrics.modality_spread(z, nan)
