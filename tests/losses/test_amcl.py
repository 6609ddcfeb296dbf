"""AMCL against the authors' AMCLNTXentLoss (github.com/LeiWangR/cl, amcl/losses.py): a module with parameters."""

from __future__ import annotations

import pytest
import torch
from references.amcl import amcl_authors

import contrasphere


@pytest.mark.parametrize("topk", [3, 100])
def test_amcl_matches_authors_code(topk):
    torch.manual_seed(0)
    loss = contrasphere.create_loss("amcl", dim=6, num_heads=2, beta=0.01, topk=topk)
    z1 = torch.randn(7, 2, 6, requires_grad=True)
    z2 = (z1.detach() + 0.5 * torch.randn(7, 2, 6)).requires_grad_()
    ours = loss(z1, z2)
    ref = amcl_authors(z1, z2, loss.phi, 0.01, 1e-5, 2.0, topk, 6)
    torch.testing.assert_close(ours, ref)
    params = (z1, z2, *loss.phi.parameters())
    for g, want in zip(torch.autograd.grad(ours, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(g, want)
    with pytest.raises(ValueError, match=r"\(B, 2, 6\)"):
        loss(z1[:, 0], z2[:, 0])
