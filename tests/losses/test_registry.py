"""One generic test over every registered loss, and the registry's own errors."""

from __future__ import annotations

import copy
import inspect
import re
import typing
from pathlib import Path

import pytest
import torch
from conftest import make_loss, near, sphere

import contrasphere
from contrasphere import functional as CF
from contrasphere._validate import hyperparameter_rules
from contrasphere.losses import loss_spec


def inputs_for(name: str, dtype: torch.dtype, *, n: int = 24, d: int = 16) -> dict[str, torch.Tensor]:
    z_a = sphere(n, d, seed=21, dtype=torch.float64)
    z_b = near(z_a, 0.5)
    by_role = {
        "z_a": z_a,
        "z_b": z_b,
        "z": torch.cat([z_a, z_b]),
        "labels": torch.arange(2 * n) % (n // 3),
        "q": z_a,
        "k": z_b,
        "queue": sphere(3 * n, d, seed=22, dtype=torch.float64),
        "views": torch.stack([z_a, z_b, near(z_a, 0.7, seed=23)]),
        "modalities": torch.stack([z_a, z_b, near(z_a, 0.7, seed=23)]),
        "mix_index": torch.arange(n).roll(3),
        "mix_lambda": torch.linspace(0.5, 1.0, n, dtype=torch.float64),
        "index": torch.arange(n) * 7,  # sample ids into a training set
        "prior": torch.linspace(-1, 1, 2 * n, dtype=torch.float64).reshape(n, 2).sin(),  # weak attributes
    }
    spec = loss_spec(name)
    floating = [role for role in spec.inputs if by_role[role].is_floating_point()]
    differentiable = [role for role in floating if role not in spec.shared and role not in ("mix_lambda", "prior")]
    return {
        role: by_role[role].to(dtype).requires_grad_(role in differentiable) if role in floating else by_role[role]
        for role in spec.inputs
    }


ALL = contrasphere.list_losses()
# Barlow Twins standardises each coordinate, SwAV compares with fixed prototypes, Symile multiplies coordinates,
# AMCL's temperature network reads coordinates: a rotation of the embedding space changes them, by design; VICReg
# penalises each coordinate's variance and each pair of coordinates' covariance, and SIGReg projects onto fixed
# (seeded) directions, which a rotation of the embeddings moves relative to them; the cross-entropy's classifier
# weights are fixed directions too
COORDINATE_WISE = {"barlow_twins", "swav", "symile", "amcl", "vicreg", "sigreg", "supervised_ce"}
# MoCHi draws negatives row by row; i-Mix's mix_index names rows: a permutation of the batch changes both
ROW_DEPENDENT = {"mochi", "i_mix"}
# iSogCLR updates per-sample temperatures in every forward, SIGReg draws new directions at every call: each
# evaluation below starts from the same state
STATEFUL = {"isogclr", "sigreg", "sogclr"}


def evaluator(loss_fn, name):
    """Call ``loss_fn``, or for a stateful loss a fresh copy of its initial state each time."""
    if name not in STATEFUL:
        return loss_fn
    pristine = copy.deepcopy(loss_fn)
    return lambda **kw: copy.deepcopy(pristine)(**kw)


def test_the_registry_holds_the_core_objectives():
    core = {"alignment", "uniformity", "align_uniform", "info_nce", "nt_xent", "clip", "siglip", "supcon", "dcl"}
    assert core | {"dclw", "debiased", "hard_negative", "moco", "align_uniform_queue"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_every_loss_is_finite_differentiable_and_invariant(name):
    loss_fn = make_loss(name, 16).double()
    kw = inputs_for(name, torch.float64)
    run = evaluator(loss_fn, name)
    torch.manual_seed(5)  # the same random draws (MoCHi) for every evaluation below
    value = run(**kw)
    assert value.ndim == 0 and torch.isfinite(value)
    tensors = [t for t in kw.values() if t.requires_grad] + [p for p in loss_fn.parameters()]
    grads = torch.autograd.grad(value, tensors)
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # invariances: a permutation of the batch, and (but for objectives that act on single coordinates) a rotation
    rot, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    spec = loss_spec(name)
    first = spec.inputs[0]
    perm = torch.randperm(kw[first].shape[1 if first in spec.stacked else 0])
    embeddings = {"z_a", "z_b", "z", "q", "k", "queue", "views", "modalities"}  # not labels, ids, weights, priors
    rotated = {k: (v.detach() @ rot if k in embeddings else v) for k, v in kw.items()}

    def permute(k, v):  # a queue is not part of the batch; stacked views hold the samples along dimension 1
        return v.detach() if k in spec.shared else v.detach()[:, perm] if k in spec.stacked else v.detach()[perm]

    permuted = {k: permute(k, v) for k, v in kw.items()}
    if name not in COORDINATE_WISE:
        torch.manual_seed(5)
        torch.testing.assert_close(run(**rotated), value.detach(), rtol=1e-9, atol=1e-9)
    if name not in ROW_DEPENDENT:
        torch.manual_seed(5)
        torch.testing.assert_close(run(**permuted), value.detach(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_loss_is_stable_in_half_precision(name, dtype):
    loss_fn = evaluator(make_loss(name, 16), name)
    low = inputs_for(name, dtype)
    torch.manual_seed(6)
    value = loss_fn(**low)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    # reduced in float32: equal to the float32 loss of the same (rounded) inputs
    same_inputs = {k: (v.detach().float() if v.is_floating_point() else v) for k, v in low.items()}
    torch.manual_seed(6)
    torch.testing.assert_close(value, loss_fn(**same_inputs), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(value, [v for v in low.values() if v.requires_grad])
    assert all(g.dtype == dtype and torch.isfinite(g.float()).all() for g in grads)


# --- every module against its function, in one loop over the registry ---------------------------------------------
GENERIC = [name for name in ALL if loss_spec(name).fn is not None]
# their own math (iSogCLR's per-sample state, AMCL's temperature network) or their own random draws (feature
# transformation's mixing, SIGReg's directions redrawn at every call): tested one by one below, AMCL against the
# authors' code in test_amcl.py, SIGReg's module against its function in tests/functional/test_regularizers.py, the
# cross-entropy classifier against its equation in tests/losses/test_supervised.py
OWN_MATH = {"feature_transformation", "isogclr", "amcl", "sigreg", "sogclr", "supervised_ce"}
# the embeddings' dimension is the inputs' (SwAV's prototypes); block_size is a tiling, not math: both kept out of
# the perturbation, block_size exercised on its own (tiles of 5) below
NOT_PERTURBED = {"dim", "block_size"}


def _keywords(fn) -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}


def _perturbed(name: str) -> dict[str, object]:
    """Every hyperparameter of the module moved off its default, to a value its function still accepts.

    Floats are scaled by 0.8: a positive value stays positive (temperatures, weights, exponents), one below 1 stays
    below 1 (tau_plus, margins), a negative one stays negative (SigLIP's bias), and CLIP's bound
    ``max_logit_scale >= 1 / init_temperature`` keeps holding (a 20 % lower cap, a 25 % larger scale); a float
    that is 0 by default (an off-by-default weight such as ``hardness``) becomes 1.5. Counts are scaled by 0.8 too
    (at least 1); a ``Literal`` choice becomes another allowed one (read from the function's annotation); an
    off-by-default ``float | None`` is switched on; a switch of the function is flipped. A switch of the module
    alone (CLIP's ``learnable``: a parameter or a buffer) is kept, so that the learnable scales' gradients are
    compared.
    """
    spec = loss_spec(name)
    hints, keywords = typing.get_type_hints(spec.fn), _keywords(spec.fn)
    out: dict[str, object] = {}
    for h, param in spec.hyperparameters.items():
        default = param.default
        if h in NOT_PERTURBED or (isinstance(default, bool) and h not in keywords):
            continue
        if isinstance(default, bool):
            out[h] = not default
        elif isinstance(default, str):
            out[h] = next(c for c in typing.get_args(hints[h]) if c != default)
        elif isinstance(default, int):
            out[h] = max(1, round(0.8 * default)) if default > 1 else default + 1
        elif isinstance(default, float):
            out[h] = 0.8 * default if default else 1.5  # an off-by-default weight (hardness) is switched on
        elif default is None and "float" in str(hints.get(h)):
            out[h] = 0.5
        else:
            raise AssertionError(f"no rule to perturb {name}.{h} (default {default!r}): extend _perturbed")
        assert out[h] != default, (name, h)
    return out


def test_the_losses_without_a_function_are_the_known_ones():
    without = {name for name in ALL if loss_spec(name).fn is None}
    assert without == OWN_MATH, "a loss without a function needs a test of its own here"


@pytest.mark.parametrize("name", GENERIC)
def test_module_defaults_are_the_functions(name):
    spec = loss_spec(name)
    keywords = _keywords(spec.fn)
    # a hyperparameter named like a keyword of the function has the function's default (CLIP's, SigLIP's and
    # Symile's init_* are named otherwise: their defaults are checked through what the module passes, below)
    for h, param in spec.hyperparameters.items():
        if h in keywords:
            assert param.default == keywords[h].default, f"{name}.{h}: {param.default!r} != {keywords[h].default!r}"
    # and a module built with its defaults hands the function the function's defaults
    for k, value in spec.cls().function_kwargs().items():
        params = inspect.signature(spec.fn).parameters
        assert k in params, f"{name} passes {k!r}, which {spec.fn.__name__} does not take"
        if params[k].default is not inspect.Parameter.empty:  # not SwAV's prototypes, an input without default
            default = params[k].default
            if isinstance(value, torch.Tensor):  # a learnable scale, stored as its log in float32
                assert float(value.detach()) == pytest.approx(default, rel=1e-6), f"{name}: {k}={value!r}"
            else:
                assert value == default, f"{name}: {k}={value!r}, the function's default is {default!r}"


def _same(a: dict, b: dict) -> bool:
    def equal(x, y):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            x, y = torch.as_tensor(x).detach(), torch.as_tensor(y).detach()
            return x.shape == y.shape and torch.equal(x.to(y.dtype), y)
        return x == y

    return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)


MODULE_CASES = [(name, None) for name in GENERIC] + [
    (name, 5) for name in GENERIC if "block_size" in loss_spec(name).hyperparameters
]


@pytest.mark.parametrize(("name", "block"), MODULE_CASES, ids=[f"{n}-block{b}" for n, b in MODULE_CASES])
def test_module_computes_its_function(name, block):
    spec = loss_spec(name)
    hyper = {**_perturbed(name), **({} if block is None else {"block_size": block})}
    module = make_loss(name, 16, **hyper).double()
    passed = module.function_kwargs()
    keywords = _keywords(spec.fn)
    for h, value in hyper.items():  # what the function takes by name, it receives as given
        if h in keywords:
            assert passed[h] == value, (name, h)
    assert not _same(passed, make_loss(name, 16).double().function_kwargs()), f"{name}: the changes did not arrive"
    kw = inputs_for(name, torch.float64)
    tensors = [t for t in kw.values() if t.requires_grad] + list(module.parameters())
    torch.manual_seed(7)  # the same random draws (MoCHi) for both
    from_module = module(**kw)
    torch.manual_seed(7)
    from_function = spec.fn(**kw, **module.function_kwargs())
    torch.testing.assert_close(from_module, from_function, rtol=0, atol=0)
    for g, want in zip(torch.autograd.grad(from_module, tensors), torch.autograd.grad(from_function, tensors)):
        torch.testing.assert_close(g, want, rtol=0, atol=0)
    if block is not None:  # the module asked for tiles of 5, and they give the dense value
        assert passed["block_size"] == block
        torch.manual_seed(7)
        dense = spec.fn(**kw, **{**module.function_kwargs(), "block_size": 0})
        torch.testing.assert_close(from_module, dense, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", GENERIC)
def test_a_bad_hyperparameter_fails_at_construction_with_the_functions_message(name):
    spec = loss_spec(name)
    rules = hyperparameter_rules(spec.fn)
    checked = [h for h in spec.hyperparameters if h in rules]
    kw = inputs_for(name, torch.float64)
    if name == "swav":  # the function takes the prototypes the module holds
        kw["prototypes"] = sphere(10, 16, seed=3)
    for h in checked:
        bad = -1.0  # fails every rule used here: positive, non-negative, integer >= 1, one of some strings
        with pytest.raises(ValueError) as want:
            rules[h](bad, h)
        assert h in str(want.value)
        with pytest.raises(ValueError) as at_construction:
            make_loss(name, 16, **{h: bad})
        assert str(at_construction.value) == str(want.value)
        with pytest.raises(ValueError) as from_function:
            spec.fn(**kw, **{h: bad})
        assert str(from_function.value) == str(want.value)


def test_every_float_with_a_positive_rule_is_checked():
    """What the loop above covers, named: every float hyperparameter that must be positive is refused at -1
    (temperatures and score scales are positive numbers with a bound, see test_bounds.py)."""
    covered = [
        (name, h)
        for name in GENERIC
        for h, rule in hyperparameter_rules(loss_spec(name).fn).items()
        if h in loss_spec(name).hyperparameters
        and getattr(rule, "__name__", "") in ("positive", "temperature", "scale")
    ]
    assert (
        ("nt_xent", "temperature") in covered and ("align_uniform", "t") in covered and ("swav", "epsilon") in covered
    )
    for name, h in covered:
        with pytest.raises(ValueError, match=h):
            contrasphere.create_loss(name, **({"dim": 16} if name == "swav" else {}), **{h: -1.0})


LOSSES_DIR = Path(contrasphere.losses.__file__).parent
# the files that hold loss modules: one per file of contrasphere.functional, and the losses with state of their own
LOSS_FILES = sorted(p for p in LOSSES_DIR.glob("*.py") if p.stem not in ("__init__", "registry", "gather"))


@pytest.mark.parametrize("name", ALL)
def test_every_loss_is_registered_in_exactly_one_loss_file(name):
    spec = loss_spec(name)
    registration = re.compile(rf'(?:function_loss|register_loss)\(\s*"{re.escape(name)}"')
    homes = [p for p in LOSS_FILES if registration.search(p.read_text())]
    assert len(homes) == 1, f"{name!r} is registered in {[p.name for p in homes]}"
    home = homes[0]
    assert spec.cls.__name__ in home.read_text(), f"{spec.cls.__name__} is not named in losses/{home.name}"
    assert spec.cls.__module__ == f"contrasphere.losses.{home.stem}"
    if spec.fn is not None:  # losses/ mirrors functional/: the module sits in the file named like its function's
        assert spec.fn.__module__ == f"contrasphere.functional.{home.stem}"
    assert spec.cls.__name__ in contrasphere.losses.__all__
    assert getattr(contrasphere.losses, spec.cls.__name__) is spec.cls


# --- the losses with their own math or draws -----------------------------------------------------------------------
def test_feature_transformation_module_is_the_function_with_its_seeded_draw():
    hyper = {"temperature": 0.1, "pos_alpha": 3.0, "neg_alpha": 1.2, "normalize_positives": True}
    module = contrasphere.create_loss("feature_transformation", **hyper).double()
    kw = inputs_for("feature_transformation", torch.float64)
    torch.manual_seed(7)
    from_module = module(**kw)
    torch.manual_seed(7)
    draw = CF.feature_transformation_draw(kw["queue"].shape[0], pos_alpha=3.0, neg_alpha=1.2)
    from_function = CF.feature_transformation(
        kw["q"], kw["k"], kw["queue"], temperature=0.1, normalize_positives=True, **draw
    )
    torch.testing.assert_close(from_module, from_function, rtol=0, atol=0)
    g_module, g_function = (torch.autograd.grad(v, kw["q"])[0] for v in (from_module, from_function))
    torch.testing.assert_close(g_module, g_function, rtol=0, atol=0)
    torch.manual_seed(8)  # another draw, another loss: the module draws its mixing, it does not fix one
    assert module(**kw) != from_module


def _isogclr_first_step(z_a, z_b, tau):
    sim = z_a @ z_b.T
    off = ~torch.eye(sim.shape[0], dtype=torch.bool)
    total = 0.0
    for diffs in (sim - sim.diagonal()[:, None], (sim - sim.diagonal()[None, :]).T):
        weights = torch.softmax((diffs / tau).masked_fill(~off, -torch.inf), dim=1).detach()
        total = total + (weights * diffs).sum(1).mean()
    return total


def test_isogclr_first_step_is_the_softmax_weighted_difference():
    # a first step: every temperature tau_init, so each weight is a softmax over the other pairs' differences
    module = contrasphere.create_loss("isogclr", num_samples=500, tau_init=0.02).double()
    kw = inputs_for("isogclr", torch.float64)
    from_module = module(**kw)
    want = _isogclr_first_step(kw["z_a"], kw["z_b"], 0.02)
    torch.testing.assert_close(from_module, want)
    grads = torch.autograd.grad(from_module, (kw["z_a"], kw["z_b"]))
    for g, w in zip(grads, torch.autograd.grad(want, (kw["z_a"], kw["z_b"]))):
        torch.testing.assert_close(g, w)


def test_clip_scale_is_clamped_and_can_be_frozen():
    loss = contrasphere.create_loss("clip", init_temperature=0.07)
    with torch.no_grad():
        loss.log_logit_scale.fill_(10.0)  # e^10 is far above the clamp
    assert loss.logit_scale.item() == pytest.approx(100.0)
    frozen = contrasphere.create_loss("clip", learnable=False)
    assert list(frozen.parameters()) == [] and "log_logit_scale" in dict(frozen.named_buffers())


def test_unknown_names_and_keywords_are_explained():
    with pytest.raises(KeyError, match="Did you mean 'nt_xent'") as info:
        contrasphere.create_loss("ntxent")
    assert "supcon" in str(info.value)  # lists what exists
    with pytest.raises(TypeError, match="no hyperparameter 'temp'.*accepts: temperature"):
        contrasphere.create_loss("nt_xent", temp=0.1)
    with pytest.raises(ValueError, match="temperature must be"):
        contrasphere.create_loss("supcon", temperature=-0.1)
    with pytest.raises(ValueError, match="registered already"):
        contrasphere.register_loss("clip", inputs=("z_a", "z_b"), paper="")(torch.nn.Identity)


# SwAV's codes (Sinkhorn), MoCHi's synthetic negatives and CWCL's weights (from the frozen modality, by default
# z_a detached), iSogCLR's weights (a stochastic estimator's) and MACL's temperature and weights are computed
# without gradient by design: a finite-difference gradient sees them move
STOP_GRADIENT = {"swav", "mochi", "cwcl", "isogclr", "macl", "sogclr"}
# unit vectors sit exactly on the spectral loss's default norm cap (mu=1), where it has a kink: cap further out
GRADCHECK_KW = {"spectral": {"mu": 4.0}}


@pytest.mark.parametrize("name", [n for n in ALL if n not in STOP_GRADIENT])
def test_every_loss_passes_gradcheck(name):
    loss_fn = evaluator(make_loss(name, 4, **GRADCHECK_KW.get(name, {})).double(), name)
    kw = inputs_for(name, torch.float64, n=6, d=4)
    names = [k for k, v in kw.items() if v.requires_grad]

    def fn(*tensors):
        torch.manual_seed(9)  # the same random draws (MoCHi, feature transformation) at every evaluation
        return loss_fn(**{**kw, **dict(zip(names, tensors))})

    assert torch.autograd.gradcheck(fn, tuple(kw[k].detach().requires_grad_() for k in names))
