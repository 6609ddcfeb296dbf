"""The sharded engine in one process: every pair is computed by exactly one rank, and the ranks' partial
reductions combine into the whole one (values; the gradients are checked on real process groups in
``test_distributed.py``)."""

from __future__ import annotations

import pytest
import torch

from contrasphere import pairwise as P
from contrasphere.pairwise.sharding import bounds, sym_blocks


@pytest.mark.parametrize("world", range(1, 10))
@pytest.mark.parametrize("n", [1, 5, 23])
def test_every_pair_above_the_diagonal_is_computed_once(world, n):
    edges = bounds(n, world)
    count = torch.zeros(n, n, dtype=torch.long)
    for rank in range(world):
        count[edges[rank] : edges[rank + 1], edges[rank] : edges[rank + 1]] += 1  # the diagonal block
        for x0, x1, y0, y1 in sym_blocks(world, rank, edges):
            count[x0:x1, y0:y1] += 1
            count[y0:y1, x0:x1] += 1  # the same pairs, used for the columns' rows
    assert torch.equal(count, torch.ones(n, n, dtype=torch.long))


def test_the_share_of_the_symmetric_pass_falls_as_one_over_the_ranks():
    n = 4096
    for world in (2, 4, 8, 16):
        edges = bounds(n, world)
        most = max(
            (edges[r + 1] - edges[r]) ** 2 / 2
            + sum((x1 - x0) * (y1 - y0) for x0, x1, y0, y1 in sym_blocks(world, r, edges))
            for r in range(world)
        )
        assert most <= 1.05 * (n * n / 2) / world + n  # within 5 % of an even split of the upper triangle


def _ranks(fn, world):
    out = []
    for rank in range(world):
        with P.sharded(rank, world, simulate=True):
            out.append(fn())
    return out


@pytest.mark.parametrize("world", [2, 3, 4, 7])
@pytest.mark.parametrize("block", [0, 3])
def test_the_ranks_partial_reductions_combine_into_the_whole(world, block):
    g = torch.Generator().manual_seed(world)
    n, m = 17, 13
    a, b = torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(m, 5, generator=g, dtype=torch.float64)
    ids_a, ids_b = torch.randint(0, 6, (n,), generator=g), torch.randint(0, 6, (m,), generator=g)
    bias = torch.randn(n, generator=g, dtype=torch.float64)
    row = dict(scale=1.3, exclude_offsets=(2,), row_ids=ids_a, col_ids=ids_b, detached_scale=0.4, block_size=block)
    want = P.row_logsumexp(a, b, col_bias=bias[:m], **row)
    got = torch.stack(_ranks(lambda: P.row_logsumexp(a, b, col_bias=bias[:m], **row), world)).logsumexp(0)
    torch.testing.assert_close(got, want)

    both = dict(scale=0.7, row_bias=bias, col_bias=bias[:m].flip(0), exclude_diagonal=True, block_size=block)
    want_rows, want_cols = P.row_col_logsumexp(a, b, **both)
    parts = _ranks(lambda: P.row_col_logsumexp(a, b, **both), world)
    torch.testing.assert_close(torch.stack([p[0] for p in parts]).logsumexp(0), want_rows)
    torch.testing.assert_close(torch.stack([p[1] for p in parts]).logsumexp(0), want_cols)

    sym = dict(scale=1.1, bias=bias, exclude_offsets=(4, -4), ids=ids_a, block_size=block)
    want = P.sym_row_logsumexp(a, **sym)
    got = torch.stack(_ranks(lambda: P.sym_row_logsumexp(a, **sym), world)).logsumexp(0)
    torch.testing.assert_close(got, want)

    want = P.softplus_sum(a, b, scale=2.0, bias=-1.5, block_size=block)
    got = sum(_ranks(lambda: P.softplus_sum(a, b, scale=2.0, bias=-1.5, block_size=block), world))
    torch.testing.assert_close(got, want)


def test_one_rank_or_none_changes_nothing():
    a = torch.randn(6, 3, dtype=torch.float64)
    with P.sharded(0, 1) as shard:
        assert shard is None
        torch.testing.assert_close(P.sym_row_logsumexp(a), P.sym_row_logsumexp(a, block_size=0))
    with pytest.raises(ValueError, match="rank must be in"):
        with P.sharded(3, 2):
            pass
