"""The engine: reductions over all pairs of two sets of embeddings, dense or in tiles.

Almost every objective in contrasphere reduces over an ``N x M`` matrix of pair scores
:math:`s_{ij} = \\sigma \\langle a_i, b_j\\rangle + c_j`:

- a row log-sum-exp (:func:`row_logsumexp`): InfoNCE, NT-Xent, CLIP (rows and columns), DCL, SupCon's
  denominator, MoCo's queue, and uniformity (a log-sum-exp of the row log-sum-exps, with
  :math:`-t\\lVert a_i - b_j\\rVert^2 = 2t\\langle a_i, b_j\\rangle - t\\lVert b_j\\rVert^2 - t\\lVert a_i\\rVert^2`);
- an element-wise sum of :math:`\\log(1 + e^{s_{ij}})` (:func:`softplus_sum`): SigLIP.

Each has two implementations with the same value and gradient. The dense one materialises the matrix (fast for
small batches). The tiled one (flash-attention / Inf-CL style) visits ``row_block x col_block`` tiles with an online
running maximum, accumulates in float32 (float64 for float64 input), and recomputes each tile in the backward pass
instead of storing it, so memory grows as ``(N + M) * D + row_block * col_block`` rather than ``N * M``. Every
loss chooses through ``block_size``: ``None`` picks dense up to :data:`DENSE_MAX_PAIRS` pairs and tiles above,
``0`` forces dense, a positive number forces tiles of that many rows. bfloat16 inputs are multiplied in bfloat16
(about four times the float32 rate on CPUs with AVX512-BF16) and reduced in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
from torch import Tensor

DENSE_MAX_PAIRS = 1 << 22  # above ~4M pairs (a 2048 x 2048 matrix) the tiled path is used
ROW_BLOCK = 256
TILE_PAIRS = 1 << 21  # a tile holds at most this many scores (8 MB in float32)
SYM_BLOCK = 1024  # side of the square tiles of the symmetric and row-and-column reductions


def acc_dtype(x: Tensor) -> torch.dtype:
    """The dtype reductions over ``x`` accumulate in: float64 for float64, float32 for everything else."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _mm_dtype(x: Tensor) -> torch.dtype:
    """The dtype tiles are multiplied in: bfloat16 stays (fast, float32-accumulating GEMM); float16 goes to float32."""
    return torch.bfloat16 if x.dtype == torch.bfloat16 else acc_dtype(x)


def use_tiles(n: int, m: int, block_size: int | None) -> bool:
    """Whether a reduction over an ``n x m`` matrix runs tiled (see the module docstring for ``block_size``)."""
    if block_size is None:
        return n * m > DENSE_MAX_PAIRS
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 0:
        raise ValueError(f"block_size must be None (automatic), 0 (dense) or a positive row count, got {block_size!r}")
    return block_size > 0


def _blocks(n: int, m: int, block_size: int | None) -> tuple[int, int]:
    rows = ROW_BLOCK if not block_size else block_size
    cols = max(rows, TILE_PAIRS // rows) if not block_size else block_size
    return min(rows, n), min(cols, m)


def _as_scale(scale: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(scale, Tensor):
        return scale.reshape(()).to(acc_dtype(like))
    return torch.tensor(float(scale), dtype=acc_dtype(like), device=like.device)


# --- row log-sum-exp ---------------------------------------------------------------------------------------------
def row_logsumexp(
    a: Tensor,
    b: Tensor,
    *,
    scale: Tensor | float = 1.0,
    col_bias: Tensor | None = None,
    exclude_diagonal: bool = False,
    exclude_offsets: tuple[int, ...] = (),
    block_size: int | None = None,
) -> Tensor:
    r""":math:`\mathrm{lse}_i = \log \sum_j e^{\sigma \langle a_i, b_j\rangle + c_j}` for every row ``i``, ``(N,)``.

    Args:
        a: ``(N, D)``; b: ``(M, D)``.
        scale: :math:`\sigma`, a float or a 0-dim tensor (learnable scales get their gradient).
        col_bias: :math:`c`, ``(M,)`` or None.
        exclude_diagonal: leave out the pairs ``j == i`` (``a`` and ``b`` index the same set).
        exclude_offsets: also leave out the pairs ``j == i + k`` for each ``k`` (e.g. a positive partner).
        block_size: None (automatic), 0 (dense) or the row count of a tile.

    Returns the log-sum-exps in float32 (float64 for float64 input), differentiable in ``a``, ``b``, ``scale`` and
    ``col_bias``. A row whose every pair is excluded gets ``-inf``.
    """
    excluded = _excluded(exclude_diagonal, exclude_offsets)
    if not use_tiles(a.shape[0], b.shape[0], block_size):
        return _row_logsumexp_dense(a, b, scale, col_bias, excluded)
    rows, cols = _blocks(a.shape[0], b.shape[0], block_size)
    scale_t = _as_scale(scale, a)
    lse: Tensor = _RowLogSumExp.apply(a, b, scale_t, col_bias, excluded, rows, cols)
    return lse


def _excluded(exclude_diagonal: bool, offsets: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted({0, *offsets} if exclude_diagonal else set(offsets)))


def _offset_mask(n: int, m: int, excluded: tuple[int, ...], device: torch.device) -> Tensor:
    """``(n, m)`` booleans, true where ``j - i`` is one of the excluded offsets."""
    diff = torch.arange(m, device=device)[None, :] - torch.arange(n, device=device)[:, None]
    return torch.isin(diff, torch.tensor(excluded, dtype=diff.dtype, device=device))


def _row_logsumexp_dense(
    a: Tensor, b: Tensor, scale: Tensor | float, col_bias: Tensor | None, excluded: tuple[int, ...]
) -> Tensor:
    dtype = acc_dtype(a)
    scores = (a.to(dtype) @ b.to(dtype).T) * scale
    if col_bias is not None:
        scores = scores + col_bias.to(dtype)
    if excluded:
        scores = scores.masked_fill(_offset_mask(a.shape[0], b.shape[0], excluded, a.device), -math.inf)
    return torch.logsumexp(scores, dim=1)


def _tile_scores(
    out: Tensor, a_r: Tensor, b_c: Tensor, scale: Tensor, bias_c: Tensor | None, diagonals: tuple[int, ...]
) -> Tensor:
    """Scores of one tile into ``out`` (float32/64): ``scale * a_r @ b_c.T + bias_c``, given diagonals masked."""
    if a_r.dtype == out.dtype:
        torch.mm(a_r, b_c.T, out=out)
    else:
        out.copy_(a_r @ b_c.T)
    out.mul_(scale)
    if bias_c is not None:
        out.add_(bias_c)
    for offset in diagonals:
        out.diagonal(offset).fill_(-math.inf)
    return out


def _diag(r0: int, r1: int, c0: int, c1: int, excluded: tuple[int, ...]) -> tuple[int, ...]:
    """The diagonals of tile rows r0:r1 x cols c0:c1 that hold excluded global pairs ``j - i == k``."""
    local = (k + r0 - c0 for k in excluded)
    return tuple(o for o in local if -(r1 - r0) < o < c1 - c0)


def _tiles(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    rows: int,
    cols: int,
    *,
    col_bias: Tensor | None = None,
    excluded: tuple[int, ...] = (),
) -> Iterator[tuple[int, int, int, int, Tensor]]:
    """Yield ``(r0, r1, c0, c1, tile)`` over every ``rows x cols`` tile of ``scale <a_i, b_j> + col_bias_j``.

    Excluded diagonals are masked; ``col_bias`` may be ``(M,)`` or a scalar tensor. Each tile is written into one
    reused buffer (float32/64): consume it before asking for the next.
    """
    acc, mm = acc_dtype(a), _mm_dtype(a)
    a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
    bias = None if col_bias is None else col_bias.detach().to(acc)
    n, m = a.shape[0], b.shape[0]
    buf = torch.empty(rows, cols, dtype=acc, device=a.device)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        for c0 in range(0, m, cols):
            c1 = min(c0 + cols, m)
            bias_c = None if bias is None else bias if bias.ndim == 0 else bias[c0:c1]
            diagonals = _diag(r0, r1, c0, c1, excluded)
            yield (
                r0,
                r1,
                c0,
                c1,
                _tile_scores(buf[: r1 - r0, : c1 - c0], a_mm[r0:r1], b_mm[c0:c1], scale, bias_c, diagonals),
            )


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
    ) -> Tensor:
        acc, n = acc_dtype(a), a.shape[0]
        run_max = torch.full((n,), -math.inf, dtype=acc, device=a.device)
        run_sum = torch.zeros(n, dtype=acc, device=a.device)
        for r0, r1, _, _, tile in _tiles(a, b, scale, rows, cols, col_bias=col_bias, excluded=excluded):
            _online_update(run_max[r0:r1], run_sum[r0:r1], tile.amax(1), partial(_exp_sum, tile, 1))
        lse = torch.where(run_sum > 0, run_max + run_sum.log(), -math.inf)
        ctx.save_for_backward(a, b, scale, col_bias, lse)
        ctx.excluded, ctx.rows, ctx.cols = excluded, rows, cols
        return lse

    @staticmethod
    def backward(ctx: Any, grad_lse: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, None, None, None]:
        a, b, scale, col_bias, lse = ctx.saved_tensors
        acc, mm = acc_dtype(a), _mm_dtype(a)
        a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
        grad_lse = grad_lse.to(acc)
        finite_lse = torch.where(torch.isinf(lse), 0.0, lse)
        grad_a = torch.zeros(a.shape, dtype=acc, device=a.device)
        grad_b = torch.zeros(b.shape, dtype=acc, device=a.device)
        need_bias = col_bias is not None and ctx.needs_input_grad[3]
        grad_bias = torch.zeros(b.shape[0], dtype=acc, device=a.device) if need_bias else None
        for r0, r1, c0, c1, tile in _tiles(a, b, scale, ctx.rows, ctx.cols, col_bias=col_bias, excluded=ctx.excluded):
            # softmax weights times the incoming gradient: d lse_i / d s_ij = p_ij
            weights = tile.sub_(finite_lse[r0:r1, None]).exp_().mul_(grad_lse[r0:r1, None])
            _accumulate(grad_a[r0:r1], grad_b[c0:c1], weights, a_mm[r0:r1], b_mm[c0:c1], mm)
            if grad_bias is not None:
                grad_bias[c0:c1] += weights.sum(0)
        # d/d scale of sum_ij w_ij scale <a_i, b_j> is sum_i <a_i, sum_j w_ij b_j>: read off the unscaled grad_a
        grad_scale = (a.detach().to(acc) * grad_a).sum() if ctx.needs_input_grad[2] else None
        grad_a.mul_(scale)
        grad_b.mul_(scale)
        return grad_a.to(a.dtype), grad_b.to(b.dtype), grad_scale, grad_bias, None, None, None


# --- row and column log-sum-exp together --------------------------------------------------------------------------
def row_col_logsumexp(
    a: Tensor, b: Tensor, *, scale: Tensor | float = 1.0, block_size: int | None = None
) -> tuple[Tensor, Tensor]:
    r"""Both :math:`\log \sum_j e^{\sigma\langle a_i, b_j\rangle}` (``(N,)``) and :math:`\log \sum_i
    e^{\sigma\langle a_i, b_j\rangle}` (``(M,)``) from one pass over the tiles.

    CLIP's two directions share every score; computing them together costs one matrix product per tile in the
    forward pass and three in the backward pass, half of two separate :func:`row_logsumexp` calls.
    """
    if not use_tiles(a.shape[0], b.shape[0], block_size):
        dtype = acc_dtype(a)
        scores = (a.to(dtype) @ b.to(dtype).T) * scale
        return torch.logsumexp(scores, dim=1), torch.logsumexp(scores, dim=0)
    side = min(block_size or SYM_BLOCK, max(a.shape[0], b.shape[0]))
    lse_rows: Tensor
    lse_cols: Tensor
    lse_rows, lse_cols = _RowColLogSumExp.apply(a, b, _as_scale(scale, a), side)
    return lse_rows, lse_cols


class _RowColLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, scale: Tensor, side: int) -> tuple[Tensor, Tensor]:
        acc = acc_dtype(a)
        stats = [torch.full((k,), -math.inf, dtype=acc, device=a.device) for k in (a.shape[0], b.shape[0])]
        sums = [torch.zeros(k, dtype=acc, device=a.device) for k in (a.shape[0], b.shape[0])]
        spare = torch.empty(side, side, dtype=acc, device=a.device)
        for i0, i1, j0, j1, tile in _tiles(a, b, scale, side, side):
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
        lse_rows, lse_cols = (mx + sm.log() for mx, sm in zip(stats, sums))
        ctx.save_for_backward(a, b, scale, lse_rows, lse_cols)
        ctx.side = side
        return lse_rows, lse_cols

    @staticmethod
    def backward(ctx: Any, grad_rows: Tensor, grad_cols: Tensor) -> tuple[Tensor, Tensor, Tensor | None, None]:
        a, b, scale, lse_rows, lse_cols = ctx.saved_tensors
        side = ctx.side
        acc, mm = acc_dtype(a), _mm_dtype(a)
        a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
        g_r, g_c = grad_rows.to(acc), grad_cols.to(acc)
        grad_a = torch.zeros(a.shape, dtype=acc, device=a.device)
        grad_b = torch.zeros(b.shape, dtype=acc, device=a.device)
        spare = torch.empty(side, side, dtype=acc, device=a.device)
        for i0, i1, j0, j1, tile in _tiles(a, b, scale, side, side):
            # u_ij = g_i p(j | i) + g'_j p(i | j): the weight of score s_ij in both directions
            u = torch.sub(tile, lse_rows[i0:i1, None], out=spare[: i1 - i0, : j1 - j0])
            u.exp_().mul_(g_r[i0:i1, None])
            u.add_(tile.sub_(lse_cols[None, j0:j1]).exp_().mul_(g_c[None, j0:j1]))
            _accumulate(grad_a[i0:i1], grad_b[j0:j1], u, a_mm[i0:i1], b_mm[j0:j1], mm)
        grad_scale = (a.detach().to(acc) * grad_a).sum() if ctx.needs_input_grad[2] else None
        grad_a.mul_(scale)
        grad_b.mul_(scale)
        return grad_a.to(a.dtype), grad_b.to(b.dtype), grad_scale, None


def _accumulate(grad_a: Tensor, grad_b: Tensor | None, u: Tensor, a: Tensor, b: Tensor, mm: torch.dtype) -> None:
    """``grad_a += u @ b`` and ``grad_b += u.T @ a`` (if given), with ``u`` multiplied in the tiles' dtype."""
    if u.dtype == mm:
        grad_a.addmm_(u, b)
        if grad_b is not None:
            grad_b.addmm_(u.T, a)
        return
    u_mm = u.to(mm)
    grad_a += u_mm @ b
    if grad_b is not None:
        grad_b += u_mm.T @ a


# --- symmetric row log-sum-exp --------------------------------------------------------------------------------------
def sym_row_logsumexp(
    z: Tensor,
    *,
    scale: Tensor | float = 1.0,
    bias: Tensor | None = None,
    exclude_diagonal: bool = True,
    exclude_offsets: tuple[int, ...] = (),
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
        block_size: None (automatic), 0 (dense) or the side of a square tile.
    """
    n = z.shape[0]
    excluded = _excluded(exclude_diagonal, exclude_offsets)
    if any(-k not in excluded for k in excluded):
        raise ValueError(
            f"exclude_offsets must be symmetric (k with -k) for a symmetric reduction, got {exclude_offsets}"
        )
    if not use_tiles(n, n, block_size):
        dtype = acc_dtype(z)
        zz = z.to(dtype)
        scores = (zz @ zz.T) * scale
        if bias is not None:
            scores = scores + bias.to(dtype)[:, None] + bias.to(dtype)[None, :]
        if excluded:
            scores = scores.masked_fill(_offset_mask(n, n, excluded, z.device), -math.inf)
        return torch.logsumexp(scores, dim=1)
    side = min(block_size or SYM_BLOCK, n)
    lse: Tensor = _SymRowLogSumExp.apply(z, _as_scale(scale, z), bias, excluded, side)
    return lse


def _sym_tiles(
    z: Tensor, scale: Tensor, bias: Tensor | None, excluded: tuple[int, ...], side: int
) -> Iterator[tuple[int, int, int, int, Tensor]]:
    """Yield ``(i0, i1, j0, j1, tile)`` for the tiles on and above the diagonal of ``scale <z_i, z_j> + r_i + r_j``.

    Each tile is written into one reused buffer (float32/64), excluded diagonals masked; consume it before the next.
    """
    acc, mm = acc_dtype(z), _mm_dtype(z)
    z_mm = z.detach().to(mm)
    r = None if bias is None else bias.detach().to(acc)
    n = z.shape[0]
    buf = torch.empty(side, side, dtype=acc, device=z.device)
    for i0 in range(0, n, side):
        i1 = min(i0 + side, n)
        for j0 in range(i0, n, side):
            j1 = min(j0 + side, n)
            tile = _tile_scores(
                buf[: i1 - i0, : j1 - j0], z_mm[i0:i1], z_mm[j0:j1], scale, None, _diag(i0, i1, j0, j1, excluded)
            )
            if r is not None:
                tile.add_(r[i0:i1, None]).add_(r[None, j0:j1])
            yield i0, i1, j0, j1, tile


def _online_update(run_max: Tensor, run_sum: Tensor, tile_max: Tensor, exp_sum: Callable[[Tensor], Tensor]) -> None:
    """Merge one tile's maxima into running (max, sum) pairs in place; ``exp_sum(shift)`` sums exp(tile - shift)."""
    new_max = torch.maximum(run_max, tile_max)
    safe = torch.where(torch.isinf(new_max), 0.0, new_max)
    run_sum.mul_(torch.exp(run_max - safe)).add_(exp_sum(safe))
    run_max.copy_(new_max)


def _exp_sum(tile: Tensor, dim: int, shift: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``exp(tile - shift).sum(dim)``, ``shift`` broadcast along ``dim``; in place in ``tile``, or into ``out``."""
    shift = shift.unsqueeze(dim)
    shifted = tile.sub_(shift) if out is None else torch.sub(tile, shift, out=out)
    return shifted.exp_().sum(dim)


class _SymRowLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, z: Tensor, scale: Tensor, bias: Tensor | None, excluded: tuple[int, ...], side: int
    ) -> Tensor:
        acc, n = acc_dtype(z), z.shape[0]
        run_max = torch.full((n,), -math.inf, dtype=acc, device=z.device)
        run_sum = torch.zeros(n, dtype=acc, device=z.device)
        spare = torch.empty(side, side, dtype=acc, device=z.device)
        for i0, i1, j0, j1, tile in _sym_tiles(z, scale, bias, excluded, side):
            copy = spare[: i1 - i0, : j1 - j0]
            _online_update(
                run_max[i0:i1],
                run_sum[i0:i1],
                tile.amax(1),
                partial(_exp_sum, tile, 1, out=copy),
            )
            if j0 != i0:  # the transposed tile: rows j0:j1 against columns i0:i1
                _online_update(
                    run_max[j0:j1],
                    run_sum[j0:j1],
                    tile.amax(0),
                    partial(_exp_sum, tile, 0),
                )
        lse = torch.where(run_sum > 0, run_max + run_sum.log(), -math.inf)
        ctx.save_for_backward(z, scale, bias, lse)
        ctx.excluded, ctx.side = excluded, side
        return lse

    @staticmethod
    def backward(ctx: Any, grad_lse: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, None, None]:
        z, scale, bias, lse = ctx.saved_tensors
        side, excluded = ctx.side, ctx.excluded
        acc, mm = acc_dtype(z), _mm_dtype(z)
        z_mm = z.detach().to(mm)
        n = z.shape[0]
        g = grad_lse.to(acc)
        finite_lse = torch.where(torch.isinf(lse), 0.0, lse)
        grad_z = torch.zeros(z.shape, dtype=acc, device=z.device)
        grad_r = torch.zeros(n, dtype=acc, device=z.device) if bias is not None else None
        spare = torch.empty(side, side, dtype=acc, device=z.device)
        for i0, i1, j0, j1, tile in _sym_tiles(z, scale, bias, excluded, side):
            # u_ij = w_ij + w_ji, the total weight of the unordered pair: p_ij g_i + p_ji g_j
            rows_w = torch.sub(tile, finite_lse[i0:i1, None], out=spare[: i1 - i0, : j1 - j0])
            rows_w.exp_().mul_(g[i0:i1, None])
            cols_w = tile.sub_(finite_lse[None, j0:j1]).exp_().mul_(g[None, j0:j1])
            u = rows_w.add_(cols_w)  # on a diagonal tile cols_w is rows_w transposed, as it must be
            _accumulate(grad_z[i0:i1], grad_z[j0:j1] if j0 != i0 else None, u, z_mm[i0:i1], z_mm[j0:j1], mm)
            if grad_r is not None:
                grad_r[i0:i1] += u.sum(1)
                if j0 != i0:
                    grad_r[j0:j1] += u.sum(0)
        # sum_k <z_k, sum_j u_kj z_j> counts every ordered pair twice
        grad_scale = (z.detach().to(acc) * grad_z).sum() / 2 if ctx.needs_input_grad[1] else None
        grad_z.mul_(scale)
        return grad_z.to(z.dtype), grad_scale, grad_r, None, None


# --- sum of softplus ---------------------------------------------------------------------------------------------
def softplus_sum(
    a: Tensor, b: Tensor, *, scale: Tensor | float = 1.0, bias: Tensor | float = 0.0, block_size: int | None = None
) -> Tensor:
    r""":math:`\sum_{i,j} \log(1 + e^{\sigma\langle a_i, b_j\rangle + \beta})`, a scalar (float32 or float64).

    Differentiable in ``a``, ``b``, ``scale`` and ``bias``; ``block_size`` as in :func:`row_logsumexp`.
    """
    if not use_tiles(a.shape[0], b.shape[0], block_size):
        dtype = acc_dtype(a)
        return torch.nn.functional.softplus((a.to(dtype) @ b.to(dtype).T) * scale + bias).sum()
    rows, cols = _blocks(a.shape[0], b.shape[0], block_size)
    total: Tensor = _SoftplusSum.apply(a, b, _as_scale(scale, a), _as_scale(bias, a), rows, cols)
    return total


class _SoftplusSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, rows: int, cols: int) -> Tensor:
        total = torch.zeros((), dtype=torch.float64, device=a.device)
        for _, _, _, _, tile in _tiles(a, b, scale, rows, cols, col_bias=bias):
            total += torch.nn.functional.softplus(tile).sum(dtype=torch.float64)
        ctx.save_for_backward(a, b, scale, bias)
        ctx.rows, ctx.cols = rows, cols
        return total.to(acc_dtype(a))

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor, None, None]:
        a, b, scale, bias = ctx.saved_tensors
        acc, mm = acc_dtype(a), _mm_dtype(a)
        a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
        grad_a = torch.zeros(a.shape, dtype=acc, device=a.device)
        grad_b = torch.zeros(b.shape, dtype=acc, device=a.device)
        grad_bias = torch.zeros((), dtype=acc, device=a.device)
        for r0, r1, c0, c1, tile in _tiles(a, b, scale, ctx.rows, ctx.cols, col_bias=bias):
            weights = tile.sigmoid_().mul_(grad_out.to(acc))  # d softplus(x) / dx = sigmoid(x)
            grad_bias += weights.sum()
            _accumulate(grad_a[r0:r1], grad_b[c0:c1], weights, a_mm[r0:r1], b_mm[c0:c1], mm)
        grad_scale = (a.detach().to(acc) * grad_a).sum() if ctx.needs_input_grad[2] else None
        grad_a.mul_(scale)
        grad_b.mul_(scale)
        return grad_a.to(a.dtype), grad_b.to(b.dtype), grad_scale, grad_bias, None, None


# --- compositions --------------------------------------------------------------------------------------------------
def gaussian_logsumexp(z: Tensor, t: float, *, block_size: int | None) -> Tensor:
    r""":math:`\log \sum_{i \ne j} e^{-t\lVert z_i - z_j\rVert^2}` over the ordered pairs of distinct rows, a scalar.

    Through :func:`sym_row_logsumexp` with :math:`-t\lVert z_i - z_j\rVert^2 = 2t\langle z_i, z_j\rangle - t\lVert
    z_i\rVert^2 - t\lVert z_j\rVert^2`, exact for embeddings of any norm.
    """
    sq = z.to(acc_dtype(z)).pow(2).sum(1)
    rows = sym_row_logsumexp(z, scale=2.0 * t, bias=-t * sq, exclude_diagonal=True, block_size=block_size)
    return torch.logsumexp(rows, dim=0)
