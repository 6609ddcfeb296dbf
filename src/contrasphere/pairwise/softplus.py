"""The tiled sum of softplus over all pairs (SigLIP)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import sharding
from ._tiling import (
    _accumulate,
    _as_scale,
    _blocks,
    _dense_scores,
    _mm_dtype,
    _tiles,
    _triton,
    acc_dtype,
    use_tiles,
    use_triton,
)


def softplus_sum(
    a: Tensor, b: Tensor, *, scale: Tensor | float = 1.0, bias: Tensor | float = 0.0, block_size: int | None = None
) -> Tensor:
    r""":math:`\sum_{i,j} \log(1 + e^{\sigma\langle a_i, b_j\rangle + \beta})`, a scalar (float32 or float64).

    Differentiable in ``a``, ``b``, ``scale`` and ``bias``; ``block_size`` as in :func:`row_logsumexp`.
    """
    shard = sharding.current()
    if shard is not None:
        return sharding.softplus_sum_shard(shard, a, b, scale=scale, bias=bias, block_size=block_size)
    if not use_tiles(a.shape[0], b.shape[0], block_size, a.device):
        # sum softplus(s) = -sum log sigmoid(-s): one fused, exact operation (the sign folded into the product)
        neg_bias = -bias if isinstance(bias, Tensor) else -float(bias)
        return -F.logsigmoid(_dense_scores(a, b, -scale, 0.0, neg_bias)).sum()
    rows, cols = _blocks(a.shape[0], b.shape[0], block_size)
    total: Tensor = _softplus_sum_op(a, b, _as_scale(scale, a), _as_scale(bias, a), rows, cols)
    return total


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` exactly, with the exact derivative ``sigmoid(x)``.

    ``torch.nn.functional.softplus`` returns ``x`` itself above ``x = 20`` (its ``threshold``), off by ``e^{-x}``
    (1e-9 relative to the sigmoid in float64 at 20.5) in the value and, through autograd, in the gradient, where
    the tiled backward uses the sigmoid: ``logaddexp(x, 0)`` is stable at any ``x`` and exact.
    """
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


@torch.library.custom_op("contrasphere::softplus_sum", mutates_args=())
def _softplus_sum_op(a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, rows: int, cols: int) -> Tensor:
    if use_triton(a):
        total: Tensor = _triton().softplus_forward(a, b, scale, bias)
        return total.to(acc_dtype(a))
    acc_total = torch.zeros((), dtype=torch.float64, device=a.device)
    for _, _, _, _, tile in _tiles(a, b, scale, rows, cols, col_bias=bias):
        acc_total += _softplus(tile).sum(1).sum(dtype=torch.float64)  # row sums first: a float64 sum of 2M is slow
    return acc_total.to(acc_dtype(a))


@_softplus_sum_op.register_fake
def _(a: Tensor, *args: Any) -> Tensor:
    return a.new_empty((), dtype=acc_dtype(a))


@torch.library.custom_op("contrasphere::softplus_sum_backward", mutates_args=())
def _softplus_sum_backward_op(
    a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, rows: int, cols: int, grad_out: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    grad_a, grad_b, grad_scale, grad_bias = softplus_sum_backward(
        a, b, scale, bias, grad_out, rows, cols, need_scale=True
    )
    assert grad_scale is not None
    return grad_a.to(a.dtype), grad_b.to(b.dtype), grad_scale, grad_bias


@_softplus_sum_backward_op.register_fake
def _(a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, *args: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(a), torch.empty_like(b), scale.new_empty(()), bias.new_empty(())


def _softplus_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    a, b, scale, bias, rows, cols = inputs
    ctx.save_for_backward(a, b, scale, bias)
    ctx.rest = (rows, cols)


def _softplus_backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
    a, b, scale, bias = ctx.saved_tensors
    grad_a, grad_b, grad_scale, grad_bias = _softplus_sum_backward_op(a, b, scale, bias, *ctx.rest, grad_out)
    return grad_a, grad_b, grad_scale, grad_bias, None, None


_softplus_sum_op.register_autograd(_softplus_backward, setup_context=_softplus_setup)


def softplus_sum_backward(
    a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, grad_out: Tensor, rows: int, cols: int, *, need_scale: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """The tiled backward pass of :func:`softplus_sum`: gradients in ``a``, ``b``, ``scale`` and ``bias``."""
    acc = acc_dtype(a)
    if use_triton(a):
        grad_a, grad_b, grad_bias = _triton().softplus_backward(a, b, scale, bias, grad_out.to(acc))
    else:
        mm = _mm_dtype(a)
        a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
        grad_a = torch.zeros(a.shape, dtype=acc, device=a.device)
        grad_b = torch.zeros(b.shape, dtype=acc, device=a.device)
        grad_bias = torch.zeros((), dtype=acc, device=a.device)
        for r0, r1, c0, c1, tile in _tiles(a, b, scale, rows, cols, col_bias=bias):
            weights = tile.sigmoid_().mul_(grad_out.to(acc))  # d softplus(x) / dx = sigmoid(x)
            grad_bias += weights.sum()
            _accumulate(grad_a[r0:r1], grad_b[c0:c1], weights, a_mm[r0:r1], b_mm[c0:c1], mm)
    grad_scale = (a.detach().to(acc) * grad_a).sum() if need_scale else None
    grad_a.mul_(scale)
    grad_b.mul_(scale)
    return grad_a, grad_b, grad_scale, grad_bias
