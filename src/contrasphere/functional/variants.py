r"""Variants of the CLIP and SimCLR losses: another geometry (EuCLIP), other kernels (Kernel-InfoNCE),
reweighted negatives (HN-NCE) and GTE's one softmax over query-document, query-query and document-document pairs.

Each is written in terms of the engine where its scores are an inner product plus row and column terms:
:math:`-\sigma\lVert a_i - b_j\rVert^2 = 2\sigma\langle a_i, b_j\rangle - \sigma\lVert b_j\rVert^2 -
\sigma\lVert a_i\rVert^2`, a row log-sum-exp with a column bias (the row term leaves the sum over ``j``); and the
HN-NCE weights :math:`w_{ij} \propto e^{\beta \ell_{ij}}` make :math:`\log \sum_j w_{ij} e^{\ell_{ij}}` a
difference of two row log-sum-exps at the scales :math:`(1 + \beta)\sigma` and :math:`\beta\sigma`. Only the
Laplacian kernel (a distance, not its square) is computed densely.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
from torch import Tensor

from .. import _validate as check
from ..pairwise import acc_dtype, row_logsumexp, sym_row_logsumexp
from .contrastive import _dot, _ids, _others, _pair


def _squared_norms(z: Tensor) -> Tensor:
    return _dot(z, z)


def _squared_distances(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Row-wise ``||z_a[i] - z_b[i]||^2`` in the accumulation dtype, ``(N,)`` (computed directly, not expanded)."""
    dtype = acc_dtype(z_a)
    return (z_a.to(dtype) - z_b.to(dtype)).square().sum(1)


@check.hyperparameters(logit_scale=check.scale_tensor)
def euclidean_clip(
    z_a: Tensor,
    z_b: Tensor,
    *,
    logit_scale: Tensor | float = 1.0,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""EuCLIP: CLIP's symmetric cross-entropy with negative squared Euclidean distances as logits.

    With :math:`\ell_{ij} = -\sigma \lVert a_i - b_j\rVert^2`,
    :math:`\mathcal{L} = \frac{1}{2N}\sum_i \big(-\log \mathrm{softmax}_j(\ell_{ij})_{j=i}
    - \log \mathrm{softmax}_j(\ell_{ji})_{j=i}\big)` (Chou & Alam, "Embedding Geometries of Contrastive
    Language-Image Pre-Training", ECCV 2024 Beyond Euclidean Workshop; the authors' open_clip fork, geometry
    ``'euclidean-squared'``: ``logit_scale * -(||x||^2 - 2 x.y + ||y||^2)`` in open_clip's ``ClipLoss``). The
    paper's EuCLIP models use no final normalisation (the embeddings are not on the sphere) and a learnable
    ``logit_scale = exp(s)`` with ``s`` initialised at 0 (a scale of 1), no bias (a constant cancels in a softmax).

    Through the engine: :math:`\ell_{ij} = 2\sigma\langle a_i, b_j\rangle - \sigma\lVert b_j\rVert^2 -
    \sigma\lVert a_i\rVert^2`; over ``j`` (image to text) the last term is constant and leaves the log-sum-exp,
    the middle one is a column bias; over ``i`` (text to image) the roles swap. Both directions are exact.
    For unit vectors :math:`\ell_{ij} = 2\sigma\langle a_i, b_j\rangle - 2\sigma`, so this is
    :func:`clip_loss` at ``logit_scale = 2 sigma``.

    Shape:
        z_a, z_b: ``(N, D)``. Returns a scalar.

    Args:
        logit_scale: :math:`\sigma > 0`, a float or a learnable 0-dim tensor (see
            :class:`contrasphere.losses.EuclideanCLIPLoss`).
        ids: ``(N,)`` integer sample ids, or None: pairs that share an id are never each other's negatives (see
            :mod:`contrasphere.functional.contrastive`).
    """
    z_a, z_b = _pair(z_a, z_b)
    ids = _ids(ids, z_a)
    sq_a, sq_b = _squared_norms(z_a), _squared_norms(z_b)
    twice = 2 * logit_scale
    lse = partial(row_logsumexp, scale=twice, row_ids=ids, col_ids=ids, block_size=block_size)
    lse_rows = lse(z_a, z_b, col_bias=-logit_scale * sq_b) - logit_scale * sq_a
    lse_cols = lse(z_b, z_a, col_bias=-logit_scale * sq_a) - logit_scale * sq_b
    positive = -logit_scale * _squared_distances(z_a, z_b)
    if ids is not None:  # every pair of the anchor's id was left out: the positive comes back
        lse_rows, lse_cols = torch.logaddexp(positive, lse_rows), torch.logaddexp(positive, lse_cols)
    return ((lse_rows + lse_cols) / 2 - positive).mean()


Kernel = Literal["gaussian", "laplacian", "mixture"]


@check.hyperparameters(temperature=check.temperature, laplacian_temperature=check.temperature)
def kernel_info_nce(
    z_a: Tensor,
    z_b: Tensor,
    *,
    kernel: Kernel = "gaussian",
    temperature: float = 0.5,
    laplacian_temperature: float = 0.5,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""Kernel-InfoNCE: SimCLR's loss over ``2N`` views with the exponential of the inner product replaced by a
    kernel.

    With :math:`z = [z_a; z_b]` and :math:`p(i)` the other view of sample ``i``,
    :math:`\mathcal{L} = \frac{1}{2N}\sum_{i=1}^{2N} -\log \frac{K(z_i, z_{p(i)})}{\sum_{k \ne i} K(z_i, z_k)}`,
    with the :math:`\gamma`-exponential kernels :math:`K_\gamma(x, y) = \exp(-\lVert x - y\rVert^\gamma / \tau)`
    (Tan, Zhang, Yang & Yuan, "Contrastive Learning Is Spectral Clustering on Similarity Graph", ICLR 2024, the
    Kernel-InfoNCE loss): ``"gaussian"`` (:math:`\gamma = 2`, temperature :math:`\tau`), ``"laplacian"``
    (:math:`\gamma = 1`, temperature :math:`\tau_L`) and ``"mixture"``, the paper's simple sum of the two,
    :math:`K = e^{-\lVert x - y\rVert^2/\tau} + e^{-\lVert x - y\rVert/\tau_L}`.

    The Gaussian kernel goes through the engine (:math:`-\lVert z_i - z_k\rVert^2/\tau = 2\langle z_i,
    z_k\rangle/\tau - \lVert z_i\rVert^2/\tau - \lVert z_k\rVert^2/\tau`, the symmetric reduction with a row
    and column bias) and is tiled; the Laplacian and the mixture need the distance itself, not an inner product,
    and are computed densely (memory ``(2N)^2``; ``block_size`` is ignored there). For unit vectors the Gaussian
    kernel is :math:`e^{-2/\tau} e^{2\langle x, y\rangle/\tau}`: this loss is :func:`nt_xent` at temperature
    :math:`\tau / 2`.

    Shape:
        z_a, z_b: ``(N, D)``. Returns a scalar.

    Args:
        kernel: ``"gaussian"``, ``"laplacian"`` or ``"mixture"``.
        temperature: :math:`\tau > 0` of the Gaussian kernel (unused by ``"laplacian"``).
        laplacian_temperature: :math:`\tau_L > 0` of the Laplacian kernel (unused by ``"gaussian"``).
        ids: ``(N,)`` integer sample ids, or None: views whose ids are equal are never each other's negatives (see
            :mod:`contrasphere.functional.contrastive`); both views of a pair carry its id.
    """
    z_a, z_b = _pair(z_a, z_b)
    n = z_a.shape[0]
    z = torch.cat([z_a, z_b])
    ids = _ids(ids, z_a)
    both = None if ids is None else ids.repeat(2)
    if kernel == "gaussian":
        inv = 1.0 / temperature
        lse = sym_row_logsumexp(
            z, scale=2 * inv, bias=-inv * _squared_norms(z), exclude_diagonal=True, ids=both, block_size=block_size
        )
        positive = (-inv * _squared_distances(z_a, z_b)).repeat(2)
        if both is not None:  # the partner comes back
            lse = torch.logaddexp(positive, lse)
        return (lse - positive).mean()
    zf = z.to(acc_dtype(z))
    # the distances themselves; computed without the expansion, whose gradient at distance 0 is not finite
    dist = torch.cdist(zf, zf, compute_mode="donot_use_mm_for_euclid_dist")
    log_k = -dist / laplacian_temperature
    if kernel == "mixture":
        log_k = torch.logaddexp(-dist.square() / temperature, log_k)
    positive = torch.cat([log_k.diagonal(n), log_k.diagonal(-n)])
    left_out = torch.eye(2 * n, dtype=torch.bool, device=z.device) if both is None else both[:, None] == both[None, :]
    lse = torch.logsumexp(log_k.masked_fill(left_out, -math.inf), dim=1)
    if both is not None:
        lse = torch.logaddexp(positive, lse)
    return (lse - positive).mean()


@check.hyperparameters(
    logit_scale=check.scale_tensor, alpha=check.non_negative, beta1=check.non_negative, beta2=check.non_negative
)
def hn_nce(
    z_a: Tensor,
    z_b: Tensor,
    *,
    logit_scale: Tensor | float = 1 / 0.07,
    alpha: float = 1.0,
    beta1: float = 0.5,
    beta2: float = 0.5,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""HN-NCE: CLIP's loss with every negative reweighted towards the hard ones, in both directions.

    With :math:`\ell_{ij} = \sigma\langle a_i, b_j\rangle` (image ``i``, text ``j``),
    :math:`\mathcal{L}_{i2t} = -\frac1N \sum_i \log \frac{e^{\ell_{ii}}}{\alpha e^{\ell_{ii}} + \sum_{j \ne i}
    w_{ij} e^{\ell_{ij}}}`, :math:`w_{ij} = \frac{(N-1)\, e^{\beta_1 \ell_{ij}}}{\sum_{k \ne i}
    e^{\beta_1 \ell_{ik}}}`, and :math:`\mathcal{L}_{t2i}` the same over the columns with :math:`\beta_2`
    (Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training" (DiHT),
    CVPR 2023, Eq. 3-5). The weights average to 1 over the negatives; the positive is scaled by :math:`\alpha`.
    The loss is the mean of the two directions (the paper adds them: its value is twice this one), so that
    :math:`\alpha = 1, \beta_1 = \beta_2 = 0` is :func:`clip_loss` exactly. As in the paper's formula (and the
    public ports of it) the weights are not detached: the gradient flows through them.

    Through the engine: :math:`\log \sum_{j \ne i} w_{ij} e^{\ell_{ij}} = \log(N - 1) + \log \sum_{j \ne i}
    e^{(1 + \beta)\ell_{ij}} - \log \sum_{j \ne i} e^{\beta \ell_{ij}}`, two row log-sum-exps.

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2``. Returns a scalar.

    Args:
        logit_scale: :math:`\sigma = 1/\tau`, a float or a learnable 0-dim tensor (as CLIP; see
            :class:`contrasphere.losses.HNNCELoss`).
        alpha: :math:`\alpha \ge 0`, the weight of the positive in the denominator (1 in DiHT; 0 removes it, as
            decoupled losses do).
        beta1: :math:`\beta_1 \ge 0`, the hardness of the image-to-text negatives (0: uniform weights).
        beta2: :math:`\beta_2 \ge 0`, the same for text to image.
        ids: ``(N,)`` integer sample ids, or None: pairs that share an id are never each other's negatives (see
            :mod:`contrasphere.functional.contrastive`); the weights then average to 1 over each anchor's
            remaining negatives.
    """
    z_a, z_b = _pair(z_a, z_b, min_rows=2, why="HN-NCE weights the negatives of each pair, and one pair has none")
    ids = _ids(ids, z_a)
    log_count = math.log(z_a.shape[0] - 1) if ids is None else _others(ids, "HN-NCE").to(acc_dtype(z_a)).log()
    positive = logit_scale * _dot(z_a, z_b)
    lse = partial(row_logsumexp, exclude_diagonal=True, row_ids=ids, col_ids=ids, block_size=block_size)

    def direction(a: Tensor, b: Tensor, beta: float) -> Tensor:
        negatives = lse(a, b, scale=(1 + beta) * logit_scale)
        if beta > 0:  # at beta = 0 the normaliser is log(N - 1) and cancels
            negatives = negatives - lse(a, b, scale=beta * logit_scale) + log_count
        denominator = torch.logaddexp(positive + math.log(alpha), negatives) if alpha > 0 else negatives
        return (denominator - positive).mean()

    return (direction(z_a, z_b, beta1) + direction(z_b, z_a, beta2)) / 2


@check.hyperparameters(temperature=check.temperature)
def gte_info_nce(
    z_a: Tensor, z_b: Tensor, *, temperature: float = 0.01, ids: Tensor | None = None, block_size: int | None = None
) -> Tensor:
    r"""GTE's "improved contrastive loss": one softmax over query-document, query-query and document-document pairs.

    With queries :math:`q_i = ` ``z_a[i]``, documents :math:`d_i = ` ``z_b[i]`` and :math:`s(x, y) = \langle x,
    y\rangle / \tau`: :math:`\mathcal{L} = -\frac1N \sum_i \log \frac{e^{s(q_i, d_i)}}{Z_i}`,
    :math:`Z_i = \sum_j e^{s(q_i, d_j)} + \sum_{j \ne i} e^{s(q_i, q_j)} + \sum_j e^{s(d_i, q_j)} + \sum_{j \ne i}
    e^{s(d_i, d_j)}` (Li et al., "Towards General Text Embeddings with Multi-stage Contrastive Learning", 2023,
    Eq. 3; as sentence-transformers' ``MultipleNegativesBidirectionalRankingLoss``, whose default temperature 0.01
    this takes). The positive pair enters :math:`Z_i` twice, once from each side, as in the paper.

    Shape:
        z_a, z_b: ``(N, D)`` (normalise them for cosine similarities). Returns a scalar.

    Two row log-sum-exps through the engine: each query against ``[documents; queries]`` and each document
    against ``[queries; documents]``, the self-pair (offset ``N``) excluded in both.

    ``ids`` (``(N,)`` integer sample ids, or None): queries and documents that share an id are never each other's
    negatives (see :mod:`contrasphere.functional.contrastive`); the positive pair keeps its two terms.
    """
    z_a, z_b = _pair(z_a, z_b, min_rows=1)
    ids = _ids(ids, z_a)
    n, scale = z_a.shape[0], 1.0 / temperature
    positive = scale * _dot(z_a, z_b)
    queries_then_documents, documents_then_queries = torch.cat([z_a, z_b]), torch.cat([z_b, z_a])
    if ids is None:
        lse = partial(row_logsumexp, scale=scale, exclude_offsets=(n,), block_size=block_size)
        return (torch.logaddexp(lse(z_a, documents_then_queries), lse(z_b, queries_then_documents)) - positive).mean()
    both = ids.repeat(2)
    lse = partial(row_logsumexp, scale=scale, row_ids=ids, col_ids=both, block_size=block_size)
    negatives = torch.logaddexp(lse(z_a, documents_then_queries), lse(z_b, queries_then_documents))
    return (torch.logaddexp(negatives, positive + math.log(2)) - positive).mean()
