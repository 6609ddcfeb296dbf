"""Recipes: typed training configurations, every field stated once, overridable with ``--set key=value``.

A :class:`Recipe` is a tree of dataclasses (data, augment, model, loss, optim, train, eval). Every choice among
fixed values is a ``Literal`` type and is checked from the type (:func:`validate`), so the allowed values are
written once, in the annotation. Programs change a recipe with :func:`dataclasses.replace`; strings are parsed
only for the command line, by the field's type::

    contrasphere train cifar10-align-uniform --set optim.lr=0.1 --set train.epochs=20 --set loss.args.t=3

``loss.args`` holds the loss's keyword arguments, checked against the loss's constructor; setting another
``loss.name`` starts from the new loss's defaults. Unknown keys are rejected with the closest matches. The recipe
is saved as JSON beside every checkpoint and read back (:meth:`Recipe.from_dict`, no strings involved) by
``contrasphere eval`` and ``--resume``. The catalogue of named recipes is :mod:`contrasphere.train.recipes`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError
from .augment import AugmentConfig

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

Dataset = Literal[
    "digits", "cifar10", "torchvision-cifar10", "torchvision-stl10", "image-folder", "wiki1m", "text-lines", "flickr8k"
]
Encoder = Literal["small_alexnet", "small_convnet", "resnet18_cifar", "minilm", "efficientnet_lite0"]


@dataclass
class DataConfig:
    dataset: Dataset = "digits"  # see `contrasphere list datasets`
    root: str = ""  # folder (or file) of the data; empty: the standard places
    download: bool = False  # torchvision datasets only
    batch_size: int = 256  # global batch (over all processes and accumulation steps)
    train_samples: int = 0  # a seeded subset of the training set; 0: all of it
    test_samples: int = 0  # a seeded subset of the test set; 0: all of it
    image_size: int = 0  # decode/resize images to this side (image-text); 0: as stored
    max_length: int = 32  # tokens per sentence when training (text); evaluation: eval.max_length


@dataclass
class ModelConfig:
    encoder: Encoder = "small_convnet"  # see contrasphere.train.models.ENCODERS
    widths: tuple[int, ...] = (32, 64, 128)  # stage widths (small_convnet only)
    pretrained: str = ""  # text encoder: local model folder; empty: the packaged all-MiniLM-L6-v2
    pooling: Literal["mean", "cls"] = "mean"  # text encoder pooling
    freeze_encoder: bool = False
    head: Literal["mlp", "linear", "none"] = "mlp"
    head_hidden: int = 512
    out_dim: int = 128  # embedding dimension on the sphere
    text_encoder: Literal["minilm"] = "minilm"  # image-text: the text tower (trained)
    freeze_text_encoder: bool = False


@dataclass
class LossConfig:
    name: str = "align_uniform"  # see `contrasphere list losses`
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the loss
    block_size: int | None = None  # the engine's tiles, as in the library: None automatic, 0 dense, n tiles
    # under torchrun: each rank its share of the tiles ("local"), the whole matrix on every rank ("full"), or the
    # column blocks passed around a ring, no rank holding the global batch ("ring": info_nce, nt_xent, clip, siglip)
    distributed: Literal["local", "full", "ring"] = "local"


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"  # per step, after warmup
    warmup_steps: int = 0
    milestones: tuple[float, ...] = ()  # step schedule: fractions of training where lr is multiplied by gamma
    gamma: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int = 0  # stop after this many optimiser steps; 0: epochs decide
    accumulate: int = 1  # micro-batches per optimiser step (gradient accumulation)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16: autocast; fp16: autocast + loss scaling (CUDA)
    seed: int = 0
    device: str = "auto"  # auto (cuda when available), cpu, cuda or cuda:N
    checkpoint_every: int = 0  # steps between checkpoints; 0: at the end of every epoch
    heldout_samples: int = 1000  # held-out images/sentences for alignment and uniformity each epoch
    heldout_every: int = 0  # also measure them every this many steps within an epoch; 0: at epoch ends only
    log_every: int = 10  # steps between progress lines when tqdm is not installed
    threads: int = 0  # torch CPU threads; 0: PyTorch's default
    dist_timeout: float = 600.0  # seconds a collective may wait for a silent rank before the job fails


@dataclass
class EvalConfig:
    knn_k: int = 200
    knn_temperature: float = 0.07
    linear_probe: bool = True
    probe_protocol: Literal["fast", "paper"] = "fast"  # fast: Adam, standardised features; paper: Wang & Isola's
    probe_epochs: int = 100
    sts_sets: tuple[str, ...] = ("stsb",)  # text: STS sets to evaluate (stsb, sts12..sts16, sickr)
    # text: tokens per sentence when evaluating (STS, held-out alignment/uniformity, caption retrieval); 0: the
    # encoder's own maximum (256 for all-MiniLM-L6-v2), as its published scores; data.max_length is for training
    max_length: int = 0
    plots: bool = True


@dataclass
class LogConfig:
    # Weights & Biases beside log.jsonl and TensorBoard: "offline" writes OUT/wandb without a network (upload it
    # later with `wandb sync OUT/wandb/offline-run-*`), "online" streams to your account; needs `pip install wandb`
    wandb: Literal["off", "offline", "online"] = "off"
    wandb_project: str = "contrasphere"


@dataclass
class Recipe:
    name: str = "digits"
    description: str = ""
    task: Literal["views", "text", "image_text"] = "views"  # two augmented views, SimCSE dropout views, pairs
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        """The recipe that :meth:`to_dict` wrote (JSON lists become tuples); unknown keys and bad values raise."""
        recipe = _from_dict(cls, d, "")
        validate(recipe)
        return recipe


def _from_dict(cls: type, d: dict[str, Any], prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'recipe'} must be a JSON object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown recipe key(s) {', '.join(prefix + k for k in unknown)}")
    values = {}
    for key, value in d.items():
        kind = hints[key]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            values[key] = _from_dict(kind, value, f"{prefix}{key}.")
        else:
            values[key] = _coerce(value, kind, prefix + key)
    return cls(**values)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """``value`` (from JSON) as the field type ``kind``: tuples from lists, floats from ints; else an error."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):  # a whole sub-config
        return value if isinstance(value, kind) else _from_dict(kind, value, f"{key}.")
    if isinstance(kind, types.UnionType) or origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key) if len(inner) == 1 else value
    if origin is tuple and isinstance(value, (list, tuple)):
        item = args[0] if args else Any
        return tuple(_coerce(v, item, key) for v in value)
    if origin is dict and isinstance(value, dict):
        return dict(value)
    if origin is Literal and value in args:
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool) and type(value) is kind:
        return value
    if kind is Any:
        return value
    raise ConfigError(f"{key}={value!r} is not a valid {getattr(kind, '__name__', kind)}")


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
    """A command-line string as the field type ``kind`` (``none``/``null`` for an optional field's None)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if isinstance(kind, types.UnionType) or origin is typing.Union:
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _parse(text, inner[0], key)
        return json.loads(text)
    try:
        if origin is Literal:
            value = json.loads(text) if text.startswith('"') else text
            if value in args:
                return value
            raise ValueError
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
            items = json.loads(text) if text.startswith("[") else [t for t in text.split(",") if t.strip()]
            if (len(args) != 2 or args[1] is not Ellipsis) and len(items) != len(args):  # fixed length
                raise ValueError
            return tuple(_parse(json.dumps(i) if not isinstance(i, str) else i, args[0], key) for i in items)
        if origin is dict:
            return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        pass
    else:
        raise TypeError(f"cannot set {key}: unsupported type {kind}")
    if origin is Literal:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}, got {text!r}")
    name = getattr(kind, "__name__", str(kind))
    raise ConfigError(f"{key}={text!r} is not a valid {name}")


def _loss_arguments(name: str) -> list[str]:
    from ..losses import loss_spec

    try:
        return list(loss_spec(name).hyperparameters)
    except KeyError:
        return []


def _set_loss_argument(recipe: Recipe, argument: str, text: str) -> None:
    known = _loss_arguments(recipe.loss.name)
    if known and argument not in known:
        close = difflib.get_close_matches(argument, known, n=3)
        hint = f"; did you mean {', '.join('loss.args.' + c for c in close)}?" if close else ""
        raise ConfigError(
            f"loss {recipe.loss.name!r} has no argument {argument!r}{hint} (its arguments: {', '.join(known)})"
        )
    try:
        recipe.loss.args[argument] = json.loads(text)
    except json.JSONDecodeError:
        recipe.loss.args[argument] = text


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """Apply command-line ``key=value`` strings to ``recipe`` in place; unknown keys and bad values raise."""
    # a loss's arguments belong to that loss: a new loss.name is applied first and starts from no arguments
    overrides = sorted(overrides, key=lambda item: not item.replace(" ", "").startswith("loss.name="))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = (part.strip() for part in item.split("=", 1))
        parts = key.split(".")
        if parts[:2] == ["loss", "args"] and len(parts) == 3:
            _set_loss_argument(recipe, parts[2], text)
            continue
        target: Any = recipe
        for part in parts[:-1]:
            target = getattr(target, part, None) if dataclasses.is_dataclass(target) else None
        if not dataclasses.is_dataclass(target) or parts[-1] not in {f.name for f in dataclasses.fields(target)}:
            close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown recipe key {key!r}{hint} (see `contrasphere train RECIPE --show`)")
        value = _parse(text, typing.get_type_hints(type(target))[parts[-1]], key)
        if key == "loss.name" and value != recipe.loss.name:
            recipe.loss.args = {}
        setattr(target, parts[-1], value)
    validate(recipe)
    return recipe


def _check_choices(obj: Any, prefix: str = "") -> None:
    """Every ``Literal``-typed field of the recipe tree holds one of its choices."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{prefix}{f.name}.")
        elif typing.get_origin(kind) is Literal and value not in typing.get_args(kind):
            allowed = ", ".join(map(str, typing.get_args(kind)))
            raise ConfigError(f"{prefix}{f.name} must be one of {allowed}, got {value!r}")


def _check_encoder_options(model: ModelConfig, task: str) -> None:
    """An encoder option set away from its default must be one the chosen encoder(s) read."""
    from .models import ENCODER_OPTIONS

    encoders = [model.encoder] + ([model.text_encoder] if task == "image_text" else [])
    used = {option for encoder in encoders for option in ENCODER_OPTIONS[encoder]}
    default = ModelConfig()
    for option in sorted({o for options in ENCODER_OPTIONS.values() for o in options} - used):
        if getattr(model, option) != getattr(default, option):
            readers = [e for e, options in ENCODER_OPTIONS.items() if option in options]
            raise ConfigError(
                f"model.{option} has no effect on encoder {' and '.join(encoders)} (only {', '.join(readers)} "
                f"read it); remove the setting or pick one of those encoders"
            )


def validate(recipe: Recipe) -> None:
    """Reject values no run could use, with what to do instead."""
    from ..losses import list_losses

    _check_choices(recipe)
    if recipe.loss.name not in list_losses():
        close = difflib.get_close_matches(recipe.loss.name, list_losses(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown loss {recipe.loss.name!r}{hint}; see `contrasphere list losses`")
    from ..losses.ring import RING_TERMS

    if recipe.loss.distributed == "ring" and recipe.loss.name not in RING_TERMS:
        raise ConfigError(
            f"loss.distributed=ring computes {', '.join(RING_TERMS)}, not {recipe.loss.name!r}; use "
            "loss.distributed=local (each rank its share of the tiles)"
        )
    _check_encoder_options(recipe.model, recipe.task)
    d, a, m, o, t, e = recipe.data, recipe.augment, recipe.model, recipe.optim, recipe.train, recipe.eval
    checks = [
        (d.batch_size >= 2, "data.batch_size must be at least 2 (contrastive losses compare samples)"),
        (t.accumulate >= 1, "train.accumulate must be at least 1"),
        (d.batch_size % t.accumulate == 0, "data.batch_size must be divisible by train.accumulate"),
        (min(d.train_samples, d.test_samples, d.image_size) >= 0, "data.*_samples and data.image_size must be >= 0"),
        (1 <= d.max_length <= 4096, "data.max_length must be between 1 and 4096 tokens"),
        (0 <= e.max_length <= 4096, "eval.max_length must be between 1 and 4096 tokens, or 0 for the encoder's own"),
        (8 <= a.crop_size <= 1024, "augment.crop_size must be between 8 and 1024 pixels"),
        (
            0 < a.crop_scale[0] <= a.crop_scale[1] <= 1,
            "augment.crop_scale must be (low, high) with 0 < low <= high <= 1",
        ),
        (0 < a.crop_ratio[0] <= a.crop_ratio[1], "augment.crop_ratio must be (low, high) with 0 < low <= high"),
        (all(0 <= p <= 1 for p in (a.flip, a.jitter_p, a.grayscale_p)), "augment probabilities must be in [0, 1]"),
        (all(s > 0 for s in a.std), "augment.std must be positive"),
        (m.out_dim >= 1 and m.head_hidden >= 1, "model.out_dim and model.head_hidden must be positive"),
        (all(w >= 1 for w in m.widths) and len(m.widths) >= 1, "model.widths must be positive channel counts"),
        (o.lr > 0, "optim.lr must be positive"),
        (0 <= o.momentum < 1, "optim.momentum must be in [0, 1)"),
        (o.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (0 < o.gamma <= 1, "optim.gamma must be in (0, 1] (the factor applied at each milestone)"),
        (o.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (all(0 <= x <= 1 for x in o.milestones), "optim.milestones are fractions of training, each in [0, 1]"),
        (t.epochs >= 0 and t.max_steps >= 0, "train.epochs and train.max_steps must be >= 0"),
        (t.epochs >= 1 or t.max_steps >= 1, "set train.epochs or train.max_steps to at least 1"),
        (t.threads >= 0, "train.threads must be >= 0 (0: PyTorch's default)"),
        (t.dist_timeout > 0, "train.dist_timeout must be a positive number of seconds"),
        (min(t.checkpoint_every, t.heldout_samples, t.heldout_every) >= 0, "train.*_every and heldout counts >= 0"),
        (t.log_every >= 1, "train.log_every must be at least 1"),
        (DEVICE.fullmatch(t.device) is not None, f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}"),
        (e.knn_k >= 1 and e.knn_temperature > 0, "eval.knn_k must be >= 1 and eval.knn_temperature > 0"),
        (e.probe_epochs >= 1, "eval.probe_epochs must be at least 1"),
        (recipe.loss.block_size is None or recipe.loss.block_size >= 0, "loss.block_size must be None, 0 or > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _check_loss(recipe)


def _check_loss(recipe: Recipe) -> None:
    """Build the loss once, so that a bad loss argument fails now with the loss's own message."""
    from ..losses import create_loss

    try:
        create_loss(recipe.loss.name, **recipe.loss.args)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"loss.args: {err}") from None


def updated(recipe: Recipe, changes: dict[str, Any]) -> Recipe:
    """A copy of ``recipe`` with ``changes`` (dotted field -> typed value), made with :func:`dataclasses.replace`.

    For programs (sweeps, reproductions): values are objects of the field's type, never strings to parse::

        updated(recipe, {"optim.lr": 0.4, "model.widths": (16, 32, 64), "loss": LossConfig("nt_xent")})
    """
    for key, value in changes.items():
        recipe = _replace_path(recipe, key.split("."), value, key)
    validate(recipe)
    return recipe


def _replace_path(obj: Any, parts: list[str], value: Any, key: str) -> Any:
    if not dataclasses.is_dataclass(obj) or parts[0] not in {f.name for f in dataclasses.fields(obj)}:
        close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown recipe key {key!r}{hint}")
    if len(parts) > 1:
        value = _replace_path(getattr(obj, parts[0]), parts[1:], value, key)
    else:
        value = _coerce(value, typing.get_type_hints(type(obj))[parts[0]], key)
    return dataclasses.replace(obj, **{parts[0]: value})  # type: ignore[type-var]
