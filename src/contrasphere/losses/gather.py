"""Any registered loss on the global batch: :class:`GatherLoss` gathers its inputs from every rank first.

Why that gives exact gradients: every rank computes the same global loss ``L`` on the gathered batch, and the
backward of :func:`contrasphere.distributed.all_gather_with_grad` sums the gradients that every rank computed for
each row, so rank ``r``'s rows get ``world_size * dL/dz_r``; DistributedDataParallel's averaging divides the
``world_size`` back out: each parameter gets exactly the gradient of the single-process loss on the global batch.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..distributed import all_gather_with_grad, rank, sizes_of
from .registry import LossSpec, loss_spec_of


class GatherLoss(nn.Module):
    """Any registered loss, computed on the embeddings (and labels) gathered from every rank.

    Each rank gets the global-batch loss; with DistributedDataParallel the parameter gradients equal those of the
    single-process loss on the global batch exactly (see the module docstring). Every rank computes the whole
    ``N_global x N_global`` reduction, which the tiled engine keeps memory-linear.
    """

    def __init__(self, loss: nn.Module, spec: LossSpec | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.spec = spec or loss_spec_of(loss)

    def forward(self, **inputs: Tensor) -> Tensor:
        loss: Tensor = self.loss(**{name: self._gather(name, value) for name, value in inputs.items()})
        return loss

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
