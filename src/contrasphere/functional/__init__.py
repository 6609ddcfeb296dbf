"""The math of every objective, as pure functions of tensors (no state, no modules)."""

from .align_uniform import align_uniform, alignment, uniformity, uniformity_optimum, uniformity_with_queue
from .beyond import barlow_twins, sinkhorn, spectral_contrastive, swav
from .contrastive import clip_loss, dcl, dclw, info_nce, nt_xent, siglip_loss, supcon
from .mixing import (
    feature_transformation,
    feature_transformation_draw,
    i_mix,
    mix_inputs,
    mochi,
    mochi_negatives,
)
from .moco import align_uniform_queue, moco_info_nce
from .multiview import cacr, cmc, cwcl, decoupled_uniformity, macl, margin_info_nce, poly_view, symile
from .negatives import debiased_nt_xent, hard_negative_nt_xent
from .regularizers import gor, koleo, mmcr, sigreg, sigreg_directions, vicreg
from .variants import euclidean_clip, gte_info_nce, hn_nce, kernel_info_nce

__all__ = [
    "align_uniform",
    "align_uniform_queue",
    "alignment",
    "barlow_twins",
    "cacr",
    "clip_loss",
    "cmc",
    "cwcl",
    "dcl",
    "dclw",
    "debiased_nt_xent",
    "decoupled_uniformity",
    "feature_transformation",
    "feature_transformation_draw",
    "gor",
    "hard_negative_nt_xent",
    "i_mix",
    "info_nce",
    "koleo",
    "macl",
    "margin_info_nce",
    "mix_inputs",
    "mmcr",
    "mochi",
    "mochi_negatives",
    "moco_info_nce",
    "nt_xent",
    "poly_view",
    "siglip_loss",
    "sigreg",
    "sigreg_directions",
    "sinkhorn",
    "spectral_contrastive",
    "supcon",
    "swav",
    "symile",
    "uniformity",
    "uniformity_optimum",
    "uniformity_with_queue",
    "vicreg",
    "euclidean_clip",
    "gte_info_nce",
    "hn_nce",
    "kernel_info_nce",
]
