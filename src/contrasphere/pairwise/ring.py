"""Ring reductions: no rank ever holds the global batch (Inf-CL's scheme, Wang et al. 2024).

Each rank keeps its own rows ``a`` (``N_r x D``) and its own block of columns ``b``. The column blocks travel
from rank to rank (``W - 1`` hops, each overlapping the tile computation of the block at hand), so a rank holds
its own block and the one in flight, ``O(N_r D)``, never ``O(N D)``; the reduction over each block is the engine's
(tiled or dense, as ``block_size`` says). In the backward pass the blocks travel the same way with their gradient
accumulators, and one last hop brings every block's gradient home: the gradient of rank ``r``'s rows against every
block, summed over the ranks, arrives at the block's owner. Per-rank work is ``N_r x N`` pairs forward (and the
tiles are recomputed backward, as everywhere in the engine).

The functions return this rank's rows' results; a loss sums its rows' terms and all-reduces the sum (see
:mod:`contrasphere.losses.ring`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import distributed
from ._tiling import _as_scale, _blocks, acc_dtype
from .rows import row_logsumexp, row_logsumexp_backward
from .sharding import SHARE_TILE, _whole
from .softplus import softplus_sum, softplus_sum_backward


def _block(kind: str, a: Tensor, blk: Tensor, scale: Tensor, bias: Tensor, own: bool, block_size: int | None) -> Tensor:
    with _whole():
        if kind == "lse":
            return row_logsumexp(a, blk, scale=scale, exclude_diagonal=own, block_size=block_size)
        return softplus_sum(a, blk, scale=scale, bias=bias, block_size=block_size)


class _Ring(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        a: Tensor,
        b: Tensor,
        scale: Tensor,
        bias: Tensor,
        sizes: list[int],
        exclude_own_diagonal: bool,
        block_size: int | None,
        kind: str,
    ) -> Tensor:
        w, r = distributed.world_size(), distributed.rank()
        block = F.pad(b.detach(), (0, 0, 0, max(sizes) - b.shape[0]))
        owner, parts = r, []
        for step in range(w):
            shift = distributed.RingShift([block]) if step < w - 1 else None  # the next block, in the background
            own = exclude_own_diagonal and owner == r
            parts.append(
                _block(kind, a.detach(), block[: sizes[owner]], scale.detach(), bias.detach(), own, block_size)
            )
            if shift is not None:
                block, owner = shift.wait()[0], (owner - 1) % w
        stacked = torch.stack(parts)
        out = torch.logsumexp(stacked, 0) if kind == "lse" else stacked.sum(0)
        ctx.save_for_backward(a, b, scale, bias, out)
        ctx.sizes, ctx.exclude, ctx.block_size, ctx.kind = sizes, exclude_own_diagonal, block_size, kind
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, None, None, None, None]:
        a, b, scale, bias, out = ctx.saved_tensors
        sizes, kind = ctx.sizes, ctx.kind
        w, r = distributed.world_size(), distributed.rank()
        block = F.pad(b.detach(), (0, 0, 0, max(sizes) - b.shape[0]))
        grad_block = torch.zeros_like(block, dtype=acc_dtype(b))
        grad_a = torch.zeros_like(a, dtype=acc_dtype(a))
        grad_scale, grad_bias = torch.zeros_like(scale), torch.zeros_like(bias)
        owner = r
        for step in range(w):
            n = sizes[owner]
            blk = block[:n]
            # each block's share of the global reduction, from the global result: no block is recomputed whole
            rows, cols = _blocks(a.shape[0], n, ctx.block_size or SHARE_TILE)
            if n == 0 or a.shape[0] == 0:  # a rank without rows: nothing to add, but it passes the blocks on
                g_a, g_b, g_s, g_bias = torch.zeros_like(a, dtype=grad_a.dtype), blk.new_zeros(blk.shape), None, None
            elif kind == "lse":
                excluded = (0,) if ctx.exclude and owner == r else ()
                g_a, g_b, g_s, _ = row_logsumexp_backward(a, blk, scale, None, out, grad, excluded, rows, cols)
                g_bias = None
            else:
                g_a, g_b, g_s, g_bias = softplus_sum_backward(a, blk, scale, bias, grad, rows, cols, need_scale=True)
            grad_a += g_a
            grad_block[:n] += g_b
            grad_scale += 0 if g_s is None else g_s
            grad_bias += 0 if g_bias is None else g_bias
            # pass the block on with the gradients gathered so far; the last hop only brings gradients home
            tensors = [block, grad_block] if step < w - 1 else [grad_block]
            received = distributed.RingShift(tensors).wait()
            if step < w - 1:
                block, grad_block = received
                owner = (owner - 1) % w
            else:
                grad_block = received[0]
        return (
            grad_a.to(a.dtype),
            grad_block[: b.shape[0]].to(b.dtype),
            grad_scale,
            grad_bias,
            None,
            None,
            None,
            None,
        )


def _prepare(a: Tensor, scale: Tensor | float, bias: Tensor | float) -> tuple[Tensor, Tensor]:
    return _as_scale(scale, a), _as_scale(bias, a)


def ring_row_logsumexp(
    a: Tensor,
    b: Tensor,
    sizes: list[int],
    *,
    scale: Tensor | float = 1.0,
    exclude_own_diagonal: bool = False,
    block_size: int | None = None,
) -> Tensor:
    r""":math:`\log \sum_j e^{\sigma\langle a_i, b_j\rangle}` for this rank's rows ``a`` over every rank's ``b``.

    ``sizes`` are the ranks' row counts of ``b`` (:func:`contrasphere.distributed.row_counts`);
    ``exclude_own_diagonal`` leaves out the pairs ``(i, i)`` of this rank's own block (``a`` and ``b`` the same
    rows, as NT-Xent's self-pairs). Returns ``(N_r,)``; without a process group it is :func:`row_logsumexp`.
    """
    if distributed.world_size() == 1:
        return row_logsumexp(a, b, scale=scale, exclude_diagonal=exclude_own_diagonal, block_size=block_size)
    scale_t, bias_t = _prepare(a, scale, 0.0)
    out: Tensor = _Ring.apply(a, b, scale_t, bias_t, sizes, exclude_own_diagonal, block_size, "lse")
    return out


def ring_softplus_sum(
    a: Tensor,
    b: Tensor,
    sizes: list[int],
    *,
    scale: Tensor | float = 1.0,
    bias: Tensor | float = 0.0,
    block_size: int | None = None,
) -> Tensor:
    r""":math:`\sum_{i, j} \log(1 + e^{\sigma\langle a_i, b_j\rangle + \beta})` over this rank's rows and every
    rank's ``b``, a scalar; without a process group it is :func:`softplus_sum`."""
    if distributed.world_size() == 1:
        return softplus_sum(a, b, scale=scale, bias=bias, block_size=block_size)
    scale_t, bias_t = _prepare(a, scale, bias)
    out: Tensor = _Ring.apply(a, b, scale_t, bias_t, sizes, False, block_size, "softplus")
    return out
