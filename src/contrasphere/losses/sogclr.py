"""SogCLR: the global contrastive loss, optimised with a per-sample moving average, so small batches suffice.

Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning: Small Batch Does Not Harm
Performance", ICML 2022 (Algorithm 1). The global contrastive objective of anchor ``i`` is
:math:`\\tau \\log g_i` with :math:`g_i = \\frac{1}{|S_i^-|}\\sum_{z \\in S_i^-} e^{(\\langle a_i, z\\rangle -
\\langle a_i, b_i\\rangle)/\\tau}` over **all** negatives of the training set; a mini-batch estimates :math:`g_i`
with a bias that only a large batch removes. SogCLR keeps, per training sample, a moving average
:math:`u_i \\leftarrow (1-\\gamma) u_i + \\gamma\\, \\hat g_i` of the batch estimates and follows the gradient
:math:`\\frac{\\tau}{u_i} \\nabla \\hat g_i`, whose bias vanishes as training goes, whatever the batch size.

The state (``u``, one entry per training sample) lives in a buffer indexed by the samples' ids and is saved with
``state_dict``. Under distributed training wrap the loss in :class:`contrasphere.losses.GatherLoss`: every rank
then updates the same entries of ``u`` with the same global-batch estimates, so the ranks' states stay equal and
the gradients are those of one process on the global batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from .. import _validate as check
from .registry import register_loss


@register_loss(
    "sogclr", inputs=("z_a", "z_b", "index"), paper="Yuan et al. (SogCLR), ICML 2022, Alg. 1", dense_pairs=True
)
class SogCLRLoss(nn.Module):
    r"""SogCLR on two views, as the authors' ``dynamic_contrastive_loss``; its value has the gradient of SogCLR.

    For anchor :math:`a_i` the negatives are the other samples' two views (:math:`2(B-1)` of them); with
    :math:`s_{ij} = \langle a_i, c_j\rangle` and :math:`\hat g_i = \frac{1}{2(B-1)} \sum_{j \in S_i^-}
    e^{s_{ij}/\tau}`, :math:`u_i \leftarrow (1-\gamma) u_i + \gamma \hat g_i` and the loss is
    :math:`\frac1B \sum_i \big(-s_{i,p(i)} + \frac{1}{2(B-1)} \sum_{j\in S_i^-} \frac{e^{s_{ij}/\tau}}{u_i}
    s_{ij}\big)` with the weights held constant: its gradient is :math:`\frac{\tau}{u_i}\nabla \hat g_i -
    \nabla s_{i,p(i)}`, the authors' estimator. The same for the anchors :math:`b_i`; the two directions' new
    :math:`u_i` are averaged into the state (the authors' code stores their sum, which doubles the weight of the
    past in the next update; the average is what Algorithm 1 tracks). ``u`` starts at 0, as in their code.

    Args:
        num_samples: size of the training set (ids run from 0 to ``num_samples - 1``).
        temperature: :math:`\tau` (0.1, the paper's for ImageNet-1k).
        gamma: the moving-average weight (0.9, the paper's); with ``gamma_schedule="cosine"`` it decays from
            ``gamma`` to ``gamma_min`` over ``decay_steps`` calls along a half cosine, as FastCLIP's
            (Wei et al. 2024) schedule for the same estimator, and stays at ``gamma_min`` after.
    """

    log_u: Tensor  # log of the moving averages (-inf: never seen), kept in log space so that no tau overflows
    calls: Tensor

    def __init__(
        self,
        num_samples: int,
        temperature: float = 0.1,
        gamma: float = 0.9,
        gamma_schedule: Literal["constant", "cosine"] = "constant",
        gamma_min: float = 0.2,
        decay_steps: int = 1000,
    ) -> None:
        super().__init__()
        check.integer(num_samples, "num_samples", 2, " (the training set's size)")
        self.temperature = check.temperature(temperature, "temperature")
        if not 0 < gamma_min <= gamma <= 1:
            raise ValueError(f"need 0 < gamma_min <= gamma <= 1 (moving-average weights), got {gamma_min}, {gamma}")
        self.gamma, self.gamma_min = float(gamma), float(gamma_min)
        self.gamma_schedule = check.one_of(("constant", "cosine"))(gamma_schedule, "gamma_schedule")
        self.decay_steps = check.integer(decay_steps, "decay_steps")
        self.register_buffer("log_u", torch.full((num_samples,), -math.inf, dtype=torch.float64))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    @property
    def u(self) -> Tensor:
        """The per-sample moving averages :math:`u_i` (0 for samples not seen yet)."""
        return self.log_u.exp()

    def current_gamma(self) -> float:
        """The moving-average weight the next call uses."""
        if self.gamma_schedule == "constant":
            return self.gamma
        progress = min(1.0, int(self.calls) / self.decay_steps)
        return self.gamma_min + (self.gamma - self.gamma_min) * 0.5 * (1 + math.cos(math.pi * progress))

    def forward(self, z_a: Tensor, z_b: Tensor, index: Tensor) -> Tensor:
        z_a = check.embeddings(z_a, "z_a", min_rows=2, why="each sample needs negatives")
        z_b = check.embeddings(z_b, "z_b", min_rows=2, why="each sample needs negatives")
        check.same_shape(z_a, z_b, "z_a", "z_b")
        index = check.sample_ids(index, z_a.shape[0], self.log_u.shape[0], self.log_u.device)
        z_a, z_b = check.common_dtype(z_a, z_b)
        gamma = self.current_gamma()
        loss_a, log_u_a = self._direction(z_a, z_b, index, gamma)
        loss_b, log_u_b = self._direction(z_b, z_a, index, gamma)
        with torch.no_grad():
            self.log_u[index] = torch.logaddexp(log_u_a, log_u_b) - math.log(2)  # the mean of the two
            self.calls += 1
        return loss_a + loss_b

    def _direction(self, anchor: Tensor, other: Tensor, index: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
        """The loss of the anchors ``anchor`` against both views, and their new moving averages."""
        n = anchor.shape[0]
        scores = anchor @ torch.cat([other, anchor]).T  # (B, 2B): the partner view, then the same view
        positive = scores.diagonal()
        negative = torch.ones_like(scores, dtype=torch.bool)
        rows = torch.arange(n, device=scores.device)
        negative[rows, rows], negative[rows, rows + n] = False, False  # the positive and the anchor itself
        with torch.no_grad():
            shifted = scores.double() / self.temperature
            shifted = shifted.masked_fill(~negative, -math.inf)  # the positive and the anchor itself weigh nothing
            shift = shifted.amax(1, keepdim=True)  # no overflow at small tau
            exp = torch.exp(shifted - shift)
            g_hat = exp.sum(1) / (2 * (n - 1))  # in units of e^shift
            u_old = torch.exp(self.log_u[index] - shift.squeeze(1))
            u_new = (1 - gamma) * u_old + gamma * g_hat
            weights = (exp / u_new[:, None]).to(scores.dtype)
        loss = (-positive + (weights * scores).sum(1) / (2 * (n - 1))).mean()
        return loss, u_new.log() + shift.squeeze(1)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gamma={self.gamma}, gamma_schedule={self.gamma_schedule!r}"
