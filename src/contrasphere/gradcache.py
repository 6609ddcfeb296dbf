"""Gradient caching: contrastive batches larger than the activations of one forward pass allow.

Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup" (RepL4NLP 2021). The loss
needs all embeddings of the batch at once, but the encoder's activations need not be kept for all of them:

1. embed the batch chunk by chunk without gradients, remembering each chunk's random state;
2. compute the loss on the concatenated embeddings and its gradient with respect to the embeddings (the pairwise
   engine keeps this step memory-linear);
3. embed each chunk again, with gradients and with its random state replayed (the same dropout masks and random
   augmentations), and back-propagate the cached embedding gradient through it.

Peak activation memory is that of one chunk; the parameter gradients equal those of embedding the same chunks
in one graph. Layers that mix samples across the batch (BatchNorm's batch statistics) see one chunk at a time, as
in any chunked forward pass. Under DistributedDataParallel, gradient synchronisation runs once, on the last chunk;
wrap the loss in :class:`contrasphere.losses.GatherLoss` to contrast against every rank's embeddings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from . import _validate as check

Embed = Callable[..., Mapping[str, Tensor]]


def _rng_state(devices: list[int]) -> tuple[Tensor, list[Tensor]]:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


@contextlib.contextmanager
def _replay(state: tuple[Tensor, list[Tensor]], devices: list[int]) -> Iterator[None]:
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        for device, cuda_state in zip(devices, state[1]):
            torch.cuda.set_rng_state(cuda_state, device)
        yield


def _check_outputs(out: object, chunk: int) -> Mapping[str, Tensor]:
    if not isinstance(out, Mapping) or not all(isinstance(v, Tensor) for v in out.values()):
        raise TypeError(
            f"embed must return a dict of embeddings named like the loss's arguments (e.g. {{'z_a': ..., "
            f"'z_b': ...}}), got {type(out).__name__} for chunk {chunk}"
        )
    return out


def _grad(embedding: Tensor, name: str) -> Tensor:
    if embedding.grad is None:
        raise RuntimeError(f"the loss does not depend on the embedding {name!r}: it has no gradient to cache")
    return embedding.grad


def grad_cache_backward(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    *,
    chunk_size: int,
    embed: Embed | None = None,
    loss_kwargs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Compute ``loss_fn(**embeddings)`` for a whole batch and back-propagate it into ``model``, chunk by chunk.

    Args:
        model: the encoder (possibly wrapped in DistributedDataParallel); its parameters receive ``.grad``.
        loss_fn: any contrasphere loss (or :class:`~contrasphere.losses.GatherLoss`); called with the
            embeddings of the whole batch as keyword arguments, plus ``loss_kwargs``.
        inputs: tensors split into chunks along dimension 0 (e.g. the two augmented views ``(x_a, x_b)``).
        chunk_size: rows per chunk.
        embed: ``embed(model, *chunk_inputs) -> {"z_a": ..., "z_b": ...}``; by default ``model(*chunk_inputs)``,
            which must return such a dict.
        loss_kwargs: extra loss arguments that are not embeddings, such as ``labels`` for the whole batch.

    Returns the loss value (detached).
    """
    check.integer(chunk_size, "chunk_size")
    if not inputs:
        raise ValueError("inputs is empty: give the batch tensors to split into chunks")
    n = inputs[0].shape[0]
    if any(x.shape[0] != n for x in inputs):
        raise ValueError(f"every input needs the same number of rows, got {[x.shape[0] for x in inputs]}")
    embed = embed or (lambda m, *xs: m(*xs))
    chunks = list(zip(*(torch.split(x, chunk_size) for x in inputs)))
    cuda_initialized: bool = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]  # unannotated in torch
    devices = list(range(torch.cuda.device_count())) if cuda_initialized else []

    # 1. embed without gradients, remembering each chunk's random state
    states, cached = [], []
    with torch.no_grad():
        for i, chunk in enumerate(chunks):
            states.append(_rng_state(devices))
            cached.append(_check_outputs(embed(model, *chunk), i))
    # 2. the loss on the whole batch and its gradient with respect to the embeddings
    names = list(cached[0])
    full = {name: torch.cat([c[name] for c in cached]).detach().requires_grad_() for name in names}
    loss = loss_fn(**full, **(loss_kwargs or {}))
    torch.autograd.backward(loss)
    # a chunk's output may have more rows than its input (e.g. both views stacked): split as the outputs came
    grads = {name: torch.split(_grad(full[name], name), [c[name].shape[0] for c in cached]) for name in names}
    # 3. embed again with gradients and the same random states; back-propagate the cached gradients
    no_sync = getattr(model, "no_sync", None)
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync, _replay(states[i], devices):
            out = _check_outputs(embed(model, *chunk), i)
            terms = [(out[name] * grads[name][i].to(out[name].dtype)).sum() for name in names]
            torch.autograd.backward(sum(terms[1:], terms[0]))
    return loss.detach()
