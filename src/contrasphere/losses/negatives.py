"""Modules of :mod:`contrasphere.functional.negatives`: debiased and hard-negative NT-Xent."""

from __future__ import annotations

from .. import functional as CF
from .registry import function_loss

DebiasedNTXentLoss = function_loss(
    "debiased",
    CF.debiased_nt_xent,
    class_name="DebiasedNTXentLoss",
    inputs=("z_a", "z_b"),
    paper="Chuang et al. (debiased), NeurIPS 2020, Eq. 7",
)

HardNegativeNTXentLoss = function_loss(
    "hard_negative",
    CF.hard_negative_nt_xent,
    class_name="HardNegativeNTXentLoss",
    inputs=("z_a", "z_b"),
    paper="Robinson et al. (HCL), ICLR 2021, Eq. 5",
)
