"""One generic test over every registered loss, and the registry's own errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import make_loss, near, sphere

import contrasphere
from contrasphere import functional as CF
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
# AMCL's temperature network reads coordinates: a rotation of the embedding space changes them, by design
COORDINATE_WISE = {"barlow_twins", "swav", "symile", "amcl"}
# MoCHi draws negatives row by row; i-Mix's mix_index names rows: a permutation of the batch changes both
ROW_DEPENDENT = {"mochi", "i_mix"}
# iSogCLR updates per-sample temperatures in every forward: each evaluation below starts from the same state
STATEFUL = {"isogclr"}


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


MODULE_VS_FUNCTION = {
    "alignment": ({"alpha": 1.5}, lambda kw, m: CF.alignment(kw["z_a"], kw["z_b"], alpha=1.5)),
    "uniformity": ({"t": 3.0}, lambda kw, m: CF.uniformity(kw["z"], t=3.0)),
    "align_uniform": (
        {"align_weight": 2.0, "uniform_weight": 0.5, "alpha": 1.0, "t": 1.0},
        lambda kw, m: CF.align_uniform(kw["z_a"], kw["z_b"], align_weight=2.0, uniform_weight=0.5, alpha=1.0, t=1.0),
    ),
    "info_nce": ({"temperature": 0.3}, lambda kw, m: CF.info_nce(kw["z_a"], kw["z_b"], temperature=0.3)),
    "nt_xent": ({"temperature": 0.3}, lambda kw, m: CF.nt_xent(kw["z_a"], kw["z_b"], temperature=0.3)),
    "clip": ({"init_temperature": 0.05}, lambda kw, m: CF.clip_loss(kw["z_a"], kw["z_b"], logit_scale=20.0)),
    "siglip": (
        {"init_logit_scale": 5.0, "init_logit_bias": -2.0},
        lambda kw, m: CF.siglip_loss(kw["z_a"], kw["z_b"], logit_scale=5.0, logit_bias=-2.0),
    ),
    "supcon": ({"temperature": 0.2}, lambda kw, m: CF.supcon(kw["z"], kw["labels"], temperature=0.2)),
    "dcl": ({"temperature": 0.2}, lambda kw, m: CF.dcl(kw["z_a"], kw["z_b"], temperature=0.2)),
    "dclw": (
        {"temperature": 0.2, "sigma": 0.3},
        lambda kw, m: CF.dclw(kw["z_a"], kw["z_b"], temperature=0.2, sigma=0.3),
    ),
    "debiased": (
        {"temperature": 0.3, "tau_plus": 0.2},
        lambda kw, m: CF.debiased_nt_xent(kw["z_a"], kw["z_b"], temperature=0.3, tau_plus=0.2),
    ),
    "hard_negative": (
        {"temperature": 0.3, "tau_plus": 0.2, "beta": 0.5},
        lambda kw, m: CF.hard_negative_nt_xent(kw["z_a"], kw["z_b"], temperature=0.3, tau_plus=0.2, beta=0.5),
    ),
    "moco": ({"temperature": 0.1}, lambda kw, m: CF.moco_info_nce(kw["q"], kw["k"], kw["queue"], temperature=0.1)),
    "align_uniform_queue": (
        {"align_weight": 2.0, "t": 2.0, "intra_batch": False},
        lambda kw, m: CF.align_uniform_queue(kw["q"], kw["k"], kw["queue"], align_weight=2.0, t=2.0, intra_batch=False),
    ),
    "barlow_twins": ({"lambd": 0.01}, lambda kw, m: CF.barlow_twins(kw["z_a"], kw["z_b"], lambd=0.01)),
    "spectral": ({"mu": 0.5}, lambda kw, m: CF.spectral_contrastive(kw["z_a"], kw["z_b"], mu=0.5)),
    "swav": (
        {"dim": 16, "num_prototypes": 12, "temperature": 0.2},
        lambda kw, m: CF.swav(kw["z_a"], kw["z_b"], F.normalize(m.prototypes, dim=1), temperature=0.2),
    ),
    "cmc": ({"temperature": 0.2}, lambda kw, m: CF.cmc(kw["views"], temperature=0.2)),
    "symile": ({"init_temperature": 0.1}, lambda kw, m: CF.symile(kw["modalities"], logit_scale=10.0)),
    "margin_info_nce": (
        {"temperature": 0.1, "margin": 0.2, "kind": "angular"},
        lambda kw, m: CF.margin_info_nce(kw["z_a"], kw["z_b"], temperature=0.1, margin=0.2, kind="angular"),
    ),
    "cwcl": ({"temperature": 0.2}, lambda kw, m: CF.cwcl(kw["z_a"], kw["z_b"], temperature=0.2)),
    "cacr": ({"alpha": 2.0, "tau_neg": 0.5}, lambda kw, m: CF.cacr(kw["views"], alpha=2.0, tau_neg=0.5)),
    # one head: the sum over heads is that head; checked against the authors' code in test_objectives.py
    "amcl": ({"dim": 16, "num_heads": 1, "topk": 5}, lambda kw, m: m(kw["z_a"][:, None], kw["z_b"][:, None])),
    "feature_transformation": (
        {"temperature": 0.1},
        lambda kw, m: CF.feature_transformation(
            kw["q"], kw["k"], kw["queue"], temperature=0.1, **CF.feature_transformation_draw(kw["queue"].shape[0])
        ),
    ),
    "poly_view": (
        {"temperature": 0.3, "method": "arithmetic"},
        lambda kw, m: CF.poly_view(kw["views"], temperature=0.3, method="arithmetic"),
    ),
    "decoupled_uniformity": (
        {"t": 3.0, "kernel": "cosine"},
        lambda kw, m: CF.decoupled_uniformity(kw["views"], kw["prior"], t=3.0, kernel="cosine"),
    ),
    "macl": (
        {"temperature": 0.2, "alpha": 1.0, "schedule": "linear"},
        lambda kw, m: CF.macl(kw["z_a"], kw["z_b"], temperature=0.2, alpha=1.0, schedule="linear"),
    ),
    # a first step: every temperature tau_init, so each weight is a softmax over the other pairs' differences
    "isogclr": ({"num_samples": 500, "tau_init": 0.02}, lambda kw, m: _isogclr_first_step(kw["z_a"], kw["z_b"], 0.02)),
    "mochi": (
        {"n_hard": 20, "s_mix": 8, "s_query": 4},
        lambda kw, m: CF.mochi(kw["q"], kw["k"], kw["queue"], n_hard=20, s_mix=8, s_query=4),
    ),
    "i_mix": (
        {"temperature": 0.1},
        lambda kw, m: CF.i_mix(kw["z_a"], kw["z_b"], kw["mix_index"], kw["mix_lambda"], temperature=0.1),
    ),
}


def _isogclr_first_step(z_a, z_b, tau):
    sim = z_a @ z_b.T
    off = ~torch.eye(sim.shape[0], dtype=torch.bool)
    total = 0.0
    for diffs in (sim - sim.diagonal()[:, None], (sim - sim.diagonal()[None, :]).T):
        weights = torch.softmax((diffs / tau).masked_fill(~off, -torch.inf), dim=1).detach()
        total = total + (weights * diffs).sum(1).mean()
    return total


@pytest.mark.parametrize("name", ALL)
def test_module_equals_function(name):
    assert name in MODULE_VS_FUNCTION, f"add {name!r} to MODULE_VS_FUNCTION"
    hyper, fn = MODULE_VS_FUNCTION[name]
    kw = inputs_for(name, torch.float64)
    module = contrasphere.create_loss(name, **hyper).double()
    torch.manual_seed(7)
    from_module = module(**kw)
    torch.manual_seed(7)
    torch.testing.assert_close(from_module, fn(kw, module))


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
STOP_GRADIENT = {"swav", "mochi", "cwcl", "isogclr", "macl"}
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
