"""MoCo's machinery: a FIFO queue of keys and the momentum (exponential moving average) encoder update.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020. Stateful by nature, so
kept out of the losses: a training step embeds queries with the encoder and keys with its momentum copy, calls
:func:`contrasphere.functional.moco_info_nce` (or ``align_uniform_queue``) with ``queue.negatives()``, then pushes
the keys and updates the momentum encoder::

    loss = moco_info_nce(q, k, queue.negatives())
    loss.backward(); optimizer.step()
    queue.push(k)
    momentum_update(key_encoder, encoder, momentum=0.999)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _validate as check
from .distributed import all_gather_with_grad

NORM_TOLERANCE = 1e-3  # how far from 1 a key's norm may be (or half-precision rounding, if larger)


class KeyQueue(nn.Module):
    """A first-in first-out queue of ``size`` keys of dimension ``dim``, stored as rows in a buffer.

    Any batch size works, including one that does not divide ``size`` (writes wrap around) and one larger than
    ``size`` (only its last ``size`` keys are kept). Like MoCo, the queue starts full of random unit vectors; with
    ``start_empty=True`` it starts empty and :meth:`negatives` returns only the keys pushed so far.
    Under ``torch.distributed``, :meth:`push` enqueues the keys of every rank (in rank order), as MoCo does.

    MoCo's keys are unit vectors (the key encoder's output, normalised), and :meth:`push` refuses keys whose norms
    are not within :data:`NORM_TOLERANCE` of 1: a queue of raw features would silently change every loss computed
    against it. ``normalized=False`` stores keys as given (a queue of something else than MoCo's keys).
    """

    keys: Tensor
    pointer: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int, *, start_empty: bool = False, normalized: bool = True) -> None:
        super().__init__()
        check.integer(size, "size"), check.integer(dim, "dim")
        self.normalized = bool(normalized)
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.tensor(0 if start_empty else size, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def negatives(self) -> Tensor:
        """A copy of the keys currently in the queue, ``(K, D)`` (a copy: pushing later must not alter a graph)."""
        count = int(self.count)
        if count == 0:
            raise ValueError("the queue is empty: push a batch of keys before asking for negatives")
        return self.keys[:count].clone() if count < self.size else self.keys.clone()

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Enqueue ``keys`` ``(B, D)`` (gathered from every rank under torch.distributed), oldest out first."""
        keys = check.embeddings(keys, "keys", keep_dtype=True)
        if keys.shape[1] != self.keys.shape[1]:
            raise ValueError(f"keys have dimension {keys.shape[1]} but the queue holds dimension {self.keys.shape[1]}")
        if self.normalized:
            _unit_rows(keys)
        keys, _ = all_gather_with_grad(keys.detach())
        keys = keys[-self.size :]
        slots = (int(self.pointer) + torch.arange(keys.shape[0], device=self.keys.device)) % self.size
        self.keys[slots] = keys.to(self.keys.dtype)
        self.pointer.fill_((int(self.pointer) + keys.shape[0]) % self.size)
        self.count.fill_(min(int(self.count) + keys.shape[0], self.size))


def _unit_rows(keys: Tensor) -> None:
    """Raise unless every row of ``keys`` has norm 1, within NORM_TOLERANCE or the rounding of its dtype."""
    norms = torch.linalg.vector_norm(keys.detach().double(), dim=1)
    tolerance = max(NORM_TOLERANCE, torch.finfo(keys.dtype).eps)  # bfloat16 rounds a unit norm by up to 2^-8
    if float((norms - 1).abs().max()) > tolerance:
        raise ValueError(
            f"keys must be unit vectors, as MoCo's are (norms range from {float(norms.min()):.4g} to "
            f"{float(norms.max()):.4g}); normalise them before pushing, k = F.normalize(k, dim=1), or build the "
            "queue with KeyQueue(..., normalized=False) to store keys as given"
        )


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, momentum: float = 0.999) -> None:
    """``target <- momentum * target + (1 - momentum) * source``, parameter by parameter; buffers are copied.

    The key encoder's update of MoCo (Eq. 2); ``momentum`` in [0, 1] (0.999 in MoCo).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    target_params, source_params = list(target.parameters()), list(source.parameters())
    if len(target_params) != len(source_params):
        raise ValueError("target and source must have the same parameters (make target with momentum_copy(source))")
    for t, s in zip(target_params, source_params):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    for target_buffer, source_buffer in zip(target.buffers(), source.buffers()):
        target_buffer.copy_(source_buffer)


def momentum_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` to serve as its momentum (key) encoder."""
    target = copy.deepcopy(model)
    for p in target.parameters():
        p.requires_grad_(False)
    return target
