"""Row log-sum-exp (InfoNCE, DCL, MoCo) and the joint row-and-column pass (CLIP), dense or tiled."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import Tensor

from . import sharding
from ._tiling import (
    SYM_BLOCK,
    IdPair,
    _accumulate,
    _as_scale,
    _blocks,
    _dense_scores,
    _excluded,
    _exp_sum,
    _id_pair,
    _mask_pairs_,
    _mm_dtype,
    _online_update,
    _tiles,
    _triton,
    acc_dtype,
    dense_logsumexp,
    use_tiles,
    use_triton,
)


def runs_dense(n: int, m: int, block_size: int | None, device: torch.device) -> bool:
    """Whether a reduction over ``n x m`` pairs on ``device`` runs densely here: not tiled (:func:`use_tiles`) and
    not sharded over ranks (:func:`sharded`). A loss may then compute its dense form its own fused way (InfoNCE,
    NT-Xent and CLIP call ``cross_entropy`` on :func:`dense_scores`, as plain PyTorch code does)."""
    return sharding.current() is None and not use_tiles(n, m, block_size, device)


def dense_scores(a: Tensor, b: Tensor, scale: Tensor | float) -> Tensor:
    """The dense ``N x M`` scores ``scale * a @ b.T`` in the accumulation dtype (float32, float64 for float64)."""
    return _dense_scores(a, b, scale, 0.0)


def row_logsumexp(
    a: Tensor,
    b: Tensor,
    *,
    scale: Tensor | float = 1.0,
    col_bias: Tensor | None = None,
    exclude_diagonal: bool = False,
    exclude_offsets: tuple[int, ...] = (),
    row_ids: Tensor | None = None,
    col_ids: Tensor | None = None,
    detached_scale: float = 0.0,
    block_size: int | None = None,
) -> Tensor:
    r""":math:`\mathrm{lse}_i = \log \sum_j e^{\sigma \langle a_i, b_j\rangle + c_j}` for every row ``i``, ``(N,)``.

    Args:
        a: ``(N, D)``; b: ``(M, D)``.
        scale: :math:`\sigma`, a float or a 0-dim tensor (learnable scales get their gradient).
        col_bias: :math:`c`, ``(M,)`` or None.
        exclude_diagonal: leave out the pairs ``j == i`` (``a`` and ``b`` index the same set).
        exclude_offsets: also leave out the pairs ``j == i + k`` for each ``k`` (e.g. a positive partner).
        row_ids, col_ids: ``(N,)`` and ``(M,)`` integer sample ids, or None: the pairs with
            ``row_ids[i] == col_ids[j]`` are left out (false negatives: two views of one sample, duplicates).
        detached_scale: :math:`\alpha`: each score gets :math:`\alpha\,\mathrm{sg}(\langle a_i, b_j\rangle)`
            on top, a term without gradient (LLaVE's hardness weighting, which multiplies each term of the sum by
            :math:`e^{\alpha \mathrm{sg}(\langle a_i, b_j\rangle)}`).
        block_size: None (automatic), 0 (dense) or the row count of a tile.

    Returns the log-sum-exps in float32 (float64 for float64 input), differentiable in ``a``, ``b``, ``scale`` and
    ``col_bias``. A row whose every pair is excluded gets ``-inf``.
    """
    excluded = _excluded(exclude_diagonal, exclude_offsets)
    ids = _id_pair(row_ids, col_ids, a.shape[0], b.shape[0])
    shard = sharding.current()
    if shard is not None:
        return sharding.row_logsumexp_shard(
            shard, a, b, scale=scale, col_bias=col_bias, exclude_diagonal=exclude_diagonal,
            exclude_offsets=exclude_offsets, row_ids=row_ids, col_ids=col_ids, detached_scale=detached_scale,
            block_size=block_size,
        )  # fmt: skip
    if not use_tiles(a.shape[0], b.shape[0], block_size, a.device):
        scores = _dense_scores(a, b, scale, detached_scale, col_bias=col_bias)
        return dense_logsumexp(_mask_pairs_(scores, excluded, ids), 1, bool(excluded) or ids is not None)
    rows, cols = _blocks(a.shape[0], b.shape[0], block_size)
    row_ids, col_ids = (None, None) if ids is None else ids
    lse: Tensor = _row_lse_op(
        a, b, _as_scale(scale, a), col_bias, list(excluded), row_ids, col_ids, float(detached_scale), rows, cols
    )
    return lse


# The tiled passes are custom operators: torch.compile sees each as one opaque node with a shape function (its
# Python loop over tiles would otherwise be unrolled or break the graph), and each chooses its kernels by device
# (the fused Triton kernels on CUDA, the PyTorch tiles elsewhere: see _tiling.use_triton).


@torch.library.custom_op("contrasphere::row_lse", mutates_args=())
def _row_lse_op(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    col_bias: Tensor | None,
    excluded: list[int],
    row_ids: Tensor | None,
    col_ids: Tensor | None,
    detached_scale: float,
    rows: int,
    cols: int,
) -> Tensor:
    value_scale = scale + detached_scale  # the tiles' values; the gradient flows through scale alone
    if use_triton(a, excluded, b.shape[0]):
        lse: Tensor = _triton().lse_forward(
            a, b, value_scale, None, col_bias, tuple(excluded), row_ids, col_ids, False
        )[0]
        return lse
    acc, n = acc_dtype(a), a.shape[0]
    run_max = torch.full((n,), -math.inf, dtype=acc, device=a.device)
    run_sum = torch.zeros(n, dtype=acc, device=a.device)
    ids = _ids(row_ids, col_ids)
    tiles = _tiles(a, b, value_scale, rows, cols, col_bias=col_bias, excluded=tuple(excluded), ids=ids)
    for r0, r1, _, _, tile in tiles:
        _online_update(run_max[r0:r1], run_sum[r0:r1], tile.amax(1), partial(_exp_sum, tile, 1))
    return torch.where(run_sum > 0, run_max + run_sum.log(), -math.inf)


@_row_lse_op.register_fake
def _(a: Tensor, b: Tensor, *args: Any) -> Tensor:
    return a.new_empty(a.shape[0], dtype=acc_dtype(a))


def _ids(row_ids: Tensor | None, col_ids: Tensor | None) -> IdPair | None:
    return None if row_ids is None or col_ids is None else (row_ids, col_ids)


@torch.library.custom_op("contrasphere::row_lse_backward", mutates_args=())
def _row_lse_backward_op(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    col_bias: Tensor | None,
    excluded: list[int],
    row_ids: Tensor | None,
    col_ids: Tensor | None,
    detached_scale: float,
    rows: int,
    cols: int,
    lse: Tensor,
    grad_lse: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    grad_a, grad_b, grad_scale, grad_bias = row_logsumexp_backward(
        a, b, scale, col_bias, lse, grad_lse, tuple(excluded), rows, cols, _ids(row_ids, col_ids), detached_scale,
        need_scale=True, need_bias=col_bias is not None,
    )  # fmt: skip
    assert grad_scale is not None
    empty = grad_scale.new_empty(0)
    return grad_a.to(a.dtype), grad_b.to(b.dtype), grad_scale, empty if grad_bias is None else grad_bias


@_row_lse_backward_op.register_fake
def _(
    a: Tensor, b: Tensor, scale: Tensor, col_bias: Tensor | None, *args: Any
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    bias = scale.new_empty(0) if col_bias is None else scale.new_empty(b.shape[0])
    return torch.empty_like(a), torch.empty_like(b), scale.new_empty(()), bias


def _row_lse_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    a, b, scale, col_bias, *rest = inputs
    ctx.save_for_backward(a, b, scale, col_bias, rest[1], rest[2], output)
    ctx.rest = (rest[0], rest[3], rest[4], rest[5])


def _row_lse_backward(ctx: Any, grad_lse: Tensor) -> tuple[Tensor | None, ...]:
    a, b, scale, col_bias, row_ids, col_ids, lse = ctx.saved_tensors
    excluded, detached_scale, rows, cols = ctx.rest
    grad_a, grad_b, grad_scale, grad_bias = _row_lse_backward_op(
        a, b, scale, col_bias, excluded, row_ids, col_ids, detached_scale, rows, cols, lse, grad_lse
    )
    return grad_a, grad_b, grad_scale, None if col_bias is None else grad_bias, None, None, None, None, None, None


_row_lse_op.register_autograd(_row_lse_backward, setup_context=_row_lse_setup)


def row_logsumexp_backward(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    col_bias: Tensor | None,
    lse: Tensor,
    grad_lse: Tensor,
    excluded: tuple[int, ...],
    rows: int,
    cols: int,
    ids: IdPair | None = None,
    detached_scale: float = 0.0,
    *,
    need_scale: bool = True,
    need_bias: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The tiled backward pass of :func:`row_logsumexp`: gradients of ``sum_i grad_lse_i * lse_i`` in ``a``, ``b``,
    ``scale`` and ``col_bias`` (float32/64), each tile recomputed.

    ``lse`` need not be this ``b``'s own log-sum-exp: the ring passes the log-sum-exp over every rank's columns,
    which turns each block's tiles into its share of the global softmax without computing the block's own.
    """
    acc = acc_dtype(a)
    value_scale = scale + detached_scale
    if use_triton(a, excluded, b.shape[0]):
        row_ids, col_ids = (None, None) if ids is None else ids
        grad_a, grad_b, _, bias_grad = _triton().lse_backward(
            a, b, value_scale, None, col_bias, excluded, row_ids, col_ids, lse, grad_lse.to(acc), None, None
        )
        grad_bias = bias_grad if need_bias else None
    else:
        grad_a, grad_b, grad_bias = _row_lse_grads(
            a, b, value_scale, col_bias, lse, grad_lse, excluded, rows, cols, ids, need_bias
        )
    # d/d scale of sum_ij w_ij scale <a_i, b_j> is sum_i <a_i, sum_j w_ij b_j>: read off the unscaled grad_a
    grad_scale = (a.detach().to(acc) * grad_a).sum() if need_scale else None
    grad_a.mul_(scale)
    grad_b.mul_(scale)
    return grad_a, grad_b, grad_scale, grad_bias


def _row_lse_grads(
    a: Tensor,
    b: Tensor,
    value_scale: Tensor,
    col_bias: Tensor | None,
    lse: Tensor,
    grad_lse: Tensor,
    excluded: tuple[int, ...],
    rows: int,
    cols: int,
    ids: IdPair | None,
    need_bias: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The PyTorch tiles of :func:`row_logsumexp_backward`: unscaled gradients in ``a``, ``b`` and ``col_bias``."""
    acc, mm = acc_dtype(a), _mm_dtype(a)
    a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
    grad_lse = grad_lse.to(acc)
    finite_lse = _finite(lse)
    grad_a = torch.zeros(a.shape, dtype=acc, device=a.device)
    grad_b = torch.zeros(b.shape, dtype=acc, device=a.device)
    grad_bias = torch.zeros(b.shape[0], dtype=acc, device=a.device) if need_bias else None
    for r0, r1, c0, c1, tile in _tiles(a, b, value_scale, rows, cols, col_bias=col_bias, excluded=excluded, ids=ids):
        # softmax weights times the incoming gradient: d lse_i / d s_ij = p_ij
        weights = tile.sub_(finite_lse[r0:r1, None]).exp_().mul_(grad_lse[r0:r1, None])
        _accumulate(grad_a[r0:r1], grad_b[c0:c1], weights, a_mm[r0:r1], b_mm[c0:c1], mm)
        if grad_bias is not None:
            grad_bias[c0:c1] += weights.sum(0)
    return grad_a, grad_b, grad_bias


def row_col_logsumexp(
    a: Tensor,
    b: Tensor,
    *,
    scale: Tensor | float = 1.0,
    row_bias: Tensor | None = None,
    col_bias: Tensor | None = None,
    exclude_diagonal: bool = False,
    exclude_offsets: tuple[int, ...] = (),
    row_ids: Tensor | None = None,
    col_ids: Tensor | None = None,
    detached_scale: float = 0.0,
    block_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Both :math:`\log \sum_j e^{\sigma\langle a_i, b_j\rangle}` (``(N,)``) and :math:`\log \sum_i
    e^{\sigma\langle a_i, b_j\rangle}` (``(M,)``) from one pass over the tiles.

    CLIP's two directions share every score; computing them together costs one matrix product per tile in the
    forward pass and three in the backward pass, half of two separate :func:`row_logsumexp` calls.
    The scores may carry a row and a column term, :math:`\sigma\langle a_i, b_j\rangle + r_i + c_j` (``row_bias``
    ``(N,)``, ``col_bias`` ``(M,)``); ``exclude_diagonal``, ``exclude_offsets``, ``row_ids``, ``col_ids`` and
    ``detached_scale`` are as in :func:`row_logsumexp`, for both directions.
    """
    excluded = _excluded(exclude_diagonal, exclude_offsets)
    ids = _id_pair(row_ids, col_ids, a.shape[0], b.shape[0])
    shard = sharding.current()
    if shard is not None:
        return sharding.row_col_logsumexp_shard(
            shard, a, b, scale=scale, row_bias=row_bias, col_bias=col_bias, exclude_diagonal=exclude_diagonal,
            exclude_offsets=exclude_offsets, row_ids=row_ids, col_ids=col_ids, detached_scale=detached_scale,
            block_size=block_size,
        )  # fmt: skip
    if not use_tiles(a.shape[0], b.shape[0], block_size, a.device):
        scores = _dense_scores(a, b, scale, detached_scale, row_bias, col_bias)
        _mask_pairs_(scores, excluded, ids)
        masked = bool(excluded) or ids is not None
        return dense_logsumexp(scores, 1, masked), dense_logsumexp(scores, 0, masked)
    side = min(block_size or SYM_BLOCK, max(a.shape[0], b.shape[0]))
    row_ids, col_ids = (None, None) if ids is None else ids
    lse_rows: Tensor
    lse_cols: Tensor
    lse_rows, lse_cols = _row_col_lse_op(
        a, b, _as_scale(scale, a), row_bias, col_bias, side, list(excluded), row_ids, col_ids, float(detached_scale)
    )
    return lse_rows, lse_cols


def _finite(lse: Tensor) -> Tensor:
    """``lse`` with ``-inf`` (a row whose every pair is left out) replaced by 0, so that ``tile - lse`` stays -inf."""
    return torch.where(torch.isinf(lse), 0.0, lse)


@torch.library.custom_op("contrasphere::row_col_lse", mutates_args=())
def _row_col_lse_op(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    row_bias: Tensor | None,
    col_bias: Tensor | None,
    side: int,
    excluded: list[int],
    row_ids: Tensor | None,
    col_ids: Tensor | None,
    detached_scale: float,
) -> tuple[Tensor, Tensor]:
    value_scale = scale + detached_scale
    if use_triton(a, excluded, b.shape[0]):
        lse_rows, lse_cols = _triton().lse_forward(
            a, b, value_scale, row_bias, col_bias, tuple(excluded), row_ids, col_ids, True
        )
        assert lse_cols is not None
        return lse_rows, lse_cols
    acc = acc_dtype(a)
    stats = [torch.full((k,), -math.inf, dtype=acc, device=a.device) for k in (a.shape[0], b.shape[0])]
    sums = [torch.zeros(k, dtype=acc, device=a.device) for k in (a.shape[0], b.shape[0])]
    spare = torch.empty(side, side, dtype=acc, device=a.device)
    rb = None if row_bias is None else row_bias.detach().to(acc)
    ids = _ids(row_ids, col_ids)
    tiles = _tiles(a, b, value_scale, side, side, col_bias=col_bias, excluded=tuple(excluded), ids=ids)
    for i0, i1, j0, j1, tile in tiles:
        if rb is not None:
            tile.add_(rb[i0:i1, None])
        copy = spare[: i1 - i0, : j1 - j0]
        _online_update(stats[0][i0:i1], sums[0][i0:i1], tile.amax(1), partial(_exp_sum, tile, 1, out=copy))
        _online_update(stats[1][j0:j1], sums[1][j0:j1], tile.amax(0), partial(_exp_sum, tile, 0))
    lse_rows, lse_cols = (torch.where(sm > 0, mx + sm.log(), -math.inf) for mx, sm in zip(stats, sums))
    return lse_rows, lse_cols


@_row_col_lse_op.register_fake
def _(a: Tensor, b: Tensor, *args: Any) -> tuple[Tensor, Tensor]:
    return a.new_empty(a.shape[0], dtype=acc_dtype(a)), a.new_empty(b.shape[0], dtype=acc_dtype(a))


@torch.library.custom_op("contrasphere::row_col_lse_backward", mutates_args=())
def _row_col_lse_backward_op(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    row_bias: Tensor | None,
    col_bias: Tensor | None,
    side: int,
    excluded: list[int],
    row_ids: Tensor | None,
    col_ids: Tensor | None,
    detached_scale: float,
    lse_rows: Tensor,
    lse_cols: Tensor,
    grad_rows: Tensor,
    grad_cols: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    acc = acc_dtype(a)
    value_scale = scale + detached_scale
    g_r, g_c = grad_rows.to(acc), grad_cols.to(acc)
    if use_triton(a, excluded, b.shape[0]):
        grad_a, grad_b, grad_rb, grad_cb = _triton().lse_backward(
            a, b, value_scale, row_bias, col_bias, tuple(excluded), row_ids, col_ids, lse_rows, g_r, lse_cols, g_c
        )
    else:
        grad_a, grad_b, grad_rb, grad_cb = _row_col_grads(
            a, b, value_scale, row_bias, col_bias, side, tuple(excluded), _ids(row_ids, col_ids),
            _finite(lse_rows), _finite(lse_cols), g_r, g_c,
        )  # fmt: skip
    grad_scale = (a.detach().to(acc) * grad_a).sum()
    grad_a.mul_(scale)
    grad_b.mul_(scale)
    return (
        grad_a.to(a.dtype),
        grad_b.to(b.dtype),
        grad_scale,
        grad_rb if row_bias is not None else grad_scale.new_empty(0),  # outputs must not alias one another
        grad_cb if col_bias is not None else grad_scale.new_empty(0),
    )


@_row_col_lse_backward_op.register_fake
def _(
    a: Tensor, b: Tensor, scale: Tensor, row_bias: Tensor | None, col_bias: Tensor | None, *args: Any
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    rb = scale.new_empty(0 if row_bias is None else a.shape[0])
    cb = scale.new_empty(0 if col_bias is None else b.shape[0])
    return torch.empty_like(a), torch.empty_like(b), scale.new_empty(()), rb, cb


def _row_col_grads(
    a: Tensor,
    b: Tensor,
    value_scale: Tensor,
    row_bias: Tensor | None,
    col_bias: Tensor | None,
    side: int,
    excluded: tuple[int, ...],
    ids: IdPair | None,
    lse_rows: Tensor,
    lse_cols: Tensor,
    g_r: Tensor,
    g_c: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The PyTorch tiles of the row-and-column backward pass: unscaled gradients in ``a``, ``b`` and both biases."""
    acc, mm = acc_dtype(a), _mm_dtype(a)
    a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
    grad_a = torch.zeros(a.shape, dtype=acc, device=a.device)
    grad_b = torch.zeros(b.shape, dtype=acc, device=a.device)
    spare = torch.empty(side, side, dtype=acc, device=a.device)
    rb = None if row_bias is None else row_bias.detach().to(acc)
    grad_rb = torch.zeros(a.shape[0], dtype=acc, device=a.device)
    grad_cb = torch.zeros(b.shape[0], dtype=acc, device=a.device)
    for i0, i1, j0, j1, tile in _tiles(a, b, value_scale, side, side, col_bias=col_bias, excluded=excluded, ids=ids):
        if rb is not None:
            tile.add_(rb[i0:i1, None])
        # u_ij = g_i p(j | i) + g'_j p(i | j): the weight of score s_ij in both directions
        u = torch.sub(tile, lse_rows[i0:i1, None], out=spare[: i1 - i0, : j1 - j0])
        u.exp_().mul_(g_r[i0:i1, None])
        u.add_(tile.sub_(lse_cols[None, j0:j1]).exp_().mul_(g_c[None, j0:j1]))
        _accumulate(grad_a[i0:i1], grad_b[j0:j1], u, a_mm[i0:i1], b_mm[j0:j1], mm)
        if row_bias is not None:
            grad_rb[i0:i1] += u.sum(1)
        if col_bias is not None:
            grad_cb[j0:j1] += u.sum(0)
    return grad_a, grad_b, grad_rb, grad_cb


def _row_col_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    a, b, scale, row_bias, col_bias, side, excluded, row_ids, col_ids, detached_scale = inputs
    ctx.save_for_backward(a, b, scale, row_bias, col_bias, row_ids, col_ids, *output)
    ctx.rest = (side, excluded, detached_scale)


def _row_col_backward(ctx: Any, grad_rows: Tensor, grad_cols: Tensor) -> tuple[Tensor | None, ...]:
    a, b, scale, row_bias, col_bias, row_ids, col_ids, lse_rows, lse_cols = ctx.saved_tensors
    side, excluded, detached_scale = ctx.rest
    grad_a, grad_b, grad_scale, grad_rb, grad_cb = _row_col_lse_backward_op(
        a, b, scale, row_bias, col_bias, side, excluded, row_ids, col_ids, detached_scale, lse_rows, lse_cols,
        grad_rows, grad_cols,
    )  # fmt: skip
    return (
        grad_a,
        grad_b,
        grad_scale,
        None if row_bias is None else grad_rb,
        None if col_bias is None else grad_cb,
        None,
        None,
        None,
        None,
        None,
    )


_row_col_lse_op.register_autograd(_row_col_backward, setup_context=_row_col_setup)
