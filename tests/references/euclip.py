"""EuCLIP's loss from the authors' open_clip fork (github.com/EIFY/open_clip, ``src/open_clip/loss.py``), one process.

The fork's ``ClipLoss`` with ``geometry='euclidean-squared'``: the metric ``euclidean_squared`` times the logit scale,
cross-entropy over images and over texts, averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def euclidean_squared(x, y, _):
    x_sq = x.square().sum(-1, keepdim=True)
    y_sq = y.square().sum(-1, keepdim=True)
    squared = x_sq - 2 * x @ y.T + y_sq.T
    return -squared


def eify_euclip(image_features, text_features, logit_scale):
    # ClipLoss.get_logits (world_size 1) and ClipLoss.forward without the entailment term
    logits_per_image = logit_scale * euclidean_squared(image_features, text_features, None)
    logits_per_text = logits_per_image.T
    labels = torch.arange(logits_per_image.shape[0], device=image_features.device, dtype=torch.long)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
