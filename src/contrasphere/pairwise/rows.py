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
    acc_dtype,
    use_tiles,
)


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
    if not use_tiles(a.shape[0], b.shape[0], block_size):
        scores = _dense_scores(a, b, scale, detached_scale)
        if col_bias is not None:
            scores = scores + col_bias.to(scores.dtype)
        return torch.logsumexp(_mask_pairs_(scores, excluded, ids), dim=1)
    rows, cols = _blocks(a.shape[0], b.shape[0], block_size)
    scale_t = _as_scale(scale, a)
    lse: Tensor = _RowLogSumExp.apply(a, b, scale_t, col_bias, excluded, rows, cols, ids, float(detached_scale))
    return lse


class _RowLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        a: Tensor,
        b: Tensor,
        scale: Tensor,
        col_bias: Tensor | None,
        excluded: tuple[int, ...],
        rows: int,
        cols: int,
        ids: IdPair | None,
        detached_scale: float,
    ) -> Tensor:
        acc, n = acc_dtype(a), a.shape[0]
        run_max = torch.full((n,), -math.inf, dtype=acc, device=a.device)
        run_sum = torch.zeros(n, dtype=acc, device=a.device)
        value_scale = scale + detached_scale  # the tiles' values; the gradient flows through scale alone
        for r0, r1, _, _, tile in _tiles(a, b, value_scale, rows, cols, col_bias=col_bias, excluded=excluded, ids=ids):
            _online_update(run_max[r0:r1], run_sum[r0:r1], tile.amax(1), partial(_exp_sum, tile, 1))
        lse = torch.where(run_sum > 0, run_max + run_sum.log(), -math.inf)
        ctx.save_for_backward(a, b, scale, col_bias, lse)
        ctx.excluded, ctx.rows, ctx.cols, ctx.ids, ctx.detached_scale = excluded, rows, cols, ids, detached_scale
        return lse

    @staticmethod
    def backward(
        ctx: Any, grad_lse: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, None, None, None, None, None]:
        a, b, scale, col_bias, lse = ctx.saved_tensors
        need_bias = col_bias is not None and ctx.needs_input_grad[3]
        grad_a, grad_b, grad_scale, grad_bias = row_logsumexp_backward(
            a, b, scale, col_bias, lse, grad_lse, ctx.excluded, ctx.rows, ctx.cols, ctx.ids, ctx.detached_scale,
            need_scale=ctx.needs_input_grad[2], need_bias=need_bias,
        )  # fmt: skip
        return grad_a.to(a.dtype), grad_b.to(b.dtype), grad_scale, grad_bias, None, None, None, None, None


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
    acc, mm = acc_dtype(a), _mm_dtype(a)
    a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
    grad_lse = grad_lse.to(acc)
    finite_lse = _finite(lse)
    grad_a = torch.zeros(a.shape, dtype=acc, device=a.device)
    grad_b = torch.zeros(b.shape, dtype=acc, device=a.device)
    grad_bias = torch.zeros(b.shape[0], dtype=acc, device=a.device) if need_bias else None
    value_scale = scale + detached_scale
    tiles = _tiles(a, b, value_scale, rows, cols, col_bias=col_bias, excluded=excluded, ids=ids)
    for r0, r1, c0, c1, tile in tiles:
        # softmax weights times the incoming gradient: d lse_i / d s_ij = p_ij
        weights = tile.sub_(finite_lse[r0:r1, None]).exp_().mul_(grad_lse[r0:r1, None])
        _accumulate(grad_a[r0:r1], grad_b[c0:c1], weights, a_mm[r0:r1], b_mm[c0:c1], mm)
        if grad_bias is not None:
            grad_bias[c0:c1] += weights.sum(0)
    # d/d scale of sum_ij w_ij scale <a_i, b_j> is sum_i <a_i, sum_j w_ij b_j>: read off the unscaled grad_a
    grad_scale = (a.detach().to(acc) * grad_a).sum() if need_scale else None
    grad_a.mul_(scale)
    grad_b.mul_(scale)
    return grad_a, grad_b, grad_scale, grad_bias


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
    if not use_tiles(a.shape[0], b.shape[0], block_size):
        scores = _dense_scores(a, b, scale, detached_scale)
        if row_bias is not None:
            scores = scores + row_bias.to(scores.dtype)[:, None]
        if col_bias is not None:
            scores = scores + col_bias.to(scores.dtype)[None, :]
        _mask_pairs_(scores, excluded, ids)
        return torch.logsumexp(scores, dim=1), torch.logsumexp(scores, dim=0)
    side = min(block_size or SYM_BLOCK, max(a.shape[0], b.shape[0]))
    lse_rows: Tensor
    lse_cols: Tensor
    lse_rows, lse_cols = _RowColLogSumExp.apply(
        a, b, _as_scale(scale, a), row_bias, col_bias, side, excluded, ids, float(detached_scale)
    )
    return lse_rows, lse_cols


def _finite(lse: Tensor) -> Tensor:
    """``lse`` with ``-inf`` (a row whose every pair is left out) replaced by 0, so that ``tile - lse`` stays -inf."""
    return torch.where(torch.isinf(lse), 0.0, lse)


class _RowColLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        a: Tensor,
        b: Tensor,
        scale: Tensor,
        row_bias: Tensor | None,
        col_bias: Tensor | None,
        side: int,
        excluded: tuple[int, ...],
        ids: IdPair | None,
        detached_scale: float,
    ) -> tuple[Tensor, Tensor]:
        acc = acc_dtype(a)
        stats = [torch.full((k,), -math.inf, dtype=acc, device=a.device) for k in (a.shape[0], b.shape[0])]
        sums = [torch.zeros(k, dtype=acc, device=a.device) for k in (a.shape[0], b.shape[0])]
        spare = torch.empty(side, side, dtype=acc, device=a.device)
        value_scale = scale + detached_scale
        rb = None if row_bias is None else row_bias.detach().to(acc)
        tiles = _tiles(a, b, value_scale, side, side, col_bias=col_bias, excluded=excluded, ids=ids)
        for i0, i1, j0, j1, tile in tiles:
            if rb is not None:
                tile.add_(rb[i0:i1, None])
            copy = spare[: i1 - i0, : j1 - j0]
            _online_update(
                stats[0][i0:i1],
                sums[0][i0:i1],
                tile.amax(1),
                partial(_exp_sum, tile, 1, out=copy),
            )
            _online_update(
                stats[1][j0:j1],
                sums[1][j0:j1],
                tile.amax(0),
                partial(_exp_sum, tile, 0),
            )
        lse_rows, lse_cols = (torch.where(sm > 0, mx + sm.log(), -math.inf) for mx, sm in zip(stats, sums))
        ctx.save_for_backward(a, b, scale, row_bias, col_bias, lse_rows, lse_cols)
        ctx.side, ctx.excluded, ctx.ids, ctx.detached_scale = side, excluded, ids, detached_scale
        return lse_rows, lse_cols

    @staticmethod
    def backward(
        ctx: Any, grad_rows: Tensor, grad_cols: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None, None, None, None, None]:
        a, b, scale, row_bias, col_bias, lse_rows, lse_cols = ctx.saved_tensors
        lse_rows, lse_cols = _finite(lse_rows), _finite(lse_cols)
        side = ctx.side
        acc, mm = acc_dtype(a), _mm_dtype(a)
        a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
        g_r, g_c = grad_rows.to(acc), grad_cols.to(acc)
        grad_a = torch.zeros(a.shape, dtype=acc, device=a.device)
        grad_b = torch.zeros(b.shape, dtype=acc, device=a.device)
        spare = torch.empty(side, side, dtype=acc, device=a.device)
        value_scale = scale + ctx.detached_scale
        rb = None if row_bias is None else row_bias.detach().to(acc)
        grad_rb = torch.zeros(a.shape[0], dtype=acc, device=a.device) if row_bias is not None else None
        grad_cb = torch.zeros(b.shape[0], dtype=acc, device=a.device) if col_bias is not None else None
        tiles = _tiles(a, b, value_scale, side, side, col_bias=col_bias, excluded=ctx.excluded, ids=ctx.ids)
        for i0, i1, j0, j1, tile in tiles:
            if rb is not None:
                tile.add_(rb[i0:i1, None])
            # u_ij = g_i p(j | i) + g'_j p(i | j): the weight of score s_ij in both directions
            u = torch.sub(tile, lse_rows[i0:i1, None], out=spare[: i1 - i0, : j1 - j0])
            u.exp_().mul_(g_r[i0:i1, None])
            u.add_(tile.sub_(lse_cols[None, j0:j1]).exp_().mul_(g_c[None, j0:j1]))
            _accumulate(grad_a[i0:i1], grad_b[j0:j1], u, a_mm[i0:i1], b_mm[j0:j1], mm)
            if grad_rb is not None:
                grad_rb[i0:i1] += u.sum(1)
            if grad_cb is not None:
                grad_cb[j0:j1] += u.sum(0)
        grad_scale = (a.detach().to(acc) * grad_a).sum() if ctx.needs_input_grad[2] else None
        grad_a.mul_(scale)
        grad_b.mul_(scale)
        return grad_a.to(a.dtype), grad_b.to(b.dtype), grad_scale, grad_rb, grad_cb, None, None, None, None
