"""Modules of :mod:`contrasphere.functional.variants`: Euclidean CLIP, Kernel-InfoNCE, HN-NCE."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .. import _validate as check
from .. import functional as CF
from ._scalars import add_log_scale, clamped_scale
from .registry import function_loss, register_loss

KernelInfoNCELoss = function_loss(
    "kernel_info_nce",
    CF.kernel_info_nce,
    class_name="KernelInfoNCELoss",
    inputs=("z_a", "z_b"),
    paper="Tan et al. (Kernel-InfoNCE), ICLR 2024",
    # the Gaussian kernel is tiled; the Laplacian and mixture kernels need distances, computed densely
    dense_pairs=True,
)


@register_loss(
    "euclidean_clip",
    inputs=("z_a", "z_b"),
    paper="Chou & Alam (EuCLIP), ECCV 2024 Beyond Euclidean Workshop",
    fn=CF.euclidean_clip,
)
class EuclideanCLIPLoss(nn.Module):
    """EuCLIP loss (negative squared Euclidean distances as logits) with a learnable logit scale.

    The scale is stored as its log and clamped at ``max_logit_scale``, as open_clip does for CLIP. The authors
    train EuCLIP with ``--init-logit-scale 0``, a scale of 1 (their README: squared-distance logits need a lower
    initial scale than CLIP's 1/0.07); on unit vectors a scale ``s`` equals CLIP at ``2 s``.

    Args:
        init_logit_scale: the starting :math:`\\sigma` (EuCLIP: 1).
        max_logit_scale: the clamp (open_clip: 100); a start above it starts at the clamp.
        learnable: if False the scale is a fixed buffer.
    """

    log_logit_scale: Tensor  # a Parameter, or a buffer when not learnable

    def __init__(
        self,
        init_logit_scale: float = 1.0,
        max_logit_scale: float = 100.0,
        learnable: bool = True,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        init_logit_scale = check.scale(init_logit_scale, "init_logit_scale")
        max_logit_scale = check.scale(max_logit_scale, "max_logit_scale")
        add_log_scale(self, init_logit_scale, learnable)
        self.max_logit_scale = max_logit_scale

    @property
    def logit_scale(self) -> Tensor:
        return clamped_scale(self.log_logit_scale, self.max_logit_scale)

    def function_kwargs(self) -> dict[str, Any]:
        """What ``forward`` passes to :func:`contrasphere.functional.euclidean_clip` besides the inputs."""
        return {"logit_scale": self.logit_scale, "block_size": self.block_size}

    def forward(self, z_a: Tensor, z_b: Tensor, ids: Tensor | None = None) -> Tensor:
        return CF.euclidean_clip(z_a, z_b, ids=ids, **self.function_kwargs())

    def extra_repr(self) -> str:
        return f"max_logit_scale={self.max_logit_scale}"


@register_loss("hn_nce", inputs=("z_a", "z_b"), paper="Radenovic et al. (DiHT), CVPR 2023, Eq. 3-5", fn=CF.hn_nce)
class HNNCELoss(nn.Module):
    """HN-NCE loss with CLIP's learnable temperature (stored as ``log_logit_scale``, clamped at 100).

    Args:
        init_temperature: the starting temperature (CLIP and DiHT: 0.07).
        max_logit_scale: the clamp of the logit scale (CLIP: 100); a start above it starts at the clamp.
        learnable: if False the scale is a fixed buffer.
        alpha, beta1, beta2: as :func:`contrasphere.functional.hn_nce` (checked by its rules).
    """

    log_logit_scale: Tensor  # a Parameter, or a buffer when not learnable

    def __init__(
        self,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        learnable: bool = True,
        alpha: float = 1.0,
        beta1: float = 0.5,
        beta2: float = 0.5,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        rules = check.hyperparameter_rules(CF.hn_nce)
        self.alpha = rules["alpha"](alpha, "alpha")
        self.beta1 = rules["beta1"](beta1, "beta1")
        self.beta2 = rules["beta2"](beta2, "beta2")
        self.block_size = block_size
        init_temperature = check.temperature(init_temperature, "init_temperature")
        max_logit_scale = check.scale(max_logit_scale, "max_logit_scale")
        add_log_scale(self, 1.0 / init_temperature, learnable)
        self.max_logit_scale = max_logit_scale

    @property
    def logit_scale(self) -> Tensor:
        return clamped_scale(self.log_logit_scale, self.max_logit_scale)

    def function_kwargs(self) -> dict[str, Any]:
        """What ``forward`` passes to :func:`contrasphere.functional.hn_nce` besides the inputs."""
        return {
            "logit_scale": self.logit_scale,
            "alpha": self.alpha,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "block_size": self.block_size,
        }

    def forward(self, z_a: Tensor, z_b: Tensor, ids: Tensor | None = None) -> Tensor:
        return CF.hn_nce(z_a, z_b, ids=ids, **self.function_kwargs())

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta1={self.beta1}, beta2={self.beta2}, max_logit_scale={self.max_logit_scale}"


GTEInfoNCELoss = function_loss(
    "gte_info_nce",
    CF.gte_info_nce,
    class_name="GTEInfoNCELoss",
    inputs=("z_a", "z_b"),
    paper="Li et al. (GTE), 2023, Eq. 3",
)
