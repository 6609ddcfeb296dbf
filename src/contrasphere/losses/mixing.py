"""Modules of :mod:`contrasphere.functional.mixing`: MoCHi, i-Mix, feature transformation."""

from __future__ import annotations

from torch import Tensor, nn

from .. import _validate as check
from .. import functional as CF
from .registry import function_loss, register_loss

MoCHiLoss = function_loss(
    "mochi",
    CF.mochi,
    class_name="MoCHiLoss",
    inputs=("q", "k", "queue"),
    paper="Kalantidis et al. (MoCHi), NeurIPS 2020, Sec. 4.1",
    shared=("queue",),
)

IMixLoss = function_loss(
    "i_mix",
    CF.i_mix,
    class_name="IMixLoss",
    inputs=("z_a", "z_b", "mix_index", "mix_lambda"),
    paper="Lee et al. (i-Mix), ICLR 2021, Eq. 3",
    indices=("mix_index",),
)


@register_loss(
    "feature_transformation",
    inputs=("q", "k", "queue"),
    paper="Zhu et al. (FT), ICCV 2021",
    shared=("queue",),
)
class FeatureTransformationLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.feature_transformation`, drawing the mixing from torch's RNG.

    The defaults are the authors' published run: extrapolation weight ``1 + Beta(2, 2)``, queue interpolation
    ``Beta(1.6, 1.6)``, no re-normalisation of the transformed positives.
    """

    def __init__(
        self,
        temperature: float = 0.2,
        pos_alpha: float = 2.0,
        neg_alpha: float = 1.6,
        normalize_positives: bool = False,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check.temperature(temperature, "temperature")
        self.pos_alpha, self.neg_alpha = check.positive(pos_alpha, "pos_alpha"), check.positive(neg_alpha, "neg_alpha")
        self.normalize_positives, self.block_size = bool(normalize_positives), block_size

    def forward(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        draw = CF.feature_transformation_draw(queue.shape[0], pos_alpha=self.pos_alpha, neg_alpha=self.neg_alpha)
        return CF.feature_transformation(
            q,
            k,
            queue,
            temperature=self.temperature,
            normalize_positives=self.normalize_positives,
            block_size=self.block_size,
            **draw,
        )

    def extra_repr(self) -> str:
        names = ("temperature", "pos_alpha", "neg_alpha", "normalize_positives")
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
