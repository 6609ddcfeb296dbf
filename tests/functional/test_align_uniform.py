"""Alignment, uniformity and their combinations against the paper's reference code (tests/references/wang_isola.py)
and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import near, sphere
from references.wang_isola import ref_align, ref_moco_uniform, ref_uniform
from scipy.special import i0

from contrasphere import functional as CF


def grads(fn, *tensors):
    value = fn(*tensors)
    return value.detach(), torch.autograd.grad(value, tensors)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_alignment_matches_reference(dtype, tol, alpha):
    z_a = sphere(37, 16, seed=1, dtype=dtype, grad=True)
    z_b = near(z_a, 0.4).to(dtype).requires_grad_()
    ours, ours_g = grads(lambda a, b: CF.alignment(a, b, alpha=alpha), z_a, z_b)
    ref, ref_g = grads(lambda a, b: ref_align(a, b, alpha=alpha), z_a, z_b)
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    for g, r in zip(ours_g, ref_g):
        torch.testing.assert_close(g, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 5e-5)])
@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("n,d", [(2, 3), (33, 8), (64, 128)])
def test_uniformity_matches_reference(dtype, tol, t, n, d):
    z = sphere(n, d, seed=n + d, dtype=dtype, grad=True)
    ours, ours_g = grads(lambda x: CF.uniformity(x, t=t), z)
    ref, ref_g = grads(lambda x: ref_uniform(x, t=t), z)
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ours_g[0], ref_g[0], rtol=tol, atol=tol)


def test_uniformity_matches_reference_off_the_sphere():
    # the paper's formula on raw vectors: ours uses ||x||^2 + ||y||^2 - 2<x, y>, which must agree
    z = torch.randn(20, 5, dtype=torch.float64, requires_grad=True) * 0.3
    torch.testing.assert_close(CF.uniformity(z), ref_uniform(z), rtol=1e-10, atol=1e-10)


def test_hand_computed_cases():
    # two antipodal points on the circle: ||x - y||^2 = 4, so uniformity = -4t and alignment = 4 (alpha=2)
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert CF.uniformity(x, t=2).item() == pytest.approx(-8.0, abs=1e-12)
    assert CF.alignment(x[:1], x[1:]).item() == pytest.approx(4.0, abs=1e-12)
    # three points 120 degrees apart: every squared distance is 3
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    tri = torch.stack([angles.cos(), angles.sin()], dim=1)
    assert CF.uniformity(tri, t=1.5).item() == pytest.approx(-4.5, abs=1e-12)
    # identical embeddings: uniformity is log(1) = 0 and alignment is 0
    same = torch.ones(5, 3, dtype=torch.float64) / math.sqrt(3)
    assert CF.uniformity(same).item() == pytest.approx(0.0, abs=1e-12)
    assert CF.alignment(same, same).item() == 0.0
    # alignment with alpha=1 of orthogonal unit pairs: sqrt(2)
    assert CF.alignment(torch.eye(3), torch.eye(3).roll(1, 0), alpha=1).item() == pytest.approx(math.sqrt(2))


def test_uniformity_where_the_reference_underflows():
    # far-apart points and large t: exp(-t d) underflows to 0 and the reference returns -inf
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    t = 60.0
    assert ref_uniform(x, t=t).item() == -math.inf
    # pairs: 4 at distance^2 2 and 2 at distance^2 4 -> log((4 e^{-2t} + 2 e^{-4t}) / 6)
    expected = -2 * t + math.log((4 + 2 * math.exp(-2 * t)) / 6)
    ours = CF.uniformity(x.requires_grad_(), t=t)
    assert ours.item() == pytest.approx(expected, rel=1e-6)
    (g,) = torch.autograd.grad(ours, x)
    assert torch.isfinite(g).all()


def test_invariant_to_rotation_and_permutation():
    z_a = sphere(40, 12, seed=3)
    z_b = near(z_a, 0.3)
    rot, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    perm = torch.randperm(40)
    for fn in (lambda a, b: CF.align_uniform(a, b), lambda a, b: CF.alignment(a, b, alpha=1.5)):
        base = fn(z_a, z_b)
        torch.testing.assert_close(fn(z_a @ rot, z_b @ rot), base, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fn(z_a[perm], z_b[perm]), base, rtol=1e-10, atol=1e-10)


def test_align_uniform_is_the_weighted_sum():
    z_a = sphere(30, 8, seed=4)
    z_b = near(z_a, 0.5)
    got = CF.align_uniform(z_a, z_b, align_weight=3.0, uniform_weight=0.5, alpha=1.0, t=3.0)
    want = 3.0 * ref_align(z_a, z_b, alpha=1) + 0.5 * (ref_uniform(z_a, t=3) + ref_uniform(z_b, t=3)) / 2
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("intra_batch", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 5e-5)])
def test_uniformity_with_queue_matches_moco_reference(intra_batch, dtype, tol):
    q = sphere(16, 32, seed=5, dtype=dtype, grad=True)
    queue = sphere(70, 32, seed=6, dtype=dtype, grad=True)  # grad on the queue must be ignored
    ours = CF.uniformity_with_queue(q, queue, t=3.0, intra_batch=intra_batch)
    ref = ref_moco_uniform(q, queue.T, 3.0, intra_batch)
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    g_ours, q_ours = torch.autograd.grad(ours, (q, queue), allow_unused=True)
    (g_ref,) = torch.autograd.grad(ref, (q,))
    torch.testing.assert_close(g_ours, g_ref, rtol=tol, atol=tol)
    assert q_ours is None  # the queue is detached, as in the reference


def test_offsets_and_the_sphere_optimum():
    # closed forms: on the circle E exp(2t cos) = I0(2t); on S^2, E exp(k cos) = sinh(k) / k
    for t in (0.5, 2.0, 3.0):
        assert CF.uniformity_optimum(2, t) == pytest.approx(-2 * t + math.log(i0(2 * t)), rel=1e-12)
        assert CF.uniformity_optimum(3, t) == pytest.approx(-2 * t + math.log(math.sinh(2 * t) / (2 * t)), rel=1e-12)
    assert CF.uniformity_optimum(100_000, 2.0) == pytest.approx(-4.0, abs=1e-4)  # -> -2t in high dimension
    z = sphere(50, 4, seed=7)
    plain = CF.uniformity(z, t=2)
    assert CF.uniformity(z, t=2, offset="2t").item() == pytest.approx(plain.item() + 4.0)
    assert CF.uniformity(z, t=2, offset="sphere").item() == pytest.approx(plain.item() - CF.uniformity_optimum(4, 2))
    # a large uniform sample on S^2 reaches the optimum: the 'sphere' form is about 0
    big = sphere(4000, 3, seed=8)
    assert abs(CF.uniformity(big, t=2, offset="sphere").item()) < 0.02
    # a finite batch can dip below the 2t offset only by the bound 2t / (N - 1): test the worst case, a simplex
    simplex = F.normalize(torch.eye(5, dtype=torch.float64) - 0.2, dim=1)
    assert CF.uniformity(simplex, t=2, offset="2t").item() == pytest.approx(-4.0 / 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_reduced_in_float32(dtype):
    z_a = sphere(256, 64, seed=9, dtype=torch.float32)
    z_b = near(z_a, 0.2).float()
    a16, b16 = z_a.to(dtype).requires_grad_(), z_b.to(dtype).requires_grad_()
    for t in (2.0, 20.0):  # t=20: exp(-t d) is far below float16's range
        value = CF.align_uniform(a16, b16, t=t)
        assert value.dtype == torch.float32 and torch.isfinite(value)
        want = CF.align_uniform(a16.detach().float(), b16.detach().float(), t=t)
        torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-5)
        g = torch.autograd.grad(value, a16)[0]
        assert g.dtype == dtype and torch.isfinite(g.float()).all()


def test_bad_input_is_explained():
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="at least 2"):
        CF.uniformity(z[:1])
    with pytest.raises(ValueError, match="same shape"):
        CF.alignment(z, z[:3])
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        CF.uniformity(z[0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        CF.alignment(z, z.clone().index_fill_(0, torch.tensor([1]), math.nan))
    with pytest.raises(ValueError, match="t must be"):
        CF.uniformity(z, t=0)
    with pytest.raises(ValueError, match="alpha must be"):
        CF.alignment(z, z, alpha=-1)
    with pytest.raises(ValueError, match="both 0"):
        CF.align_uniform(z, z, align_weight=0, uniform_weight=0)
    with pytest.raises(ValueError, match="offset must be"):
        CF.uniformity(z, offset="zero")
    with pytest.raises(TypeError, match="floating-point"):
        CF.uniformity(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="same embedding dimension"):
        CF.uniformity_with_queue(z, sphere(5, 4))
