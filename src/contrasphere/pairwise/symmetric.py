"""The symmetric pass: only tiles on and above the diagonal, each used for its rows and its columns (NT-Xent,
SupCon, uniformity)."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import Tensor

from . import sharding
from ._tiling import (
    SYM_BLOCK,
    _accumulate,
    _as_scale,
    _dense_scores,
    _excluded,
    _exp_sum,
    _id_pair,
    _mask_pairs_,
    _mm_dtype,
    _online_update,
    _sym_tiles,
    _triton,
    acc_dtype,
    dense_logsumexp,
    use_tiles,
    use_triton,
)


def sym_row_logsumexp(
    z: Tensor,
    *,
    scale: Tensor | float = 1.0,
    bias: Tensor | None = None,
    exclude_diagonal: bool = True,
    exclude_offsets: tuple[int, ...] = (),
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r""":math:`\mathrm{lse}_i = \log \sum_j e^{\sigma \langle z_i, z_j\rangle + r_i + r_j}` of one set against itself.

    The score matrix is symmetric, so the tiled path visits only the tiles on and above the diagonal and uses each
    twice (for its rows and, transposed, for its columns): half the matrix products of :func:`row_logsumexp`. This
    serves NT-Xent, SupCon (``r = 0``) and uniformity (``sigma = 2t``, ``r = -t ||z||^2``).

    Args:
        z: ``(N, D)``; scale: :math:`\sigma`; bias: :math:`r`, ``(N,)`` or None.
        exclude_diagonal: leave out ``j == i`` (the default: self-pairs are not pairs).
        exclude_offsets: also leave out ``j == i + k`` for each ``k``; the set must be symmetric (``-k`` with
            ``k``), e.g. ``(N, -N)`` for the partner views of a ``2N`` batch.
        ids: ``(N,)`` integer sample ids, or None: the pairs with ``ids[i] == ids[j]`` are left out.
        block_size: None (automatic), 0 (dense) or the side of a square tile.
    """
    n = z.shape[0]
    excluded = _excluded(exclude_diagonal, exclude_offsets)
    if any(-k not in excluded for k in excluded):
        raise ValueError(
            f"exclude_offsets must be symmetric (k with -k) for a symmetric reduction, got {exclude_offsets}"
        )
    pair = _id_pair(ids, ids, n, n)
    shard = sharding.current()
    if shard is not None:
        return sharding.sym_row_logsumexp_shard(
            shard, z, scale=scale, bias=bias, excluded=excluded, ids=ids, block_size=block_size
        )
    if not use_tiles(n, n, block_size, z.device):
        scores = _dense_scores(z, z, scale, 0.0, bias, bias)
        return dense_logsumexp(_mask_pairs_(scores, excluded, pair), 1, bool(excluded) or pair is not None)
    side = min(block_size or SYM_BLOCK, n)
    lse: Tensor = _sym_lse_op(z, _as_scale(scale, z), bias, list(excluded), side, ids)
    return lse


@torch.library.custom_op("contrasphere::sym_lse", mutates_args=())
def _sym_lse_op(
    z: Tensor, scale: Tensor, bias: Tensor | None, excluded: list[int], side: int, ids: Tensor | None
) -> Tensor:
    if use_triton(z, excluded):
        lse: Tensor = _triton().sym_forward(z, scale, bias, tuple(excluded), ids)
        return lse
    acc, n = acc_dtype(z), z.shape[0]
    run_max = torch.full((n,), -math.inf, dtype=acc, device=z.device)
    run_sum = torch.zeros(n, dtype=acc, device=z.device)
    spare = torch.empty(side, side, dtype=acc, device=z.device)
    for i0, i1, j0, j1, tile in _sym_tiles(z, scale, bias, tuple(excluded), side, ids):
        copy = spare[: i1 - i0, : j1 - j0]
        _online_update(run_max[i0:i1], run_sum[i0:i1], tile.amax(1), partial(_exp_sum, tile, 1, out=copy))
        if j0 != i0:  # the transposed tile: rows j0:j1 against columns i0:i1
            _online_update(run_max[j0:j1], run_sum[j0:j1], tile.amax(0), partial(_exp_sum, tile, 0))
    return torch.where(run_sum > 0, run_max + run_sum.log(), -math.inf)


@_sym_lse_op.register_fake
def _(z: Tensor, *args: Any) -> Tensor:
    return z.new_empty(z.shape[0], dtype=acc_dtype(z))


@torch.library.custom_op("contrasphere::sym_lse_backward", mutates_args=())
def _sym_lse_backward_op(
    z: Tensor,
    scale: Tensor,
    bias: Tensor | None,
    excluded: list[int],
    side: int,
    ids: Tensor | None,
    lse: Tensor,
    grad_lse: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    acc = acc_dtype(z)
    g = grad_lse.to(acc)
    if use_triton(z, excluded):
        grad_z, grad_r = _triton().sym_backward(z, scale, bias, tuple(excluded), ids, lse, g)
    else:
        grad_z, grad_r = _sym_grads(z, scale, bias, tuple(excluded), side, ids, lse, g)
    # sum_k <z_k, sum_j u_kj z_j> counts every ordered pair twice
    grad_scale = (z.detach().to(acc) * grad_z).sum() / 2
    grad_z.mul_(scale)
    return grad_z.to(z.dtype), grad_scale, grad_r if bias is not None else grad_scale.new_empty(0)


@_sym_lse_backward_op.register_fake
def _(z: Tensor, scale: Tensor, bias: Tensor | None, *args: Any) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(z), scale.new_empty(()), scale.new_empty(0 if bias is None else z.shape[0])


def _sym_grads(
    z: Tensor,
    scale: Tensor,
    bias: Tensor | None,
    excluded: tuple[int, ...],
    side: int,
    ids: Tensor | None,
    lse: Tensor,
    g: Tensor,
) -> tuple[Tensor, Tensor]:
    """The PyTorch tiles of the symmetric backward pass: the unscaled gradient in ``z`` and the bias's."""
    acc, mm = acc_dtype(z), _mm_dtype(z)
    z_mm = z.detach().to(mm)
    n = z.shape[0]
    finite_lse = torch.where(torch.isinf(lse), 0.0, lse)
    grad_z = torch.zeros(z.shape, dtype=acc, device=z.device)
    grad_r = torch.zeros(n, dtype=acc, device=z.device)
    spare = torch.empty(side, side, dtype=acc, device=z.device)
    for i0, i1, j0, j1, tile in _sym_tiles(z, scale, bias, excluded, side, ids):
        # u_ij = w_ij + w_ji, the total weight of the unordered pair: p_ij g_i + p_ji g_j
        rows_w = torch.sub(tile, finite_lse[i0:i1, None], out=spare[: i1 - i0, : j1 - j0])
        rows_w.exp_().mul_(g[i0:i1, None])
        cols_w = tile.sub_(finite_lse[None, j0:j1]).exp_().mul_(g[None, j0:j1])
        u = rows_w.add_(cols_w)  # on a diagonal tile cols_w is rows_w transposed, as it must be
        _accumulate(grad_z[i0:i1], grad_z[j0:j1] if j0 != i0 else None, u, z_mm[i0:i1], z_mm[j0:j1], mm)
        if bias is not None:
            grad_r[i0:i1] += u.sum(1)
            if j0 != i0:
                grad_r[j0:j1] += u.sum(0)
    return grad_z, grad_r


def _sym_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    z, scale, bias, excluded, side, ids = inputs
    ctx.save_for_backward(z, scale, bias, ids, output)
    ctx.rest = (excluded, side)


def _sym_backward(ctx: Any, grad_lse: Tensor) -> tuple[Tensor | None, ...]:
    z, scale, bias, ids, lse = ctx.saved_tensors
    excluded, side = ctx.rest
    grad_z, grad_scale, grad_r = _sym_lse_backward_op(z, scale, bias, excluded, side, ids, lse, grad_lse)
    return grad_z, grad_scale, None if bias is None else grad_r, None, None, None


_sym_lse_op.register_autograd(_sym_backward, setup_context=_sym_setup)


def gaussian_logsumexp(z: Tensor, t: float, *, block_size: int | None) -> Tensor:
    r""":math:`\log \sum_{i \ne j} e^{-t\lVert z_i - z_j\rVert^2}` over the ordered pairs of distinct rows, a scalar.

    Through :func:`sym_row_logsumexp` with :math:`-t\lVert z_i - z_j\rVert^2 = 2t\langle z_i, z_j\rangle - t\lVert
    z_i\rVert^2 - t\lVert z_j\rVert^2`, exact for embeddings of any norm.
    """
    sq = z.to(acc_dtype(z)).pow(2).sum(1)
    rows = sym_row_logsumexp(z, scale=2.0 * t, bias=-t * sq, exclude_diagonal=True, block_size=block_size)
    return torch.logsumexp(rows, dim=0)
