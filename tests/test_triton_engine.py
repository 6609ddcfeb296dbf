"""The engine's tiled passes on the Triton kernels: every reduction, through the losses built on it, equals the
PyTorch tiles (value and every gradient), with the kernels run by Triton's interpreter on CPU tensors.

``contrasphere.pairwise.kernels("triton")`` forces the kernels onto CPU tensors (``"auto"`` chooses them for CUDA
tensors only); tests/test_triton_kernels.py checks each kernel against the equations at sizes that span many tiles.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import near, sphere

from contrasphere import functional as CF
from contrasphere import pairwise as P
from contrasphere.pairwise import _tiling

triton = pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip(
        "the Triton kernels need a GPU or TRITON_INTERPRET=1 (tests/conftest.py sets it)", allow_module_level=True
    )

N, D, BLOCK = 37, 20, 8  # BLOCK forces the tiled path; the kernels use their own tiles
LABELS = torch.tensor([i % 9 for i in range(2 * N)])
IDS = torch.tensor([i % 30 for i in range(N)])  # some rows share an id: false negatives left out

CASES = {
    "info_nce": lambda a, b, s: CF.info_nce(a, b, temperature=0.1, block_size=BLOCK),
    "info_nce+ids": lambda a, b, s: CF.info_nce(a, b, temperature=0.1, ids=IDS, block_size=BLOCK),
    "info_nce+hardness": lambda a, b, s: CF.info_nce(a, b, temperature=0.1, hardness=3.0, block_size=BLOCK),
    "nt_xent": lambda a, b, s: CF.nt_xent(a, b, temperature=0.5, block_size=BLOCK),
    "clip (learnable scale)": lambda a, b, s: CF.clip_loss(a, b, logit_scale=s, block_size=BLOCK),
    "clip+ids": lambda a, b, s: CF.clip_loss(a, b, logit_scale=s, ids=IDS, block_size=BLOCK),
    "siglip": lambda a, b, s: CF.siglip_loss(a, b, logit_scale=s, logit_bias=-2.0, block_size=BLOCK),
    "supcon": lambda a, b, s: CF.supcon(torch.cat([a, b]), LABELS, temperature=0.1, block_size=BLOCK),
    "uniformity": lambda a, b, s: CF.uniformity(a, t=2.0, block_size=BLOCK),
    "dcl": lambda a, b, s: CF.dcl(a, b, temperature=0.1, block_size=BLOCK),
    "hard_negative": lambda a, b, s: CF.hard_negative_nt_xent(
        a, b, temperature=0.5, tau_plus=0.1, beta=1.0, block_size=BLOCK
    ),
    "row_col with biases": lambda a, b, s: sum(
        x.sum() for x in P.row_col_logsumexp(a, b, scale=s, row_bias=a[:, 0], col_bias=b[:, 1], block_size=BLOCK)
    ),
}


def _run(case, dtype, choice):
    a = sphere(N, D, seed=3, dtype=dtype, grad=True)
    b = near(a, 0.5, seed=4).to(dtype).requires_grad_(True)
    scale = torch.tensor(7.0, requires_grad=True)
    with P.kernels(choice):
        value = CASES[case](a, b, scale)
    grads = torch.autograd.grad(value, (a, b, scale), allow_unused=True)
    return value.detach().double(), [None if g is None else g.double() for g in grads]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES)
def test_triton_kernels_equal_the_pytorch_tiles(case, dtype):
    value, grads = _run(case, dtype, "triton")
    want_value, want_grads = _run(case, dtype, "torch")
    # fp32: both accumulate in float32. bf16: the kernels keep every score in float32, where PyTorch's bf16 tiles
    # (on CPUs with bf16 units) round each product to bf16, and both round the weights before the second product
    tol = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (1e-2, 3e-2)}[dtype]
    assert torch.isclose(value, want_value, rtol=tol[0], atol=1e-6), (float(value), float(want_value))
    for got, want in zip(grads, want_grads):
        assert (got is None) == (want is None)
        if got is not None:
            err = float((got - want).norm() / want.norm().clamp_min(1e-12))
            assert err < tol[1], err


def test_auto_chooses_triton_for_cuda_tensors_only():
    cpu = torch.zeros(40, 3)
    assert not _tiling.use_triton(cpu)
    with P.kernels("triton"):
        assert _tiling.use_triton(cpu) and not _tiling.use_triton(cpu.double())  # float64: PyTorch tiles always
        assert not _tiling.use_triton(cpu, tuple(range(-9, 10)))  # more excluded diagonals than a launch takes
        with P.kernels("torch"):
            assert not _tiling.use_triton(cpu)
    with pytest.raises(ValueError, match="'auto', 'triton' or 'torch'"):
        with P.kernels("cuda"):  # type: ignore[arg-type]
            pass
