"""Every pairwise loss compiles with ``torch.compile(fullgraph=True)`` and makes no host-device synchronisation.

On a GPU, a loss that reads a value back to the host (``.item()``, ``bool(t)``, a value-dependent output shape such
as ``torch.unique`` or boolean indexing) stalls the stream until every queued kernel has run, and under
``torch.compile`` each such read breaks the graph. With value checks off (the default for CUDA tensors and inside
compiled code, :func:`contrasphere.set_value_checks`), no loss call may do either. The first tests watch every
operator a loss call dispatches, forward and backward, on CPU tensors (the same code runs on CUDA); the others
compile a training step (a linear encoder, normalisation and the loss) with ``fullgraph=True``, which fails on any
graph break, and compare its value and gradients with the eager step: on every pairwise loss with the AOT-autograd
backend (dynamo's tracing and the fake-tensor shape functions of the engine's custom operators), and with the
inductor backend (generated C++) on the engine's core objectives, dense and tiled.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conftest import make_loss
from test_properties import PAIRWISE, SMALL_MOCHI, _loss_inputs
from torch.utils._python_dispatch import TorchDispatchMode

import contrasphere
from contrasphere import _validate as check
from contrasphere.errors import InputError
from contrasphere.functional import feature_transformation, feature_transformation_draw

CASE = {"n": 13, "d": 8, "m": 11, "views": 3, "dtype": torch.float32, "seed": 3}
PATHS = {"dense": 0, "tiled": 4}  # 4-row tiles: 13 rows leave a ragged last tile
# the feature-transformation module draws its Beta variates on the host each step (the authors' algorithm): the
# draw stays eager and the compiled step takes it as input (test_feature_transformation_compiles_with_its_draw)
MODULE_DRAWS = {"feature_transformation"}

# operators that read a device value back to the host, or whose output shape depends on values
SYNCING = {
    "aten::_local_scalar_dense",
    "aten::item",
    "aten::is_nonzero",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
}


class _SyncWatch(TorchDispatchMode):
    """Records every dispatched operator that would synchronise a GPU with the host."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        bool_index = name in ("aten::index", "aten::index_put", "aten::index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())
        )
        if name in SYNCING or bool_index:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _module(name: str, block: int):
    kw = {"block_size": block, **(SMALL_MOCHI if name == "mochi" else {})}
    return make_loss(name, CASE["d"], **kw)


@pytest.fixture
def no_value_checks():
    previous = contrasphere.set_value_checks("never")  # what "auto" does for CUDA tensors
    yield
    contrasphere.set_value_checks(previous)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", PAIRWISE)
def test_a_loss_call_makes_no_host_sync(name, path, no_value_checks):
    module = _module(name, PATHS[path])
    inputs = _loss_inputs(name, CASE)
    if name in MODULE_DRAWS:  # the draw is made on the host, before the (device) loss call
        draw = feature_transformation_draw(CASE["m"], generator=torch.Generator().manual_seed(0))
        module = partial(feature_transformation, **draw, block_size=PATHS[path])
    torch.manual_seed(0)
    with _SyncWatch() as watch:
        value = module(**inputs)
        value.backward()
    assert torch.isfinite(value)
    assert watch.seen == [], f"{name} ({path}) synchronises through {sorted(set(watch.seen))}"


def test_the_watch_sees_a_sync():
    with _SyncWatch() as watch:
        bool(torch.ones(3).sum() > 0)
        torch.ones(4)[torch.tensor([True, False, True, True])]
        torch.unique(torch.tensor([3, 1, 3]))
    assert {"aten::_local_scalar_dense", "aten::index", "aten::_unique2"} <= set(watch.seen)


def test_value_checks_follow_the_switch():
    bad = torch.randn(6, 4)
    bad[2, 1] = float("nan")
    with pytest.raises(InputError, match="1 NaN or Inf"):
        contrasphere.functional.info_nce(bad, torch.randn(6, 4))  # "auto" checks CPU tensors
    previous = contrasphere.set_value_checks("never")
    try:
        assert check.set_value_checks("always") == "never"
        with pytest.raises(InputError, match="1 NaN or Inf"):
            contrasphere.functional.info_nce(bad, torch.randn(6, 4))
        check.set_value_checks("never")
        assert torch.isnan(contrasphere.functional.info_nce(bad, torch.randn(6, 4)))  # not checked: NaN
        with pytest.raises(InputError, match="'auto', 'always' or 'never'"):
            check.set_value_checks("sometimes")  # type: ignore[arg-type]
    finally:
        contrasphere.set_value_checks(previous)
    assert not check.check_values(torch.empty(2, device="meta"))  # not a CPU tensor: skipped under "auto"


def _step(module, encoder):
    def step(**inputs):
        encoded = {}
        for role, value in inputs.items():
            if value.is_floating_point() and value.requires_grad:
                value = F.normalize(encoder(value), dim=-1)
            encoded[role] = value
        return module(**encoded)

    return step


def _grads(step, inputs, params):
    torch.manual_seed(0)  # the same draws (MoCHi's negatives) in the eager and the compiled step
    value = step(**inputs)
    leaves = [t for t in inputs.values() if t.requires_grad] + params
    return value.detach(), torch.autograd.grad(value, leaves, allow_unused=True)


def _compiles_and_matches(name: str, block: int, backend: str) -> None:
    torch._dynamo.reset()
    torch.manual_seed(1)
    module = _module(name, block)
    encoder = torch.nn.Linear(CASE["d"], CASE["d"])
    inputs = _loss_inputs(name, CASE)
    params = list(encoder.parameters()) + list(module.parameters())
    eager_value, eager_grads = _grads(_step(module, encoder), inputs, params)
    compiled = torch.compile(_step(module, encoder), fullgraph=True, backend=backend)
    value, grads = _grads(compiled, inputs, params)
    torch.testing.assert_close(value, eager_value, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, eager_grads):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", [n for n in PAIRWISE if n not in MODULE_DRAWS])
def test_a_training_step_compiles_fullgraph(name, path):
    _compiles_and_matches(name, PATHS[path], "aot_eager")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["nt_xent", "clip", "siglip", "uniformity"])
def test_a_training_step_compiles_with_inductor(name, path):
    _compiles_and_matches(name, PATHS[path], "inductor")


def test_feature_transformation_compiles_with_its_draw():
    torch._dynamo.reset()
    inputs = _loss_inputs("feature_transformation", CASE)
    draw = feature_transformation_draw(CASE["m"], generator=torch.Generator().manual_seed(0))
    draw = {k: torch.as_tensor(v) for k, v in draw.items()}  # tensors: one graph for every step's draw

    def step(q, k, queue, pos_lambda, neg_lambda, neg_index):
        return feature_transformation(
            q, k, queue, pos_lambda=pos_lambda, neg_lambda=neg_lambda, neg_index=neg_index, block_size=4
        )

    want = step(**inputs, **draw)
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(**inputs, **draw)
    torch.testing.assert_close(got, want)
