"""The recipe catalogue: every registered recipe and its tiny preset (what CI runs end to end)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from ..errors import ConfigError
from .augment import AugmentConfig
from .config import (
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    Recipe,
    TrainConfig,
    apply_overrides,
)

_RECIPES: dict[str, tuple[Callable[[], Recipe], Callable[[Recipe], None]]] = {}


def register_recipe(
    name: str, tiny: Callable[[Recipe], None]
) -> Callable[[Callable[[], Recipe]], Callable[[], Recipe]]:
    def decorate(build: Callable[[], Recipe]) -> Callable[[], Recipe]:
        _RECIPES[name] = (build, tiny)
        return build

    return decorate


def list_recipes() -> list[str]:
    return list(_RECIPES)


def get_recipe(name: str, preset: str = "default", overrides: list[str] | None = None) -> Recipe:
    """A registered recipe by name (``preset="tiny"`` for the few-step version), with overrides applied."""
    if name not in _RECIPES:
        close = difflib.get_close_matches(name, _RECIPES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown recipe {name!r}{hint}; see `contrasphere list recipes`")
    if preset not in ("default", "tiny"):
        raise ConfigError(f"preset must be 'default' or 'tiny', got {preset!r}")
    build, tiny = _RECIPES[name]
    recipe = build()
    recipe.name = name
    if preset == "tiny":
        tiny(recipe)
    return apply_overrides(recipe, list(overrides or []))


def _tiny_images(r: Recipe) -> None:
    r.data.batch_size, r.data.train_samples, r.data.test_samples = 16, 64, 48
    r.train.epochs, r.train.max_steps, r.train.heldout_samples = 1, 3, 32
    r.eval.probe_epochs, r.eval.knn_k = 5, 10


def _tiny_alexnet(r: Recipe) -> None:
    _tiny_images(r)
    r.augment.crop_size = 32


def _tiny_text(r: Recipe) -> None:
    r.data.batch_size, r.data.train_samples, r.data.test_samples, r.data.max_length = 8, 24, 40, 16
    r.train.epochs, r.train.max_steps, r.train.heldout_samples = 1, 2, 24


def _tiny_image_text(r: Recipe) -> None:
    r.data.batch_size, r.data.train_samples, r.data.test_samples, r.data.image_size = 8, 24, 16, 64
    r.data.max_length = 16
    r.train.epochs, r.train.max_steps, r.train.heldout_samples = 1, 2, 16


DIGITS_AUGMENT = AugmentConfig(
    crop_size=8,
    crop_scale=(0.5, 1.0),
    flip=0.0,
    jitter=(0.4, 0.4, 0.0, 0.0),
    jitter_p=0.8,
    grayscale_p=0.0,
    mean=(0.3,),
    std=(0.4,),
)


@register_recipe("digits", tiny=_tiny_images)
def _digits() -> Recipe:
    return Recipe(
        description="The demo: a small convnet on the 8x8 digits shipped with contrasphere, alignment + uniformity, "
        "2-d outputs (features on the circle), about a minute on a laptop CPU",
        data=DataConfig(dataset="digits", batch_size=256),
        augment=dataclasses.replace(DIGITS_AUGMENT),
        model=ModelConfig(encoder="small_convnet", widths=(32, 64), head="mlp", head_hidden=128, out_dim=2),
        loss=LossConfig(name="align_uniform", args={"alpha": 2, "t": 2}),
        optim=OptimConfig(name="adam", lr=3e-3, weight_decay=1e-5, schedule="cosine", warmup_steps=10),
        train=TrainConfig(epochs=100, heldout_samples=450),
        eval=EvalConfig(knn_k=20, probe_epochs=200),
    )


CIFAR_AUGMENT = AugmentConfig(crop_size=32, crop_scale=(0.2, 1.0))


def _cifar(loss: LossConfig, description: str) -> Recipe:
    return Recipe(
        description=description,
        data=DataConfig(dataset="cifar10", batch_size=512),
        augment=dataclasses.replace(CIFAR_AUGMENT),
        model=ModelConfig(encoder="small_convnet", widths=(32, 64, 128), head="mlp", head_hidden=512, out_dim=128),
        loss=loss,
        optim=OptimConfig(name="sgd", lr=0.06 * 512 / 256, momentum=0.9, weight_decay=5e-4, warmup_steps=100),
        train=TrainConfig(epochs=50),
    )


@register_recipe("cifar10-align-uniform", tiny=_tiny_images)
def _cifar_au() -> Recipe:
    return _cifar(
        LossConfig("align_uniform", {"alpha": 2, "t": 2}),
        "CIFAR-10, small convnet, the paper's loss (alpha=2, t=2, equal weights)",
    )


@register_recipe("cifar10-nt-xent", tiny=_tiny_images)
def _cifar_ntx() -> Recipe:
    return _cifar(LossConfig("nt_xent", {"temperature": 0.5}), "CIFAR-10, small convnet, SimCLR's NT-Xent (tau=0.5)")


@register_recipe("cifar10-supcon", tiny=_tiny_images)
def _cifar_supcon() -> Recipe:
    return _cifar(
        LossConfig("supcon", {"temperature": 0.1}), "CIFAR-10, small convnet, supervised contrastive (labels used)"
    )


@register_recipe("stl10-align-uniform", tiny=_tiny_alexnet)
def _stl10() -> Recipe:
    return Recipe(
        description="The paper's STL-10 recipe: SmallAlexNet, 64-px crops, batch 768, SGD lr 0.12, 200 epochs, "
        "lr x0.1 at epochs 155/170/185 (needs STL-10 and a GPU)",
        data=DataConfig(dataset="torchvision-stl10", batch_size=768),
        augment=AugmentConfig(
            crop_size=64,
            crop_scale=(0.08, 1.0),
            jitter_p=1.0,
            mean=(0.44087801, 0.42790631, 0.38678794),
            std=(0.25507627, 0.24801505, 0.25641038),
        ),
        model=ModelConfig(encoder="small_alexnet", head="linear", out_dim=128),
        loss=LossConfig("align_uniform", {"alpha": 2, "t": 2, "align_weight": 1, "uniform_weight": 1}),
        optim=OptimConfig(
            name="sgd",
            lr=0.12,
            momentum=0.9,
            weight_decay=1e-4,
            schedule="step",
            milestones=(155 / 200, 170 / 200, 185 / 200),
            gamma=0.1,
        ),
        train=TrainConfig(epochs=200),
        eval=EvalConfig(probe_protocol="paper"),
    )


@register_recipe("simcse-wiki", tiny=_tiny_text)
def _simcse() -> Recipe:
    return Recipe(
        description="Unsupervised SimCSE: all-MiniLM-L6-v2, each sentence twice through dropout, InfoNCE (tau=0.05)",
        task="text",
        data=DataConfig(dataset="wiki1m", batch_size=64, test_samples=0, max_length=32),
        model=ModelConfig(encoder="minilm", pooling="mean", head="none", out_dim=384),
        loss=LossConfig("info_nce", {"temperature": 0.05}),
        optim=OptimConfig(name="adamw", lr=3e-5, weight_decay=0.0, schedule="constant"),
        train=TrainConfig(epochs=1, heldout_samples=1500),
        eval=EvalConfig(linear_probe=False, sts_sets=("stsb",)),
    )


@register_recipe("flickr8k-lit", tiny=_tiny_image_text)
def _lit() -> Recipe:
    return Recipe(
        description="LiT-style image-text: frozen EfficientNet-Lite0 image tower, trained MiniLM text tower and "
        "linear heads on Flickr8k, CLIP loss (set loss.name=siglip or align_uniform)",
        task="image_text",
        data=DataConfig(dataset="flickr8k", batch_size=128, test_samples=200, image_size=224, max_length=32),
        model=ModelConfig(
            encoder="efficientnet_lite0", freeze_encoder=True, head="linear", out_dim=256, text_encoder="minilm"
        ),
        loss=LossConfig("clip", {}),
        optim=OptimConfig(name="adamw", lr=1e-4, weight_decay=0.01, schedule="cosine", warmup_steps=10),
        train=TrainConfig(epochs=10, heldout_samples=200),
        eval=EvalConfig(linear_probe=False),
    )
