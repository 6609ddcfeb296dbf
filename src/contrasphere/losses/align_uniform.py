"""Modules of :mod:`contrasphere.functional.align_uniform`: the paper's alignment and uniformity losses."""

from __future__ import annotations

from .. import functional as CF
from .registry import function_loss

AlignmentLoss = function_loss(
    "alignment", CF.alignment, class_name="AlignmentLoss", inputs=("z_a", "z_b"), paper="Wang & Isola, ICML 2020, Eq. 4"
)

UniformityLoss = function_loss(
    "uniformity", CF.uniformity, class_name="UniformityLoss", inputs=("z",), paper="Wang & Isola, ICML 2020, Eq. 5"
)

AlignUniformLoss = function_loss(
    "align_uniform",
    CF.align_uniform,
    class_name="AlignUniformLoss",
    inputs=("z_a", "z_b"),
    paper="Wang & Isola, ICML 2020, Section 5",
)
