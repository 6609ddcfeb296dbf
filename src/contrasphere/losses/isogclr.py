"""iSogCLR: contrastive learning with a temperature for every sample, learned as training goes.

Qiu et al., "Not All Semantics are Created Equal: Contrastive Self-supervised Learning with Automatic Temperature
Individualization", ICML 2023. Each sample ``i`` of the training set has its own temperature ``tau_i``, optimised
by a distributionally robust objective; the estimator keeps, per sample, a moving average ``s_i`` of the
softmax denominator (with a running shift ``b_i`` against overflow) and a moving average ``u_i`` of the
temperature's gradient. The state lives in the module's buffers (``num_samples`` entries each), indexed by the
samples' ids, and the temperatures are updated inside ``forward``, as in the authors' code for the image-text
setting (the ``iSogCLR_Loss`` of the paper's CLIP experiments), whose defaults are used here.

This is the one registered loss with per-sample state: keep one module for the whole run, pass each batch's
sample ids, and save it with the checkpoint (its buffers are part of ``state_dict``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _validate as check
from .registry import register_loss


@register_loss(
    "isogclr", inputs=("z_a", "z_b", "index"), paper="Qiu et al. (iSogCLR), ICML 2023, Alg. 1", dense_pairs=True
)
class ISogCLRLoss(nn.Module):
    r"""Bimodal iSogCLR (image-text), exactly as the authors' ``iSogCLR_Loss``.

    For a batch of pairs :math:`(a_i, b_i)` with :math:`d_{ij} = \langle a_i, b_j\rangle - \langle a_i, b_i\rangle`,
    the loss is :math:`\frac1N\sum_i \sum_{j \ne i} w_{ij} d_{ij}` plus the same over columns, where
    :math:`w_{ij} = e^{d_{ij}/\tau_i - b_i} / s_i` and :math:`s_i` is the moving average (weight ``gamma``) of
    :math:`\sum_{j\ne i} e^{d_{ij}/\tau_i - b_i}`: its gradient is the compositional estimator of
    :math:`\tau_i \log \frac{1}{N-1}\sum_{j\ne i} e^{d_{ij}/\tau_i}`. Then each temperature moves against the moving
    average of its gradient, :math:`\log(s_i/(N-1)) + b_i + \rho - \sum_j w_{ij} d_{ij}/\tau_i`, clipped, with step
    ``eta`` and bounds ``[tau_min, tau_max]``. A sample's first visit sets :math:`s_i` to the batch value (the
    reference does so for every sample during epoch 0).

    Args:
        num_samples: size of the training set (sample ids run from 0 to ``num_samples - 1``).
        gamma: moving-average weight of ``s`` (0.8); rho: the DRO radius (8.0); tau_init: 0.01;
        tau_min, tau_max: 0.005, 0.05; eta: the temperatures' step (0.03); beta_u: moving-average weight of the
        temperatures' gradient (0.5); grad_clip: 5.0.
    """

    # per-sample state, registered as buffers in __init__
    s_a: Tensor
    s_b: Tensor
    b_a: Tensor
    b_b: Tensor
    u_a: Tensor
    u_b: Tensor
    tau_a: Tensor
    tau_b: Tensor
    seen_a: Tensor
    seen_b: Tensor

    def __init__(
        self,
        num_samples: int,
        gamma: float = 0.8,
        rho: float = 8.0,
        tau_init: float = 0.01,
        tau_min: float = 0.005,
        tau_max: float = 0.05,
        eta: float = 0.03,
        beta_u: float = 0.5,
        grad_clip: float = 5.0,
    ) -> None:
        super().__init__()
        check.integer(num_samples, "num_samples", 2, " (the training set's size)")
        if not 0 < gamma <= 1 or not 0 < beta_u <= 1:
            raise ValueError(f"gamma and beta_u are moving-average weights in (0, 1], got {gamma} and {beta_u}")
        tau_min = check.temperature(tau_min, "tau_min")
        if not tau_min <= tau_init <= tau_max:
            raise ValueError(f"need 0 < tau_min <= tau_init <= tau_max, got {tau_min}, {tau_init}, {tau_max}")
        self.gamma, self.rho, self.eta, self.beta_u = gamma, check.non_negative(rho, "rho"), eta, beta_u
        self.tau_min, self.tau_max, self.grad_clip = tau_min, tau_max, check.positive(grad_clip, "grad_clip")
        for side in ("a", "b"):
            self.register_buffer(f"s_{side}", torch.zeros(num_samples, dtype=torch.float64))
            self.register_buffer(f"b_{side}", torch.zeros(num_samples, dtype=torch.float64))
            self.register_buffer(f"u_{side}", torch.zeros(num_samples, dtype=torch.float64))
            self.register_buffer(f"tau_{side}", torch.full((num_samples,), float(tau_init), dtype=torch.float64))
            self.register_buffer(f"seen_{side}", torch.zeros(num_samples, dtype=torch.bool))

    def forward(self, z_a: Tensor, z_b: Tensor, index: Tensor) -> Tensor:
        z_a = check.embeddings(z_a, "z_a", min_rows=2, why="each sample needs negatives")
        z_b = check.embeddings(z_b, "z_b", min_rows=2, why="each sample needs negatives")
        check.same_shape(z_a, z_b, "z_a", "z_b")
        index = check.sample_ids(index, z_a.shape[0], self.s_a.shape[0], self.s_a.device)
        z_a, z_b = check.common_dtype(z_a, z_b)
        n = z_a.shape[0]
        sim = z_a @ z_b.T
        diag = sim.diagonal()
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=sim.device)
        # rows: a_i against every b_j; columns: b_j against every a_i (transpose, then the same update)
        rows, cols = sim - diag[:, None], (sim - diag[None, :]).T
        return self._side("a", rows, index, off_diagonal) + self._side("b", cols, index, off_diagonal)

    def _side(self, side: str, diffs: Tensor, index: Tensor, off_diagonal: Tensor) -> Tensor:
        s, b, u, tau, seen = (getattr(self, f"{name}_{side}") for name in ("s", "b", "u", "tau", "seen"))
        n = diffs.shape[0]
        with torch.no_grad():
            tau_i = tau[index]
            scaled = diffs.detach().double() / tau_i[:, None]
            old_b = b[index]
            new_b = torch.maximum(scaled.amax(1), old_b)
            b[index] = new_b
            exp_diffs = torch.exp(scaled - new_b[:, None]) * off_diagonal
            g = exp_diffs.sum(1)
            first = ~seen[index]
            average = (1 - self.gamma) * s[index] * torch.exp(old_b - new_b) + self.gamma * g
            s_i = torch.where(first, g, average)
            s[index], seen[index] = s_i, True
            s_i = s_i.clamp_min(1e-14)
            weights = exp_diffs / s_i[:, None]
            temp_grad = torch.log(s_i / (n - 1)) + new_b + self.rho - (weights * scaled).sum(1)
            u[index] = (1 - self.beta_u) * u[index] + self.beta_u * temp_grad.clamp(-self.grad_clip, self.grad_clip)
            tau[index] = (tau_i - self.eta * u[index]).clamp(self.tau_min, self.tau_max)
        return (weights.to(diffs.dtype) * diffs).sum(1).mean()

    def temperatures(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The current temperatures of samples ``index`` for the ``a`` and ``b`` sides."""
        return self.tau_a[index].clone(), self.tau_b[index].clone()
