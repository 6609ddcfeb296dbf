"""The main contrastive objectives, as pure functions of embeddings.

Conventions shared by every function here:

- embeddings are ``(N, D)`` tensors; row ``i`` of ``z_a`` and row ``i`` of ``z_b`` form a positive pair;
- scores are inner products scaled by ``1 / temperature`` (or by a learnable ``logit_scale``, already
  exponentiated); like the papers' code, the functions use the embeddings as given, so normalise them first
  (``F.normalize(z, dim=-1)``) for cosine similarities;
- float16 and bfloat16 inputs are reduced in float32 and the loss is returned in float32;
- the result is the mean over anchors, a scalar;
- ``ids`` (where a function takes it): ``(N,)`` integer sample ids; rows that share an id are never each other's
  negatives (false-negative elimination, Huynh et al., "Boosting Contrastive Self-Supervised Learning with False
  Negative Cancellation", WACV 2022): the other captions of the same image, a duplicated text, two crops of one
  photo. The designated positive pair stays the positive; the others of its id are left out of the denominator.
  None (the default) treats every other row as a negative;
- every reduction over pairs goes through the engine (:mod:`contrasphere.pairwise`): ``block_size=None`` picks
  dense for small batches and memory-linear tiles for large ones, ``0`` forces dense, a positive number sets the
  tile size. Both give the same value and gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _validate as check
from ..errors import InputError
from ..pairwise import (
    acc_dtype,
    dense_scores,
    row_col_logsumexp,
    row_logsumexp,
    runs_dense,
    softplus_sum,
    sym_row_logsumexp,
)


def _pair(z_a: Tensor, z_b: Tensor, min_rows: int = 1, why: str = "") -> tuple[Tensor, Tensor]:
    z_a = check.embeddings(z_a, "z_a", min_rows=min_rows, why=why, keep_dtype=True)
    z_b = check.embeddings(z_b, "z_b", min_rows=min_rows, why=why, keep_dtype=True)
    check.same_shape(z_a, z_b, "z_a", "z_b")
    return check.common_dtype(z_a, z_b)


def _ids(ids: Tensor | None, z: Tensor) -> Tensor | None:
    """Checked sample ids for the rows of ``z`` on its device, or None."""
    return None if ids is None else check.group_ids(ids, z.shape[0], z.device)


def _others(ids: Tensor, loss: str) -> Tensor:
    """For each row, how many rows carry another id: its negatives once false negatives are left out, ``(N,)``.

    A loss whose denominator holds only negatives needs one in every row: all ids equal is an error.
    """
    others = ids.shape[0] - _group_sizes(ids)[0]
    if check.check_values(others) and not bool(others.min() > 0):
        raise InputError(
            f"every row of the batch has the same sample id, so {loss} has no negative left once rows that share an "
            "id are left out; pass distinct ids for distinct samples (e.g. the dataset index of each pair)"
        )
    return others


def _group_sizes(keys: Tensor) -> tuple[Tensor, Tensor]:
    """For each row, how many rows share its key, and a group index in ``0..N-1`` shared by exactly those rows.

    By sorting rather than ``torch.unique``, whose output size depends on the values (a host synchronisation on
    a GPU, and a graph break under ``torch.compile``): every shape here is ``(N,)``.
    """
    ordered = torch.sort(keys).values
    first = torch.searchsorted(ordered, keys)
    return torch.searchsorted(ordered, keys, right=True) - first, first


def _dot(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Row-wise inner products ``<z_a[i], z_b[i]>`` in the accumulation dtype, ``(N,)``."""
    dtype = acc_dtype(z_a)
    return (z_a.to(dtype) * z_b.to(dtype)).sum(1)


@check.hyperparameters(temperature=check.temperature, hardness=check.non_negative_scale)
def info_nce(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 0.07,
    hardness: float = 0.0,
    negatives: Tensor | None = None,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""InfoNCE in one direction: each ``z_a[i]`` must pick out ``z_b[i]`` among all of ``z_b`` (and ``negatives``).

    :math:`\mathcal{L} = -\frac1N \sum_i \log \frac{e^{\langle a_i, b_i\rangle/\tau}}{\sum_j
    e^{\langle a_i, b_j\rangle/\tau} + \sum_k e^{\langle a_i, n_k\rangle/\tau}}`
    (van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018, Eq. 4; with a queue
    of extra negatives this is MoCo's loss, He et al. 2020, Eq. 1).

    Shape:
        z_a, z_b: ``(N, D)``; negatives: ``(K, D)`` or None. Returns a scalar. Its value is at most
        ``log(N + K)`` plus the spread of the scores; a uniform guess scores exactly ``log(N + K)``.

    Args:
        temperature: :math:`\tau > 0`; smaller sharpens the softmax (0.07 in MoCo and CLIP).
        hardness: :math:`\alpha \ge 0`, LLaVE's hardness weighting (Lan et al., "LLaVE: Large Language and Vision
            Embedding Models with Hardness-Weighted Contrastive Learning", 2025, Eq. 5): each negative's term is
            multiplied by :math:`e^{\alpha\,\mathrm{sg}(\langle a_i, b_j\rangle)}`, its logit raised by
            :math:`\alpha` times its (detached) similarity, so that harder negatives weigh more; the positive is
            not weighted. 0 (the default) is plain InfoNCE; LLaVE uses 9, as sentence-transformers'
            ``hardness_mode="in_batch_negatives"``. It applies to ``negatives`` too.
        negatives: extra negatives shared by every anchor (e.g. a memory bank or a MoCo queue).
        ids: sample ids (see the module docstring); the extra ``negatives`` carry none and are always negatives.
    """
    z_a, z_b = _pair(z_a, z_b)
    ids = _ids(ids, z_a)
    scale = 1.0 / temperature
    n = z_a.shape[0]
    if ids is None and not hardness and negatives is None and runs_dense(n, n, block_size, z_a.device):
        # a small batch: the fused softmax cross-entropy over the dense matrix, as plain PyTorch code does
        return F.cross_entropy(dense_scores(z_a, z_b, scale), torch.arange(n, device=z_a.device))
    positive = scale * _dot(z_a, z_b)
    if ids is None and not hardness:
        lse = row_logsumexp(z_a, z_b, scale=scale, block_size=block_size)
    else:  # the in-batch negatives alone (weighted, false negatives left out), then the positive
        in_batch = row_logsumexp(
            z_a, z_b, scale=scale, exclude_diagonal=True, row_ids=ids, col_ids=ids, detached_scale=hardness,
            block_size=block_size,
        )  # fmt: skip
        lse = torch.logaddexp(positive, in_batch)
    if negatives is not None:
        negatives = check.embeddings(negatives, "negatives", keep_dtype=True)
        check.same_dim(z_a, negatives, "z_a", "negatives")
        extra = row_logsumexp(z_a, negatives.to(z_a.dtype), scale=scale, detached_scale=hardness, block_size=block_size)
        lse = torch.logaddexp(lse, extra)
    return (lse - positive).mean()


@check.hyperparameters(temperature=check.temperature)
def nt_xent(
    z_a: Tensor, z_b: Tensor, *, temperature: float = 0.5, ids: Tensor | None = None, block_size: int | None = None
) -> Tensor:
    r"""NT-Xent, SimCLR's loss over ``2N`` views: each view must pick out its partner among the other ``2N - 1``.

    With :math:`z = [z_a; z_b]` and :math:`s_{ij} = \langle z_i, z_j\rangle / \tau`,
    :math:`\mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} -\log \frac{e^{s_{i,p(i)}}}{\sum_{k \ne i} e^{s_{ik}}}`,
    where :math:`p(i)` is the other view of the same sample (Chen et al., "A Simple Framework for Contrastive
    Learning of Visual Representations", ICML 2020, Eq. 1, averaged over all positive pairs in both orders).

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 1``. Returns a scalar; identical embeddings give ``log(2N - 1)``.

    Args:
        temperature: :math:`\tau > 0` (SimCLR uses 0.5 on CIFAR-10 and 0.1 on ImageNet).
        ids: sample ids (see the module docstring), one per pair: both views of a pair carry it.
    """
    z_a, z_b = _pair(z_a, z_b)
    ids = _ids(ids, z_a)
    scale = 1.0 / temperature
    n = z_a.shape[0]
    if ids is None and runs_dense(2 * n, 2 * n, block_size, z_a.device):  # a small batch: fused cross-entropy
        z = torch.cat([z_a, z_b])
        logits = dense_scores(z, z, scale)
        logits.fill_diagonal_(-math.inf)
        partner = torch.arange(2 * n, device=z.device).roll(n)  # view i's partner is view i + N (mod 2N)
        return F.cross_entropy(logits, partner)
    positive = scale * _dot(z_a, z_b).repeat(2)  # the partner of view i is view i + N (mod 2N)
    z = torch.cat([z_a, z_b])
    # the 2N x 2N matrix is symmetric: the engine computes each tile once for its rows and its columns
    if ids is None:
        lse = sym_row_logsumexp(z, scale=scale, exclude_diagonal=True, block_size=block_size)
    else:  # every view of the anchor's id left out, its partner added back
        lse = sym_row_logsumexp(z, scale=scale, ids=ids.repeat(2), block_size=block_size)
        lse = torch.logaddexp(positive, lse)
    return (lse - positive).mean()


@check.hyperparameters(logit_scale=check.scale_tensor, hardness=check.non_negative_scale)
def clip_loss(
    z_a: Tensor,
    z_b: Tensor,
    *,
    logit_scale: Tensor | float = 1 / 0.07,
    hardness: float = 0.0,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""CLIP's symmetric contrastive loss between two modalities.

    With :math:`s_{ij} = \sigma \langle a_i, b_j\rangle`, the mean of the cross-entropy over rows (``a`` picks ``b``)
    and over columns (``b`` picks ``a``) (Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision", ICML 2021, Figure 3's pseudocode).

    Shape:
        z_a, z_b: ``(N, D)`` (e.g. image and text embeddings). Returns a scalar.

    Args:
        logit_scale: :math:`\sigma = 1/\tau`, already exponentiated; a float or a learnable 0-dim tensor
            (CLIP initialises it at 1/0.07 and clamps it at 100; see :class:`contrasphere.losses.CLIPLoss`).
        hardness: :math:`\alpha \ge 0`, LLaVE's hardness weighting of the negatives, in both directions (see
            :func:`info_nce`); 0 is CLIP.
        ids: sample ids (see the module docstring), one per pair: e.g. the image id of each caption, so that the
            other captions of an image are not its negatives.
    """
    z_a, z_b = _pair(z_a, z_b)
    ids = _ids(ids, z_a)
    n = z_a.shape[0]
    if ids is None and not hardness and runs_dense(n, n, block_size, z_a.device):  # small: fused cross-entropy
        logits, target = dense_scores(z_a, z_b, logit_scale), torch.arange(n, device=z_a.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    positive = logit_scale * _dot(z_a, z_b)
    # rows: each a picks its b; columns: each b picks its a; one pass over the matrix serves both
    if ids is None and not hardness:
        lse_rows, lse_cols = row_col_logsumexp(z_a, z_b, scale=logit_scale, block_size=block_size)
    else:  # the negatives alone (weighted, false negatives left out), then the positive in both directions
        lse_rows, lse_cols = row_col_logsumexp(
            z_a, z_b, scale=logit_scale, exclude_diagonal=True, row_ids=ids, col_ids=ids, detached_scale=hardness,
            block_size=block_size,
        )  # fmt: skip
        lse_rows, lse_cols = torch.logaddexp(positive, lse_rows), torch.logaddexp(positive, lse_cols)
    return ((lse_rows + lse_cols) / 2 - positive).mean()


@check.hyperparameters(logit_scale=check.scale_tensor)
def siglip_loss(
    z_a: Tensor,
    z_b: Tensor,
    *,
    logit_scale: Tensor | float = 10.0,
    logit_bias: Tensor | float = -10.0,
    block_size: int | None = None,
) -> Tensor:
    r"""SigLIP's pairwise sigmoid loss: every pair is an independent binary classification.

    :math:`\mathcal{L} = -\frac1N \sum_{i,j} \log \sigma\big(y_{ij} (t \langle a_i, b_j\rangle + b)\big)` with
    :math:`y_{ii} = 1` and :math:`y_{ij} = -1` otherwise (Zhai et al., "Sigmoid Loss for Language Image
    Pre-Training", ICCV 2023, Eq. 1 and Algorithm 1: summed over all pairs, divided by the batch size).

    Shape:
        z_a, z_b: ``(N, D)``. Returns a scalar.

    Args:
        logit_scale: :math:`t`, already exponentiated (SigLIP initialises :math:`\log t = \log 10`).
        logit_bias: :math:`b` (initialised at -10 so that the many negatives start near probability 0).
    """
    if isinstance(logit_bias, Tensor):
        if logit_bias.numel() != 1:
            raise ValueError(f"logit_bias must be a scalar, got a tensor of shape {tuple(logit_bias.shape)}")
        check.finite(logit_bias, "logit_bias")
        logit_bias = logit_bias.reshape(())
    elif not math.isfinite(float(logit_bias)):
        raise ValueError(f"logit_bias must be finite, got {logit_bias}")
    z_a, z_b = _pair(z_a, z_b)
    # -log sigmoid(-x) = softplus(x) for every pair, and -log sigmoid(x) = softplus(x) - x on the diagonal
    total = softplus_sum(z_a, z_b, scale=logit_scale, bias=logit_bias, block_size=block_size)
    return (total - (logit_scale * _dot(z_a, z_b) + logit_bias).sum()) / z_a.shape[0]


@check.hyperparameters(temperature=check.temperature, base_temperature=check.optional(check.temperature))
def supcon(
    z: Tensor,
    labels: Tensor,
    *,
    temperature: float = 0.1,
    base_temperature: float | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""Supervised contrastive loss: every other embedding with the same label is a positive.

    :math:`\mathcal{L} = \frac{1}{|A|}\sum_{i \in A} \frac{-1}{|P(i)|} \sum_{p \in P(i)} \log
    \frac{e^{\langle z_i, z_p\rangle/\tau}}{\sum_{k \ne i} e^{\langle z_i, z_k\rangle/\tau}}`
    (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, Eq. 2, :math:`\mathcal{L}^{sup}_{out}`), where
    :math:`P(i)` holds the indices ``p != i`` with ``labels[p] == labels[i]``. Anchors without any positive (a label
    seen once) are left out of the mean :math:`A` (the reference code divides by zero there and returns NaN).
    With every sample its own class and two views, this is NT-Xent.

    Shape:
        z: ``(N, D)`` with ``labels`` ``(N,)``; or ``(B, V, D)`` (``V`` views of ``B`` samples, the reference
        code's layout) with ``labels`` ``(B,)``. Returns a scalar.

    Args:
        temperature: :math:`\tau > 0` (0.1 in the paper's experiments).
        base_temperature: the reference code multiplies the loss by ``temperature / base_temperature``; None (the
            default) means no rescaling.
    """
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    if isinstance(z, Tensor) and z.ndim == 3:
        b, v, d = z.shape
        labels = check.labels(labels, b, "labels (one per sample of z's (B, V, D))")
        z = z.transpose(0, 1).reshape(v * b, d)  # view-major, as the reference's torch.cat(torch.unbind(z, 1))
        labels = labels.repeat(v)
    z = check.embeddings(z, "z", min_rows=2, why="SupCon contrasts each embedding with the others", keep_dtype=True)
    labels = check.labels(labels, z.shape[0])
    counts, label_index = _group_sizes(labels)
    n_pos = counts - 1
    has_pos = n_pos > 0
    if check.check_values(has_pos) and not bool(has_pos.any()):
        raise ValueError(
            "no embedding has a positive: every label occurs once. SupCon needs at least two embeddings per class "
            "in the batch (e.g. two augmented views of each sample, passed as z of shape (B, 2, D))"
        )
    lse = sym_row_logsumexp(z, scale=1.0 / temperature, exclude_diagonal=True, block_size=block_size)
    # the positives' scores sum to <z_i, (sum of z over i's class) - z_i> / tau: linear in N, no mask needed
    zf = z.to(acc_dtype(z))
    class_sums = torch.zeros_like(zf).index_add(0, label_index, zf)  # row k: the sum over the class whose index is k
    positive_sum = (_dot(zf, class_sums[label_index]) - _dot(zf, zf)) / temperature
    mean_log_prob_pos = positive_sum / n_pos.clamp_min(1) - lse
    # the mean over the embeddings that have a positive, without a value-dependent shape
    return -scale * torch.where(has_pos, mean_log_prob_pos, 0.0).sum() / has_pos.sum()


def _dcl_direction(
    z_a: Tensor, z_b: Tensor, temperature: float, weight: Tensor | None, ids: Tensor | None, block_size: int | None
) -> Tensor:
    scale = 1.0 / temperature
    positive = -scale * _dot(z_a, z_b)
    if weight is not None:
        positive = positive * weight
    # negatives: every other sample in both views; the positive pair and the anchor itself (and, given ids, every
    # row of the anchor's id) are left out
    same_view = sym_row_logsumexp(z_a, scale=scale, exclude_diagonal=True, ids=ids, block_size=block_size)
    other_view = row_logsumexp(
        z_a, z_b, scale=scale, exclude_diagonal=True, row_ids=ids, col_ids=ids, block_size=block_size
    )
    return (positive + torch.logaddexp(same_view, other_view)).mean()


def _dcl_pair(z_a: Tensor, z_b: Tensor, ids: Tensor | None, loss: str) -> tuple[Tensor, Tensor, Tensor | None]:
    z_a, z_b = _pair(z_a, z_b, min_rows=2, why="with one pair there is no negative left once the positive is removed")
    ids = _ids(ids, z_a)
    if ids is not None:
        _others(ids, loss)
    return z_a, z_b, ids


@check.hyperparameters(temperature=check.temperature)
def dcl(
    z_a: Tensor, z_b: Tensor, *, temperature: float = 0.1, ids: Tensor | None = None, block_size: int | None = None
) -> Tensor:
    r"""Decoupled contrastive loss: InfoNCE with the positive pair removed from the denominator.

    :math:`\mathcal{L}_i = -\langle a_i, b_i\rangle/\tau + \log \sum_{k \ne i} \big(e^{\langle a_i, a_k\rangle/\tau}
    + e^{\langle a_i, b_k\rangle/\tau}\big)` (Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, Eq. 6),
    averaged over the ``N`` anchors of each view and over both directions (``a`` to ``b`` and ``b`` to ``a``; the
    reference code sums the two directions, so its value is twice this one).

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2`` (each anchor needs a negative). Returns a scalar.

    Args:
        temperature: :math:`\tau > 0` (0.1 in the paper's ImageNet experiments).
        ids: sample ids (see the module docstring); rows of the anchor's id are left out of its negatives.
    """
    z_a, z_b, ids = _dcl_pair(z_a, z_b, ids, "DCL")
    return (
        _dcl_direction(z_a, z_b, temperature, None, ids, block_size)
        + _dcl_direction(z_b, z_a, temperature, None, ids, block_size)
    ) / 2


@check.hyperparameters(temperature=check.temperature, sigma=check.temperature)
def dclw(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 0.1,
    sigma: float = 0.5,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""DCLW: decoupled contrastive loss whose positive term is weighted by a von Mises-Fisher weighting.

    As :func:`dcl`, with the positive term of anchor ``i`` multiplied by
    :math:`w_i = 2 - N\,\mathrm{softmax}_i(\langle a_i, b_i\rangle / \sigma)` (Yeh et al. 2022, Eq. 7): pairs that
    are already close (easy positives) get less weight. The weights average to 1, and, as in the reference code,
    the gradient flows through them.

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2``. Returns a scalar.

    Args:
        temperature: :math:`\tau > 0`; sigma: :math:`\sigma > 0`, the width of the weighting (0.5 in the paper).
        ids: sample ids (see the module docstring), as in :func:`dcl`.
    """
    z_a, z_b, ids = _dcl_pair(z_a, z_b, ids, "DCLW")
    weight = 2.0 - z_a.shape[0] * torch.softmax(_dot(z_a, z_b) / sigma, dim=0)
    forward = _dcl_direction(z_a, z_b, temperature, weight, ids, block_size)
    return (forward + _dcl_direction(z_b, z_a, temperature, weight, ids, block_size)) / 2
