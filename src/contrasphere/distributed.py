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

:class:`contrasphere.losses.GatherLoss` wraps any registered loss so that it gathers its inputs first, and
:func:`all_reduce_with_grad` sums a tensor over ranks with a gradient (global BatchNorm's statistics).

Run training with ``torchrun --nproc_per_node K ...`` and ``torch.distributed.init_process_group``; without an
initialised process group everything here is the identity.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


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


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool]
_MAX_DIMS = 6


def _describe(x: Tensor) -> tuple[int, ...]:
    dtype = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else len(_DTYPES)
    shape = list(x.shape) + [-1] * (_MAX_DIMS - x.ndim)
    return (x.ndim, dtype, int(x.requires_grad), *shape[:_MAX_DIMS])


def _shown(d: list[int]) -> str:
    ndim, code = d[0], d[1]
    dtype = str(_DTYPES[code]).removeprefix("torch.") if code < len(_DTYPES) else "another dtype"
    grad = ", requiring grad" if d[2] else ", without grad"
    return f"shape ({', '.join(map(str, d[3 : 3 + ndim]))}) {dtype}{grad}"


def _gather_layout(x: Tensor) -> list[int]:
    """Every rank's row count; a clear error on every rank when the ranks' trailing shapes or dtypes differ.

    One collective: the ranks exchange ``(ndim, dtype, shape)``, so that a mismatch (another embedding size, another
    precision on one rank) fails on every rank at once instead of deadlocking or gathering garbage.
    """
    mine = torch.tensor(_describe(x), dtype=torch.long, device=x.device)
    everyone = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(everyone, mine)
    layouts = [[int(v) for v in t] for t in everyone]
    first = layouts[0]
    for r, d in enumerate(layouts):
        if d[:3] != first[:3] or d[4 : 3 + d[0]] != first[4 : 3 + first[0]]:
            raise ValueError(
                f"ranks disagree on what they gather: rank 0 has {_shown(first)}, rank {r} has {_shown(d)}. Every "
                "rank must pass tensors of the same trailing shape, dtype and requires_grad (the same model, "
                "embedding size and precision, all training or all not); only the number of rows may differ"
            )
    return [d[3] for d in layouts]


def _gather(x: Tensor, sizes: list[int]) -> Tensor:
    """Concatenate every rank's ``x`` in rank order; rows beyond a rank's size are padding, dropped here."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int]) -> Tensor:
        ctx.sizes = sizes
        return _gather(x.detach(), sizes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
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
    if x.ndim == 0:
        raise ValueError("all_gather_with_grad gathers rows: pass a tensor with at least one dimension")
    sizes = _gather_layout(x)
    offset = sum(sizes[: rank()])
    if x.requires_grad:
        gathered: Tensor = _AllGatherWithGrad.apply(x, sizes)
        return gathered, offset
    return _gather(x, sizes), offset


def row_counts(x: Tensor) -> list[int]:
    """Every rank's row count of ``x``, in rank order (a collective that also checks that the ranks' trailing
    shapes, dtypes and ``requires_grad`` agree, failing on every rank with both named if not); ``[n]`` alone."""
    if not is_initialized() or world_size() == 1:
        return [x.shape[0]]
    return _gather_layout(x)


def all_gather_rows(x: Tensor, sizes: list[int]) -> Tensor:
    """:func:`all_gather_with_grad` for rows whose counts every rank knows already (no collective to learn them);
    always through the autograd function, so that every rank takes part in the backward pass."""
    if not is_initialized() or world_size() == 1:
        return x
    gathered: Tensor = _AllGatherWithGrad.apply(x, sizes)
    return gathered


class _AllLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        high = x.detach().clone()
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        shift = torch.where(torch.isinf(high), 0.0, high)
        total = torch.exp(x.detach() - shift)
        dist.all_reduce(total)
        out = torch.where(total > 0, shift + total.log(), -torch.inf)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        x, out = ctx.saved_tensors
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's result depends on every rank's x
        weight = torch.where(torch.isinf(out), 0.0, torch.exp(x - torch.where(torch.isinf(out), 0.0, out)))
        return grad * weight


def all_logsumexp(x: Tensor) -> Tensor:
    r"""Element-wise :math:`\log \sum_r e^{x_r}` over the ranks' ``x`` (same shape everywhere), with the gradient.

    How partial log-sum-exps (each rank's share of a reduction's terms) become the global one: two all-reduces of
    ``x``'s size forward (the maximum, then the shifted sum), one backward. ``-inf`` (no term on a rank) is fine.
    """
    if not is_initialized() or world_size() == 1:
        return x
    out: Tensor = _AllLogSumExp.apply(x)
    return out


class RingShift:
    """Send tensors to the next rank and receive the previous rank's, in the background (one hop of a ring).

    ``RingShift(tensors)`` starts the point-to-point sends and receives at once (``isend``/``irecv``, batched so
    that gloo and NCCL pair them without deadlock); :meth:`wait` returns the received tensors. Compute between
    the two calls overlaps the transfer. Every rank must shift tensors of the same shapes.
    """

    def __init__(self, tensors: list[Tensor]) -> None:
        w, r = world_size(), rank()
        self.received = [torch.empty_like(t) for t in tensors]
        ops = [dist.P2POp(dist.isend, t.contiguous(), (r + 1) % w) for t in tensors]
        ops += [dist.P2POp(dist.irecv, t, (r - 1) % w) for t in self.received]
        self.requests = dist.batch_isend_irecv(ops)

    def wait(self) -> list[Tensor]:
        for request in self.requests:
            request.wait()
        return self.received


def average_over_ranks(x: Tensor) -> Tensor:
    """The mean of ``x`` over the ranks (a gradient hook for replicated parameters); ``x`` itself with one rank."""
    if not is_initialized() or world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)  # every rank used the sum, so each rank's input gets the sum of their gradients
        return grad


def all_reduce_with_grad(x: Tensor) -> Tensor:
    """The sum of ``x`` over ranks, differentiable (its backward sums the gradients); ``x`` without a group."""
    if not is_initialized() or world_size() == 1:
        return x
    total: Tensor = _AllReduceWithGrad.apply(x)
    return total


def sizes_of(n: int, device: torch.device) -> list[int]:
    """Every rank's row count ``n``, in rank order (a collective); ``[n]`` without a process group."""
    return _sizes(n, device) if is_initialized() and world_size() > 1 else [n]


def all_reduce_mean(value: Tensor) -> Tensor:
    """The mean of a value over ranks, detached, for logging (a collective: call it on every rank)."""
    value = value.detach().clone()
    if not is_initialized():
        return value
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world_size()


def init_from_env(use_cuda: bool, timeout: float = 600.0) -> bool:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` set), unless one exists already.

    NCCL when ``use_cuda`` and a GPU is present, else gloo. ``timeout`` (seconds) bounds how long a collective
    waits for a rank that stopped answering before the job fails (PyTorch's default is 30 minutes). Returns
    whether this call created the group (and so should destroy it with :func:`leave`).
    """
    if "WORLD_SIZE" not in os.environ or is_initialized():
        return False
    backend = "nccl" if use_cuda and torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return True


def local_rank() -> int:
    """This process's GPU index on its node (``LOCAL_RANK``, set by ``torchrun``); 0 without one."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def leave(destroy: bool) -> None:
    """Every rank waits for the others here (a barrier); ``destroy`` then tears the process group down."""
    if not is_initialized():
        return
    dist.barrier()
    if destroy:
        dist.destroy_process_group()
