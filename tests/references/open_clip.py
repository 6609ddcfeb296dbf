"""open_clip's ClipLoss (github.com/mlfoundations/open_clip), one process."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def open_clip_reference(image_features, text_features, logit_scale):
    # open_clip's ClipLoss (single process): logits per image and per text, cross-entropy both ways
    logits_per_image = logit_scale * image_features @ text_features.T
    logits_per_text = logit_scale * text_features @ image_features.T
    labels = torch.arange(image_features.shape[0])
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
