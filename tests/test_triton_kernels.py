"""The Triton kernels against a dense float64 reference: values and gradients, uneven tiles, masks, dtypes.

Run under the Triton interpreter on CPU tensors (``TRITON_INTERPRET=1``, set here unless the environment says
otherwise); with ``TRITON_INTERPRET=0`` on a machine with a GPU the same tests run the compiled kernels on CUDA.
The reference is computed in float64 from the same (for fp16/bf16: already rounded) inputs.

Tolerances:

- values (log-sum-exps, softplus sums) and bias gradients (sums of float32 weights), any input dtype: the largest
  error at most 1e-5 of the largest entry (``_check``). The products of fp16/bf16 inputs are exact in float32 and
  every score, maximum, sum and weight is float32, so half-precision inputs cost nothing beyond float32 rounding
  (~4e-7 measured); a score rounded to bf16 (the bias the issue describes) would be off by ~1e-2.
- embedding gradients (``_check_grad``), elementwise: ``|got - want| <= r * (|u| @ |b|) + 1e-5 * max |want|``,
  with ``r`` the unit roundoff of the one rounding the kernels make, of the weights ``u`` to the input dtype for
  the second product (as flash-attention rounds its probabilities): 2^-8 for bf16, 2^-11 for fp16 (each row of
  the tile rescaled to its largest weight first), 0 for fp32. ``|u| @ |b|`` is the most that rounding every
  weight by a relative ``r`` can move ``u @ b``; the second term is float32 accumulation. Measured: at most 0.8
  of the bound for bf16 (an unmasked symmetric matrix, whose dominant diagonal weight rounds by nearly a full
  half-ulp), 0.47 for fp16, 0.06 for fp32; as a fraction of the largest gradient entry 3.3e-3 (bf16, about what
  rounding the dense path's float32 gradient to bf16 costs), 2.3e-4 (fp16), 6e-7 (fp32).
"""

from __future__ import annotations

import math
import os
import sys

# Triton decides at import whether its @jit functions (its own library's included) run in the interpreter
_IMPORTED_BEFORE = "triton" in sys.modules and "TRITON_INTERPRET" not in os.environ
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from contrasphere.pairwise import _triton as K  # noqa: E402

if _IMPORTED_BEFORE:
    pytest.skip(
        "triton was imported before TRITON_INTERPRET=1 could be set: set it in the environment (or in conftest.py)",
        allow_module_level=True,
    )
if K._interpreted():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    pytest.skip("TRITON_INTERPRET=0 and no GPU: the kernels cannot run here", allow_module_level=True)

N, M, D = 37, 29, 40  # no tile size divides them; D > BLOCK_K, so the loop over D runs (with a masked tail)
FWD = {"block_r": 16, "block_c": 16, "block_k": 16}
BWD = {**FWD, "block_d": 16}  # three chunks of D: the "accumulate" and "recompute" strategies both engage
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOL = 1e-5
ROUNDING = {torch.float32: 0.0, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
SCALE = 5.0  # unit embeddings at temperature 0.2: scores in [-5, 5] before the biases
NEG_INF = -math.inf


def _got(got: torch.Tensor | None, want: torch.Tensor) -> torch.Tensor:
    assert got is not None
    assert got.dtype == torch.float32 and got.shape == want.shape
    got = got.detach().cpu().double()
    assert not got.isnan().any()
    return got


def _check(got: torch.Tensor | None, want: torch.Tensor, tol: float = TOL) -> None:
    """``got`` (float32) matches ``want`` (float64): same -inf entries, no NaN, max error <= tol * max |want|."""
    got = _got(got, want)
    assert torch.equal(got == NEG_INF, want == NEG_INF)
    finite = want.isfinite()
    if not finite.any():
        return
    err = (got[finite] - want[finite]).abs().max().item()
    top = want[finite].abs().max().item()
    assert err <= tol * max(top, 1e-30), f"max error {err:.3g} against max |want| {top:.3g} (tol {tol:g})"


def _check_grad(got: torch.Tensor | None, want: torch.Tensor, envelope: torch.Tensor, dtype: torch.dtype) -> None:
    """Elementwise ``|got - want| <= ROUNDING[dtype] * envelope + TOL * max |want|`` (``envelope = |u| @ |y|``)."""
    got = _got(got, want)
    bound = ROUNDING[dtype] * envelope + TOL * want.abs().max()
    ratio = ((got - want).abs() / bound.clamp_min(1e-300)).max().item()
    assert ratio <= 1.0, f"error {ratio:.3g} times the bound ({dtype})"


def _weights(s, g_rows, lse_rows, g_cols=None, lse_cols=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``u = g_i exp(s_ij - lse_i) [+ g'_j exp(s_ij - lse'_j)]`` and ``|g_i| exp(..) [+ |g'_j| exp(..)]`` >= |u|."""
    s = s.detach()
    p = (s - lse_rows[:, None]).exp().nan_to_num(0.0)  # a row left out entirely: -inf - -inf
    u, u_abs = g_rows.double()[:, None] * p, g_rows.double().abs()[:, None] * p
    if g_cols is not None:
        q = (s - lse_cols[None, :]).exp().nan_to_num(0.0)
        u, u_abs = u + g_cols.double()[None, :] * q, u_abs + g_cols.double().abs()[None, :] * q
    return u, u_abs


def _embed(n: int, dtype: torch.dtype, seed: int, d: int = D) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1).to(dtype)


def _vec(n: int, seed: int, mult: float = 1.0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * mult


def _dev(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.to(DEVICE)


def _left_out(n: int, m: int, excluded: tuple[int, ...], rid, cid) -> torch.Tensor:
    i = torch.arange(n)[:, None]
    j = torch.arange(m)[None, :]
    left = torch.zeros(n, m, dtype=torch.bool)
    for k in excluded:
        left |= (j - i) == k
    if rid is not None:
        left |= rid[:, None] == cid[None, :]
    return left


def _ids(kind: str | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if kind is None:
        return None, None
    if kind == "dup":  # duplicates on both sides: each row leaves out several columns
        g = torch.Generator().manual_seed(7)
        return torch.randint(0, 6, (N,), generator=g), torch.randint(0, 6, (M,), generator=g)
    if kind == "dead_rows":  # every column has id 2: the rows with id 2 leave out everything (-inf)
        return torch.arange(N) % 5, torch.full((M,), 2)
    assert kind == "dead_cols"  # every row has id 3: the columns with id 3 are left out by every row
    return torch.full((N,), 3), torch.arange(M) % 4


# excluded offsets outside the 37 x 29 matrix (29, -37, 100) name no pair and are dropped
CASES = {
    "plain": {"bias": False, "excluded": (), "ids": None},
    "bias": {"bias": True, "excluded": (), "ids": None},
    "diag": {"bias": True, "excluded": (0,), "ids": None},
    "offsets": {"bias": False, "excluded": (0, 5, -5, 29, -37, 100), "ids": None},
    "ids": {"bias": True, "excluded": (), "ids": "dup"},
    "ids+diag": {"bias": False, "excluded": (0,), "ids": "dup"},
    "dead_rows": {"bias": True, "excluded": (0,), "ids": "dead_rows"},
    "dead_cols": {"bias": False, "excluded": (), "ids": "dead_cols"},
}


def _problem(case: str, dtype: torch.dtype, d: int = D):
    spec = CASES[case]
    a, b = _embed(N, dtype, 1, d), _embed(M, dtype, 2, d)
    rb, cb = (_vec(N, 3), _vec(M, 4)) if spec["bias"] else (None, None)
    rid, cid = _ids(spec["ids"])
    return a, b, torch.tensor(SCALE), rb, cb, spec["excluded"], rid, cid


def _dense(a, b, scale, rb, cb, excluded, rid, cid):
    """The float64 score matrix (left-out pairs at -inf) from float64 leaves, which it returns with it."""
    leaves = [None if x is None else x.detach().double().requires_grad_() for x in (a, b, rb, cb)]
    a64, b64, rb64, cb64 = leaves
    s = float(scale) * a64 @ b64.T
    if rb64 is not None:
        s = s + rb64[:, None]
    if cb64 is not None:
        s = s + cb64[None, :]
    s = s.masked_fill(_left_out(a.shape[0], b.shape[0], excluded, rid, cid), NEG_INF)
    return s, leaves


def _lse_ref(s: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(s.detach(), dim=dim)


def _finite_lse(s: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-sum-exps of the rows (dim 1) or columns (dim 0) that keep a pair, differentiable, and which."""
    alive = _lse_ref(s, dim).isfinite()
    return torch.logsumexp(s[alive] if dim == 1 else s[:, alive], dim=dim), alive


@pytest.mark.parametrize("want_cols", [True, False], ids=["rows+cols", "rows"])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("case", list(CASES))
def test_lse_forward(case, dtype, want_cols):
    a, b, scale, rb, cb, excluded, rid, cid = _problem(case, dtype)
    rows, cols = K.lse_forward(
        _dev(a), _dev(b), _dev(scale), _dev(rb), _dev(cb), excluded, _dev(rid), _dev(cid), want_cols, **FWD
    )
    s, _ = _dense(a, b, scale, rb, cb, excluded, rid, cid)
    _check(rows, _lse_ref(s, 1))
    if want_cols:
        _check(cols, _lse_ref(s, 0))
    else:
        assert cols is None
    if case == "dead_rows":
        assert (rows.cpu() == NEG_INF).sum() == (torch.arange(N) % 5 == 2).sum() > 0
    if case == "dead_cols" and want_cols:
        assert (cols.cpu() == NEG_INF).sum() == (torch.arange(M) % 4 == 3).sum() > 0


def _lse_backward_case(case, dtype, with_cols, d=D, **blocks):
    """Gradients of ``sum_i g_i lse_i [+ sum_j g'_j lse'_j]`` by autograd through the dense float64 expression."""
    a, b, scale, rb, cb, excluded, rid, cid = _problem(case, dtype, d)
    s, (a64, b64, rb64, cb64) = _dense(a, b, scale, rb, cb, excluded, rid, cid)
    g_rows, g_cols = _vec(N, 5), _vec(M, 6) if with_cols else None
    lse_rows, alive_rows = _finite_lse(s, 1)  # autograd through a row of -inf only would give NaN
    loss = (g_rows.double()[alive_rows] * lse_rows).sum()
    if g_cols is not None:
        lse_cols, alive_cols = _finite_lse(s, 0)
        loss = loss + (g_cols.double()[alive_cols] * lse_cols).sum()
    named = {k: x for k, x in zip(("a", "b", "rb", "cb"), (a64, b64, rb64, cb64)) if x is not None}
    grads = dict(zip(named, torch.autograd.grad(loss, list(named.values()))))

    lr, lc = _lse_ref(s, 1), _lse_ref(s, 0) if with_cols else None
    ga, gb, g_rb, g_cb = K.lse_backward(
        _dev(a), _dev(b), _dev(scale), _dev(rb), _dev(cb), excluded, _dev(rid), _dev(cid),
        _dev(lr.float()), _dev(g_rows), _dev(None if lc is None else lc.float()), _dev(g_cols), **blocks,
    )  # fmt: skip
    u, u_abs = _weights(s, g_rows, lr, g_cols, lc)
    _check_grad(ga, grads["a"] / SCALE, u_abs @ b.double().abs(), dtype)  # the kernels' gradients are unscaled
    _check_grad(gb, grads["b"] / SCALE, u_abs.T @ a.double().abs(), dtype)
    _check(g_rb, grads["rb"] if rb is not None else u.sum(1))  # the weights' row and column sums
    _check(g_cb, grads["cb"] if cb is not None else u.sum(0))
    if case == "dead_rows":  # rows that keep no pair contribute nothing, whatever their incoming gradient
        dead = torch.arange(N) % 5 == 2
        assert torch.all(ga.cpu()[dead] == 0) and torch.all(g_rb.cpu()[dead] == 0)
    if case == "dead_cols":
        dead = torch.arange(M) % 4 == 3
        assert torch.all(gb.cpu()[dead] == 0) and torch.all(g_cb.cpu()[dead] == 0)


@pytest.mark.parametrize("with_cols", [True, False], ids=["lse_cols", "no_cols"])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("case", list(CASES))
def test_lse_backward(case, dtype, with_cols):
    _lse_backward_case(case, dtype, with_cols, **BWD, large_d="accumulate")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "path", [{"large_d": "recompute"}, {"block_d": 64}], ids=["recompute_chunks", "one_chunk_in_registers"]
)
@pytest.mark.parametrize("case", ["diag", "offsets", "dead_rows", "dead_cols"])
def test_lse_backward_strategies(case, path, dtype):
    _lse_backward_case(case, dtype, True, **{**BWD, **path})


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_lse_default_tiles(dtype):
    """The GPU tile sizes (one masked tile here) and D = 300: three chunks of 128 in the backward pass, accumulated
    into the output (fp16, bf16) or each with its own programs (fp32)."""
    a, b, scale, rb, cb, excluded, rid, cid = _problem("ids+diag", dtype, d=300)
    rows, cols = K.lse_forward(_dev(a), _dev(b), _dev(scale), None, None, excluded, _dev(rid), _dev(cid), True)
    s, _ = _dense(a, b, scale, None, None, excluded, rid, cid)
    _check(rows, _lse_ref(s, 1))
    _check(cols, _lse_ref(s, 0))
    _lse_backward_case("ids+diag", dtype, True, d=300)


def test_lse_backward_takes_the_given_lse():
    """A ring passes the global log-sum-exp: the weights are exp(s - lse) with that lse, not renormalised."""
    a, b, scale, rb, cb, excluded, rid, cid = _problem("diag", torch.float32)
    s, _ = _dense(a, b, scale, rb, cb, excluded, rid, cid)
    lse_rows, lse_cols = _lse_ref(s, 1) + 0.7, _lse_ref(s, 0) + 1.3  # the other blocks' columns and rows
    g_rows, g_cols = _vec(N, 5), _vec(M, 6)
    ga, gb, g_rb, g_cb = K.lse_backward(
        _dev(a), _dev(b), _dev(scale), _dev(rb), _dev(cb), excluded, None, None,
        _dev(lse_rows.float()), _dev(g_rows), _dev(lse_cols.float()), _dev(g_cols), **BWD,
    )  # fmt: skip
    u, u_abs = _weights(s, g_rows, lse_rows, g_cols, lse_cols)
    _check_grad(ga, u @ b.double(), u_abs @ b.double().abs(), torch.float32)
    _check_grad(gb, u.T @ a.double(), u_abs.T @ a.double().abs(), torch.float32)
    _check(g_rb, u.sum(1))
    _check(g_cb, u.sum(0))


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_lse_backward_small_gradients(dtype):
    """Incoming gradients of a mean over a large batch (~1e-7): float16 weights must not sink into subnormals."""
    a, b, scale, rb, cb, excluded, rid, cid = _problem("bias", dtype)
    s, _ = _dense(a, b, scale, rb, cb, excluded, rid, cid)
    lse_rows, lse_cols = _lse_ref(s, 1), _lse_ref(s, 0)
    g_rows, g_cols = _vec(N, 5, 1e-7), _vec(M, 6, 1e-7)
    ga, gb, _, _ = K.lse_backward(
        _dev(a), _dev(b), _dev(scale), _dev(rb), _dev(cb), excluded, None, None,
        _dev(lse_rows.float()), _dev(g_rows), _dev(lse_cols.float()), _dev(g_cols), **BWD,
    )  # fmt: skip
    u, u_abs = _weights(s, g_rows, lse_rows, g_cols, lse_cols)
    _check_grad(ga, u @ b.double(), u_abs @ b.double().abs(), dtype)
    _check_grad(gb, u.T @ a.double(), u_abs.T @ a.double().abs(), dtype)


SYM_CASES = {
    "plain": {"bias": False, "excluded": (), "ids": None},
    "bias+diag": {"bias": True, "excluded": (0,), "ids": None},
    "offsets": {"bias": True, "excluded": (0, 5, -5, 37, -37), "ids": None},
    "ids": {"bias": False, "excluded": (0,), "ids": "dup"},
    "all_left_out": {"bias": True, "excluded": (0,), "ids": "same"},
}


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("case", list(SYM_CASES))
def test_sym(case, dtype):
    """``lse_i`` of ``s_ij = scale <z_i, z_j> + r_i + r_j`` and the gradient of ``sum_i g_i lse_i``."""
    spec = SYM_CASES[case]
    z, scale = _embed(N, dtype, 8), torch.tensor(SCALE)
    bias = _vec(N, 9) if spec["bias"] else None
    ids = None
    if spec["ids"] == "dup":
        ids = torch.randint(0, 8, (N,), generator=torch.Generator().manual_seed(10))
    elif spec["ids"] == "same":  # every pair shares an id: every row is -inf, every gradient 0
        ids = torch.zeros(N, dtype=torch.int64)
    excluded = spec["excluded"]
    lse = K.sym_forward(_dev(z), _dev(scale), _dev(bias), excluded, _dev(ids), **FWD)

    z64 = z.double().requires_grad_()
    r64 = None if bias is None else bias.double().requires_grad_()
    s = SCALE * z64 @ z64.T
    if r64 is not None:
        s = s + r64[:, None] + r64[None, :]
    s = s.masked_fill(_left_out(N, N, excluded, ids, ids), NEG_INF)
    _check(lse, _lse_ref(s, 1))

    g = _vec(N, 11)
    gz, g_bias = K.sym_backward(_dev(z), _dev(scale), _dev(bias), excluded, _dev(ids), lse, _dev(g), **BWD)
    rows, alive = _finite_lse(s, 1)
    if case == "all_left_out":
        assert torch.all(lse.cpu() == NEG_INF) and not alive.any()
        assert torch.all(gz == 0) and torch.all(g_bias == 0)
        return
    wrt = [z64] if r64 is None else [z64, r64]
    grads = torch.autograd.grad((g.double()[alive] * rows).sum(), wrt)
    lse64 = _lse_ref(s, 1)
    u, u_abs = _weights(s, g, lse64, g, lse64)  # w_ij + w_ji: s is symmetric
    _check_grad(gz, grads[0] / SCALE, u_abs @ z.double().abs(), dtype)
    _check(g_bias, grads[1] if r64 is not None else u.sum(1))


@pytest.mark.parametrize("bias", [-30.0, -2.0, 30.0], ids=lambda v: f"bias{v:+g}")
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_softplus(dtype, bias):
    """Bias -30: every term is ~e^-30, which a naive log(1 + e^s) rounds to 0; +30: the terms are ~s."""
    a, b = _embed(N, dtype, 12), _embed(M, dtype, 13)
    scale, beta, g = torch.tensor(SCALE), torch.tensor(bias), torch.tensor(0.37)
    total = K.softplus_forward(_dev(a), _dev(b), _dev(scale), _dev(beta), **FWD)
    assert total.shape == ()

    a64, b64 = a.double().requires_grad_(), b.double().requires_grad_()
    beta64 = beta.double().requires_grad_()
    x = SCALE * a64 @ b64.T + beta64
    want = torch.logaddexp(x, torch.zeros((), dtype=torch.float64)).sum()
    _check(total, want.detach())

    grad_a, grad_b, grad_beta = torch.autograd.grad(0.37 * want, (a64, b64, beta64))
    ga, gb, g_bias = K.softplus_backward(_dev(a), _dev(b), _dev(scale), _dev(beta), _dev(g), **BWD)
    u_abs = 0.37 * x.detach().sigmoid()
    _check_grad(ga, grad_a / SCALE, u_abs @ b.double().abs(), dtype)
    _check_grad(gb, grad_b / SCALE, u_abs.T @ a.double().abs(), dtype)
    assert g_bias.shape == ()
    _check(g_bias, grad_beta)


def test_empty_side():
    """No columns: every row log-sum-exp is -inf and every gradient is 0."""
    a, b = _embed(N, torch.float32, 1).to(DEVICE), torch.empty(0, D, device=DEVICE)
    scale = torch.tensor(SCALE, device=DEVICE)
    rows, cols = K.lse_forward(a, b, scale, None, None, (0,), None, None, True, **FWD)
    assert torch.all(rows.cpu() == NEG_INF) and cols is not None and cols.shape == (0,)
    g = torch.ones(N, device=DEVICE)
    ga, gb, g_rb, g_cb = K.lse_backward(a, b, scale, None, None, (0,), None, None, rows, g, cols, cols, **BWD)
    assert torch.all(ga == 0) and gb.shape == (0, D) and torch.all(g_rb == 0) and g_cb.shape == (0,)


def test_rejects_what_it_cannot_do():
    a = _embed(N, torch.float32, 1).to(DEVICE)
    scale = torch.tensor(SCALE, device=DEVICE)
    assert K.takes_offsets(tuple(range(8)) + (37, -37, 500), N, N) and not K.takes_offsets(tuple(range(9)), N, N)
    with pytest.raises(ValueError, match="at most 8 excluded offsets"):
        K.lse_forward(a, a, scale, None, None, tuple(range(9)), None, None, False)
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        K.lse_forward(a.double(), a.double(), scale, None, None, (), None, None, False)
    with pytest.raises(ValueError, match="share D, dtype and device"):
        K.lse_forward(a, a.half(), scale, None, None, (), None, None, False)
    with pytest.raises(ValueError, match="large_d"):
        K.softplus_backward(a, a, scale, scale, scale, large_d="fast", **BWD)
    assert K.available()


@pytest.mark.skipif(DEVICE != "cuda", reason="compiled kernels on a GPU only (TRITON_INTERPRET=0)")
def test_cuda_launches_never_sync():
    """Every launcher queues its kernels without reading a device value on the host."""
    a, b = _embed(N, torch.bfloat16, 1).cuda(), _embed(M, torch.bfloat16, 2).cuda()
    scale, rb, cb = torch.tensor(SCALE).cuda(), _vec(N, 3).cuda(), _vec(M, 4).cuda()
    rid, cid = (x.cuda() for x in _ids("dup"))

    def run():
        rows, cols = K.lse_forward(a, b, scale, rb, cb, (0, 5), rid, cid, True)
        K.lse_backward(a, b, scale, rb, cb, (0, 5), rid, cid, rows, torch.ones_like(rows), cols, torch.ones_like(cols))
        lse = K.sym_forward(a, scale, rb, (0,), rid)
        K.sym_backward(a, scale, rb, (0,), rid, lse, torch.ones_like(lse))
        K.softplus_forward(a, b, scale, scale)
        K.softplus_backward(a, b, scale, scale, scale)

    run()  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
