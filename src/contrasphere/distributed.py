"""Everything that talks to ``torch.distributed``, in one place.

Contrastive losses compare every embedding with every other one, so under data parallelism each process needs the
embeddings of the whole global batch. :func:`all_gather_with_grad` gathers them (batches of different sizes per
rank are fine) and keeps the gradient: its backward pass sums the gradients that every rank computed for the
gathered tensor and hands each rank the slice of its own rows.

Why that gives exact gradients: every rank computes the same global loss ``L`` on the gathered batch, so the sum
over ranks of the gradients reaching rank ``r``'s rows is ``world_size * dL/dz_r``. DistributedDataParallel then
averages the parameter gradients over the ranks, dividing the ``world_size`` back out: each parameter gets exactly
the gradient of the single-process loss on the global batch. (Forgetting the sum, as an all-gather without
gradient does, leaves gradients ``world_size`` times too small and drops every cross-rank term.)

:class:`GatherLoss` wraps any registered loss so that it gathers its inputs first::

    loss_fn = GatherLoss(contrasphere.create_loss("nt_xent"))
    loss = loss_fn(z_a=z_a, z_b=z_b)   # same value on every rank: the loss of the global batch

Run training with ``torchrun --nproc_per_node K ...`` and ``torch.distributed.init_process_group``; without an
initialised process group everything here is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .losses import LossSpec, loss_spec_of


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def _sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's row count, in rank order."""
    mine = torch.tensor([n], dtype=torch.long, device=device)
    everyone = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(everyone, mine)
    return [int(s) for s in everyone]


def _gather(x: Tensor, sizes: list[int]) -> Tensor:
    """Concatenate every rank's ``x`` in rank order; rows beyond a rank's size are padding, dropped here."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sizes):  # type: ignore[override]
        ctx.sizes = sizes
        return _gather(x.detach(), sizes)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's gradient for every row
        start = sum(ctx.sizes[: rank()])
        return grad[start : start + ctx.sizes[rank()]], None


def all_gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """Gather ``x`` (``(n_r, ...)`` on rank ``r``, sizes may differ) from every rank, keeping the gradient.

    Returns ``(x_all, offset)``: the rows of all ranks in rank order, and the index of this rank's first row in
    ``x_all`` (the offset to add to local positive indices). Without a process group: ``(x, 0)``.
    """
    if not is_initialized() or world_size() == 1:
        return x, 0
    sizes = _sizes(x.shape[0], x.device)
    offset = sum(sizes[: rank()])
    if x.requires_grad:
        return _AllGatherWithGrad.apply(x, sizes), offset
    return _gather(x, sizes), offset


def all_reduce_mean(value: Tensor) -> Tensor:
    """The mean of a value over ranks, detached, for logging (a collective: call it on every rank)."""
    value = value.detach().clone()
    if not is_initialized():
        return value
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world_size()


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
        return self.loss(**{name: self._gather(name, value) for name, value in inputs.items()})

    def _gather(self, name: str, value: Tensor) -> Tensor:
        if name not in self.spec.inputs or name in self.spec.shared or not isinstance(value, Tensor) or value.ndim == 0:
            return value  # shared inputs and scalars are the same on every rank
        if name in self.spec.indices and is_initialized() and world_size() > 1:  # local row indices -> global
            sizes = _sizes(value.shape[0], value.device)
            return all_gather_with_grad(value + sum(sizes[: rank()]))[0]
        if name in self.spec.stacked:  # (V, N, D): gather the samples, dimension 1
            return all_gather_with_grad(value.transpose(0, 1))[0].transpose(0, 1)
        return all_gather_with_grad(value)[0]
