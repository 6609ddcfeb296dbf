"""Multi-view image augmentation on whole batches: the SimCLR / Wang & Isola recipe as tensor operations.

The usual pipeline (torchvision's ``RandomResizedCrop -> RandomHorizontalFlip -> ColorJitter -> RandomGrayscale``)
runs per image in Python, so a small encoder on a CPU spends most of its time waiting for data loader workers.
Here every step works on the whole ``(B, C, H, W)`` batch at once:

- random resized crop and horizontal flip are one affine resampling (``F.affine_grid`` + ``F.grid_sample``,
  bilinear), one 2x3 matrix per image;
- colour jitter (brightness, contrast, saturation, hue, each with its own random factor per image, applied to a
  random ``jitter_p`` share of the images) and random grayscale are per-image arithmetic, with hue shifted in HSV
  space as torchvision does. torchvision draws the order of the four jitter operations per image; here it is
  drawn per batch (each image still sees a uniformly random order, but the images of one batch share it).

Randomness is separated from the work: :meth:`Augment.sample` draws the parameters of ``n`` images from a
``torch.Generator``, :meth:`Augment.apply` applies them. The training loop draws the parameters of the whole
global batch from a per-step seed and each process applies its own slice, so a run on K processes sees exactly
the views of a run on one, and a resumed run sees exactly the views of an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

_LUMA = (0.2989, 0.587, 0.114)  # as torchvision's rgb_to_grayscale (ITU-R 601, rounded)


@dataclass
class AugmentConfig:
    """Parameters of the training augmentation (defaults: the paper's STL-10 / SimCLR CIFAR recipe)."""

    crop_size: int = 32  # output side in pixels
    crop_scale: tuple[float, float] = (0.08, 1.0)  # area fraction of the crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the crop
    flip: float = 0.5  # probability of a horizontal flip
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.4)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8  # probability that an image is colour-jittered
    grayscale_p: float = 0.2  # probability of converting an image to grayscale
    mean: tuple[float, ...] = field(default_factory=lambda: (0.4914, 0.4822, 0.4465))
    std: tuple[float, ...] = field(default_factory=lambda: (0.2470, 0.2435, 0.2616))


def _gray(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    weights = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] to HSV in [0, 1] (hue as a fraction of the circle), as torchvision."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = torch.stack(
        [
            torch.stack([v, q, p, p, t, v], 1),
            torch.stack([t, v, v, q, p, p], 1),
            torch.stack([p, p, t, v, v, q], 1),
        ],
        1,
    )  # (B, 3, 6, H, W)
    index = i.unsqueeze(1).unsqueeze(2).expand(-1, 3, 1, -1, -1)
    return choices.gather(2, index).squeeze(2)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return (factor.view(-1, 1, 1, 1) * x + (1 - factor.view(-1, 1, 1, 1)) * other).clamp_(0, 1)


class Augment:
    """Random views of a batch of ``uint8`` images ``(B, C, H, W)``: crop, flip, colour jitter, grayscale, normalise."""

    def __init__(self, config: AugmentConfig, channels: int = 3) -> None:
        lo, hi = config.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {config.crop_scale}")
        if len(config.mean) != channels or len(config.std) != channels:
            raise ValueError(
                f"mean and std need {channels} values (one per channel), got {len(config.mean)} and {len(config.std)}"
            )
        if config.crop_size < 1:
            raise ValueError(f"crop_size must be a positive number of pixels, got {config.crop_size}")
        self.config, self.channels = config, channels

    def sample(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """The random parameters of ``n`` views (drawn on the CPU, so they do not depend on the device)."""
        c = self.config

        def uniform(lo: float, hi: float, size: int = n) -> Tensor:
            return lo + (hi - lo) * torch.rand(size, generator=generator, dtype=torch.float64)

        area = uniform(*c.crop_scale)
        log_ratio = uniform(math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1]))
        ratio = log_ratio.exp()
        width, height = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
        cx = width / 2 + (1 - width) * torch.rand(n, generator=generator, dtype=torch.float64)
        cy = height / 2 + (1 - height) * torch.rand(n, generator=generator, dtype=torch.float64)
        flip = torch.rand(n, generator=generator) < c.flip
        b, co, s, h = c.jitter
        jitter = torch.stack(
            [uniform(max(0.0, 1 - b), 1 + b), uniform(max(0.0, 1 - co), 1 + co), uniform(max(0.0, 1 - s), 1 + s)], 1
        )
        return {
            "crop": torch.stack([cx, cy, width, height], 1).float(),
            "flip": flip,
            "jitter": jitter.float(),
            "hue": uniform(-h, h).float(),
            "jittered": torch.rand(n, generator=generator) < c.jitter_p,
            "gray": torch.rand(n, generator=generator) < c.grayscale_p,
            "order": torch.randperm(4, generator=generator).expand(n, 4),
        }

    def apply(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Apply sampled parameters to ``uint8`` (or [0, 1] float) images; returns normalised float32 views."""
        c, device = self.config, images.device
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        cx, cy, w, h = params["crop"].to(device).unbind(1)
        sign = 1.0 - 2.0 * params["flip"].to(device).float()
        theta = torch.zeros(x.shape[0], 2, 3, device=device)
        theta[:, 0, 0], theta[:, 0, 2] = w * sign, 2 * cx - 1
        theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1], c.crop_size, c.crop_size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp_(0, 1)
        on = params["jittered"].to(device)
        factors = params["jitter"].to(device)
        factors = torch.where(on.unsqueeze(1), factors, torch.ones_like(factors))
        hue = torch.where(on, params["hue"].to(device), torch.zeros_like(params["hue"].to(device)))
        for op in params["order"][0].tolist():
            if op == 0:  # brightness: blend with black
                x = _blend(x, torch.zeros_like(x), factors[:, 0])
            elif op == 1:  # contrast: blend with the mean gray level of the image
                x = _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), factors[:, 1])
            elif op == 2 and self.channels == 3:  # saturation: blend with the grayscale image
                x = _blend(x, _gray(x).expand_as(x), factors[:, 2])
            elif op == 3 and self.channels == 3 and bool((hue != 0).any()):
                hsv = rgb_to_hsv(x)
                hsv = torch.cat([(hsv[:, :1] + hue.view(-1, 1, 1, 1)) % 1.0, hsv[:, 1:]], 1)
                x = hsv_to_rgb(hsv)
        if self.channels == 3:
            gray = params["gray"].to(device).view(-1, 1, 1, 1)
            x = torch.where(gray, _gray(x).expand_as(x), x)
        return normalize(x, c.mean, c.std)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], generator))


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    mean_t = x.new_tensor(mean).view(1, -1, 1, 1)
    std_t = x.new_tensor(std).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def center_view(images: Tensor, config: AugmentConfig) -> Tensor:
    """The evaluation view: resize to ``crop_size`` (if needed) and normalise, no randomness."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[-1] != config.crop_size or x.shape[-2] != config.crop_size:
        x = F.interpolate(x, size=(config.crop_size, config.crop_size), mode="bilinear", antialias=True)
    return normalize(x, config.mean, config.std)
