"""SogCLR against the authors' code, its moving averages over steps, its gamma schedule and its gradient."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import near, sphere
from references.sogclr import sogclr_step

import contrasphere
from contrasphere.losses import SogCLRLoss


def batch(n=10, d=6, seed=0):
    z_a = sphere(n, d, seed=seed, dtype=torch.float64, grad=True)
    z_b = near(z_a, 0.6, seed=seed + 1).requires_grad_()
    return z_a, z_b


def test_the_first_step_is_the_authors_loss_and_gradient():
    z_a, z_b = batch()
    index = torch.arange(10) * 3
    loss_fn = SogCLRLoss(num_samples=40, temperature=0.2, gamma=0.9).double()
    got = loss_fn(z_a, z_b, index)
    want, want_u = sogclr_step(
        z_a, z_b, torch.zeros(40, dtype=torch.float64), index, temperature=0.2, gamma=0.9, combine="mean"
    )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g_got = torch.autograd.grad(got, (z_a, z_b))
    g_want = torch.autograd.grad(want, (z_a, z_b))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss_fn.u, want_u, rtol=1e-12, atol=0)


def test_the_moving_averages_follow_algorithm_1_over_steps():
    loss_fn = SogCLRLoss(num_samples=30, temperature=0.3, gamma=0.6).double()
    u = torch.zeros(30, dtype=torch.float64)
    for step in range(4):
        z_a, z_b = batch(n=8, seed=10 * step)
        index = torch.randperm(30, generator=torch.Generator().manual_seed(step))[:8]
        want, u = sogclr_step(z_a, z_b, u, index, temperature=0.3, gamma=0.6, combine="mean")
        torch.testing.assert_close(loss_fn(z_a, z_b, index), want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(loss_fn.u, u, rtol=1e-12, atol=0)
    # the authors' code stores the sum of the two directions instead: after the first step the state differs
    _, summed = sogclr_step(
        *batch(n=8), torch.zeros(30, dtype=torch.float64), torch.arange(8), temperature=0.3, gamma=0.6, combine="sum"
    )
    _, mean = sogclr_step(
        *batch(n=8), torch.zeros(30, dtype=torch.float64), torch.arange(8), temperature=0.3, gamma=0.6, combine="mean"
    )
    torch.testing.assert_close(summed[:8], 2 * mean[:8])


def test_the_gradient_is_the_sogclr_estimator():
    """d loss = tau / u_i * d g_i - d s_pos, from the equation, with u_i after this step's update."""
    z_a, z_b = batch(n=6, d=5, seed=3)
    tau, gamma = 0.25, 0.7
    loss_fn = SogCLRLoss(num_samples=6, temperature=tau, gamma=gamma).double()
    with torch.no_grad():
        loss_fn.log_u.copy_(torch.linspace(-1, 2, 6, dtype=torch.float64))
    u_before = loss_fn.u.clone()
    grad = torch.autograd.grad(loss_fn(z_a, z_b, torch.arange(6)), (z_a, z_b))
    n, total = 6, 0.0
    for anchor, other in ((z_a, z_b), (z_b, z_a)):
        for i in range(n):
            negatives = [other[j] for j in range(n) if j != i] + [anchor[j] for j in range(n) if j != i]
            g = sum(torch.exp(anchor[i] @ c / tau) for c in negatives) / (2 * (n - 1))
            u_i = (1 - gamma) * u_before[i] + gamma * g.detach()
            total = total + (tau * g / u_i - anchor[i] @ other[i]) / n
    want = torch.autograd.grad(total, (z_a, z_b))
    for a, b in zip(grad, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_cosine_gamma_schedule_and_the_state_round_trip():
    loss_fn = SogCLRLoss(num_samples=20, gamma=0.9, gamma_schedule="cosine", gamma_min=0.2, decay_steps=4)
    seen = []
    for _ in range(6):
        seen.append(loss_fn.current_gamma())
        loss_fn(*batch(n=4, d=3), torch.arange(4))
    want = [0.2 + 0.7 * 0.5 * (1 + math.cos(math.pi * min(1, s / 4))) for s in range(6)]
    assert seen == pytest.approx(want) and seen[0] == pytest.approx(0.9) and seen[-1] == pytest.approx(0.2)
    copy = SogCLRLoss(num_samples=20, gamma=0.9, gamma_schedule="cosine", gamma_min=0.2, decay_steps=4)
    copy.load_state_dict(loss_fn.state_dict())
    assert copy.current_gamma() == loss_fn.current_gamma() and torch.equal(copy.u, loss_fn.u)


def test_small_temperatures_stay_finite():
    z_a, z_b = batch()
    loss_fn = SogCLRLoss(num_samples=10, temperature=1e-3).double()
    for _ in range(3):
        value = loss_fn(z_a, z_b, torch.arange(10))
        grads = torch.autograd.grad(value, (z_a, z_b))
        assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(loss_fn.log_u).all()  # exp(1 / 1e-3) would overflow; the state is kept in log space


def test_bad_input_and_settings_are_explained():
    with pytest.raises(ValueError, match="gamma_min <= gamma"):
        SogCLRLoss(num_samples=10, gamma=0.1, gamma_min=0.5)
    with pytest.raises(ValueError, match="gamma_schedule must be"):
        SogCLRLoss(num_samples=10, gamma_schedule="linear")
    loss_fn = contrasphere.create_loss("sogclr", num_samples=10)
    z_a, z_b = batch(n=4, d=3)
    with pytest.raises(ValueError, match="ids, which must lie in 0..9"):
        loss_fn(z_a, z_b, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="repeats a sample id"):
        loss_fn(z_a, z_b, torch.tensor([0, 1, 1, 2]))
