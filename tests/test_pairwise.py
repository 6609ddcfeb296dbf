"""The tiled engine against the dense reference: value and gradient, uneven tiles, masks, dtypes, memory."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import near, sphere

from contrasphere import functional as CF
from contrasphere import pairwise as P


def _grads(fn, inputs):
    value = fn(*inputs)
    weights = torch.linspace(-1, 2, value.numel(), dtype=value.dtype).reshape(value.shape)
    return (value.detach(), *torch.autograd.grad((value * weights).sum(), inputs, allow_unused=True))


def assert_same(fn_dense, fn_tiled, inputs, tol=1e-10):
    for got, want in zip(_grads(fn_tiled, inputs), _grads(fn_dense, inputs)):
        assert (got is None) == (want is None)  # an input the loss does not differentiate (a MoCo queue)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("n,m,block", [(37, 37, 5), (37, 50, 8), (50, 37, 7), (9, 9, 9), (9, 4, 100), (1, 6, 1)])
@pytest.mark.parametrize("exclude", [False, True])
def test_row_logsumexp_tiles_equal_dense(n, m, block, exclude):
    a = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(m, 6, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(m, dtype=torch.float64, requires_grad=True)

    def run(block_size):
        return lambda *x: P.row_logsumexp(
            x[0], x[1], scale=x[2], col_bias=x[3], exclude_diagonal=exclude, block_size=block_size
        )

    if n == 1 and exclude and m >= 1:  # the one row keeps m - 1 pairs
        assert torch.isfinite(run(block)(a, b, scale, bias)).all()
    assert_same(run(0), run(block), (a, b, scale, bias))


@pytest.mark.parametrize("n,block", [(37, 5), (10, 3), (33, 33), (20, 64), (2, 1)])
@pytest.mark.parametrize("exclude", [False, True])
def test_symmetric_tiles_equal_dense(n, block, exclude):
    z = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(n, dtype=torch.float64, requires_grad=True)

    def run(block_size):
        return lambda *x: P.sym_row_logsumexp(
            x[0], scale=x[1], bias=x[2], exclude_diagonal=exclude, block_size=block_size
        )

    assert_same(run(0), run(block), (z, scale, bias))
    # and the symmetric reduction is the general one with b = a and the bias split between rows and columns
    general = P.row_logsumexp(z, z, scale=scale, col_bias=bias, exclude_diagonal=exclude, block_size=0) + bias
    torch.testing.assert_close(run(block)(z, scale, bias), general)


@pytest.mark.parametrize("n,m,block", [(37, 50, 8), (50, 37, 7), (10, 10, 3), (5, 9, 100)])
def test_row_and_column_tiles_equal_dense(n, m, block):
    a = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(m, 6, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)

    def run(block_size):
        return lambda *x: torch.cat(P.row_col_logsumexp(x[0], x[1], scale=x[2], block_size=block_size))

    assert_same(run(0), run(block), (a, b, scale))
    rows, cols = P.row_col_logsumexp(a, b, scale=scale, block_size=block)
    torch.testing.assert_close(rows, P.row_logsumexp(a, b, scale=scale, block_size=0))
    torch.testing.assert_close(cols, P.row_logsumexp(b, a, scale=scale, block_size=0))


@pytest.mark.parametrize("n,m,block", [(37, 50, 8), (50, 37, 7), (5, 5, 2)])
def test_softplus_sum_tiles_equal_dense(n, m, block):
    a = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(m, 6, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)

    def run(block_size):
        return lambda *x: P.softplus_sum(x[0], x[1], scale=x[2], bias=x[3], block_size=block_size)

    assert_same(run(0), run(block), (a, b, scale, bias), tol=1e-8)  # sums of ~2000 terms of size ~10


def test_online_maximum_handles_scores_far_apart():
    # tiles whose maxima differ by hundreds: a running sum without the running maximum would overflow or vanish
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], dtype=torch.float64)
    for scale in (1.0, 400.0, 2000.0):
        dense = P.row_logsumexp(a, b, scale=scale, block_size=0)
        torch.testing.assert_close(P.row_logsumexp(a, b, scale=scale, block_size=1), dense)
        assert torch.isfinite(dense).all()


def test_fully_excluded_rows_give_minus_infinity():
    z = torch.randn(1, 3)
    for block in (0, 1):
        assert P.sym_row_logsumexp(z, exclude_diagonal=True, block_size=block).item() == -math.inf
        assert P.row_logsumexp(z, z, exclude_diagonal=True, block_size=block).item() == -math.inf


def test_a_fully_excluded_row_gets_zero_gradient_dense_and_tiled():
    """Row 0 shares its id with every column: its log-sum-exp is -inf, and an incoming gradient on it adds nothing
    (no NaN) to the gradients."""
    a = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    row_ids, col_ids = torch.tensor([9, 10, 11, 12, 13, 14, 15]), torch.full((5,), 9)  # rows 1..6 keep every column
    grads = []
    for block in (0, 2):
        lse = P.row_col_logsumexp(a, b, scale=2.0, row_ids=row_ids, col_ids=col_ids, block_size=block)[0]
        assert lse[0] == -math.inf and torch.isfinite(lse[1:]).all()
        grads.append(torch.autograd.grad(lse, (a, b), torch.ones(7, dtype=torch.float64)))  # row 0's too
    for dense, tiled in zip(*grads):
        assert torch.isfinite(dense).all() and torch.allclose(dense, tiled, rtol=1e-10, atol=1e-12)
    assert float(grads[0][0][0].abs().max()) == 0.0


def _labels(n):
    return torch.arange(n) % 5


LOSSES = {
    "uniformity": lambda a, b, bs: CF.uniformity(a, t=2.0, block_size=bs),
    "align_uniform": lambda a, b, bs: CF.align_uniform(a, b, block_size=bs),
    "uniformity_with_queue": lambda a, b, bs: CF.uniformity_with_queue(a, b, t=3.0, block_size=bs),
    "info_nce": lambda a, b, bs: CF.info_nce(a, b, temperature=0.1, block_size=bs),
    "info_nce+negatives": lambda a, b, bs: CF.info_nce(a, b, negatives=b[:11] * 0.5, block_size=bs),
    "nt_xent": lambda a, b, bs: CF.nt_xent(a, b, temperature=0.2, block_size=bs),
    "clip": lambda a, b, bs: CF.clip_loss(a, b, logit_scale=14.0, block_size=bs),
    "siglip": lambda a, b, bs: CF.siglip_loss(a, b, block_size=bs),
    "supcon": lambda a, b, bs: CF.supcon(torch.cat([a, b]), _labels(2 * a.shape[0]), block_size=bs),
    "dcl": lambda a, b, bs: CF.dcl(a, b, block_size=bs),
    "dclw": lambda a, b, bs: CF.dclw(a, b, block_size=bs),
    "debiased": lambda a, b, bs: CF.debiased_nt_xent(a, b, temperature=0.3, block_size=bs),
    "hard_negative": lambda a, b, bs: CF.hard_negative_nt_xent(a, b, temperature=0.3, beta=0.7, block_size=bs),
    "cmc": lambda a, b, bs: CF.cmc(torch.stack([a, b, a.flip(1)]), block_size=bs),
    "symile": lambda a, b, bs: CF.symile([a, b, b.flip(1)], logit_scale=3.0, block_size=bs),
    "margin_info_nce": lambda a, b, bs: CF.margin_info_nce(a, b, kind="angular", temperature=0.2, block_size=bs),
    "cwcl": lambda a, b, bs: CF.cwcl(a, b, block_size=bs),
    "macl": lambda a, b, bs: CF.macl(a, b, block_size=bs),
    "poly_view": lambda a, b, bs: CF.poly_view(torch.stack([a, b, a.flip(1)]), method="arithmetic", block_size=bs),
    "feature_transformation": lambda a, b, bs: CF.feature_transformation(
        a,
        b,
        b.detach().flip(0),
        pos_lambda=1.3,
        neg_lambda=0.4,
        neg_index=torch.arange(a.shape[0]).roll(1),
        block_size=bs,
    ),
    "decoupled_uniformity": lambda a, b, bs: CF.decoupled_uniformity(
        torch.stack([a, b]), a[:, :2].detach(), block_size=bs
    ),
    "mochi": lambda a, b, bs: CF.mochi(
        a, b, b.detach().flip(0), n_hard=9, generator=torch.Generator().manual_seed(0), block_size=bs
    ),
    "i_mix": lambda a, b, bs: CF.i_mix(a, b, torch.arange(a.shape[0]).roll(2), 0.3, block_size=bs),
    "moco": lambda a, b, bs: CF.moco_info_nce(a, b, b.detach().flip(0) * 0.9, block_size=bs),
    "align_uniform_queue": lambda a, b, bs: CF.align_uniform_queue(a, b, b.detach().flip(0), block_size=bs),
    "euclidean_clip": lambda a, b, bs: CF.euclidean_clip(1.3 * a, b, logit_scale=2.0, block_size=bs),
    "kernel_info_nce": lambda a, b, bs: CF.kernel_info_nce(1.3 * a, b, temperature=0.4, block_size=bs),
    "gte_info_nce": lambda a, b, bs: CF.gte_info_nce(a, b, temperature=0.3, block_size=bs),
    "hn_nce": lambda a, b, bs: CF.hn_nce(a, b, logit_scale=8.0, alpha=0.7, beta1=0.5, beta2=0.9, block_size=bs),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("block", [1, 7, 16])
def test_every_pairwise_loss_is_the_same_tiled(name, block):
    z_a = sphere(29, 8, seed=51, grad=True)  # 29 and 58 rows: no tile size here divides them
    z_b = near(z_a, 0.5).requires_grad_()
    loss = LOSSES[name]
    assert_same(lambda a, b: loss(a, b, 0), lambda a, b: loss(a, b, block), (z_a, z_b), tol=1e-9)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_tiles_in_float32_and_bfloat16(name):
    z_a = sphere(70, 32, seed=52, dtype=torch.float32)
    z_b = near(z_a, 0.3)
    loss = LOSSES[name]
    dense = loss(z_a, z_b, 0)
    torch.testing.assert_close(loss(z_a, z_b, 16), dense, rtol=1e-5, atol=1e-5)
    a16, b16 = z_a.bfloat16().requires_grad_(), z_b.bfloat16().requires_grad_()
    tiled = loss(a16, b16, 16)  # bfloat16 products, float32 reductions
    assert tiled.dtype == torch.float32
    torch.testing.assert_close(tiled, loss(a16.detach().float(), b16.detach().float(), 0), rtol=3e-2, atol=3e-2)
    grads = torch.autograd.grad(tiled, (a16, b16), allow_unused=True)
    assert all(g is None or (g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all()) for g in grads)


def test_automatic_choice_and_bad_block_size():
    assert not P.use_tiles(100, 100, None) and P.use_tiles(4096, 4096, None)
    assert P.use_tiles(3, 3, 2) and not P.use_tiles(10**6, 10**6, 0)
    with pytest.raises(ValueError, match="block_size must be"):
        CF.nt_xent(sphere(4, 3), sphere(4, 3), block_size=-1)
    with pytest.raises(ValueError, match="block_size must be"):
        CF.uniformity(sphere(4, 3), block_size=2.5)


def _saved_bytes(fn, *inputs):
    """Bytes the autograd graph keeps for the backward pass (what stays allocated between forward and backward)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.data_ptr()] = max(seen.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs).backward()
    return sum(seen.values())


@pytest.mark.parametrize("name", ["nt_xent", "clip", "siglip", "uniformity", "supcon", "dcl"])
def test_tiles_keep_memory_linear(name):
    n, d = 1000, 16
    z_a = sphere(n, d, seed=53, dtype=torch.float32, grad=True)
    z_b = near(z_a, 0.4).requires_grad_()
    loss = LOSSES[name]
    tiled = _saved_bytes(lambda a, b: loss(a, b, 128), z_a, z_b)
    dense = _saved_bytes(lambda a, b: loss(a, b, 0), z_a, z_b)
    linear = 4 * (2 * n) * d * 4  # a few copies of the (2N, D) embeddings in float32
    assert tiled <= linear, f"tiled {name} keeps {tiled} bytes for backward"
    assert dense >= n * n * 4  # the dense path keeps at least one N x N matrix


def _ids(k, seed):
    return torch.randint(0, max(k // 3, 1), (k,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n,m,block", [(37, 37, 5), (23, 31, 8), (9, 4, 100)])
def test_sample_ids_and_a_detached_scale_tile_like_dense(n, m, block):
    a = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(m, 6, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    rows, cols = _ids(n, 1), _ids(m, 2)

    def run(block_size):
        return lambda *x: P.row_logsumexp(
            x[0], x[1], scale=x[2], row_ids=rows, col_ids=cols, detached_scale=0.8, block_size=block_size
        )

    assert_same(run(0), run(block), (a, b, scale))
    if n == m:

        def both(block_size):
            return lambda *x: torch.cat(
                P.row_col_logsumexp(
                    x[0],
                    x[1],
                    scale=x[2],
                    exclude_diagonal=True,
                    row_ids=rows,
                    col_ids=rows,
                    detached_scale=0.8,
                    block_size=block_size,
                )  # fmt: skip
            )

        assert_same(both(0), both(block), (a, b, scale))
        sym = lambda bs: lambda *x: P.sym_row_logsumexp(x[0], scale=x[1], ids=rows, block_size=bs)  # noqa: E731
        assert_same(sym(0), sym(block), (a, scale))


def test_sample_ids_and_detached_scale_are_what_they_say():
    a = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, 3, dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4])
    got = P.row_logsumexp(a, b, scale=2.0, row_ids=ids, col_ids=ids, detached_scale=0.5, block_size=3)
    values = got.detach()
    scores = 2.5 * (a @ b.T).detach()
    for i in range(8):  # the value: scores at scale 2 + 0.5 over the columns of other ids
        keep = ids != ids[i]
        assert float(values[i]) == pytest.approx(float(torch.logsumexp(scores[i, keep], 0)), rel=1e-12)
    (grad,) = torch.autograd.grad(got.sum(), a)
    p = torch.softmax(scores.masked_fill(ids[:, None] == ids[None, :], -math.inf), dim=1)
    torch.testing.assert_close(grad, 2.0 * p @ b)  # the gradient flows through scale 2 alone
    with pytest.raises(ValueError, match="go together"):
        P.row_logsumexp(a, b, row_ids=ids)
    with pytest.raises(ValueError, match="integer ids"):
        P.row_logsumexp(a, b, row_ids=ids.double(), col_ids=ids)


@pytest.mark.parametrize("n,m,block", [(23, 31, 8), (31, 23, 5), (9, 4, 100)])
def test_row_and_column_pass_with_biases_and_offsets_tiles_like_dense(n, m, block):
    a = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(m, 6, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    row_bias = torch.randn(n, dtype=torch.float64, requires_grad=True)
    col_bias = torch.randn(m, dtype=torch.float64, requires_grad=True)

    def run(block_size):
        return lambda *x: torch.cat(
            P.row_col_logsumexp(
                x[0], x[1], scale=x[2], row_bias=x[3], col_bias=x[4], exclude_offsets=(-3, 2), block_size=block_size
            )
        )

    assert_same(run(0), run(block), (a, b, scale, row_bias, col_bias))
