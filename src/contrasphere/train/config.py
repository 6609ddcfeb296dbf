"""Recipes: typed training configurations, every field stated, overridable with ``--set key=value``.

A :class:`Recipe` is a tree of dataclasses (data, augment, model, loss, optim, train, eval). Each registered recipe
is a function returning a fully populated recipe; its ``tiny`` preset shrinks it to a few steps on a few samples
(what the tests run end to end). Overrides use dotted keys and are parsed by the field's type::

    contrasphere train cifar10-align-uniform --set optim.lr=0.1 --set train.epochs=20 --set loss.args.t=3

``loss.args`` holds the loss's keyword arguments, checked against the loss's constructor; setting another
``loss.name`` starts from the new loss's defaults. Unknown keys are
rejected with the closest matches. The recipe is saved as JSON beside every checkpoint and read back by
``contrasphere eval`` and ``--resume``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .augment import AugmentConfig


@dataclass
class DataConfig:
    dataset: str = "digits"  # see `contrasphere list datasets`
    root: str = ""  # folder (or file) of the data; empty: the standard places
    download: bool = False  # torchvision datasets only
    batch_size: int = 256  # global batch (over all processes and accumulation steps)
    train_samples: int = 0  # a seeded subset of the training set; 0: all of it
    test_samples: int = 0  # a seeded subset of the test set; 0: all of it
    image_size: int = 0  # decode/resize images to this side (image-text); 0: as stored
    max_length: int = 32  # tokens per sentence (text)


@dataclass
class ModelConfig:
    encoder: str = "small_convnet"  # see contrasphere.models.ENCODERS
    widths: tuple[int, ...] = (32, 64, 128)  # small_convnet stage widths
    pretrained: str = ""  # text encoder: local model folder; empty: the packaged all-MiniLM-L6-v2
    pooling: str = "mean"  # text encoder pooling: mean or cls
    freeze_encoder: bool = False
    head: str = "mlp"  # mlp, linear or none
    head_hidden: int = 512
    out_dim: int = 128  # embedding dimension on the sphere
    text_encoder: str = "minilm"  # image-text: the text tower (trained)
    freeze_text_encoder: bool = False


@dataclass
class LossConfig:
    name: str = "align_uniform"  # see `contrasphere list losses`
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the loss
    block_size: int = 0  # tile size of the pairwise engine; 0: automatic


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd, adam or adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine, step or constant (per step, after warmup)
    warmup_steps: int = 0
    milestones: tuple[float, ...] = ()  # step schedule: fractions of training where lr is multiplied by gamma
    gamma: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int = 0  # stop after this many optimiser steps; 0: epochs decide
    accumulate: int = 1  # micro-batches per optimiser step (gradient accumulation)
    precision: str = "fp32"  # fp32, bf16 (autocast) or fp16 (autocast + loss scaling, CUDA)
    seed: int = 0
    device: str = "auto"  # auto (cuda when available), cpu, cuda
    checkpoint_every: int = 0  # steps between checkpoints; 0: at the end of every epoch
    heldout_samples: int = 1000  # held-out images/sentences for alignment and uniformity each epoch
    log_every: int = 10  # steps between progress lines when tqdm is not installed
    threads: int = 0  # torch CPU threads; 0: PyTorch's default


@dataclass
class EvalConfig:
    knn_k: int = 200
    knn_temperature: float = 0.07
    linear_probe: bool = True
    probe_protocol: str = "fast"  # fast (Adam, standardised features) or paper (Wang & Isola's schedule)
    probe_epochs: int = 100
    sts_sets: tuple[str, ...] = ("stsb",)  # text: STS sets to evaluate (stsb, sts12..sts16, sickr)
    plots: bool = True


@dataclass
class Recipe:
    name: str = "digits"
    description: str = ""
    task: str = "views"  # views (two augmented views), text (SimCSE dropout views) or image_text (pairs)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        recipe = cls()
        apply_overrides(recipe, _flatten(d))
        return recipe


TASKS = ("views", "text", "image_text")


def _flatten(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in d.items():
        if isinstance(value, dict) and key != "args":
            out += _flatten(value, f"{prefix}{key}.")
        elif key == "args":
            out += [f"{prefix}args.{k}={json.dumps(v)}" for k, v in value.items()]
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def all_keys(obj: Any = None, prefix: str = "") -> list[str]:
    """Every dotted key of a recipe (``loss.args.*`` aside)."""
    obj = obj if obj is not None else Recipe()
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys += all_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _parse(text: str, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            value = json.loads(text)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
        if kind is str:
            value = json.loads(text) if text.startswith('"') else text
            return str(value)
        if origin is tuple:
            args = typing.get_args(kind)
            items = json.loads(text) if text.startswith("[") else [t for t in text.split(",") if t.strip()]
            item_kind = args[0]
            if (len(args) != 2 or args[1] is not Ellipsis) and len(items) != len(args):  # fixed length
                raise ValueError
            return tuple(_parse(json.dumps(i) if not isinstance(i, str) else i, item_kind, key) for i in items)
    except (ValueError, json.JSONDecodeError):
        pass
    else:
        raise TypeError(f"cannot set {key}: unsupported type {kind}")
    name = getattr(kind, "__name__", str(kind))
    raise ValueError(f"{key}={text!r} is not a valid {name}")


def _loss_arguments(name: str) -> list[str]:
    from ..losses import loss_spec

    try:
        factory = loss_spec(name).cls
    except (KeyError, AttributeError):
        return []
    params = inspect.signature(factory).parameters
    return [p for p, v in params.items() if v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD) and p != "self"]


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """Apply ``key=value`` strings to ``recipe`` in place; unknown keys and bad values raise ``ValueError``."""
    hints_cache: dict[type, dict[str, Any]] = {}
    # a loss's arguments belong to that loss: a new loss.name is applied first and starts from no arguments
    overrides = sorted(overrides, key=lambda item: not item.replace(" ", "").startswith("loss.name="))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key, text = key.strip(), text.strip()
        parts = key.split(".")
        if parts[:2] == ["loss", "args"] and len(parts) == 3:
            known = _loss_arguments(recipe.loss.name)
            if known and parts[2] not in known:
                close = difflib.get_close_matches(parts[2], known, n=3)
                hint = f"; did you mean {', '.join('loss.args.' + c for c in close)}?" if close else ""
                raise ValueError(
                    f"loss {recipe.loss.name!r} has no argument {parts[2]!r}{hint} (its arguments: {', '.join(known)})"
                )
            try:
                recipe.loss.args[parts[2]] = json.loads(text)
            except json.JSONDecodeError:
                recipe.loss.args[parts[2]] = text
            continue
        target: Any = recipe
        for part in parts[:-1]:
            target = getattr(target, part, None) if dataclasses.is_dataclass(target) else None
        if not dataclasses.is_dataclass(target) or parts[-1] not in {f.name for f in dataclasses.fields(target)}:
            close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown recipe key {key!r}{hint} (see `contrasphere train RECIPE --show`)")
        cls = type(target)
        if cls not in hints_cache:
            hints_cache[cls] = typing.get_type_hints(cls)
        kind = hints_cache[cls][parts[-1]]
        if typing.get_origin(kind) is dict or isinstance(kind, types.UnionType):
            value = json.loads(text)
        else:
            value = _parse(text, kind, key)
        if key == "loss.name" and value != recipe.loss.name:
            recipe.loss.args = {}
        setattr(target, parts[-1], value)
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    """Reject values no run could use, with what to do instead."""
    from ..losses import list_losses

    if recipe.task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {recipe.task!r}")
    if recipe.loss.name not in list_losses():
        close = difflib.get_close_matches(recipe.loss.name, list_losses(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown loss {recipe.loss.name!r}{hint}; see `contrasphere list losses`")
    checks = [
        (recipe.data.batch_size >= 2, "data.batch_size must be at least 2 (contrastive losses compare samples)"),
        (recipe.train.accumulate >= 1, "train.accumulate must be at least 1"),
        (
            recipe.data.batch_size % recipe.train.accumulate == 0,
            "data.batch_size must be divisible by train.accumulate",
        ),
        (recipe.train.precision in ("fp32", "bf16", "fp16"), "train.precision must be fp32, bf16 or fp16"),
        (recipe.optim.name in ("sgd", "adam", "adamw"), "optim.name must be sgd, adam or adamw"),
        (recipe.optim.schedule in ("cosine", "step", "constant"), "optim.schedule must be cosine, step or constant"),
        (recipe.optim.lr > 0, "optim.lr must be positive"),
        (recipe.train.epochs >= 1 or recipe.train.max_steps >= 1, "set train.epochs or train.max_steps"),
        (recipe.eval.probe_protocol in ("fast", "paper"), "eval.probe_protocol must be fast or paper"),
        (recipe.model.out_dim >= 1, "model.out_dim must be positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
