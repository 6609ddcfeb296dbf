"""The optimiser and the learning-rate schedule of a recipe (per optimiser step, after a linear warm-up)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .config import OptimConfig


def lr_factor(optim: OptimConfig, step: int, total: int) -> float:
    """The multiplier of ``optim.lr`` at optimiser step ``step`` (0-based) of ``total``.

    Warm-up: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, reaching 1 on the last of them.
    After it, with ``p`` the fraction of the remaining steps done: ``cosine`` decays as ``(1 + cos(pi p)) / 2``
    (1 at the end of warm-up, 0 at ``total``); ``step`` multiplies by ``gamma`` at each milestone fraction ``p``
    passed; ``constant`` stays at 1.
    """
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, total - optim.warmup_steps)
    if optim.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if optim.schedule == "step":
        return float(optim.gamma ** sum(progress >= m for m in optim.milestones))
    return 1.0


def build_optimizer(params: Iterable[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over ``params``, as ``optim`` says."""
    params = list(params)
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    cls = torch.optim.Adam if optim.name == "adam" else torch.optim.AdamW
    return cls(params, lr=optim.lr, weight_decay=optim.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler applying :func:`lr_factor` for a run of ``total`` optimiser steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(optim, step, total))
