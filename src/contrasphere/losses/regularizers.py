"""Modules of :mod:`contrasphere.functional.regularizers`: KoLeo, SIGReg, VICReg, MMCR, GOR.

All but SIGReg's are made from their functions; :class:`SIGRegLoss` is written out because it counts its calls, to
draw fresh random directions at every step as the paper does.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .. import _validate as check
from .. import functional as CF
from .registry import function_loss, register_loss

KoLeoLoss = function_loss(
    "koleo",
    CF.koleo,
    class_name="KoLeoLoss",
    inputs=("z",),
    paper="Sablayrolles et al. (KoLeo), ICLR 2019; DINOv2's KoLeoLoss",
)


@register_loss(
    "sigreg",
    inputs=("views",),
    stacked=("views",),
    paper="Balestriero & LeCun (LeJEPA), 2025, SIGReg (Epps-Pulley)",
)
class SIGRegLoss(nn.Module):
    """LeJEPA's SIGReg (:func:`contrasphere.functional.sigreg`), with fresh random directions at every call.

    The module counts its calls and passes the count as the function's ``step``: call ``k`` projects onto
    ``sigreg_directions(D, num_directions=num_directions, seed=seed, step=k)``. That is the paper's redraw at every
    step (its generator seeded with the global step), deterministic: every rank of a distributed run calls it once
    per step and so uses the same directions, and the count is part of the state dict, so a resumed run continues
    the sequence (with gradient accumulation each micro-batch gets its own directions). ``resample=False`` keeps
    the directions of ``seed`` at every call (``step=None``), e.g. to compare the statistic across checkpoints.

    Args:
        num_directions, knots, t_max, seed: as :func:`contrasphere.functional.sigreg` (256, 17, 3, 0).
        resample: draw new directions at every call (True, the paper's) or keep those of ``seed``.
    """

    def __init__(
        self,
        num_directions: int = 256,
        knots: int = 17,
        t_max: float = 3.0,
        seed: int = 0,
        resample: bool = True,
    ) -> None:
        super().__init__()
        rules = check.hyperparameter_rules(CF.sigreg)  # the function's checks and messages
        self.num_directions = rules["num_directions"](num_directions, "num_directions")
        self.knots = rules["knots"](knots, "knots")
        self.t_max = rules["t_max"](t_max, "t_max")
        self.seed = rules["seed"](seed, "seed")
        if not isinstance(resample, bool):
            raise TypeError(f"resample must be True or False, got {resample!r}")
        self.resample = resample
        self.calls = 0  # forward calls so far: the step of the next call's directions

    def function_kwargs(self) -> dict[str, Any]:
        """What the next ``forward`` passes to :func:`contrasphere.functional.sigreg` besides the views."""
        return {
            "num_directions": self.num_directions,
            "knots": self.knots,
            "t_max": self.t_max,
            "seed": self.seed,
            "step": self.calls if self.resample else None,
        }

    def forward(self, views: Tensor) -> Tensor:
        loss = CF.sigreg(views, **self.function_kwargs())
        self.calls += 1
        return loss

    def get_extra_state(self) -> dict[str, int]:
        return {"calls": self.calls}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.calls = int(state["calls"])

    def extra_repr(self) -> str:
        names = ("num_directions", "knots", "t_max", "seed", "resample")
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + f", calls={self.calls}"


VICRegLoss = function_loss(
    "vicreg",
    CF.vicreg,
    class_name="VICRegLoss",
    inputs=("z_a", "z_b"),
    paper="Bardes et al. (VICReg), ICLR 2022, Eq. 1-6",
)

MMCRLoss = function_loss(
    "mmcr",
    CF.mmcr,
    class_name="MMCRLoss",
    inputs=("views",),
    stacked=("views",),
    paper="Yerxa et al. (MMCR), NeurIPS 2023",
)

GORLoss = function_loss(
    "gor",
    CF.gor,
    class_name="GORLoss",
    inputs=("z_a", "z_b"),
    paper="Zhang et al. (GOR), ICCV 2017",
)
