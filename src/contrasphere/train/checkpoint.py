"""Checkpoints: everything a run needs to continue exactly, written atomically, read without unpickling code.

A checkpoint holds the model's and the loss's parameters (CLIP's logit scale), the optimiser, scheduler and
loss-scaler states, the step, the losses of the epoch in progress, and the recipe. Random state is not needed:
every random choice of a step is seeded by ``(seed, step)`` (see :mod:`contrasphere.train.loop`). It is written to
a temporary file in the same folder, flushed to disk and renamed over the old one, so a kill leaves either the
old or the new checkpoint; it is read with ``torch.load(weights_only=True)``, which refuses pickled objects (a
checkpoint that carries code is refused, never run).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MissingRunError, RunError
from .rundir import write_atomic

CHECKPOINT = "checkpoint.pt"
KEYS = ("model", "loss", "optimizer", "scheduler", "scaler", "step", "total_steps", "epoch_loss", "recipe")
# recipe fields a resumed run may change: how long it trains (the schedule then spans the new total from the
# step reached), how often it logs and saves, where it runs, and what its evaluation does
RESUMABLE_CHANGES = (
    "description",
    "train.epochs",
    "train.max_steps",
    "train.checkpoint_every",
    "train.log_every",
    "train.threads",
    "train.device",
    "train.dist_timeout",
    "loss.distributed",  # how ranks share the reductions: the same loss and gradients either way
    "eval.",
    "log.",
)


@dataclass
class Trainable:
    """The stateful parts of a run, as the loop holds them."""

    model: nn.Module
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


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
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict of tensors and plain values; damaged or foreign files are refused."""
    if not path.exists():
        raise MissingRunError(f"no checkpoint at {path}: pass a run folder written by `contrasphere train`")
    if path.stat().st_size == 0:
        raise RunError(f"{path} is empty (a disk that filled up, or a copy that failed); delete it and retrain")
    if not zipfile.is_zipfile(path):  # not even torch.save's container: truncated, or bytes from elsewhere (fed to
        # the legacy unpickler, random bytes fail with KeyError, IndexError, struct.error, ... or not at all)
        raise RunError(
            f"{path} is damaged or not a checkpoint (not a torch.save archive); restore it from a copy, or "
            "delete the run folder and retrain"
        )
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:  # what weights_only refuses: objects that would run code
        raise RunError(
            f"{path} holds pickled objects beyond tensors and plain values, which contrasphere never loads (they "
            f"can run code); it was not written by `contrasphere train`. ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as err:
        raise RunError(
            f"{path} is damaged or not a checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
            "restore it from a copy, or delete the run folder and retrain"
        ) from None
    if not isinstance(state, dict):
        raise RunError(f"{path} is not a contrasphere checkpoint (it holds a {type(state).__name__}, not a dict)")
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise RunError(f"{path} lacks {', '.join(missing)}: it was not written by `contrasphere train`, or is damaged")
    return state


def restore(state: dict[str, Any], parts: Trainable) -> tuple[int, list[float]]:
    """Load ``state`` into ``parts``; returns the step and the losses of the epoch in progress."""
    try:
        parts.model.load_state_dict(state["model"])
        parts.loss.load_state_dict(state["loss"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        parts.scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise RunError(
            f"the checkpoint does not fit this recipe's model and loss: {str(err).splitlines()[0]}"
        ) from None
    return int(state["step"]), [float(x) for x in state["epoch_loss"]]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "args":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_changes(saved: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(refused, allowed)``: the dotted fields where ``new`` differs from the checkpoint's ``saved`` recipe."""
    a, b = _flat(saved), _flat(new)
    differing = sorted(k for k in set(a) | set(b) if _jsonish(a.get(k)) != _jsonish(b.get(k)))
    allowed = [k for k in differing if k.startswith(RESUMABLE_CHANGES)]
    return [k for k in differing if k not in allowed], allowed


def _jsonish(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_resume(saved: dict[str, Any], new: dict[str, Any], path: Path) -> None:
    """Refuse a resumed run whose recipe differs from its checkpoint's except in :data:`RESUMABLE_CHANGES`."""
    refused, _ = recipe_changes(saved, new)
    if refused:
        a, b = _flat(saved), _flat(new)
        listed = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in refused[:8])
        raise RunError(
            f"--resume with a recipe that differs from the checkpoint's ({path}) in {listed}. Resume with the "
            "saved recipe (contrasphere train RUN/recipe.json --out RUN --resume), or start a new run; only "
            f"{', '.join(RESUMABLE_CHANGES)} may change on resume"
        )
