"""Property-based tests (hypothesis): the pairwise engine, every pairwise loss, and the embedding-file readers.

Properties, over random shapes (``N`` from 1 to 40, ``D`` from 1 to 20, so that most sizes are divided by no tile),
``block_size`` in ``{None, 0, 1, ..., 7}``, float32 and float64, and temperatures (or scales) from 1e-3 to 1e3:

- the engine (``row_logsumexp``, ``row_col_logsumexp``, ``sym_row_logsumexp``, ``softplus_sum``): the tiled value
  and gradient equal the dense ones; outputs are finite, but for rows whose every pair is excluded, which are
  ``-inf`` exactly; permuting rows (and columns) permutes (or keeps) the result;
- every registered loss that reduces over pairs (the ones taking ``block_size``): the module with tiles equals the
  module without, in value and in gradient (inputs and the module's own parameters); both are finite; a
  permutation of the batch leaves the loss unchanged (but for MoCHi's and i-Mix's row-dependent draws); one row is
  either enough or a ``ValueError``;
- the readers (``contrasphere.io.load_tensor``): random bytes, damaged valid files and arbitrary ``torch.save``
  d objects under ``.npy`` / ``.pt`` / ``.pth`` / ``.safetensors`` names give a tensor or an
  ``EmbeddingFileError``, never another exception; a ``.pt`` pickle is never executed (``weights_only=True``).

Tolerances follow the conditioning of the scores: ``64 eps (1 + |s|max)`` relative (``eps`` of the dtype, ``|s|``
the largest score a temperature of 1e-3 makes), so float64 is checked to about 1e-12 and float32 to about 1e-5 at
ordinary temperatures.

Every test runs ``@settings(max_examples=EXAMPLES[...], deadline=None, derandomize=True)``: the same examples on
every run (deterministic CI), no per-example deadline (a pass with tiles of one row over 80 rows takes a fraction
of a second). ``EXAMPLES`` below holds the counts: 60 cases per engine reduction (4 reductions), 15 per pairwise
loss (23 losses) and 4 permutations per loss (21 of them), each plus the two ends of the temperature range
(``EXTREMES``: float32 at 1e-3, float64 at 1e3), 80 random or damaged files (over the 4 suffixes) and 60 saved
objects; the whole file runs in about 20 s on 2 cores. Raise the counts locally to search harder.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_loss
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import contrasphere
from contrasphere import pairwise as P
from contrasphere.io import SUFFIXES, EmbeddingFileError, load_tensor
from contrasphere.losses import loss_spec

EXAMPLES = {"engine": 60, "loss": 15, "invariance": 4, "io_bytes": 80, "io_objects": 60}
BLOCKS = [None, 0, 1, 2, 3, 4, 5, 6, 7]
DTYPES = [torch.float32, torch.float64]


def _settings(kind: str):
    return settings(
        max_examples=EXAMPLES[kind],
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def _tol(dtype: torch.dtype, score_bound: float) -> float:
    return 64 * torch.finfo(dtype).eps * (1 + score_bound)


def _close(got, want, tol, what):
    """Equal within ``tol``, relative to the entry and to the largest entry or 1 (a gradient that cancels to 0 in
    one order of summation is rounding-level in another)."""
    scale = float(want.detach().abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * max(scale, 1.0), msg=lambda m: f"{what}: {m}")


def _vectors(g, n, d, dtype, radius=(0.5, 2.0)):
    """``n`` random directions in ``R^d`` with norms drawn in ``radius``."""
    unit = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    norms = radius[0] + (radius[1] - radius[0]) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return (unit * norms).to(dtype)


def _grads(fn, inputs):
    """``fn(*inputs)``, and the gradient of a fixed weighting of its finite entries with respect to ``inputs``."""
    value = fn(*inputs)
    finite = torch.isfinite(value)
    weights = torch.linspace(-1, 2, value.numel(), dtype=value.dtype).reshape(value.shape)
    total = (value[finite] * weights[finite]).sum()
    grads = torch.autograd.grad(total, inputs, allow_unused=True)
    return value.detach(), grads


def _tiled_equals_dense(fn, inputs, block, tol, what):
    want, want_grads = _grads(lambda *x: fn(*x, block_size=0), inputs)
    got, got_grads = _grads(lambda *x: fn(*x, block_size=block), inputs)
    assert torch.equal(torch.isinf(got), torch.isinf(want)), what
    finite = torch.isfinite(want)
    _close(got[finite], want[finite], tol, f"{what} value")
    for i, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert (g is None) == (w is None)
        if g is not None:
            assert torch.isfinite(g).all(), f"{what}: gradient {i} not finite"
            _close(g, w, tol, f"{what} gradient {i}")
    return want


# 10^(e + f), e an integer in -3..2 and f in [0, 1]: every decade from 1e-3 to 1e3 as likely (floats(-3, 3) would
# mostly give exponents near 0)
MAGNITUDES = st.builds(lambda e, f: 10.0 ** (e + f), st.integers(-3, 2), st.floats(0, 1))


@st.composite
def engine_cases(draw):
    return {
        "n": draw(st.integers(1, 40)),
        "m": draw(st.integers(1, 40)),
        "d": draw(st.integers(1, 20)),
        "dtype": draw(st.sampled_from(DTYPES)),
        "block": draw(st.sampled_from(BLOCKS)),
        "scale": draw(MAGNITUDES),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _scale_tensor(case):
    return torch.tensor(case["scale"], dtype=case["dtype"], requires_grad=True)


# --- the engine ------------------------------------------------------------------------------------------------
@_settings("engine")
@given(case=engine_cases(), data=st.data())
def test_row_logsumexp_tiles_equal_dense_and_excluded_rows_are_minus_infinity(case, data):
    n, m, dtype = case["n"], case["m"], case["dtype"]
    g = torch.Generator().manual_seed(case["seed"])
    a = _vectors(g, n, case["d"], dtype).requires_grad_()
    b = _vectors(g, m, case["d"], dtype).requires_grad_()
    bias = data.draw(st.booleans())
    col_bias = (2 * torch.randn(m, generator=g, dtype=torch.float64)).to(dtype).requires_grad_() if bias else None
    diagonal = data.draw(st.booleans())
    offsets = tuple(data.draw(st.lists(st.integers(-(n - 1), m - 1), max_size=3)))
    inputs = (a, b, _scale_tensor(case)) + ((col_bias,) if bias else ())

    def fn(a, b, scale, col_bias=None, *, block_size):
        return P.row_logsumexp(
            a,
            b,
            scale=scale,
            col_bias=col_bias,
            exclude_diagonal=diagonal,
            exclude_offsets=offsets,
            block_size=block_size,
        )

    bound = case["scale"] * 4 + (float(col_bias.detach().abs().max()) if bias else 0)
    value = _tiled_equals_dense(fn, inputs, case["block"], _tol(dtype, bound), "row_logsumexp")
    excluded = set(offsets) | ({0} if diagonal else set())
    empty = torch.tensor([all(j - i in excluded for j in range(m)) for i in range(n)])
    assert torch.equal(torch.isneginf(value), empty) and torch.isfinite(value[~empty]).all()
    if not excluded:  # no mask: a permutation of the rows permutes the result, one of the columns keeps it
        rows, cols = torch.randperm(n, generator=g), torch.randperm(m, generator=g)
        with torch.no_grad():
            permuted = fn(a[rows], b[cols], inputs[2], *((col_bias[cols],) if bias else ()), block_size=case["block"])
        _close(permuted, value[rows], _tol(dtype, bound), "row_logsumexp permuted")


@_settings("engine")
@given(case=engine_cases())
def test_row_col_logsumexp_tiles_equal_dense(case):
    dtype = case["dtype"]
    g = torch.Generator().manual_seed(case["seed"])
    a = _vectors(g, case["n"], case["d"], dtype).requires_grad_()
    b = _vectors(g, case["m"], case["d"], dtype).requires_grad_()

    def fn(a, b, scale, *, block_size):
        rows, cols = P.row_col_logsumexp(a, b, scale=scale, block_size=block_size)
        return torch.cat([rows, cols])

    tol = _tol(dtype, 4 * case["scale"])
    value = _tiled_equals_dense(fn, (a, b, _scale_tensor(case)), case["block"], tol, "row_col_logsumexp")
    assert torch.isfinite(value).all()
    rows, cols = value[: case["n"]], value[case["n"] :]
    # both directions against P.row_logsumexp (rows of a against b, and of b against a)
    with torch.no_grad():
        _close(rows, P.row_logsumexp(a, b, scale=case["scale"], block_size=0), tol, "rows")
        _close(cols, P.row_logsumexp(b, a, scale=case["scale"], block_size=0), tol, "columns")


@_settings("engine")
@given(case=engine_cases(), data=st.data())
def test_sym_row_logsumexp_tiles_equal_dense(case, data):
    n, dtype = case["n"], case["dtype"]
    g = torch.Generator().manual_seed(case["seed"])
    z = _vectors(g, n, case["d"], dtype).requires_grad_()
    bias = data.draw(st.booleans())
    r = (torch.randn(n, generator=g, dtype=torch.float64)).to(dtype).requires_grad_() if bias else None
    diagonal = data.draw(st.booleans())
    ks = data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=2)) if n > 1 else []
    offsets = tuple(sorted({s * k for k in ks for s in (1, -1)}))
    inputs = (z, _scale_tensor(case)) + ((r,) if bias else ())

    def fn(z, scale, r=None, *, block_size):
        return P.sym_row_logsumexp(
            z, scale=scale, bias=r, exclude_diagonal=diagonal, exclude_offsets=offsets, block_size=block_size
        )

    bound = 4 * case["scale"] + (2 * float(r.detach().abs().max()) if bias else 0)
    value = _tiled_equals_dense(fn, inputs, case["block"], _tol(dtype, bound), "sym_row_logsumexp")
    excluded = set(offsets) | ({0} if diagonal else set())
    empty = torch.tensor([all(j - i in excluded for j in range(n)) for i in range(n)])
    assert torch.equal(torch.isneginf(value), empty) and torch.isfinite(value[~empty]).all()
    if not offsets:  # only self-pairs left out: a permutation of the set permutes the result
        perm = torch.randperm(n, generator=g)
        with torch.no_grad():
            permuted = fn(z[perm], inputs[1], *((r[perm],) if bias else ()), block_size=case["block"])
        _close(permuted, value[perm], _tol(dtype, bound), "sym_row_logsumexp permuted")


@_settings("engine")
@given(case=engine_cases(), bias=st.floats(-10, 10))
def test_softplus_sum_tiles_equal_dense_and_ignores_the_order(case, bias):
    dtype = case["dtype"]
    g = torch.Generator().manual_seed(case["seed"])
    a = _vectors(g, case["n"], case["d"], dtype).requires_grad_()
    b = _vectors(g, case["m"], case["d"], dtype).requires_grad_()
    beta = torch.tensor(bias, dtype=dtype, requires_grad=True)

    def fn(a, b, scale, beta, *, block_size):
        return P.softplus_sum(a, b, scale=scale, bias=beta, block_size=block_size)

    tol = _tol(dtype, 4 * case["scale"] + abs(bias))
    value = _tiled_equals_dense(fn, (a, b, _scale_tensor(case), beta), case["block"], tol, "softplus_sum")
    assert torch.isfinite(value)
    with torch.no_grad():
        permuted = fn(a.flip(0), b[torch.randperm(case["m"], generator=g)], case["scale"], beta, block_size=2)
    _close(permuted, value, tol, "softplus_sum permuted")


# --- every pairwise loss ---------------------------------------------------------------------------------------
PAIRWISE = [name for name in contrasphere.list_losses() if "block_size" in loss_spec(name).hyperparameters]
ROW_DEPENDENT = {"mochi", "i_mix"}  # their draws or mix_index name rows of the batch
SMALL_MOCHI = {"n_hard": 8, "s_mix": 6, "s_query": 3}  # MoCHi's synthetic negatives, few of them


@st.composite
def loss_cases(draw, min_rows=2):
    return {
        "n": draw(st.integers(min_rows, 40)),
        "d": draw(st.integers(1, 20)),
        "m": draw(st.integers(1, 40)),  # queue rows
        "views": draw(st.integers(2, 3)),
        "dtype": draw(st.sampled_from(DTYPES)),
        "block": draw(st.sampled_from(BLOCKS)),
        "temperature": draw(MAGNITUDES),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _hyperparameters(name: str, temperature: float) -> dict[str, float]:
    """The loss's temperature (or its inverse, a scale) set to ``temperature``."""
    given = loss_spec(name).hyperparameters
    hyper: dict[str, float] = {}
    if "temperature" in given:
        hyper["temperature"] = temperature
    if "init_temperature" in given:  # CLIP, Symile: a learnable scale, capped at least at its start
        hyper.update(init_temperature=temperature, max_logit_scale=max(100.0, 2.0 / temperature))
    if "init_logit_scale" in given:  # SigLIP
        hyper["init_logit_scale"] = 1.0 / temperature
    if "t" in given:  # the uniformities: t is a scale of squared distances
        hyper["t"] = 1.0 / temperature
    if name == "mochi":
        hyper.update(SMALL_MOCHI)
    return hyper


def _loss_inputs(name: str, case: dict) -> dict[str, torch.Tensor]:
    """Inputs for every role the loss's spec names: unit vectors, labels with some positives, a queue."""
    n, d, dtype = case["n"], case["d"], case["dtype"]
    g = torch.Generator().manual_seed(case["seed"])

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)

    z_a = unit(n, d)
    z_b = F.normalize(z_a + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    views = torch.stack([z_a, z_b, unit(n, d)][: case["views"]])
    classes = int(torch.randint(1, n + 1, (1,), generator=g))  # 2n rows in at most n classes: some positives
    by_role = {
        "z_a": z_a,
        "z_b": z_b,
        "z": torch.cat([z_a, z_b]),
        "labels": torch.randint(0, classes, (2 * n,), generator=g),
        "q": z_a,
        "k": z_b,
        "queue": unit(case["m"], d),
        "views": views,
        "modalities": views,
        "mix_index": torch.randperm(n, generator=g),
        "mix_lambda": 0.5 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64),
        "prior": torch.randn(n, 2, generator=g, dtype=torch.float64),
    }
    spec = loss_spec(name)
    out = {}
    for role in spec.inputs:
        value = by_role[role]
        if value.is_floating_point():
            grad = role not in spec.shared and role not in ("mix_lambda", "prior")
            value = value.to(dtype).requires_grad_(grad)
        out[role] = value
    return out


def _evaluate(module, inputs):
    torch.manual_seed(11)  # the same draws (MoCHi's negatives, feature transformation's mixing) every time
    value = module(**inputs)
    tensors = [t for t in inputs.values() if t.requires_grad] + list(module.parameters())
    return value, torch.autograd.grad(value, tensors, allow_unused=True)


# the ends of the temperature range, always tried (besides the drawn cases): float32 at 1e-3, float64 at 1e3
EXTREMES = [
    {"n": 33, "d": 7, "m": 19, "views": 3, "dtype": torch.float32, "block": 5, "temperature": 1e-3, "seed": 1},
    {"n": 17, "d": 20, "m": 40, "views": 2, "dtype": torch.float64, "block": 3, "temperature": 1e3, "seed": 2},
]


def _with_extremes(test):
    for case in EXTREMES:
        test = example(case=case)(test)
    return test


@pytest.mark.parametrize("name", PAIRWISE)
@_settings("loss")
@_with_extremes
@given(case=loss_cases())
def test_every_pairwise_loss_is_the_same_tiled_and_finite(name, case):
    dtype, hyper = case["dtype"], _hyperparameters(name, case["temperature"])
    inputs = _loss_inputs(name, case)
    dense = make_loss(name, case["d"], **hyper, block_size=0).to(dtype)
    tiled = make_loss(name, case["d"], **hyper, block_size=case["block"]).to(dtype)
    want, want_grads = _evaluate(dense, inputs)
    got, got_grads = _evaluate(tiled, inputs)
    what = f"{name} {dtype} N={case['n']} D={case['d']} block={case['block']} T={case['temperature']:.3g}"
    assert torch.isfinite(want) and torch.isfinite(got), what
    tol = _tol(dtype, 4.0 / case["temperature"] + 20)
    _close(got, want, tol, what)
    for i, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert (g is None) == (w is None), what
        if g is not None:
            assert torch.isfinite(g).all(), f"{what}: gradient {i} not finite"
            _close(g, w, tol, f"{what} gradient {i}")


@pytest.mark.parametrize("name", [n for n in PAIRWISE if n not in ROW_DEPENDENT])
@_settings("invariance")
@_with_extremes
@given(case=loss_cases())
def test_every_pairwise_loss_ignores_the_order_of_the_batch(name, case):
    case = {**case, "dtype": torch.float64}
    hyper = _hyperparameters(name, case["temperature"])
    inputs = _loss_inputs(name, case)
    module = make_loss(name, case["d"], **hyper, block_size=case["block"]).double()
    spec = loss_spec(name)
    g = torch.Generator().manual_seed(case["seed"] + 1)
    perm = torch.randperm(case["n"], generator=g)
    perm_2n = torch.cat([perm, perm + case["n"]])

    def permute(role, value):
        value = value.detach()
        if role in spec.shared:  # a queue is not part of the batch
            return value
        if role in spec.stacked:
            return value[:, perm]
        return value[perm_2n] if role in ("z", "labels") else value[perm]

    torch.manual_seed(11)
    want = module(**{k: v.detach() for k, v in inputs.items()})
    torch.manual_seed(11)
    got = module(**{k: permute(k, v) for k, v in inputs.items()})
    _close(got, want, _tol(torch.float64, 4.0 / case["temperature"] + 20), f"{name} permuted")


@pytest.mark.parametrize("name", PAIRWISE)
def test_one_row_is_enough_or_refused_clearly(name):
    case = {"n": 1, "d": 3, "m": 4, "views": 2, "dtype": torch.float64, "block": 1, "temperature": 0.1, "seed": 0}
    module = make_loss(name, 3, **_hyperparameters(name, 0.1), block_size=1).double()
    try:
        value, grads = _evaluate(module, _loss_inputs(name, case))
    except ValueError as err:
        assert "2" in str(err) or "one" in str(err), f"{name}: {err}"
        return
    assert torch.isfinite(value) and all(g is None or torch.isfinite(g).all() for g in grads), name


# --- the readers -----------------------------------------------------------------------------------------------
def _valid_bytes(suffix: str, tmp: Path) -> bytes:
    """The bytes of a well-formed file of ``suffix`` holding one small tensor."""
    path = tmp / f"valid{suffix}"
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    if suffix == ".npy":
        np.save(path, x.numpy())
    elif suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"z": x}, str(path))
    else:
        torch.save(x, path)
    return path.read_bytes()


@st.composite
def damaged_files(draw):
    suffix = draw(st.sampled_from(SUFFIXES))
    how = draw(st.sampled_from(["random", "truncated", "overwritten"]))
    if how == "random":
        return suffix, how, draw(st.binary(max_size=2048)), 0
    return suffix, how, draw(st.binary(min_size=1, max_size=64)), draw(st.floats(0, 1))


@_settings("io_bytes")
@given(damaged=damaged_files())
def test_damaged_or_random_files_raise_only_the_readers_error(tmp_path_factory, damaged):
    suffix, how, payload, where = damaged
    tmp = tmp_path_factory.mktemp("files")
    content = payload
    if how != "random":
        valid = _valid_bytes(suffix, tmp)
        cut = int(where * len(valid))
        content = valid[:cut] if how == "truncated" else valid[:cut] + payload + valid[cut + len(payload) :]
    path = tmp / f"embeddings{suffix}"
    path.write_bytes(content)
    try:
        found = load_tensor(path)
    except EmbeddingFileError as err:
        assert str(path) in str(err)
        return
    assert isinstance(found, torch.Tensor)


LEAVES = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=4),
    st.none(),
    st.tuples(st.integers(1, 3), st.integers(1, 3)).map(lambda shape: torch.ones(shape)),
)
OBJECTS = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), children, max_size=3),
    ),
    max_leaves=6,
)


@_settings("io_objects")
@given(obj=OBJECTS, key=st.one_of(st.none(), st.sampled_from(["0", "1", "a", "z"])))
def test_any_saved_object_gives_a_tensor_or_the_readers_error(tmp_path_factory, obj, key):
    path = tmp_path_factory.mktemp("saved") / "embeddings.pt"
    torch.save(obj, path)
    try:
        found = load_tensor(path, key)
    except EmbeddingFileError as err:
        assert str(path) in str(err)
        return
    assert isinstance(found, torch.Tensor)


def test_a_dict_saved_with_int_keys_is_read_by_name(tmp_path):
    # found by the property above: the names were joined as strings, and an int key raised a TypeError
    path = tmp_path / "by_index.pt"
    torch.save({0: torch.zeros(2), 1: torch.ones(2)}, path)
    assert torch.equal(load_tensor(path, "1"), torch.ones(2))
    with pytest.raises(EmbeddingFileError, match=r"holds 2 tensors \(0, 1\); choose one with a key"):
        load_tensor(path)
    with pytest.raises(EmbeddingFileError, match="has no tensor named '2'; it has: 0, 1"):
        load_tensor(path, "2")


class _Payload:
    """Unpickling this runs ``Path.touch`` on a marker file: the proof that a reader executed a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the raw pickle.dump file; refused all the same
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_pickle_in_a_pt_file_is_never_executed(tmp_path, suffix, how):
    marker = tmp_path / "executed"
    path = tmp_path / f"evil{suffix}"
    payload = {"z": torch.ones(2, 2), "trap": _Payload(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(EmbeddingFileError, match="could not read it"):
        load_tensor(path)
    assert not marker.exists()
    torch.save({"z": torch.ones(2, 2)}, path)  # the same file without the trap reads
    assert torch.equal(load_tensor(path), torch.ones(2, 2)) and not marker.exists()
