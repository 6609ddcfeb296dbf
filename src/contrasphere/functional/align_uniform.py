"""Alignment and uniformity: the two losses of Wang & Isola (ICML 2020), exactly as the paper's code defines them.

Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
Hypersphere", ICML 2020 (arXiv:2005.10242), Section 4.1 and the reference code in its Figure 5::

    def align_loss(x, y, alpha=2):
        return (x - y).norm(p=2, dim=1).pow(alpha).mean()

    def uniform_loss(x, t=2):
        return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()

Both expect embeddings already on the unit sphere (``F.normalize(z, dim=-1)``); like the paper's code they compute
on whatever they are given. ``uniformity`` is computed through one matrix product and a log-sum-exp, which is exact
where ``exp().mean().log()`` underflows to ``-inf`` (large ``t`` or far-apart points) and needs no ``pdist``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .. import _validate as check
from ..pairwise import gaussian_logsumexp, row_logsumexp

UniformityOffset = Literal["none", "2t", "sphere"]


@check.hyperparameters(alpha=check.positive)
def alignment(z_a: Tensor, z_b: Tensor, *, alpha: float = 2.0) -> Tensor:
    r"""Alignment loss: the mean distance between positive pairs, raised to ``alpha``.

    :math:`\mathcal{L}_{align} = \frac1N \sum_i \lVert z_{a,i} - z_{b,i} \rVert_2^{\alpha}` (Wang & Isola 2020, Eq. 4,
    estimated on a batch). Zero when every pair coincides; at most :math:`2^\alpha` on the unit sphere. Lower is better.

    Shape:
        z_a, z_b: ``(N, D)``, row ``i`` of one is the positive of row ``i`` of the other. Returns a scalar.

    Args:
        alpha: exponent of the distance, > 0 (the paper uses 2).
    """
    z_a = check.embeddings(z_a, "z_a")
    z_b = check.embeddings(z_b, "z_b")
    check.same_shape(z_a, z_b, "z_a", "z_b")
    z_a, z_b = check.common_dtype(z_a, z_b)
    distances: Tensor = torch.linalg.vector_norm(z_a - z_b, dim=1)
    return distances.pow(alpha).mean()


@check.hyperparameters(t=check.scale)
def uniformity(
    z: Tensor, *, t: float = 2.0, offset: UniformityOffset = "none", block_size: int | None = None
) -> Tensor:
    r"""Uniformity loss: the log of the mean Gaussian potential over all distinct pairs.

    :math:`\mathcal{L}_{uniform} = \log \frac{2}{N(N-1)} \sum_{i<j} e^{-t \lVert z_i - z_j \rVert_2^2}`
    (Wang & Isola 2020, Eq. 5, estimated on a batch; self-pairs excluded as ``torch.pdist`` does). At most 0 (all
    points equal); lower is more uniform. On the unit sphere :math:`\lVert z_i - z_j\rVert^2 = 2 - 2\langle z_i,
    z_j\rangle`, so the value is :math:`-2t + \log \operatorname{mean}_{i \ne j} e^{2t \langle z_i, z_j \rangle}`.

    Computed as one log-sum-exp over the off-diagonal of :math:`-t\,(\lVert z_i\rVert^2 + \lVert z_j\rVert^2 -
    2\langle z_i, z_j\rangle)`; the mean over ordered pairs ``i != j`` equals the mean over unordered pairs.

    Shape:
        z: ``(N, D)`` with ``N >= 2``. Returns a scalar.

    Args:
        t: the potential's scale, > 0 (the paper uses 2).
        offset: ``"none"`` returns the paper's value. ``"2t"`` adds ``2t``, as the paper's logged statistics do:
            the result is near 0 for a uniform spread in high dimension. It is not strictly non-negative for a
            finite batch: it is bounded below by ``-2t / (N - 1)``. ``"sphere"`` subtracts the population optimum on
            :math:`S^{D-1}` (:func:`uniformity_optimum`), giving a value that is non-negative in expectation and is
            0 for the uniform distribution in any dimension, not only as ``D`` grows. Needs scipy.
        block_size: the pairwise engine's tiling (:mod:`contrasphere.pairwise`): None picks dense for small
            batches and memory-linear tiles for large ones; 0 forces dense; a positive number sets the tile side.
    """
    z = check.embeddings(
        z, "z", min_rows=2, why="uniformity averages over pairs of distinct embeddings", keep_dtype=True
    )
    n = z.shape[0]
    value = gaussian_logsumexp(z, t, block_size=block_size) - math.log(n * (n - 1))
    return value - _offset(offset, t, z.shape[1])


def uniformity_optimum(dim: int, t: float = 2.0) -> float:
    r"""The smallest population uniformity on the sphere :math:`S^{dim-1}`, reached by the uniform distribution.

    For independent uniform :math:`x, y` on :math:`S^{d-1}`,
    :math:`\mathbb{E}\, e^{\kappa \langle x, y\rangle} = {}_0F_1(;\, d/2;\, \kappa^2/4)`, so
    :math:`\log \mathbb{E}\, e^{-t\lVert x - y\rVert^2} = -2t + \log {}_0F_1(;\, d/2;\, t^2)`. Wang & Isola
    (Theorem 1) show the uniform distribution is the unique minimiser. As ``dim`` grows the value tends to ``-2t``.
    Uses ``scipy.special.hyp0f1`` (install the ``stats`` extra).
    """
    check.integer(dim, "dim", 2, " (the sphere S^(dim-1) in R^dim)")
    t = check.scale(t, "t")
    try:
        from scipy.special import hyp0f1
    except ImportError as err:  # pragma: no cover - exercised only without scipy
        raise ImportError("the 'sphere' uniformity offset needs scipy: pip install 'contrasphere[stats]'") from err
    return -2.0 * t + math.log(float(hyp0f1(dim / 2.0, t * t)))


def _offset(offset: str, t: float, dim: int) -> float:
    if offset == "none":
        return 0.0
    if offset == "2t":
        return -2.0 * t
    if offset == "sphere":
        return uniformity_optimum(dim, t)
    raise ValueError(f"offset must be one of 'none', '2t', 'sphere', got {offset!r}")


@check.hyperparameters(
    align_weight=check.non_negative, uniform_weight=check.non_negative, alpha=check.positive, t=check.scale
)
def align_uniform(
    z_a: Tensor,
    z_b: Tensor,
    *,
    align_weight: float = 1.0,
    uniform_weight: float = 1.0,
    alpha: float = 2.0,
    t: float = 2.0,
    block_size: int | None = None,
) -> Tensor:
    r"""The paper's combined objective: ``align_weight * alignment + uniform_weight * mean of both uniformities``.

    :math:`\lambda_a \mathcal{L}_{align}(z_a, z_b) + \lambda_u \tfrac12 (\mathcal{L}_{uniform}(z_a) +
    \mathcal{L}_{uniform}(z_b))` (Wang & Isola 2020, Section 5 and Figure 5's training loop).

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2``, positives row by row. Returns a scalar.

    Args:
        align_weight, uniform_weight: the weights :math:`\lambda_a, \lambda_u` (>= 0, not both 0).
        alpha: alignment exponent; t: uniformity scale.
    """
    align_weight, uniform_weight = check_weights(align_weight, uniform_weight)
    loss = align_weight * alignment(z_a, z_b, alpha=alpha)
    uniform = uniformity(z_a, t=t, block_size=block_size) + uniformity(z_b, t=t, block_size=block_size)
    return loss + uniform_weight * uniform / 2


def check_weights(align_weight: float, uniform_weight: float) -> tuple[float, float]:
    """Validate the alignment and uniformity weights of a combined objective: both >= 0, not both 0."""
    align_weight = check.non_negative(align_weight, "align_weight")
    uniform_weight = check.non_negative(uniform_weight, "uniform_weight")
    if align_weight == uniform_weight == 0:
        raise ValueError("align_weight and uniform_weight are both 0: the objective would be constant")
    return align_weight, uniform_weight


@check.hyperparameters(t=check.scale)
def uniformity_with_queue(
    q: Tensor, queue: Tensor, *, t: float = 2.0, intra_batch: bool = True, block_size: int | None = None
) -> Tensor:
    r"""Uniformity of a batch of queries against a MoCo queue, as in the paper's ImageNet (MoCo) code.

    The log of the mean of :math:`e^{-t\lVert q_i - k\rVert^2}` over every query ``q_i`` and every key ``k`` of the
    queue (which is detached: no gradient reaches the queue), together with, when ``intra_batch`` is true, the
    distinct pairs ``i < j`` of the batch itself (the reference code's default, ``--moco-unif-no-intra-batch``
    turns it off). All ``N*K (+ N(N-1)/2)`` terms share one mean, as in the reference.

    Like the reference, it takes the squared distance to a key as :math:`2 - 2\langle q_i, k\rangle`, so ``q`` and
    the queue must be unit vectors (the gradient with respect to ``q`` then matches the reference exactly).

    Shape:
        q: ``(N, D)``; queue: ``(K, D)`` keys as rows (the reference stores the transpose). Returns a scalar.
    """
    q = check.embeddings(q, "q", min_rows=2 if intra_batch else 1, why="intra-batch pairs need two", keep_dtype=True)
    queue = check.embeddings(queue, "queue", min_rows=1, why="the queue holds the negatives", keep_dtype=True)
    check.same_dim(q, queue, "q", "queue")
    q, queue = check.common_dtype(q, queue)
    n, k = q.shape[0], queue.shape[0]
    # as in the reference, the distance to a key comes from the inner product: ||q - k||^2 = 2 - 2 <q, k>
    rows = row_logsumexp(q, queue.detach(), scale=2.0 * t, block_size=block_size)
    lse = torch.logsumexp(rows, dim=0) - 2.0 * t
    count = n * k
    if intra_batch:  # the ordered pairs i != j hold every unordered pair twice
        lse = torch.logaddexp(lse, gaussian_logsumexp(q, t, block_size=block_size) - math.log(2.0))
        count += n * (n - 1) // 2
    return lse - math.log(count)
