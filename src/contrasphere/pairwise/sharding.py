"""The engine under data parallelism: each rank computes only its share of the tiles (local rows).

Inside :func:`sharded` every reduction of the engine still takes the *gathered* embeddings (the same on every rank)
and still returns the *global* result on every rank, but each rank computes only ``1 / W`` of the score matrix and
the partial reductions are combined with collectives of ``O(N)`` numbers (never ``N x N``, never ``N x D``):

- :func:`row_logsumexp` and :func:`softplus_sum`: rank ``r`` takes the rows of its block ``B_r`` against every
  column; the rows' log-sum-exps are gathered, SigLIP's sums are all-reduced;
- :func:`row_col_logsumexp` (CLIP): rank ``r`` takes its rows against every column in one pass; its rows'
  log-sum-exps are complete, its columns' are partial and are combined across ranks in log space
  (:func:`contrasphere.distributed.all_logsumexp`);
- :func:`sym_row_logsumexp` (NT-Xent, SupCon, uniformity): the matrix is symmetric, so of the ``W x W`` blocks only
  those on and above the diagonal are computed, each once, for its rows and its columns, spread evenly over the
  ranks (rank ``r`` takes its diagonal block and the blocks ``(r, r + k mod W)``, ``0 < k < W / 2``; a block at
  distance ``W / 2`` is split by rows between its two ranks): about ``N^2 / 2W`` pairs per rank.

Why the gradients are exact: every rank computes the same global loss ``L``. Each collective's backward is the
adjoint of its forward, so rank ``r``'s tiles receive ``W`` times their share of the upstream gradient (all ``W``
copies of ``L`` depend on them); the gathered embeddings' backward sums the shares of all ranks, giving
``W dL/dz_r`` for rank ``r``'s rows, as with full-matrix gathering, and DistributedDataParallel's average divides
the ``W`` back out. A replicated scalar (a learnable logit scale) gets ``W`` times its rank's share on each rank
plus the part computed on every rank; the average over ranks is exactly its gradient
(:class:`contrasphere.losses.GatherLoss` averages the loss's own parameters).

``simulate=True`` runs one rank's share in a single process without collectives (the other ranks' parts are
missing, so values are wrong): it exists to time a rank's work for many ``W`` on one machine.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import distributed
from ._tiling import _excluded, acc_dtype


@dataclass(frozen=True)
class Shard:
    """This process's place among the ranks that share the reductions."""

    rank: int
    world: int
    simulate: bool = False


_CURRENT: ContextVar[Shard | None] = ContextVar("contrasphere_pairwise_shard", default=None)


@contextlib.contextmanager
def sharded(rank: int | None = None, world: int | None = None, *, simulate: bool = False) -> Iterator[Shard | None]:
    """Within this block the engine's reductions compute only this rank's share of the tiles (see the module).

    Defaults to the process group's rank and size; with one rank (or no process group) it changes nothing. Every
    rank must make the same engine calls on the same gathered tensors, as a loss on a gathered batch does.
    """
    if world is None:
        world = distributed.world_size()
    if rank is None:
        rank = distributed.rank()
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in 0..{world - 1}, got {rank}")
    shard = Shard(rank, world, simulate) if world > 1 else None
    token = _CURRENT.set(shard)
    try:
        yield shard
    finally:
        _CURRENT.reset(token)


def current() -> Shard | None:
    """The shard of the enclosing :func:`sharded` block, or None (every reduction computes all of its tiles)."""
    return _CURRENT.get()


@contextlib.contextmanager
def _whole() -> Iterator[None]:
    """The sub-reductions of one share run unsharded."""
    token = _CURRENT.set(None)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def bounds(n: int, world: int) -> list[int]:
    """The row blocks ``B_r = [bounds[r], bounds[r + 1])`` of ``n`` rows over ``world`` ranks, as even as can be."""
    return [round(n * r / world) for r in range(world + 1)]


def _empty_like_rows(x: Tensor, *others: Tensor | None) -> Tensor:
    """An empty ``(0,)`` result that is still part of the graph (a rank with no rows takes part in the backward)."""
    zero = sum((t.sum() * 0 for t in (x, *others) if isinstance(t, Tensor) and t.requires_grad), torch.zeros(()))
    return torch.zeros(0, dtype=acc_dtype(x), device=x.device) + zero.to(x.device)


def _gather_rows(local: Tensor, sizes: list[int], shard: Shard) -> Tensor:
    if shard.simulate:
        start = sum(sizes[: shard.rank])
        total = sum(sizes)
        pad = (start, total - start - local.shape[0])
        return torch.nn.functional.pad(local, pad, value=-math.inf)
    return distributed.all_gather_rows(local, sizes)


def _combine_lse(partial: Tensor, shard: Shard) -> Tensor:
    return partial if shard.simulate else distributed.all_logsumexp(partial)


def _combine_sum(partial: Tensor, shard: Shard) -> Tensor:
    return partial if shard.simulate else distributed.all_reduce_with_grad(partial)


SHARE_TILE = 1024  # the tile side of a share's sub-blocks when block_size is None
SHARE_DENSE_MAX_PAIRS = 1 << 20  # a sub-block this small is computed densely (one tile's worth of pairs)


def _sub_block_size(block_size: int | None, n: int, m: int) -> int | None:
    """The tiles of a share's sub-block. The automatic choice of the whole matrix (dense up to 4M pairs) would
    make the sub-blocks of many ranks dense, where square tiles are faster (dense computes a symmetric block whole,
    tiles only its upper half): with ``block_size=None`` a sub-block above one tile's worth of pairs is tiled."""
    if block_size is not None:
        return block_size
    return SHARE_TILE if n * m > SHARE_DENSE_MAX_PAIRS else 0


def _rows(x: Tensor | None, r0: int, r1: int) -> Tensor | None:
    return None if x is None else x[r0:r1]


def row_logsumexp_shard(
    shard: Shard,
    a: Tensor,
    b: Tensor,
    *,
    scale: Tensor | float,
    col_bias: Tensor | None,
    exclude_diagonal: bool,
    exclude_offsets: tuple[int, ...],
    row_ids: Tensor | None,
    col_ids: Tensor | None,
    detached_scale: float,
    block_size: int | None,
) -> Tensor:
    from .rows import row_logsumexp

    edges = bounds(a.shape[0], shard.world)
    r0, r1 = edges[shard.rank], edges[shard.rank + 1]
    if r1 == r0:
        local = _empty_like_rows(a, b, scale if isinstance(scale, Tensor) else None, col_bias)
    else:
        with _whole():  # global pair (i, j) is local (i - r0, j): offset k becomes k + r0
            local = row_logsumexp(
                a[r0:r1], b, scale=scale, col_bias=col_bias,
                exclude_offsets=tuple(k + r0 for k in _excluded(exclude_diagonal, exclude_offsets)),
                row_ids=_rows(row_ids, r0, r1), col_ids=col_ids, detached_scale=detached_scale,
                block_size=_sub_block_size(block_size, r1 - r0, b.shape[0]),
            )  # fmt: skip
    return _gather_rows(local, [edges[r + 1] - edges[r] for r in range(shard.world)], shard)


def row_col_logsumexp_shard(
    shard: Shard,
    a: Tensor,
    b: Tensor,
    *,
    scale: Tensor | float,
    row_bias: Tensor | None,
    col_bias: Tensor | None,
    exclude_diagonal: bool,
    exclude_offsets: tuple[int, ...],
    row_ids: Tensor | None,
    col_ids: Tensor | None,
    detached_scale: float,
    block_size: int | None,
) -> tuple[Tensor, Tensor]:
    from .rows import row_col_logsumexp

    edges = bounds(a.shape[0], shard.world)
    r0, r1 = edges[shard.rank], edges[shard.rank + 1]
    if r1 == r0:
        rows = _empty_like_rows(a, b, scale if isinstance(scale, Tensor) else None, row_bias, col_bias)
        cols = torch.full((b.shape[0],), -math.inf, dtype=acc_dtype(a), device=a.device) + rows.sum()
    else:
        with _whole():
            rows, cols = row_col_logsumexp(
                a[r0:r1], b, scale=scale, row_bias=_rows(row_bias, r0, r1), col_bias=col_bias,
                exclude_offsets=tuple(k + r0 for k in _excluded(exclude_diagonal, exclude_offsets)),
                row_ids=_rows(row_ids, r0, r1), col_ids=col_ids, detached_scale=detached_scale,
                block_size=_sub_block_size(block_size, r1 - r0, b.shape[0]),
            )  # fmt: skip
    sizes = [edges[r + 1] - edges[r] for r in range(shard.world)]
    return _gather_rows(rows, sizes, shard), _combine_lse(cols, shard)


def sym_blocks(world: int, rank: int, edges: list[int]) -> list[tuple[int, int, int, int]]:
    """The off-diagonal blocks ``(x0, x1, y0, y1)`` that rank ``rank`` computes besides its diagonal block.

    Over all ranks every block above the diagonal is computed exactly once (for its rows and its columns): the
    blocks at cyclic distance ``k < W / 2`` by the rank of their row block; at distance ``W / 2`` (even ``W``)
    the rows of each block are split in halves between its two ranks.
    """
    out = []
    for k in range(1, (world - 1) // 2 + 1):
        c = (rank + k) % world
        out.append((edges[rank], edges[rank + 1], edges[c], edges[c + 1]))
    if world % 2 == 0:  # the block between r and r + W/2 (rows of the lower-numbered one), split by rows
        low = rank if rank < world // 2 else rank - world // 2
        high = low + world // 2
        x0, x1 = edges[low], edges[low + 1]
        middle = (x0 + x1) // 2
        part = (x0, middle) if rank == low else (middle, x1)
        if part[1] > part[0]:
            out.append((part[0], part[1], edges[high], edges[high + 1]))
    return _merged(out)


def _merged(blocks: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Blocks with the same rows and adjacent columns as one (a rank's blocks are one or two column ranges): fewer,
    larger reductions, which matters when there are many ranks and small blocks."""
    out: list[tuple[int, int, int, int]] = []
    for block in sorted(blocks):
        if out and out[-1][:2] == block[:2] and out[-1][3] == block[2]:
            out[-1] = (*out[-1][:3], block[3])
        else:
            out.append(block)
    return out


def sym_row_logsumexp_shard(
    shard: Shard,
    z: Tensor,
    *,
    scale: Tensor | float,
    bias: Tensor | None,
    excluded: tuple[int, ...],
    ids: Tensor | None,
    block_size: int | None,
) -> Tensor:
    from .rows import row_col_logsumexp
    from .symmetric import sym_row_logsumexp

    n = z.shape[0]
    edges = bounds(n, shard.world)
    blocks = sym_blocks(shard.world, shard.rank, edges)
    acc = acc_dtype(z)
    pieces: list[tuple[int, Tensor]] = []  # (first row, log-sum-exps of the rows that follow)
    r0, r1 = edges[shard.rank], edges[shard.rank + 1]
    with _whole():
        if r1 > r0:
            diagonal = sym_row_logsumexp(
                z[r0:r1], scale=scale, bias=_rows(bias, r0, r1), exclude_offsets=excluded, exclude_diagonal=False,
                ids=_rows(ids, r0, r1), block_size=_sub_block_size(block_size, r1 - r0, r1 - r0),
            )  # fmt: skip
            pieces.append((r0, diagonal))
        for x0, x1, y0, y1 in blocks:
            if y1 == y0:
                continue
            rows, cols = row_col_logsumexp(
                z[x0:x1], z[y0:y1], scale=scale, row_bias=_rows(bias, x0, x1), col_bias=_rows(bias, y0, y1),
                exclude_offsets=tuple(k - (y0 - x0) for k in excluded), row_ids=_rows(ids, x0, x1),
                col_ids=_rows(ids, y0, y1), block_size=_sub_block_size(block_size, x1 - x0, y1 - y0),
            )  # fmt: skip
            pieces += [(x0, rows), (y0, cols)]
    padded = [torch.nn.functional.pad(p, (start, n - start - p.shape[0]), value=-math.inf) for start, p in pieces]
    if not padded:
        partial = torch.full((n,), -math.inf, dtype=acc, device=z.device) + _empty_like_rows(z, bias).sum()
    else:
        partial = torch.logsumexp(torch.stack(padded), dim=0)
    return _combine_lse(partial, shard)


def softplus_sum_shard(
    shard: Shard, a: Tensor, b: Tensor, *, scale: Tensor | float, bias: Tensor | float, block_size: int | None
) -> Tensor:
    from .softplus import softplus_sum

    edges = bounds(a.shape[0], shard.world)
    r0, r1 = edges[shard.rank], edges[shard.rank + 1]
    if r1 == r0:
        local = _empty_like_rows(a, b, *(t for t in (scale, bias) if isinstance(t, Tensor))).sum()
    else:
        with _whole():
            block = _sub_block_size(block_size, r1 - r0, b.shape[0])
            local = softplus_sum(a[r0:r1], b, scale=scale, bias=bias, block_size=block)
    return _combine_sum(local, shard)
