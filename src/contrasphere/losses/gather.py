"""Any registered loss on the global batch: :class:`GatherLoss` gathers its inputs from every rank first.

Why that gives exact gradients: every rank computes the same global loss ``L`` on the gathered batch, and the
backward of :func:`contrasphere.distributed.all_gather_with_grad` sums the gradients that every rank computed for
each row, so rank ``r``'s rows get ``world_size * dL/dz_r``; DistributedDataParallel's averaging divides the
``world_size`` back out: each parameter gets exactly the gradient of the single-process loss on the global batch.

In the default ``mode="local"`` the engine's reductions run sharded (:func:`contrasphere.pairwise.sharded`): each
rank computes only its share of the score matrix (its own rows; for symmetric objectives an even share of the
upper triangle) and the partial reductions are combined with ``O(N)`` collectives, so per-rank loss work falls as
``1 / W``. The argument above still holds (see :mod:`contrasphere.pairwise.sharding`). The loss's own parameters
(a learnable logit scale) are replicated, not gathered: their gradients are averaged over the ranks in the
backward pass, which makes them exact on every rank in both modes.
"""

from __future__ import annotations

import contextlib
from typing import Literal

from torch import Tensor, nn

from .. import distributed
from ..distributed import all_gather_with_grad, rank, sizes_of
from ..pairwise import sharded
from .registry import LossSpec, loss_spec_of
from .ring import RING_TERMS, ring_loss

Mode = Literal["local", "full", "ring"]


class GatherLoss(nn.Module):
    """Any registered loss, computed on the embeddings (and labels) gathered from every rank.

    Each rank gets the global-batch loss; with DistributedDataParallel the parameter gradients equal those of the
    single-process loss on the global batch exactly (see the module docstring).

    Args:
        loss: a registered loss module (or a wrapper that carries its ``spec``).
        mode: ``"local"`` (the default): each rank computes only its share of every pairwise reduction, per-rank
            work ``O(N_global^2 D / W)``; ``"full"``: every rank computes the whole ``N_global x N_global``
            reduction (the reference; the tiled engine keeps either memory-linear); ``"ring"``: no rank holds the
            global batch, the column blocks travel rank to rank (memory ``O(N_r D)``; InfoNCE, NT-Xent, CLIP and
            SigLIP, see :mod:`contrasphere.losses.ring`).
    """

    def __init__(self, loss: nn.Module, spec: LossSpec | None = None, *, mode: Mode = "local") -> None:
        super().__init__()
        if mode not in ("local", "full", "ring"):
            raise ValueError(f"mode must be 'local' (each rank its share of the tiles), 'full' or 'ring', got {mode!r}")
        self.loss = loss
        self.spec = spec or loss_spec_of(loss)
        if mode == "ring" and (self.spec.name not in RING_TERMS or type(loss) is not self.spec.cls):
            raise ValueError(
                f"ring mode computes {', '.join(RING_TERMS)} (each term a row reduction of one rank's rows), not "
                f"{self.spec.name!r} wrapped as {type(loss).__name__}; use mode='local' (the default) for it"
            )
        self.mode = mode
        self._averaging = False

    def forward(self, **inputs: Tensor) -> Tensor:
        if distributed.world_size() > 1:
            self._average_own_parameters()
        if self.mode == "ring" and distributed.world_size() > 1:
            return ring_loss(self.spec.name, self.loss, inputs)
        gathered = {name: self._gather(name, value) for name, value in inputs.items()}
        with sharded() if self.mode == "local" else contextlib.nullcontext():
            loss: Tensor = self.loss(**gathered)
        return loss

    def _average_own_parameters(self) -> None:
        """Average the gradients of the loss's parameters over the ranks, once per backward pass (a hook)."""
        if self._averaging:
            return
        for p in self.loss.parameters():
            if p.requires_grad:
                p.register_hook(distributed.average_over_ranks)  # type: ignore[no-untyped-call]
        self._averaging = True

    def _gather(self, name: str, value: Tensor) -> Tensor:
        if name == "ids" and self.spec.takes_ids and isinstance(value, Tensor):
            return all_gather_with_grad(value)[0]  # sample ids are global already: gathered as they are
        if name not in self.spec.inputs or name in self.spec.shared or not isinstance(value, Tensor) or value.ndim == 0:
            return value  # shared inputs and scalars are the same on every rank
        if name in self.spec.indices:  # local row indices -> global
            sizes = sizes_of(value.shape[0], value.device)
            return all_gather_with_grad(value + sum(sizes[: rank()]))[0]
        if name in self.spec.stacked:  # (V, N, D): gather the samples, dimension 1
            return all_gather_with_grad(value.transpose(0, 1))[0].transpose(0, 1)
        return all_gather_with_grad(value)[0]
