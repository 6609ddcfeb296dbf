"""Temperatures (and other divisors of the scores) and score scales that float32 cannot hold are refused.

A temperature passes the "finite and > 0" check at 1e-40 and then overflows ``1 / T`` in float32 (a subnormal):
every temperature-taking loss returned NaN. Every registered loss is built here with each of its temperature-like
hyperparameters below the bound (refused at construction, with a message naming the smallest allowed value) and
at small but sensible values (a finite loss and gradient in float32).
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_loss
from test_registry import evaluator, inputs_for

import contrasphere
from contrasphere import _validate as check
from contrasphere.losses import loss_spec

# hyperparameters the scores are divided by (temperatures, SwAV's Sinkhorn epsilon, kernel widths)
DIVISORS = {"temperature", "base_temperature", "init_temperature", "epsilon", "sigma", "tau_min", "tau_init"}
# hyperparameters the scores are multiplied by
MULTIPLIERS = {"t", "max_logit_scale", "init_logit_scale", "tau_pos", "tau_neg"}
ALL = contrasphere.list_losses()
CASES = [(name, h) for name in ALL for h in loss_spec(name).hyperparameters if h in DIVISORS]
SCALE_CASES = [(name, h) for name in ALL for h in loss_spec(name).hyperparameters if h in MULTIPLIERS]


def _with(name: str, h: str, value: float) -> dict[str, float]:
    """``{h: value}`` plus what keeps the loss's other constraints (orderings, CLIP's cap) satisfied."""
    kw = {h: value}
    if name == "isogclr" and h == "tau_init":
        kw["tau_min"] = min(value, 0.005)
    if name in ("clip", "symile") and h == "init_temperature":
        kw["max_logit_scale"] = max(100.0, 1.0 / value)
    return kw


def test_every_temperature_of_the_registry_is_covered():
    covered = {name for name, _ in CASES}
    takes_temperature = {name for name in ALL if "temperature" in loss_spec(name).hyperparameters}
    assert takes_temperature <= covered and len(takes_temperature) >= 17
    assert {"clip", "symile", "amcl", "isogclr", "swav", "dclw", "decoupled_uniformity"} <= covered


@pytest.mark.parametrize("value", [1e-40, 1e-39, 1e-25])
@pytest.mark.parametrize(("name", "h"), CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_a_temperature_whose_reciprocal_overflows_is_refused_at_construction(name, h, value):
    with pytest.raises(ValueError) as info:
        make_loss(name, 16, **_with(name, h, value))
    message = str(info.value)
    assert "at least 1e-20" in message and "float32" in message, message
    assert h in message or ("tau_min" in message and name == "isogclr"), message


@pytest.mark.parametrize("temperature", [1e-3, 1e-20])
@pytest.mark.parametrize(("name", "h"), CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_a_small_temperature_gives_a_finite_loss_and_gradient_in_float32(name, h, temperature):
    loss_fn = evaluator(make_loss(name, 16, **_with(name, h, temperature)), name)
    kw = inputs_for(name, torch.float32)
    torch.manual_seed(3)
    value = loss_fn(**kw)
    assert torch.isfinite(value), f"{name}({h}={temperature}) = {value}"
    grads = torch.autograd.grad(value, [t for t in kw.values() if t.requires_grad], allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads), f"{name}({h}={temperature}): grad not finite"


@pytest.mark.parametrize(("name", "h"), SCALE_CASES, ids=[f"{n}-{h}" for n, h in SCALE_CASES])
def test_a_score_scale_beyond_float32_is_refused_and_a_large_one_is_finite(name, h):
    with pytest.raises(ValueError, match=rf"{h} must be at most 1e\+20"):
        make_loss(name, 16, **{h: 1e40})
    loss_fn = evaluator(make_loss(name, 16, **{h: 1e6}), name)
    kw = inputs_for(name, torch.float32)
    torch.manual_seed(3)
    value = loss_fn(**kw)
    assert torch.isfinite(value), f"{name}({h}=1e6) = {value}"


def test_the_rules_themselves():
    assert check.temperature(1e-20, "temperature") == 1e-20 and check.temperature(2, "temperature") == 2.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            check.temperature(bad, "temperature")
    with pytest.raises(ValueError, match="tau must be at least 1e-20"):
        check.temperature(1e-30, "tau")
    assert check.scale(1e20, "t") == 1e20
    with pytest.raises(ValueError, match="t must be at most 1e\\+20"):
        check.scale(1e21, "t")
    assert check.non_negative_scale(0.0, "tau_neg") == 0.0
    with pytest.raises(ValueError, match="tau_neg must be at most"):
        check.non_negative_scale(1e300, "tau_neg")
