"""Modules of :mod:`contrasphere.functional.contrastive`: InfoNCE, NT-Xent, CLIP, SigLIP, SupCon, DCL."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .. import _validate as check
from .. import functional as CF
from ._scalars import add_log_scale, add_scalar, clamped_scale
from .registry import function_loss, register_loss

InfoNCELoss = function_loss(
    "info_nce", CF.info_nce, class_name="InfoNCELoss", inputs=("z_a", "z_b"), paper="van den Oord et al., 2018, Eq. 4"
)

NTXentLoss = function_loss(
    "nt_xent",
    CF.nt_xent,
    class_name="NTXentLoss",
    inputs=("z_a", "z_b"),
    paper="Chen et al. (SimCLR), ICML 2020, Eq. 1",
)

SupConLoss = function_loss(
    "supcon",
    CF.supcon,
    class_name="SupConLoss",
    inputs=("z", "labels"),
    paper="Khosla et al. (SupCon), NeurIPS 2020, Eq. 2",
)

DCLLoss = function_loss(
    "dcl", CF.dcl, class_name="DCLLoss", inputs=("z_a", "z_b"), paper="Yeh et al. (DCL), ECCV 2022, Eq. 6"
)

DCLWLoss = function_loss(
    "dclw", CF.dclw, class_name="DCLWLoss", inputs=("z_a", "z_b"), paper="Yeh et al. (DCLW), ECCV 2022, Eq. 7"
)


@register_loss("clip", inputs=("z_a", "z_b"), paper="Radford et al. (CLIP), ICML 2021, Figure 3", fn=CF.clip_loss)
class CLIPLoss(nn.Module):
    """CLIP loss with a learnable temperature, stored as ``log_logit_scale`` and clamped as CLIP does.

    Args:
        init_temperature: the starting temperature (CLIP: 0.07, i.e. a logit scale of about 14.3).
        max_logit_scale: the logit scale is clamped at this value (CLIP: 100) to keep training stable.
        learnable: if False the scale is a fixed buffer.
        hardness: LLaVE's hardness weighting of the negatives (0: off), as
            :func:`contrasphere.functional.clip_loss`.

    ``forward(z_a, z_b, ids=None)``: ``ids`` are the pairs' sample ids (the image id of each caption), so that pairs
    sharing one are not each other's negatives.
    """

    log_logit_scale: Tensor  # a Parameter, or a buffer when not learnable

    def __init__(
        self,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        learnable: bool = True,
        hardness: float = 0.0,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.hardness = check.hyperparameter_rules(CF.clip_loss)["hardness"](hardness, "hardness")
        init_temperature = check.temperature(init_temperature, "init_temperature")
        max_logit_scale = check.scale(max_logit_scale, "max_logit_scale")
        if not max_logit_scale >= 1 / init_temperature:
            raise ValueError(
                f"max_logit_scale ({max_logit_scale}) must be at least 1 / init_temperature ({1 / init_temperature:g})"
            )
        add_log_scale(self, 1.0 / init_temperature, learnable)
        self.max_logit_scale = max_logit_scale

    @property
    def logit_scale(self) -> Tensor:
        return clamped_scale(self.log_logit_scale, self.max_logit_scale)

    def function_kwargs(self) -> dict[str, Any]:
        """What ``forward`` passes to :func:`contrasphere.functional.clip_loss` besides the inputs."""
        return {"logit_scale": self.logit_scale, "hardness": self.hardness, "block_size": self.block_size}

    def forward(self, z_a: Tensor, z_b: Tensor, ids: Tensor | None = None) -> Tensor:
        return CF.clip_loss(z_a, z_b, ids=ids, **self.function_kwargs())

    def extra_repr(self) -> str:
        return f"max_logit_scale={self.max_logit_scale}, hardness={self.hardness}"


@register_loss("siglip", inputs=("z_a", "z_b"), paper="Zhai et al. (SigLIP), ICCV 2023, Algorithm 1", fn=CF.siglip_loss)
class SigLIPLoss(nn.Module):
    """SigLIP loss with a learnable logit scale (stored as its log) and logit bias.

    Args:
        init_logit_scale: starting :math:`t` (SigLIP: 10); init_logit_bias: starting :math:`b` (SigLIP: -10).
        learnable: if False both are fixed buffers.
    """

    log_logit_scale: Tensor  # a Parameter, or a buffer when not learnable
    logit_bias: Tensor  # a Parameter, or a buffer when not learnable

    def __init__(
        self,
        init_logit_scale: float = 10.0,
        init_logit_bias: float = -10.0,
        learnable: bool = True,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        init_logit_scale = check.scale(init_logit_scale, "init_logit_scale")
        add_log_scale(self, init_logit_scale, learnable)
        add_scalar(self, "logit_bias", init_logit_bias, learnable)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.siglip_loss(z_a, z_b, **self.function_kwargs())

    def function_kwargs(self) -> dict[str, Any]:
        """What ``forward`` passes to :func:`contrasphere.functional.siglip_loss` besides the inputs."""
        return {"logit_scale": self.log_logit_scale.exp(), "logit_bias": self.logit_bias, "block_size": self.block_size}
