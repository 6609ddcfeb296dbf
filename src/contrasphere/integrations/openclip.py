"""Drop-ins for open_clip's ``ClipLoss`` and ``SigLipLoss``, computed by contrasphere's engine (``[open-clip]`` extra).

Named ``openclip`` so that it never shadows the ``open_clip`` package, which it does not import: the classes take
open_clip's constructor and ``forward`` arguments, so ``open_clip.loss.ClipLoss(...)`` becomes
``contrasphere.integrations.openclip.ClipLoss(...)`` in a training script and nothing else changes.

- :class:`ClipLoss`: CLIP's symmetric cross-entropy (Radford et al., "Learning Transferable Visual Models From
  Natural Language Supervision", ICML 2021), :func:`contrasphere.functional.clip_loss`; InfoNCE in both directions
  (van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018).
- :class:`SigLipLoss`: the pairwise sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image Pre-Training",
  ICCV 2023), :func:`contrasphere.functional.siglip_loss`.

As in open_clip, the features are used as given (open_clip normalises them in the model) and ``logit_scale`` is
already exponentiated (``model.logit_scale.exp()``), like contrasphere's. The engine never materialises the
``N x N`` logits beyond its tile (``block_size``; None picks dense for small batches, tiles above ~2048 x 2048),
so the loss needs memory linear in the global batch; value and gradients are those of open_clip's dense loss.

**Under distribution the result is always the exact global-batch loss.** With ``world_size > 1`` both losses gather
the features of every rank with :func:`contrasphere.distributed.all_gather_with_grad` (whose backward sums every
rank's gradient for each row; per-rank batch sizes may differ), compute the loss of the global batch, and split the
score tiles between the ranks (:func:`contrasphere.pairwise.sharded`, so each rank computes ``1 / W`` of them).
With DistributedDataParallel's gradient averaging every parameter then gets exactly the gradient of the
single-process loss on the global batch, whatever ``local_loss``, ``gather_with_grad`` and ``dist_impl`` say (they
are accepted for compatibility and checked, and change nothing). open_clip's own combinations differ:

- ``gather_with_grad=False, local_loss=False`` (its default): the other ranks' features are gathered without
  gradient, so each rank back-propagates only through its own rows: the features' gradients are ``1 / W`` of the
  true ones while ``logit_scale``'s is exact (the two scales disagree; SGD and weight decay feel it);
- ``gather_with_grad=False, local_loss=True``: each rank's loss depends on the other ranks' features as negatives,
  but no gradient reaches them: the cross-rank terms are dropped, a different gradient, not a rescaled one;
- ``local_loss=True, gather_with_grad=True`` is exact, but each rank's value is its share of the loss, not the
  loss; ``local_loss=False, gather_with_grad=True`` is exact too, every rank computing the whole matrix;
- every combination assumes equal per-rank batches (``torch.distributed.all_gather`` of equal shapes; label
  offsets ``rank * N_local``); a smaller last batch on one rank fails or misaligns the labels. Its ``SigLipLoss``
  (neighbour exchange with gradients) is exact for equal per-rank batches, its value again the rank's share.

Here the value returned on every rank is the global loss (open_clip's local-loss values average to it). Horovod is
not supported: ``use_horovod=True`` raises.
"""

from __future__ import annotations

import contextlib
from typing import Any

from torch import Tensor, nn

from .. import distributed
from ..errors import ConfigError
from ..functional import clip_loss, siglip_loss
from ..pairwise import sharded, use_tiles

__all__ = ["ClipLoss", "SigLipLoss"]

_DIST_IMPLS = ("bidir", "shift", "reduce", "gather")


def _check_world(rank: int, world_size: int) -> None:
    for value, name in ((rank, "rank"), (world_size, "world_size")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def _global(
    rank: int, world_size: int, *features: Tensor
) -> tuple[list[Tensor], contextlib.AbstractContextManager[Any]]:
    """``features`` gathered from every rank (with gradients) and the context that shares the tiles, when
    ``world_size > 1``; else the features as given."""
    if world_size == 1:
        return list(features), contextlib.nullcontext()
    if not distributed.is_initialized():
        raise ConfigError(
            f"world_size={world_size} but no torch.distributed process group is initialised; call "
            "torch.distributed.init_process_group first (open_clip's training script does), or pass world_size=1"
        )
    if distributed.world_size() != world_size or distributed.rank() != rank:
        raise ConfigError(
            f"rank={rank}, world_size={world_size} disagree with the process group (rank {distributed.rank()} of "
            f"{distributed.world_size()}); pass the group's rank and size"
        )
    return [distributed.all_gather_with_grad(f)[0] for f in features], sharded()


def _checked_block_size(block_size: int | None) -> int | None:
    use_tiles(1, 1, block_size)  # raises on anything but None, 0 or a positive row count
    return block_size


class ClipLoss(nn.Module):
    """open_clip's ``ClipLoss``, computed by :func:`contrasphere.functional.clip_loss` (CLIP, Radford et al. 2021).

    ``forward(image_features, text_features, logit_scale, logit_bias=None, output_dict=False)`` returns the mean of
    the image-to-text and text-to-image cross-entropies over the (global) batch, or ``{"contrastive_loss": loss}``.
    A ``logit_bias`` adds the same constant to every logit, which no softmax sees; it is accepted and changes
    nothing, as in open_clip.

    Args:
        local_loss: accepted for compatibility; the result is always the exact global-batch loss (see the module
            docstring for why open_clip's combinations of this flag and ``gather_with_grad`` can be wrong).
        gather_with_grad: accepted for compatibility, as ``local_loss``.
        cache_labels: accepted; the engine builds no label tensor to cache.
        rank: this process's rank in the ``torch.distributed`` group (checked against it).
        world_size: the number of ranks (checked against the group); with ``world_size > 1`` the features are
            gathered from every rank.
        use_horovod: not supported (raises).
        block_size: the engine's tile size (None: automatic; 0: dense; a positive number: tiles of that size).
    """

    def __init__(
        self,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        use_horovod: bool = False,
        *,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        if use_horovod:
            raise ConfigError(
                "contrasphere gathers through torch.distributed; Horovod (use_horovod=True) is not supported"
            )
        _check_world(rank, world_size)
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self.use_horovod = use_horovod
        self.block_size = _checked_block_size(block_size)

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        logit_bias: Tensor | float | None = None,
        output_dict: bool = False,
    ) -> Tensor | dict[str, Tensor]:
        (images, texts), context = _global(self.rank, self.world_size, image_features, text_features)
        with context:
            loss = clip_loss(images, texts, logit_scale=logit_scale, block_size=self.block_size)
        return {"contrastive_loss": loss} if output_dict else loss


class SigLipLoss(nn.Module):
    """open_clip's ``SigLipLoss``, computed by :func:`contrasphere.functional.siglip_loss` (SigLIP, Zhai et al. 2023).

    ``forward(image_features, text_features, logit_scale, logit_bias, output_dict=False)``: the sum over all image-text
    pairs of :math:`-\\log \\sigma(y_{ij}(t \\langle x_i, y_j\\rangle + b))`, divided by the batch size (the global
    batch under distribution), or ``{"contrastive_loss": loss}``. ``logit_bias=None`` means no bias.

    Args:
        cache_labels: accepted; no label matrix is built.
        rank: as :class:`ClipLoss`.
        world_size: as :class:`ClipLoss`.
        dist_impl: open_clip's exchange pattern (``"bidir"``, ``"shift"``, ``"reduce"``, ``"gather"``): checked and
            accepted; contrasphere always gathers exactly (see the module docstring).
        block_size: the engine's tile size.
    """

    def __init__(
        self,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        dist_impl: str | None = None,
        *,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_world(rank, world_size)
        self.dist_impl = dist_impl or "bidir"
        if self.dist_impl not in _DIST_IMPLS:
            raise ConfigError(f"dist_impl must be one of {', '.join(_DIST_IMPLS)} or None, got {dist_impl!r}")
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self.block_size = _checked_block_size(block_size)

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        logit_bias: Tensor | float | None = None,
        output_dict: bool = False,
    ) -> Tensor | dict[str, Tensor]:
        (images, texts), context = _global(self.rank, self.world_size, image_features, text_features)
        bias = 0.0 if logit_bias is None else logit_bias
        with context:
            loss = siglip_loss(images, texts, logit_scale=logit_scale, logit_bias=bias, block_size=self.block_size)
        return {"contrastive_loss": loss} if output_dict else loss
