"""Modules of :mod:`contrasphere.functional.moco`: losses against a queue of keys (see :mod:`contrasphere.moco`)."""

from __future__ import annotations

from .. import functional as CF
from .registry import function_loss

MoCoLoss = function_loss(
    "moco",
    CF.moco_info_nce,
    class_name="MoCoLoss",
    inputs=("q", "k", "queue"),
    paper="He et al. (MoCo), CVPR 2020, Eq. 1",
    shared=("queue",),
)

AlignUniformQueueLoss = function_loss(
    "align_uniform_queue",
    CF.align_uniform_queue,
    class_name="AlignUniformQueueLoss",
    inputs=("q", "k", "queue"),
    paper="Wang & Isola, ICML 2020, ImageNet code",
    shared=("queue",),
)
