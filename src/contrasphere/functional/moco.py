"""MoCo's objectives: InfoNCE against a queue of keys, and the paper's align/uniform with a queue."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _validate as check
from ..pairwise import row_logsumexp
from .align_uniform import alignment, check_weights, uniformity_with_queue
from .contrastive import _dot, _pair


@check.hyperparameters(temperature=check.temperature)
def moco_info_nce(
    q: Tensor, k: Tensor, queue: Tensor, *, temperature: float = 0.2, block_size: int | None = None
) -> Tensor:
    r"""MoCo's InfoNCE: each query must pick out its key among the key and the queue's negatives.

    :math:`\mathcal{L} = -\frac1N \sum_i \log \frac{e^{\langle q_i, k_i\rangle/\tau}}{e^{\langle q_i, k_i\rangle/\tau}
    + \sum_{j=1}^{K} e^{\langle q_i, \kappa_j\rangle/\tau}}` (He et al., "Momentum Contrast for Unsupervised Visual
    Representation Learning", CVPR 2020, Eq. 1 and Algorithm 1). Unlike :func:`info_nce`, the other keys of the
    batch are not negatives. No gradient reaches the queue (nor, in MoCo, the keys: they come from the momentum
    encoder under ``torch.no_grad``).

    Shape:
        q, k: ``(N, D)``; queue: ``(K, D)``, keys as rows (see :class:`contrasphere.moco.KeyQueue`). A scalar.

    Args:
        temperature: :math:`\tau > 0` (0.07 in MoCo v1, 0.2 in MoCo v2 and in Wang & Isola's ImageNet code).
    """
    q, k = _pair(q, k)
    queue = check.embeddings(queue, "queue", why="the queue holds the negatives", keep_dtype=True)
    check.same_dim(q, queue, "q", "queue")
    scale = 1.0 / temperature
    s_pos = scale * _dot(q, k)
    s_neg = row_logsumexp(q, queue.detach().to(q.dtype), scale=scale, block_size=block_size)
    return (torch.logaddexp(s_pos, s_neg) - s_pos).mean()


@check.hyperparameters(
    align_weight=check.non_negative, uniform_weight=check.non_negative, alpha=check.positive, t=check.scale
)
def align_uniform_queue(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    *,
    align_weight: float = 3.0,
    uniform_weight: float = 1.0,
    alpha: float = 2.0,
    t: float = 3.0,
    intra_batch: bool = True,
    block_size: int | None = None,
) -> Tensor:
    r"""Wang & Isola's ImageNet objective: alignment of query and key plus uniformity against a MoCo queue.

    ``align_weight * alignment(q, k) + uniform_weight * uniformity_with_queue(q, queue)``, with the defaults of the
    paper's ImageNet-100 runs (Section 5 and its MoCo-based code: weights 3 and 1, alpha 2, t 3, intra-batch pairs
    included).

    Shape:
        q, k: ``(N, D)`` unit vectors; queue: ``(K, D)`` unit vectors. Returns a scalar.
    """
    align_weight, uniform_weight = check_weights(align_weight, uniform_weight)
    loss = align_weight * alignment(q, k, alpha=alpha)
    uniform = uniformity_with_queue(q, queue, t=t, intra_batch=intra_batch, block_size=block_size)
    return loss + uniform_weight * uniform
