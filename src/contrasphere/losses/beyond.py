"""Modules of :mod:`contrasphere.functional.beyond`: Barlow Twins, spectral contrastive, SwAV."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import _validate as check
from .. import functional as CF
from .registry import function_loss, register_loss

BarlowTwinsLoss = function_loss(
    "barlow_twins",
    CF.barlow_twins,
    class_name="BarlowTwinsLoss",
    inputs=("z_a", "z_b"),
    paper="Zbontar et al. (Barlow Twins), ICML 2021, Eq. 1",
)

SpectralContrastiveLoss = function_loss(
    "spectral",
    CF.spectral_contrastive,
    class_name="SpectralContrastiveLoss",
    inputs=("z_a", "z_b"),
    paper="HaoChen et al. (spectral), NeurIPS 2021, Eq. 5",
)


@register_loss("swav", inputs=("z_a", "z_b"), paper="Caron et al. (SwAV), NeurIPS 2020, Eq. 1-3", fn=CF.swav)
class SwAVLoss(nn.Module):
    """SwAV with its learnable prototypes, re-normalised onto the sphere before every forward as the SwAV code does.

    Args:
        dim: embedding dimension; num_prototypes: ``K`` (3000 for ImageNet in the paper; fewer for small data).
        temperature, epsilon, sinkhorn_iterations: as :func:`contrasphere.functional.swav`.
    """

    def __init__(
        self,
        dim: int = 128,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
    ) -> None:
        super().__init__()
        check.integer(num_prototypes, "num_prototypes", 2)
        self.prototypes = nn.Parameter(torch.nn.functional.normalize(torch.randn(num_prototypes, dim), dim=1))
        self.temperature = check.temperature(temperature, "temperature")
        self.epsilon = check.temperature(epsilon, "epsilon")
        self.sinkhorn_iterations = check.integer(sinkhorn_iterations, "sinkhorn_iterations")

    def function_kwargs(self) -> dict[str, Any]:
        """What ``forward`` passes to :func:`contrasphere.functional.swav` besides the inputs."""
        return {
            "prototypes": self.prototypes,
            "temperature": self.temperature,
            "epsilon": self.epsilon,
            "sinkhorn_iterations": self.sinkhorn_iterations,
        }

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        with torch.no_grad():  # only after an optimiser step moved them: a second forward must not alter the graph
            norms = self.prototypes.norm(dim=1)
            if not torch.allclose(norms, torch.ones_like(norms), atol=1e-5):
                self.prototypes.copy_(torch.nn.functional.normalize(self.prototypes, dim=1))
        return CF.swav(z_a, z_b, **self.function_kwargs())

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, epsilon={self.epsilon}, sinkhorn_iterations={self.sinkhorn_iterations}"
