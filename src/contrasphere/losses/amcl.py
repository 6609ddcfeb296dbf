r"""AMCL: adaptive multi-head contrastive learning, with a learned temperature for every pair.

Wang et al., "Adaptive Multi-head Contrastive Learning", ECCV 2024 (arXiv:2310.05615), following the authors' code
(``AMCLNTXentLoss``, the SimCLR form). Several projection heads each give a view of the sample; a small network
``phi``, shared by the heads, gives every pair its temperature
:math:`\tau(x, y) = \tau_{min} + (\tau_{max} - \tau_{min})\,\sigma(-\langle\phi(x), \phi(y)\rangle)`; the loss of an
anchor with positive :math:`p` and its ``k`` most similar negatives :math:`n_k` (the paper's top-k
approximation) is

.. math::
    -\frac{\langle a, p\rangle}{\tau_{ap}} + \frac1k\sum_k \frac{\langle a, n_k\rangle}{\tau_{a n_k}}
    + \beta\,\Omega(\tau_{ap}) - \beta\sum_k \big(\log\tau_{a n_k} + 1/\tau_{a n_k}\big),
    \qquad \Omega(\tau) = \tfrac{d}{2}\log\tau + 1/\tau,

averaged over anchors and both directions and summed over heads. The temperature network is learnable, so the
loss is a module with parameters (optimise them with the encoder's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as check
from .registry import register_loss


@register_loss("amcl", inputs=("z_a", "z_b"), paper="Wang et al. (AMCL), ECCV 2024, Eq. 2.1 and 5", dense_pairs=True)
class AMCLLoss(nn.Module):
    """AMCL for two views with ``num_heads`` projection heads.

    Args:
        dim: the heads' embedding dimension ``d`` (also the regulariser's ``d``).
        num_heads: projection heads (3 in the paper); inputs are ``(B, num_heads, dim)``, or ``(B, dim)`` for one.
        beta: weight of the temperature regularisers (0.01); tau_min, tau_max: temperature range (1e-5, 2.0);
        topk: negatives kept per anchor (100); hidden_dim: width of ``phi`` (default ``dim``).
    """

    def __init__(
        self,
        dim: int = 128,
        num_heads: int = 3,
        beta: float = 0.01,
        tau_min: float = 1e-5,
        tau_max: float = 2.0,
        topk: int = 100,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_heads", num_heads), ("topk", topk)):
            check.integer(value, name)
        tau_min, tau_max = check.temperature(tau_min, "tau_min"), check.temperature(tau_max, "tau_max")
        if not tau_min < tau_max:
            raise ValueError(f"need 0 < tau_min < tau_max, got {tau_min} and {tau_max}")
        self.dim, self.num_heads, self.topk = dim, num_heads, topk
        self.beta, self.tau_min, self.tau_max = check.non_negative(beta, "beta"), float(tau_min), float(tau_max)
        hidden = dim if hidden_dim is None else hidden_dim
        self.phi = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def _temperature(self, score: Tensor) -> Tensor:
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(-score)

    def _omega(self, tau: Tensor) -> Tensor:
        return 0.5 * self.dim * torch.log(tau) + torch.reciprocal(tau)

    def _heads(self, z: Tensor, name: str) -> Tensor:
        if isinstance(z, Tensor) and z.ndim == 2 and self.num_heads == 1:
            z = z[:, None, :]
        if not isinstance(z, Tensor) or z.ndim != 3 or z.shape[1:] != (self.num_heads, self.dim):
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(
                f"{name} must have shape (B, {self.num_heads}, {self.dim}) (batch, heads, dim), got {shape}"
            )
        check.embeddings(z.reshape(-1, z.shape[2]), name, keep_dtype=True)
        return z

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        z_a, z_b = self._heads(z_a, "z_a"), self._heads(z_b, "z_b")
        check.same_shape(z_a, z_b, "z_a", "z_b")
        if z_a.shape[0] < 2:
            raise ValueError("AMCL needs at least 2 samples per batch: each anchor needs negatives")
        dtype = next(self.phi.parameters()).dtype  # the temperature network's precision (float32 unless .double())
        heads = []
        for h in range(self.num_heads):
            a, p = F.normalize(z_a[:, h].to(dtype), dim=-1), F.normalize(z_b[:, h].to(dtype), dim=-1)
            heads.append((self._direction(a, p) + self._direction(p, a)) / 2)
        return torch.stack(heads).sum()

    def _direction(self, anchor: Tensor, positive: Tensor) -> Tensor:
        b = anchor.shape[0]
        phi_a, phi_p = self.phi(anchor), self.phi(positive)
        tau_pos = self._temperature((phi_a * phi_p).sum(-1))
        candidates = torch.cat([anchor, positive])  # negatives: both views of the other samples, 2B - 2 of them
        phi_c = torch.cat([phi_a, phi_p])
        sim = anchor @ candidates.T
        eye = torch.eye(b, dtype=torch.bool, device=anchor.device)
        excluded = torch.cat([eye, eye], dim=1)  # the anchor itself and its positive
        k = min(self.topk, 2 * b - 2)
        values, index = sim.masked_fill(excluded, -torch.inf).topk(k, dim=1)
        tau_top = self._temperature((phi_a @ phi_c.T).gather(1, index))
        negative = (values / tau_top).mean(1)
        reg_pos = self.beta * self._omega(tau_pos)
        reg_neg = self.beta * (torch.log(tau_top).sum(1) + torch.reciprocal(tau_top).sum(1))
        return (-(anchor * positive).sum(-1) / tau_pos + negative + reg_pos - reg_neg).mean()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, beta={self.beta}, topk={self.topk}"
