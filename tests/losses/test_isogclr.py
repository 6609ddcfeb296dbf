"""iSogCLR against the authors' iSogCLR_Loss (image-text), ported to the CPU line by line (tests/references)."""

from __future__ import annotations

import pytest
import torch
from conftest import near, sphere
from references.isogclr import AuthorsISogCLR

import contrasphere


def test_isogclr_follows_the_authors_code_over_several_steps():
    ours = contrasphere.create_loss("isogclr", num_samples=20)
    ref = AuthorsISogCLR(20)
    # epoch 0 visits every id once; epoch 1 revisits a mix of them
    steps = [(torch.arange(0, 8), 0), (torch.arange(8, 20), 0), (torch.tensor([3, 9, 14, 0, 17, 5]), 1)]
    for step, (ids, epoch) in enumerate(steps):
        a = sphere(len(ids), 6, seed=100 + step, grad=True)
        b = near(a, 0.5, seed=200 + step).requires_grad_()
        got = ours(a, b, ids)
        want = ref.forward(a, b, ids, ids, epoch)
        torch.testing.assert_close(got, want)
        for g, w in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(want, (a, b))):
            torch.testing.assert_close(g, w)
        torch.testing.assert_close(ours.tau_a, ref.tau_I)
        torch.testing.assert_close(ours.tau_b, ref.tau_T)
        torch.testing.assert_close(ours.s_a, ref.s_I)
        torch.testing.assert_close(ours.u_b, ref.u_T)
    assert not torch.equal(ours.tau_a, torch.full((20,), 0.01, dtype=torch.float64))  # temperatures moved
    assert "tau_a" in ours.state_dict()  # saved with a checkpoint


def test_isogclr_bad_input():
    loss = contrasphere.create_loss("isogclr", num_samples=10)
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="sample ids"):
        loss(z, z, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="repeats a sample id"):
        loss(z, z, torch.tensor([0, 1, 1, 2]))
    with pytest.raises(ValueError, match="num_samples"):
        contrasphere.create_loss("isogclr", num_samples=1)
    with pytest.raises(ValueError, match="tau_min"):
        contrasphere.create_loss("isogclr", num_samples=10, tau_init=1.0)
