"""The learnable scalars several losses hold: a logit scale (stored as its log, clamped) or a bias."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def add_scalar(module: nn.Module, name: str, value: float, learnable: bool) -> None:
    """Give ``module`` a scalar ``name``: a ``Parameter`` when ``learnable``, else a buffer (saved either way)."""
    tensor = torch.tensor(float(value))
    if learnable:
        setattr(module, name, nn.Parameter(tensor))
    else:
        module.register_buffer(name, tensor)


def add_log_scale(module: nn.Module, scale: float, learnable: bool) -> None:
    """``module.log_logit_scale = log(scale)``, learnable or fixed, as CLIP stores its temperature."""
    add_scalar(module, "log_logit_scale", math.log(scale), learnable)


def clamped_scale(log_scale: Tensor, max_scale: float) -> Tensor:
    """``exp(log_scale)`` clamped at ``max_scale`` (CLIP: 100), which keeps training stable."""
    scale: Tensor = log_scale.exp().clamp(max=max_scale)
    return scale
