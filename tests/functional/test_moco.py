"""MoCo's InfoNCE and the paper's align-uniform loss against a queue, against MoCo's and Wang & Isola's code."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import near, sphere
from references.moco import moco_reference
from references.wang_isola import ref_align, ref_moco_uniform

from contrasphere import functional as CF


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_moco_matches_reference(dtype, tol):
    q = sphere(9, 16, seed=64, dtype=dtype, grad=True)
    k = near(q, 0.3).to(dtype).requires_grad_()
    queue = sphere(40, 16, seed=65, dtype=dtype)
    ours = CF.moco_info_nce(q, k, queue, temperature=0.2)
    ref = moco_reference(q, k, queue.T, 0.2)
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    for g, want in zip(torch.autograd.grad(ours, (q, k)), torch.autograd.grad(ref, (q, k))):
        torch.testing.assert_close(g, want, rtol=tol, atol=tol)


def test_align_uniform_queue_is_the_papers_combination():
    q = sphere(9, 16, seed=66, grad=True)
    k = near(q, 0.3)
    queue = sphere(30, 16, seed=67)
    for intra in (True, False):
        ours = CF.align_uniform_queue(q, k, queue, intra_batch=intra)
        ref = 3 * ref_align(q, k, alpha=2) + ref_moco_uniform(q, queue.T, 3.0, intra)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(ref, q)[0])


def test_bad_input():
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="same embedding dimension"):
        CF.moco_info_nce(z, z, sphere(5, 4))
    assert math.isfinite(CF.moco_info_nce(z, z, sphere(5, 3)).item())
