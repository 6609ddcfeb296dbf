"""Modules of :mod:`contrasphere.functional.multiview`: CMC, Symile, margins, CWCL, CACR, MACL, KCL, poly-view."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .. import _validate as check
from .. import functional as CF
from ._scalars import add_log_scale, clamped_scale
from .registry import function_loss, register_loss

CMCLoss = function_loss(
    "cmc",
    CF.cmc,
    class_name="CMCLoss",
    inputs=("views",),
    paper="Tian et al. (CMC), ECCV 2020, Eq. 6",
    stacked=("views",),
)

MarginInfoNCELoss = function_loss(
    "margin_info_nce",
    CF.margin_info_nce,
    class_name="MarginInfoNCELoss",
    inputs=("z_a", "z_b"),
    paper="Lepage & Dehak, Interspeech 2023, Eq. 3-4",
)

CWCLLoss = function_loss(
    "cwcl", CF.cwcl, class_name="CWCLLoss", inputs=("z_a", "z_b"), paper="Srinivasa et al. (CWCL), NeurIPS 2023, Eq. 3"
)

CACRLoss = function_loss(
    "cacr",
    CF.cacr,
    class_name="CACRLoss",
    inputs=("views",),
    paper="Zheng et al. (CACR), TMLR 2023",
    stacked=("views",),
    dense_pairs=True,
)

MACLLoss = function_loss(
    "macl", CF.macl, class_name="MACLLoss", inputs=("z_a", "z_b"), paper="Huang et al. (MACL), ICML 2023"
)

DecoupledUniformityLoss = function_loss(
    "decoupled_uniformity",
    CF.decoupled_uniformity,
    class_name="DecoupledUniformityLoss",
    inputs=("views", "prior"),
    paper="Dufumier et al. (KCL), ICML 2023",
    stacked=("views",),
)

PolyViewLoss = function_loss(
    "poly_view",
    CF.poly_view,
    class_name="PolyViewLoss",
    inputs=("views",),
    paper="Shidani et al. (poly-view), ICLR 2024",
    stacked=("views",),
)


@register_loss(
    "symile",
    inputs=("modalities",),
    paper="Saporta et al. (Symile), NeurIPS 2024, Eq. 5",
    fn=CF.symile,
    stacked=("modalities",),
)
class SymileLoss(nn.Module):
    """Symile with a learnable logit scale, initialised and clamped as CLIP's (see :class:`CLIPLoss`)."""

    log_logit_scale: Tensor  # a Parameter, or a buffer when not learnable

    def __init__(self, init_temperature: float = 0.07, max_logit_scale: float = 100.0, block_size: int | None = None):
        super().__init__()
        self.block_size = block_size
        temperature = check.temperature(init_temperature, "init_temperature")
        add_log_scale(self, 1.0 / temperature, learnable=True)
        self.max_logit_scale = check.scale(max_logit_scale, "max_logit_scale")

    def function_kwargs(self) -> dict[str, Any]:
        """What ``forward`` passes to :func:`contrasphere.functional.symile` besides the inputs."""
        return {
            "logit_scale": clamped_scale(self.log_logit_scale, self.max_logit_scale),
            "block_size": self.block_size,
        }

    def forward(self, modalities: Tensor) -> Tensor:
        return CF.symile(modalities, **self.function_kwargs())
