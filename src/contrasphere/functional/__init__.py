"""The math of every objective, as pure functions of tensors (no state, no modules)."""

from .align_uniform import align_uniform, alignment, uniformity, uniformity_optimum, uniformity_with_queue
from .contrastive import clip_loss, dcl, dclw, info_nce, nt_xent, siglip_loss, supcon

__all__ = [
    "align_uniform",
    "alignment",
    "clip_loss",
    "dcl",
    "dclw",
    "info_nce",
    "nt_xent",
    "siglip_loss",
    "supcon",
    "uniformity",
    "uniformity_optimum",
    "uniformity_with_queue",
]
