"""The batched augmentation against torchvision's per-image functions; its sampled parameters and its checks."""

from __future__ import annotations

import pytest
import torch

from contrasphere.train.augment import Augment, AugmentConfig, hsv_to_rgb, rgb_to_hsv

TF = pytest.importorskip("torchvision.transforms.v2.functional")
NO_NORM = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _images(n=6, size=16, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _params(n, **change):
    """Parameters that do nothing, with ``change`` applied."""
    p = {
        "crop": torch.tensor([[0.5, 0.5, 1.0, 1.0]] * n),
        "flip": torch.zeros(n, dtype=torch.bool),
        "jitter": torch.ones(n, 3),
        "hue": torch.zeros(n),
        "jittered": torch.ones(n, dtype=torch.bool),
        "gray": torch.zeros(n, dtype=torch.bool),
        "order": torch.arange(4).expand(n, 4),
    }
    p.update(change)
    return p


def test_identity_parameters_leave_the_image_and_flip_mirrors_it():
    x = _images()
    aug = Augment(AugmentConfig(crop_size=16, **NO_NORM))
    torch.testing.assert_close(aug.apply(x, _params(6)), x.float() / 255, atol=1e-6, rtol=0)
    flipped = aug.apply(x, _params(6, flip=torch.ones(6, dtype=torch.bool)))
    torch.testing.assert_close(flipped, x.float().flip(-1) / 255, atol=1e-6, rtol=0)


def test_crop_matches_torchvision_resized_crop():
    x = _images(size=32)
    aug = Augment(AugmentConfig(crop_size=16, **NO_NORM))
    # the crop of rows 8..23 and columns 4..19 (16 x 16), resampled to 16 x 16: exactly those pixels
    crop = torch.tensor([[12 / 32, 16 / 32, 0.5, 0.5]] * 6)
    ours = aug.apply(x, _params(6, crop=crop))
    torch.testing.assert_close(ours, x[:, :, 8:24, 4:20].float() / 255, atol=1e-5, rtol=0)
    # a 16 x 16 crop upsampled to 32 x 32: bilinear as torchvision's resized_crop (no antialias when upsampling)
    aug32 = Augment(AugmentConfig(crop_size=32, **NO_NORM))
    theirs = TF.resized_crop(x.float() / 255, 8, 4, 16, 16, [32, 32], antialias=False)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # borders differ: reflection vs clamping
    torch.testing.assert_close(aug32.apply(x, _params(6, crop=crop))[inner], theirs[inner], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("op", "index", "fn"),
    [(0, 0, TF.adjust_brightness), (1, 1, TF.adjust_contrast), (2, 2, TF.adjust_saturation)],
)
def test_colour_factors_match_torchvision(op, index, fn):
    x = _images()
    aug = Augment(AugmentConfig(crop_size=16, **NO_NORM))
    factors = torch.tensor([0.6, 0.9, 1.0, 1.2, 1.4, 0.7])
    jitter = torch.ones(6, 3)
    jitter[:, index] = factors
    ours = aug.apply(x, _params(6, jitter=jitter, order=torch.tensor([op, 3, 3, 3]).expand(6, 4)))
    theirs = torch.stack([fn(x[i].float() / 255, float(f)) for i, f in enumerate(factors)])
    torch.testing.assert_close(ours, theirs, atol=2e-6, rtol=0)


def test_hue_and_grayscale_match_torchvision():
    x = _images()
    aug = Augment(AugmentConfig(crop_size=16, **NO_NORM))
    hue = torch.tensor([-0.4, -0.1, 0.0, 0.05, 0.25, 0.4])
    ours = aug.apply(x, _params(6, hue=hue, order=torch.tensor([3, 0, 0, 0]).expand(6, 4)))
    theirs = torch.stack([TF.adjust_hue(x[i].float() / 255, float(h)) for i, h in enumerate(hue)])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    rgb = torch.rand(4, 3, 5, 5)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-6, rtol=0)
    gray = aug.apply(x, _params(6, gray=torch.ones(6, dtype=torch.bool)))
    expected = TF.rgb_to_grayscale(x.float() / 255, num_output_channels=3)
    torch.testing.assert_close(gray, expected, atol=1e-5, rtol=0)


def test_not_jittered_images_keep_their_colours_and_views_are_seeded():
    x = _images()
    aug = Augment(AugmentConfig(crop_size=16, **NO_NORM))
    jitter = torch.full((6, 3), 1.5)
    same = aug.apply(x, _params(6, jitter=jitter, hue=torch.full((6,), 0.3), jittered=torch.zeros(6, dtype=torch.bool)))
    torch.testing.assert_close(same, x.float() / 255, atol=1e-6, rtol=0)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampled_crops_follow_the_configured_area_and_probabilities():
    aug = Augment(AugmentConfig(crop_scale=(0.2, 0.6), flip=0.5, jitter_p=0.8, grayscale_p=0.2))
    p = aug.sample(20000, torch.Generator().manual_seed(0))
    area = p["crop"][:, 2] * p["crop"][:, 3]
    assert float(area.max()) <= 0.6 + 1e-6
    assert float(area.min()) >= 0.2 * 0.75 - 1e-6  # clamped to the image only where an aspect exceeds it
    cx, w = p["crop"][:, 0], p["crop"][:, 2]
    assert bool(((cx - w / 2) >= -1e-6).all() and ((cx + w / 2) <= 1 + 1e-6).all())  # inside the image
    for key, rate in (("flip", 0.5), ("jittered", 0.8), ("gray", 0.2)):
        assert abs(p[key].float().mean().item() - rate) < 0.02, key


def test_augment_rejects_bad_configurations():
    with pytest.raises(ValueError, match="crop_scale"):
        Augment(AugmentConfig(crop_scale=(0.0, 1.0)))
    with pytest.raises(ValueError, match="one per channel"):
        Augment(AugmentConfig(), channels=1)
