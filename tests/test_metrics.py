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
    ref = metrics.report(z_a, z_b)
    for dtype in (torch.float16, torch.bfloat16):
        got = metrics.report(z_a.to(dtype), z_b.to(dtype))
        for key in ("alignment", "uniformity", "effective_rank", "modality_gap"):
            assert math.isfinite(got[key]) and got[key] == pytest.approx(ref[key], rel=2e-2, abs=2e-2)


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
        }

    want = measure()
    monkeypatch.setattr(check, "FINITE_CHUNK", rows * d)
    monkeypatch.setattr(metrics, "_CHUNK", rows)
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
