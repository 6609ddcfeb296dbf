"""Checkpoints: everything a run needs to continue exactly, written atomically, read without unpickling code.

A checkpoint holds the model's and the loss's parameters (CLIP's logit scale), the optimiser, scheduler and
loss-scaler states, the step, the losses of the epoch in progress, and the recipe. Random state is not needed:
every random choice of a step is seeded by ``(seed, step)`` (see :mod:`contrasphere.train.loop`). It is written to
a temporary file in the same folder and renamed over the old one, so a kill leaves either the old or the new
checkpoint; it is read with ``torch.load(weights_only=True)``, which refuses pickled objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT = "checkpoint.pt"


@dataclass
class Trainable:
    """The stateful parts of a run, as the loop holds them."""

    model: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save(path: Path, parts: Trainable, *, step: int, total_steps: int, epoch_loss: list[float], recipe: dict) -> None:
    state = {
        "model": parts.model.state_dict(),
        "loss": parts.loss.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "step": step,
        "total_steps": total_steps,
        "epoch_loss": epoch_loss,
        "recipe": recipe,
    }
    atomic_save(state, path)


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict of tensors and plain values (no pickled objects are run)."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: pass a run folder written by `contrasphere train`")
    state: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    return state


def restore(state: dict[str, Any], parts: Trainable) -> tuple[int, list[float]]:
    """Load ``state`` into ``parts``; returns the step and the losses of the epoch in progress."""
    parts.model.load_state_dict(state["model"])
    parts.loss.load_state_dict(state["loss"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    return int(state["step"]), [float(x) for x in state["epoch_loss"]]
