"""Beyond InfoNCE: Barlow Twins, spectral contrastive and SwAV against their authors' code or their equation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import grad_pair, near, sphere
from references.barlow_twins import barlow_reference
from references.swav import swav_sinkhorn_reference

from contrasphere import functional as CF


def test_barlow_twins_matches_authors_code():
    z_a = torch.randn(20, 7, dtype=torch.float64, requires_grad=True)
    z_b = (z_a.detach() + 0.5 * torch.randn(20, 7, dtype=torch.float64)).requires_grad_()
    ours = grad_pair(lambda a, b: CF.barlow_twins(a, b, lambd=0.01), z_a, z_b)
    ref = grad_pair(lambda a, b: barlow_reference(a, b, 0.01), z_a, z_b)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want)
    # perfectly correlated, decorrelated features: C = I and the loss is 0
    x = torch.randn(64, 4, dtype=torch.float64)
    q = torch.linalg.qr(x - x.mean(0))[0] * 8  # centred, orthogonal columns
    assert CF.barlow_twins(q, q, eps=1e-12).item() == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("mu", [None, 1.0, 0.3])
def test_spectral_matches_the_equation(mu):
    z_a = (0.6 * torch.randn(9, 5, dtype=torch.float64)).requires_grad_()
    z_b = (z_a.detach() + 0.3 * torch.randn(9, 5, dtype=torch.float64)).requires_grad_()

    def loop(a, b):
        if mu is not None:  # the authors' code: rows longer than sqrt(mu) are projected onto that sphere
            mask_a = (a.norm(dim=1) < math.sqrt(mu)).double().unsqueeze(1)
            mask_b = (b.norm(dim=1) < math.sqrt(mu)).double().unsqueeze(1)
            a = mask_a * a + (1 - mask_a) * F.normalize(a, dim=1) * math.sqrt(mu)
            b = mask_b * b + (1 - mask_b) * F.normalize(b, dim=1) * math.sqrt(mu)
        n = a.shape[0]
        positive = sum(a[i] @ b[i] for i in range(n)) / n
        negative = sum((a[i] @ b[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return -2 * positive + negative

    ours = grad_pair(lambda a, b: CF.spectral_contrastive(a, b, mu=mu), z_a, z_b)
    ref = grad_pair(loop, z_a, z_b)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mu", [None, 1.0, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectral_gradient_is_finite_through_an_all_zero_row(mu, dtype):
    # an encoder whose output has an all-zero row (e.g. a ReLU head on a dead input): the norm cap must not put a
    # NaN into that row's gradient, which the encoder's weights would spread to every row
    x = torch.randn(8, 6, dtype=dtype)
    x[0] = 0.0
    weight = (0.3 * torch.randn(6, 5, dtype=dtype)).requires_grad_()
    z_b = (x @ weight.detach() + 0.2 * torch.randn(8, 5, dtype=dtype)).requires_grad_()
    loss = CF.spectral_contrastive(x @ weight, z_b, mu=mu)
    grad_w, grad_b = torch.autograd.grad(loss, (weight, z_b))
    assert torch.isfinite(loss) and torch.isfinite(grad_w).all() and torch.isfinite(grad_b).all()
    # the cap is inactive near a zero row, so the gradient is the loss's own: the equation (with F.normalize's
    # guarded norm) and central differences in float64 agree
    z_a = (x.double() @ weight.detach().double()).requires_grad_()
    b64 = z_b.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: CF.spectral_contrastive(a, b, mu=mu), (z_a, b64))
    got = torch.autograd.grad(CF.spectral_contrastive(z_a, b64, mu=mu), z_a)[0]
    assert torch.isfinite(got).all() and got[0].abs().sum() > 0  # the zero row is still pulled towards its positive


def test_sinkhorn_and_swav_match_reference():
    z_a = sphere(24, 6, seed=68, grad=True)
    z_b = near(z_a, 0.4).requires_grad_()
    prototypes = sphere(10, 6, seed=69)
    scores = z_a.detach() @ prototypes.T
    q = CF.sinkhorn(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(q, swav_sinkhorn_reference(scores, 0.05, 3))
    torch.testing.assert_close(q.sum(1), torch.ones(24, dtype=torch.float64))
    assert torch.isfinite(CF.sinkhorn(scores.float(), epsilon=0.001)).all()  # e^(1/0.001) would overflow

    def reference(a, b):
        s_a, s_b = a @ prototypes.T, b @ prototypes.T
        q_a, q_b = swav_sinkhorn_reference(s_a.detach(), 0.05, 3), swav_sinkhorn_reference(s_b.detach(), 0.05, 3)
        loss = -0.5 * torch.mean(
            torch.sum(q_a * F.log_softmax(s_b / 0.1, dim=1), dim=1)
            + torch.sum(q_b * F.log_softmax(s_a / 0.1, dim=1), dim=1)
        )
        return loss

    ours = grad_pair(lambda a, b: CF.swav(a, b, prototypes, temperature=0.1), z_a, z_b)
    for got, want in zip(ours, grad_pair(reference, z_a, z_b)):
        torch.testing.assert_close(got, want)


def test_bad_input():
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="variance"):
        CF.barlow_twins(z[:1], z[:1])
    with pytest.raises(ValueError, match="iterations"):
        CF.sinkhorn(z @ z.T, iterations=0)
