"""KoLeo, SIGReg, VICReg, MMCR and GOR against their authors' code, loops from their equations and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import grad_pair, near, sphere
from references.gor import global_orthogonal_regularization
from references.koleo import koleo_reference
from references.lejepa import EppsPulley, SIGReg, sigreg_paper_listing, sliced_test_reference
from references.mmcr import mmcr_reference
from references.vicreg import vicreg_reference

import contrasphere
from contrasphere import functional as CF
from contrasphere.functional import regularizers


def _grad(fn, *tensors):
    """``fn(*tensors)`` and its gradients: ``(value, grad_0, grad_1, ...)``."""
    value = fn(*tensors)
    return (value.detach(), *torch.autograd.grad(value, tensors))


def _randn(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()


# --- KoLeo ----------------------------------------------------------------------------------------------------------
def test_koleo_matches_dinov2():
    z = _randn(30, 8, seed=1, scale=3.0)  # not normalised: both normalise
    ours = _grad(CF.koleo, z)
    # DINOv2's nn.PairwiseDistance adds eps=1e-8 to each coordinate of the difference, we do not: ~1e-8 apart
    for got, want in zip(ours, _grad(koleo_reference, z)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def _koleo_loop(z, eps=1e-8):
    """-1/N sum_i log(min_{j != i} ||x_i - x_j|| + eps), x the normalised rows, one pair at a time."""
    x = z / z.norm(dim=1, keepdim=True)
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        nearest = min((x[i] - x[j]).norm() for j in range(n) if j != i)
        total = total - torch.log(nearest + eps)
    return total / n


def test_koleo_matches_the_equation():
    z = _randn(17, 5, seed=2)
    for got, want in zip(_grad(CF.koleo, z), _grad(_koleo_loop, z)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_koleo_searches_in_chunks(monkeypatch):
    z = _randn(30, 6, seed=3)
    whole = _grad(CF.koleo, z)
    monkeypatch.setattr(regularizers, "_NN_PAIRS", 7 * 30)  # 30 rows: blocks of 7, 7, 7, 7, 2 rows
    for got, want in zip(_grad(CF.koleo, z), whole):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_koleo_closed_forms():
    # N points evenly spaced on the circle: every nearest neighbour at 2 sin(pi / N)
    for n in (2, 5, 12):
        angles = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
        z = torch.stack([angles.cos(), angles.sin()], dim=1)
        want = -math.log(2 * math.sin(math.pi / n) + 1e-8)
        assert CF.koleo(z).item() == pytest.approx(want, rel=1e-12)
        assert CF.koleo(5.0 * z).item() == pytest.approx(want, rel=1e-12)  # normalised first
    # two antipodal points: each is the other's neighbour (never itself), at distance 2
    e = torch.eye(3, dtype=torch.float64)[:1]
    assert CF.koleo(torch.cat([e, -e])).item() == pytest.approx(-math.log(2 + 1e-8), rel=1e-12)
    # a duplicated row sits at distance 0 from its copy: -log(eps) for both, and a finite gradient
    z = sphere(6, 4, seed=4)
    z = torch.cat([z, z[:1]]).requires_grad_()
    value = CF.koleo(z)
    (grad,) = torch.autograd.grad(value, z)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert value.item() == pytest.approx(_koleo_loop(z.detach()).item(), rel=1e-12)
    assert value.item() > 2 * -math.log(1e-8) / 7 - 1  # the two copies' terms dominate


# --- SIGReg ---------------------------------------------------------------------------------------------------------
def _trapezoid_grid(t_max, knots):
    t = torch.linspace(0, t_max, knots, dtype=torch.float64)
    dt = t_max / (knots - 1)
    w = torch.full((knots,), 2 * dt, dtype=torch.float64)
    w[[0, -1]] = dt
    return t, w * torch.exp(-t.square() / 2)


def test_sigreg_matches_the_papers_listing():
    """The listing integrates on linspace(-5, 5, 17): t_max=5 with 9 knots on [0, 5], by symmetry."""
    views = _randn(2, 30, 6, seed=19)
    a = CF.sigreg_directions(6, num_directions=256, seed=7)

    def listing(v):  # LeJEPA: mean(SIGReg(emb, global_step) for emb in views), each a statistic per slice
        return torch.stack([sigreg_paper_listing(emb, a.clone()).mean() for emb in v]).mean()

    ours = _grad(lambda v: CF.sigreg(v, t_max=5.0, knots=9, seed=7), views)
    for got, want in zip(ours, _grad(listing, views)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_sigreg_matches_the_authors_minimal_code():
    views = _randn(2, 64, 8, seed=5).detach().float().requires_grad_()
    a = CF.sigreg_directions(8, num_directions=256, seed=3).float()
    ours = _grad(lambda v: CF.sigreg(v, seed=3), views)
    ref = _grad(lambda v: SIGReg()(v, a.clone()), views)  # (V, N, D): per view, mean over views and slices
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_sigreg_matches_the_lejepa_package():
    views = (_randn(3, 40, 6, seed=6).detach() * 1.5 + 0.2).requires_grad_()
    a = CF.sigreg_directions(6, num_directions=100, seed=11)
    ours = _grad(lambda v: CF.sigreg(v, num_directions=100, knots=21, t_max=5.0, seed=11), views)
    test = EppsPulley(t_max=5.0, n_points=21).double()  # float32 buffers cast: ~1e-8 apart
    ref = _grad(lambda v: sliced_test_reference(v, test, a), views)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_sigreg_matches_a_loop_over_the_symmetric_grid():
    """The paper's form: the complex characteristic function on linspace(-t_max, t_max, 2 knots - 1), trapezoid."""
    views = _randn(2, 9, 4, seed=7, scale=0.8)
    knots, t_max, m = 6, 2.5, 5
    a = CF.sigreg_directions(4, num_directions=m, seed=2)

    def loop(views):
        t = torch.linspace(-t_max, t_max, 2 * knots - 1, dtype=torch.float64)
        phi = torch.exp(-t.square() / 2)
        stats = []
        for v in views:
            n = v.shape[0]
            for k in range(m):
                x = v @ a[:, k]
                ecf = torch.exp(1j * t[:, None] * x[None, :]).mean(1)
                stats.append(n * torch.trapezoid((ecf - phi).abs().square() * phi, t))
        return torch.stack(stats).mean()

    ours = _grad(lambda v: CF.sigreg(v, num_directions=m, knots=knots, t_max=t_max, seed=2), views)
    for got, want in zip(ours, _grad(loop, views)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _expected_statistic(directions, t_max, knots, n, mean, std):
    """E[T] for N samples of N(mean, std^2 I): N sum_k w_k |psi - phi|^2 + sum_k w_k (1 - |psi|^2), psi the
    projections' characteristic function exp(i m t - s^2 t^2 / 2), averaged over the directions."""
    t, w = _trapezoid_grid(t_max, knots)
    m = (mean @ directions)[:, None]  # (M, 1)
    psi = torch.exp(1j * m * t - (std * t) ** 2 / 2)
    phi = torch.exp(-t.square() / 2)
    bias = (psi - phi).abs().square() @ w
    variance = (1 - psi.abs().square()) @ w
    return (n * bias + variance).mean().item()


def test_sigreg_expected_value_for_gaussian_and_shifted_samples():
    g = torch.Generator().manual_seed(8)
    d, n, v = 8, 20, 600  # the null statistic does not depend on N: many small batches average it best
    directions = CF.sigreg_directions(d, num_directions=256, seed=0)
    # N(0, I): the statistic does not grow with N; E[T] = sum_k w_k (1 - e^{-t_k^2}) (1.06 at the defaults)
    t, w = _trapezoid_grid(3.0, 17)
    null = (w * (1 - torch.exp(-t.square()))).sum().item()
    assert null == pytest.approx(_expected_statistic(directions, 3.0, 17, n, torch.zeros(d, dtype=torch.float64), 1.0))
    assert null == pytest.approx(math.sqrt(2 * math.pi) - math.sqrt(2 * math.pi / 3), rel=1e-2)  # t_max -> inf
    gaussian = torch.randn(v, n, d, generator=g, dtype=torch.float64)
    assert CF.sigreg(gaussian).item() == pytest.approx(null, rel=0.06)  # within 2% over seeds 8-19
    # shifted and scaled: linear in N, and equal to the expectation from the projections' characteristic function
    mean, std, n = torch.full((d,), 0.3, dtype=torch.float64), 1.5, 1000
    shifted = mean + std * torch.randn(8, n, d, generator=g, dtype=torch.float64)
    want = _expected_statistic(directions, 3.0, 17, n, mean, std)
    assert want > 100 * null
    assert CF.sigreg(shifted).item() == pytest.approx(want, rel=0.08)  # within 3% over seeds 8-19


def test_sigreg_invariance_and_reproducibility():
    views = _randn(3, 20, 5, seed=9).detach()
    value = CF.sigreg(views, seed=4)
    perm = torch.randperm(20)
    torch.testing.assert_close(CF.sigreg(views[:, perm], seed=4), value, rtol=1e-12, atol=1e-12)
    assert CF.sigreg(views, seed=4).item() == value.item()  # the same directions at every call
    assert CF.sigreg(views, seed=5).item() != value.item()  # another seed, other directions
    # the directions are drawn in float64 on the CPU: float32 gets the same ones, rounded
    torch.testing.assert_close(CF.sigreg(views.float(), seed=4), value.float(), rtol=1e-5, atol=1e-5)
    a = CF.sigreg_directions(5, num_directions=7, seed=4)
    assert a.shape == (5, 7) and a.dtype == torch.float64
    torch.testing.assert_close(a.norm(dim=0), torch.ones(7, dtype=torch.float64))
    a.zero_()  # a copy: the cached directions are untouched
    assert CF.sigreg(views, seed=4).item() == value.item()
    # one view as a sequence of (N, D) tensors, or as a (1, N, D) stack
    assert CF.sigreg([views[0]]).item() == CF.sigreg(views[:1]).item()


def test_sigreg_module_draws_new_directions_at_every_call():
    views = _randn(2, 15, 6, seed=18)
    module = contrasphere.create_loss("sigreg", num_directions=32, knots=9, seed=3).double()
    assert module.function_kwargs()["step"] == 0
    values = []
    for step in range(3):  # call k is the function at step k: value and gradient
        kwargs = module.function_kwargs()
        got = _grad(module, views)
        want = _grad(lambda v: CF.sigreg(v, num_directions=32, knots=9, seed=3, step=step), views)  # noqa: B023
        assert kwargs["step"] == step
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
        values.append(got[0].item())
    assert len(set(values)) == 3  # other directions at every call
    assert CF.sigreg(views, seed=3, step=0).item() != CF.sigreg(views, seed=3).item()  # step 0 is not step None
    # the count is state: a copy loaded from the state dict (a resumed run, another rank) continues the sequence
    twin = contrasphere.create_loss("sigreg", num_directions=32, knots=9, seed=3).double()
    twin.load_state_dict(module.state_dict())
    assert twin.calls == 3 and twin(views).item() == module(views).item()
    # resample=False: the directions of the seed alone, at every call
    fixed = contrasphere.create_loss("sigreg", seed=3, resample=False)
    want = CF.sigreg(views, seed=3).item()
    assert fixed(views).item() == want and fixed(views).item() == want
    with pytest.raises(TypeError, match="resample must be True or False"):
        contrasphere.create_loss("sigreg", resample=1)


# --- VICReg ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (10.0, 3.0, 0.5)])
def test_vicreg_matches_authors_code(coeffs):
    scale = torch.linspace(0.3, 2.0, 7, dtype=torch.float64)  # some coordinates below std 1: the hinge is active
    z_a = (_randn(20, 7, seed=10).detach() * scale).requires_grad_()
    z_b = (z_a.detach() + 0.4 * torch.randn(20, 7, dtype=torch.float64)).requires_grad_()
    lam, mu, nu = coeffs
    ours = grad_pair(
        lambda a, b: CF.vicreg(a, b, invariance_weight=lam, variance_weight=mu, covariance_weight=nu), z_a, z_b
    )
    ref = grad_pair(lambda a, b: vicreg_reference(a, b, lam, mu, nu), z_a, z_b)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_vicreg_closed_forms():
    # identical views, centred orthogonal coordinates of standard deviation 2: every term is 0
    x = torch.randn(40, 5, dtype=torch.float64)
    q = torch.linalg.qr(x - x.mean(0))[0] * 2 * math.sqrt(39)
    assert CF.vicreg(q, q).item() == pytest.approx(0.0, abs=1e-10)
    # a collapsed batch: no invariance or covariance, every standard deviation sqrt(eps) = 0.01
    z = torch.ones(8, 4, dtype=torch.float64)
    assert CF.vicreg(z, z).item() == pytest.approx(25.0 * (1 - 0.01), rel=1e-12)
    assert CF.vicreg(z, z, gamma=2.0, eps=0.25).item() == pytest.approx(25.0 * 1.5, rel=1e-12)
    # the invariance alone: a mean over N x D
    a, b = sphere(6, 3, seed=1), sphere(6, 3, seed=2)
    inv = CF.vicreg(a, b, variance_weight=0.0, covariance_weight=0.0)
    assert inv.item() == pytest.approx(25.0 * ((a - b) ** 2).mean().item(), rel=1e-12)


# --- MMCR -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("local_weight", [None, 0.3])
def test_mmcr_matches_authors_code(local_weight):
    views = _randn(4, 12, 6, seed=12, scale=2.0)  # not normalised: both normalise

    def reference(v):  # the authors' layout: the views of each sample adjacent, (B * n_aug, C)
        return mmcr_reference(v.transpose(0, 1).reshape(-1, v.shape[2]), local_weight or 0.0, v.shape[0])

    ours = _grad(lambda v: CF.mmcr(v, local_weight=local_weight), views)
    for got, want in zip(ours, _grad(reference, views)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_mmcr_matches_the_spectrum_of_the_centroids():
    views = _randn(3, 9, 5, seed=13)

    def from_eigenvalues(v):  # ||C||_* = sum sqrt(eig(C^T C)), without an SVD
        c = F.normalize(v, dim=-1).mean(0)
        return -torch.linalg.eigvalsh(c.T @ c).clamp_min(0).sqrt().sum()

    for got, want in zip(_grad(CF.mmcr, views), _grad(from_eigenvalues, views)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_mmcr_closed_forms():
    n, d, v = 5, 8, 3
    rows = torch.linalg.qr(torch.randn(d, n, dtype=torch.float64))[0].T  # n orthonormal rows
    same = rows.expand(v, n, d)
    assert CF.mmcr(same).item() == pytest.approx(-n, rel=1e-12)  # the largest a batch of N <= D can reach
    # each sample's V x D matrix of identical unit rows has the one singular value sqrt(V)
    assert CF.mmcr(same, local_weight=0.5).item() == pytest.approx(-n + 0.5 * math.sqrt(v), rel=1e-12)
    collapsed = torch.ones(v, n, d, dtype=torch.float64)
    assert CF.mmcr(collapsed).item() == pytest.approx(-math.sqrt(n), rel=1e-12)  # rank one
    cancelling = torch.stack([rows, -rows])  # two views whose centroid is 0
    assert CF.mmcr(cancelling).item() == pytest.approx(0.0, abs=1e-12)
    assert CF.mmcr(3.0 * same).item() == pytest.approx(-n, rel=1e-12)  # normalised first


# --- GOR ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "d"), [(6, 10), (20, 5)], ids=["scores-NxN", "gram-DxD"])
def test_gor_matches_hardnet_on_every_non_matching_pair(n, d):
    z_a = sphere(n, d, seed=14, grad=True)
    z_b = near(z_a, 0.6).requires_grad_()
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    off = i != j
    i, j = i[off], j[off]  # the n (n - 1) in-batch negatives, as anchor / negative pairs

    def reference(a, b):
        return global_orthogonal_regularization(a[i], b[j])

    for got, want in zip(grad_pair(CF.gor, z_a, z_b), grad_pair(reference, z_a, z_b)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("n", "d"), [(6, 10), (20, 5)])
@pytest.mark.parametrize("threshold", [None, 0.0, 0.05])
def test_gor_matches_the_equation(n, d, threshold):
    z_a = _randn(n, d, seed=15)  # not unit vectors: used as given
    z_b = _randn(n, d, seed=16)

    def loop(a, b):
        s = torch.stack([a[i] @ b[j] for i in range(n) for j in range(n) if i != j])
        bound = 1 / d if threshold is None else threshold
        return s.mean() ** 2 + torch.clamp(s.square().mean() - bound, min=0)

    ours = grad_pair(lambda a, b: CF.gor(a, b, threshold=threshold), z_a, z_b)
    for got, want in zip(ours, grad_pair(loop, z_a, z_b)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gor_closed_forms():
    for n in (4, 9):  # N = D (scores) and N > D (Gram matrices)
        d = 4
        e = torch.eye(d, dtype=torch.float64)
        if n == d:  # orthonormal rows: every non-matching pair orthogonal, both moments 0
            assert CF.gor(e, e).item() == pytest.approx(0.0, abs=1e-12)
        same = e[:1].expand(n, d)  # every pair at inner product 1: M1 = M2 = 1
        assert CF.gor(same, same).item() == pytest.approx(2 - 1 / d, rel=1e-12)
        assert CF.gor(same, same, threshold=0.0).item() == pytest.approx(2.0, rel=1e-12)
        assert CF.gor(same, -same).item() == pytest.approx(2 - 1 / d, rel=1e-12)  # M1 = -1


# --- all five: bad input, half precision ----------------------------------------------------------------------------
def _inputs(name, dtype=torch.float64):
    g = torch.Generator().manual_seed(17)
    x = 0.7 * torch.randn(3, 16, 8, generator=g, dtype=torch.float64) + 0.1
    return {"koleo": (x[0],), "sigreg": (x,), "vicreg": (x[0], x[1]), "mmcr": (x,), "gor": (x[0], x[1])}[name]


FUNCTIONS = {"koleo": CF.koleo, "sigreg": CF.sigreg, "vicreg": CF.vicreg, "mmcr": CF.mmcr, "gor": CF.gor}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_reduced_in_float32(name, dtype):
    low = [t.to(dtype).requires_grad_() for t in _inputs(name)]
    value = FUNCTIONS[name](*low)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    torch.testing.assert_close(value, FUNCTIONS[name](*[t.detach().float() for t in low]), rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(value, low)
    assert all(g.dtype == dtype and torch.isfinite(g.float()).all() for g in grads)


BAD_HYPERPARAMETERS = [
    ("koleo", {"eps": 0.0}, "eps must be a finite number > 0"),
    ("sigreg", {"num_directions": 0}, "num_directions must be an integer >= 1"),
    ("sigreg", {"knots": 1}, "knots must be an integer >= 2"),
    ("sigreg", {"knots": 17.0}, "knots must be an integer >= 2"),
    ("sigreg", {"t_max": -3.0}, "t_max must be a finite number > 0"),
    ("sigreg", {"seed": -1}, "seed must be an integer >= 0"),
    ("sigreg", {"seed": 0.5}, "seed must be an integer >= 0"),
    ("vicreg", {"invariance_weight": -1.0}, "invariance_weight must be a finite number >= 0"),
    ("vicreg", {"covariance_weight": math.inf}, "covariance_weight must be a finite number >= 0"),
    ("vicreg", {"gamma": 0.0}, "gamma must be a finite number > 0"),
    ("vicreg", {"eps": -1e-4}, "eps must be a finite number > 0"),
    ("mmcr", {"local_weight": -0.1}, "local_weight must be a finite number >= 0"),
    ("gor", {"threshold": -0.5}, "threshold must be a finite number >= 0"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_are_refused(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FUNCTIONS[name](*_inputs(name), **kwargs)
    with pytest.raises(ValueError, match=message):
        contrasphere.create_loss(name, **kwargs)


def test_bad_input_is_explained():
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="nearest neighbour"):
        CF.koleo(z[:1])
    with pytest.raises(ValueError, match="batch variance"):
        CF.vicreg(z[:1], z[:1])
    with pytest.raises(ValueError, match="pairs of different samples"):
        CF.gor(z[:1], z[:1])
    with pytest.raises(ValueError, match="same shape"):
        CF.gor(z, z[:3])
    with pytest.raises(ValueError, match="at least 2"):
        CF.mmcr(z[None])  # one view: no centroid over views
    with pytest.raises(ValueError, match=r"shape \(V, N, D\)"):
        CF.sigreg(z)  # (N, D): give z[None] for one view
    with pytest.raises(ValueError, match="NaN or Inf"):
        CF.sigreg(torch.full((1, 3, 2), math.nan))
    with pytest.raises(ValueError, match="dim must be"):
        CF.sigreg_directions(0)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        CF.sigreg(z[None], step=-1)
