"""Ring mode of :class:`contrasphere.losses.GatherLoss`: the loss of the global batch with no rank holding it.

Each rank keeps its own rows; the column blocks travel around the ring (:mod:`contrasphere.pairwise.ring`). A
rank sums its rows' terms and the sums are all-reduced (with the gradient), so every rank returns the global-batch
loss; as in the gather modes, rank ``r``'s rows get ``W dL/dz_r`` and DistributedDataParallel's average divides
the ``W`` back out (a replicated logit scale is averaged over the ranks by ``GatherLoss``).

Ring mode covers the objectives whose every term is a row reduction against all columns, computed from each
rank's rows: InfoNCE, NT-Xent, CLIP and SigLIP (the four that Inf-CL and the large-batch CLIP/SigLIP trainers
use). The others need the whole batch for a per-batch quantity (SupCon's class sums, DCL's and HCL's per-anchor
counts, MACL's batch temperature, uniformity's single log-sum-exp over all pairs) or a second pass; use
``mode="local"`` for them, which holds the gathered embeddings (``O(N D)``) but never an ``N x N`` matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..distributed import all_reduce_with_grad, row_counts
from ..functional.contrastive import _dot, _pair
from ..pairwise.ring import ring_row_logsumexp, ring_softplus_sum

Terms = Callable[[nn.Module, Tensor, Tensor, list[int]], tuple[Tensor, int]]


def _kwargs(module: nn.Module) -> dict[str, object]:
    function_kwargs = getattr(module, "function_kwargs", None)
    return function_kwargs() if callable(function_kwargs) else {}


def _no_extras(kwargs: dict[str, object], name: str) -> None:
    if kwargs.get("hardness"):
        raise ValueError(f"ring mode computes {name} without hardness weighting; use mode='local' for hardness")


def _info_nce(module: nn.Module, z_a: Tensor, z_b: Tensor, sizes: list[int]) -> tuple[Tensor, int]:
    kw = _kwargs(module)
    _no_extras(kw, "info_nce")
    scale = 1.0 / float(kw["temperature"])  # type: ignore[arg-type]
    lse = ring_row_logsumexp(z_a, z_b, sizes, scale=scale, block_size=kw.get("block_size"))  # type: ignore[arg-type]
    return (lse - scale * _dot(z_a, z_b)).sum(), sum(sizes)


def _nt_xent(module: nn.Module, z_a: Tensor, z_b: Tensor, sizes: list[int]) -> tuple[Tensor, int]:
    kw = _kwargs(module)
    scale = 1.0 / float(kw["temperature"])  # type: ignore[arg-type]
    z = torch.cat([z_a, z_b])  # this rank's 2 N_r views; every rank's block is laid out the same way
    block_size: int | None = kw.get("block_size")  # type: ignore[assignment]
    lse = ring_row_logsumexp(
        z, z, [2 * s for s in sizes], scale=scale, exclude_own_diagonal=True, block_size=block_size
    )
    return (lse - scale * _dot(z_a, z_b).repeat(2)).sum(), 2 * sum(sizes)


def _clip(module: nn.Module, z_a: Tensor, z_b: Tensor, sizes: list[int]) -> tuple[Tensor, int]:
    kw = _kwargs(module)
    _no_extras(kw, "clip")
    scale = kw["logit_scale"]
    block_size: int | None = kw.get("block_size")  # type: ignore[assignment]
    rows = ring_row_logsumexp(z_a, z_b, sizes, scale=scale, block_size=block_size)  # type: ignore[arg-type]
    cols = ring_row_logsumexp(z_b, z_a, sizes, scale=scale, block_size=block_size)  # type: ignore[arg-type]
    return ((rows + cols) / 2 - scale * _dot(z_a, z_b)).sum(), sum(sizes)  # type: ignore[operator]


def _siglip(module: nn.Module, z_a: Tensor, z_b: Tensor, sizes: list[int]) -> tuple[Tensor, int]:
    kw = _kwargs(module)
    scale, bias = kw["logit_scale"], kw["logit_bias"]
    block_size: int | None = kw.get("block_size")  # type: ignore[assignment]
    total = ring_softplus_sum(z_a, z_b, sizes, scale=scale, bias=bias, block_size=block_size)  # type: ignore[arg-type]
    return total - (scale * _dot(z_a, z_b) + bias).sum(), sum(sizes)  # type: ignore[operator]


RING_TERMS: dict[str, Terms] = {"info_nce": _info_nce, "nt_xent": _nt_xent, "clip": _clip, "siglip": _siglip}


def ring_loss(name: str, module: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """The global-batch loss ``name`` from this rank's ``z_a``, ``z_b`` rows, the columns passed around the ring."""
    extra = sorted(set(inputs) - {"z_a", "z_b"})
    if extra:
        raise ValueError(f"ring mode takes z_a and z_b only, got {', '.join(extra)}; use mode='local' for them")
    z_a, z_b = _pair(inputs["z_a"], inputs["z_b"])
    sizes = row_counts(z_a)
    local, count = RING_TERMS[name](module, z_a, z_b, sizes)
    return all_reduce_with_grad(local) / count
