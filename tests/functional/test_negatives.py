"""Debiased and hard-negative NT-Xent against Robinson et al.'s HCL code (with Chuang et al.'s debiased estimator)."""

from __future__ import annotations

import pytest
import torch
from conftest import grad_pair, near, sphere
from references.hcl import hcl_reference

from contrasphere import functional as CF


@pytest.mark.parametrize("tau_plus,beta", [(0.1, 1.0), (0.0, 0.5), (0.3, 2.0), (0.1, 0.0), (0.5, 1.0)])
@pytest.mark.parametrize("temperature", [0.5, 0.2])
def test_hard_negative_matches_authors_code(tau_plus, beta, temperature):
    z_a = sphere(12, 8, seed=61, grad=True)
    z_b = near(z_a, 0.5).requires_grad_()
    estimator = "hard" if beta > 0 else "debiased"
    ours = grad_pair(
        lambda a, b: CF.hard_negative_nt_xent(a, b, temperature=temperature, tau_plus=tau_plus, beta=beta), z_a, z_b
    )
    ref = grad_pair(lambda a, b: hcl_reference(a, b, tau_plus, 12, beta, estimator, temperature), z_a, z_b)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_debiased_matches_authors_code_and_reduces_to_nt_xent():
    z_a = sphere(10, 5, seed=62, grad=True)
    z_b = near(z_a, 0.4).requires_grad_()
    for tau_plus in (0.05, 0.2):
        ours = grad_pair(lambda a, b, tp=tau_plus: CF.debiased_nt_xent(a, b, temperature=0.5, tau_plus=tp), z_a, z_b)
        ref = grad_pair(lambda a, b, tp=tau_plus: hcl_reference(a, b, tp, 10, 0.0, "debiased", 0.5), z_a, z_b)
        for got, want in zip(ours, ref):
            torch.testing.assert_close(got, want)
    # no false negatives assumed and no reweighting: NT-Xent itself
    torch.testing.assert_close(
        CF.hard_negative_nt_xent(z_a, z_b, temperature=0.3, tau_plus=0.0, beta=0.0),
        CF.nt_xent(z_a, z_b, temperature=0.3),
    )


def test_hard_negative_stays_finite_where_the_reference_overflows():
    z_a = sphere(16, 8, seed=63, dtype=torch.float32, grad=True)
    z_b = near(z_a, 0.1).float().requires_grad_()
    t = 0.01  # e^{1/t} = e^100 overflows float32
    with torch.no_grad():
        assert not torch.isfinite(hcl_reference(z_a, z_b, 0.1, 16, 1.0, "hard", t))
    ours = CF.hard_negative_nt_xent(z_a, z_b, temperature=t, tau_plus=0.1, beta=1.0)
    assert torch.isfinite(ours)
    want = CF.hard_negative_nt_xent(z_a.double(), z_b.double(), temperature=t, tau_plus=0.1, beta=1.0)
    torch.testing.assert_close(ours.double(), want, rtol=1e-4, atol=1e-4)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(ours, (z_a, z_b)))


def test_bad_input():
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="tau_plus"):
        CF.hard_negative_nt_xent(z, z, tau_plus=1.0)
    with pytest.raises(ValueError, match="beta"):
        CF.hard_negative_nt_xent(z, z, beta=-1.0)
    with pytest.raises(ValueError, match="negatives besides"):
        CF.debiased_nt_xent(z[:1], z[:1])
