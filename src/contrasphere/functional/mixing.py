"""Mixing in contrastive learning: synthetic hard negatives (MoCHi) and mixed inputs with virtual labels (i-Mix)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _validate as check
from ..pairwise import acc_dtype, row_logsumexp
from .contrastive import _dot, _pair


@check.hyperparameters(
    n_hard=check.integer,
    s_mix=lambda value, name: check.integer(value, name, 0),
    s_query=lambda value, name: check.integer(value, name, 0),
)
@torch.no_grad()
def mochi_negatives(
    q: Tensor,
    queue: Tensor,
    *,
    n_hard: int = 1024,
    s_mix: int = 512,
    s_query: int = 256,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""MoCHi's synthetic hard negatives for each query, ``(N, s_mix + s_query, D)`` unit vectors, no gradient.

    Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020, Section 4.1: among the
    ``n_hard`` negatives of the queue most similar to query :math:`q`, mix random pairs,
    :math:`h = \mathrm{normalize}(\alpha n_i + (1-\alpha) n_j)` with :math:`\alpha \sim U(0, 1)` (``s_mix`` of
    them), and mix the query itself in, :math:`h' = \mathrm{normalize}(\beta q + (1-\beta) n_j)` with
    :math:`\beta \sim U(0, 0.5)` (``s_query`` of them, harder still).
    """
    dtype = acc_dtype(q)
    q, queue = q.detach().to(dtype), queue.detach().to(dtype)
    n, k = q.shape[0], queue.shape[0]
    hardest = (q @ queue.T).topk(min(n_hard, k), dim=1).indices  # (N, n_hard)
    h = hardest.shape[1]

    def pick(count: int) -> Tensor:  # (N, count, D): random rows among each query's hardest negatives
        slots = torch.randint(0, h, (n, count), generator=generator, device=q.device)
        return queue[hardest.gather(1, slots)]

    def uniform(count: int, high: float) -> Tensor:
        return high * torch.rand(n, count, 1, generator=generator, device=q.device, dtype=dtype)

    alpha, beta = uniform(s_mix, 1.0), uniform(s_query, 0.5)
    mixed = alpha * pick(s_mix) + (1 - alpha) * pick(s_mix)
    with_query = beta * q[:, None, :] + (1 - beta) * pick(s_query)
    return F.normalize(torch.cat([mixed, with_query], dim=1), dim=2)


@check.hyperparameters(temperature=check.temperature)
def mochi(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    *,
    temperature: float = 0.2,
    n_hard: int = 1024,
    s_mix: int = 512,
    s_query: int = 256,
    synthetic: Tensor | None = None,
    generator: torch.Generator | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""MoCo's InfoNCE with MoCHi's synthetic hard negatives added to the queue's.

    :math:`\mathcal{L} = -\frac1N\sum_i \log \frac{e^{s_{i+}}}{e^{s_{i+}} + \sum_{\kappa \in \text{queue}}
    e^{s_{i\kappa}} + \sum_{h \in H_i} e^{s_{ih}}}` with :math:`H_i` from :func:`mochi_negatives` (Kalantidis et al.
    2020, Eq. 1 with the synthetic set; defaults are the paper's ImageNet-100 setting ``N=1024, s=512, s'=256``). Give
    ``synthetic`` ``(N, S, D)`` to use fixed negatives; otherwise they are drawn with ``generator``.

    Shape:
        q, k: ``(N, D)`` unit vectors; queue: ``(K, D)`` unit vectors. Returns a scalar.
    """
    q, k = _pair(q, k)
    queue = check.embeddings(queue, "queue", why="the queue holds the negatives", keep_dtype=True)
    check.same_dim(q, queue, "q", "queue")
    if synthetic is None:
        synthetic = mochi_negatives(q, queue, n_hard=n_hard, s_mix=s_mix, s_query=s_query, generator=generator)
    elif synthetic.ndim != 3 or synthetic.shape[0] != q.shape[0] or synthetic.shape[2] != q.shape[1]:
        raise ValueError(
            f"synthetic must have shape (N, S, D) = ({q.shape[0]}, S, {q.shape[1]}), got {tuple(synthetic.shape)}"
        )
    scale = 1.0 / temperature
    dtype = acc_dtype(q)
    s_pos = scale * _dot(q, k)
    lse = torch.logaddexp(s_pos, row_logsumexp(q, queue.detach().to(q.dtype), scale=scale, block_size=block_size))
    if synthetic.shape[1]:
        s_syn = scale * torch.einsum("nd,nsd->ns", q.to(dtype), synthetic.detach().to(dtype))
        lse = torch.logaddexp(lse, torch.logsumexp(s_syn, dim=1))
    return (lse - s_pos).mean()


@check.hyperparameters(alpha=check.positive)
def mix_inputs(
    x: Tensor, *, alpha: float = 1.0, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    r"""i-Mix's input mixing: ``(mixed, mix_index, mix_lambda)`` with ``mixed[i] = l_i x[i] + (1 - l_i) x[p(i)]``.

    As in the authors' reference implementation (Lee et al., "i-Mix: A Domain-Agnostic Strategy for Contrastive
    Representation Learning", ICLR 2021, github.com/kibok90/imix): a random permutation ``p`` of the batch and one
    weight per sample, :math:`l_i = \max(\lambda_i, 1 - \lambda_i)` with :math:`\lambda_i \sim
    \mathrm{Beta}(\alpha, \alpha)`, so that each mixed input is dominated by its own sample. Works on any input
    (images, token embeddings, features): mixing is along dimension 0. Reproducible from ``generator``.
    """
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] < 2:
        raise ValueError("x must be a tensor whose first dimension holds at least 2 samples to mix")
    n = x.shape[0]
    beta = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha))
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = beta.sample((n,))
    lam = torch.maximum(lam, 1 - lam).to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    mix_index = torch.randperm(n, generator=generator).to(x.device)
    weight = lam.view(-1, *([1] * (x.ndim - 1)))
    return weight * x + (1 - weight) * x[mix_index], mix_index, lam


@check.hyperparameters(temperature=check.temperature)
def i_mix(
    z_a: Tensor,
    z_b: Tensor,
    mix_index: Tensor,
    mix_lambda: float | Tensor,
    *,
    temperature: float = 0.2,
    block_size: int | None = None,
) -> Tensor:
    r"""i-Mix's N-pair loss: the embedding of a mixed input must pick out both sources, weighted by the mix.

    With ``z_a`` the embeddings of :func:`mix_inputs`' output and ``z_b`` those of the other, unmixed view:
    :math:`\mathcal{L} = \frac1N\sum_i \big(\lambda_i\, \ell_i(i) + (1-\lambda_i)\, \ell_i(\pi(i))\big)`, where
    :math:`\ell_i(j) = -\log \mathrm{softmax}_j(\langle a_i, b_\cdot\rangle / \tau)` is the cross-entropy against
    virtual label ``j`` (Lee et al. 2021, Eq. 3, N-pair form, with the authors' per-sample weights). ``mix_lambda
    = 1`` gives InfoNCE.

    Shape:
        z_a, z_b: ``(N, D)``; mix_index: ``(N,)`` the permutation used to mix; mix_lambda: ``(N,)`` weights in
        [0, 1] (as :func:`mix_inputs` returns) or one scalar for the whole batch.
    """
    z_a, z_b = _pair(z_a, z_b)
    mix_index = check.labels(mix_index, z_a.shape[0], "mix_index")
    if check.check_values(mix_index) and (int(mix_index.min()) < 0 or int(mix_index.max()) >= z_a.shape[0]):
        raise ValueError(f"mix_index must index rows 0..{z_a.shape[0] - 1}")
    dtype = acc_dtype(z_a)
    lam = torch.as_tensor(mix_lambda, dtype=dtype, device=z_a.device).detach()
    if lam.ndim > 1 or (lam.ndim == 1 and lam.shape[0] != z_a.shape[0]):
        raise ValueError(
            f"mix_lambda must be a scalar or hold one weight per row ({z_a.shape[0]}), got {tuple(lam.shape)}"
        )
    if check.check_values(lam) and not bool(((lam >= 0) & (lam <= 1)).all()):
        raise ValueError("mix_lambda holds mixing weights and must lie in [0, 1]")
    scale = 1.0 / temperature
    lse = row_logsumexp(z_a, z_b, scale=scale, block_size=block_size)
    target = lam * _dot(z_a, z_b) + (1 - lam) * _dot(z_a, z_b[mix_index])
    return (lse - scale * target).mean()


@check.hyperparameters(temperature=check.temperature)
def feature_transformation(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    *,
    pos_lambda: float | Tensor,
    neg_lambda: float | Tensor,
    neg_index: Tensor,
    temperature: float = 0.2,
    normalize_positives: bool = False,
    block_size: int | None = None,
) -> Tensor:
    r"""MoCo's InfoNCE after feature transformation: extrapolated positives and interpolated negatives.

    Zhu et al., "Improving Contrastive Learning by Visualizing Feature Transformation", ICCV 2021 (the authors'
    ``RGBMoCo_dropmix_norm`` with ``mix_target='posneg'``). Positive extrapolation pushes the pair apart with
    :math:`\lambda \ge 1`: :math:`\hat q = \lambda q + (1-\lambda) k`, :math:`\hat k = \lambda k + (1-\lambda) q`
    (harder positives); negative interpolation replaces the queue by mixtures
    :math:`\hat\kappa_j = \mu \kappa_j + (1-\mu) \kappa_{\pi(j)}` (more diverse negatives). The loss is MoCo's with
    these features. The queue carries no gradient; like :func:`moco_info_nce` the keys are used as given (in MoCo
    they come from the momentum encoder without gradient, as the authors' code's ``k.detach()`` ensures), and
    :math:`\hat k` depends on ``q``.

    Shape:
        q, k: ``(N, D)``; queue: ``(K, D)``; neg_index: ``(K,)`` the permutation :math:`\pi` of the queue's rows;
        pos_lambda: a scalar or a tensor broadcastable to ``(N, D)`` (per dimension); neg_lambda: a scalar or
        broadcastable to ``(K, D)``. :func:`feature_transformation_draw` draws them as the authors' recipe does.

    Args:
        temperature: :math:`\tau` (0.2); normalize_positives: re-project :math:`\hat q, \hat k` onto the sphere
            (the authors' ``--postmix_norm``, off in their published run).
    """
    q, k = _pair(q, k)
    queue = check.embeddings(queue, "queue", why="the queue holds the negatives", keep_dtype=True)
    check.same_dim(q, queue, "q", "queue")
    dtype = acc_dtype(q)
    neg_index = torch.as_tensor(neg_index, device=queue.device).long()
    if neg_index.shape != (queue.shape[0],) or (
        check.check_values(neg_index) and (int(neg_index.min()) < 0 or int(neg_index.max()) >= queue.shape[0])
    ):
        raise ValueError(f"neg_index must hold {queue.shape[0]} row indices of the queue")
    lam = torch.as_tensor(pos_lambda, dtype=dtype, device=q.device)
    mu = torch.as_tensor(neg_lambda, dtype=dtype, device=q.device)
    qf, kf, bank = q.to(dtype), k.to(dtype), queue.detach().to(dtype)
    q_mix, k_mix = lam * qf + (1 - lam) * kf, lam * kf + (1 - lam) * qf
    if normalize_positives:
        q_mix, k_mix = F.normalize(q_mix, dim=1), F.normalize(k_mix, dim=1)
    bank = mu * bank + (1 - mu) * bank[neg_index]
    scale = 1.0 / temperature
    s_pos = scale * _dot(q_mix, k_mix)
    lse = torch.logaddexp(s_pos, row_logsumexp(q_mix, bank, scale=scale, block_size=block_size))
    return (lse - s_pos).mean()


@check.hyperparameters(pos_alpha=check.positive, neg_alpha=check.positive)
def feature_transformation_draw(
    n_queue: int,
    *,
    pos_alpha: float = 2.0,
    neg_alpha: float = 1.6,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """The random parts of feature transformation as in the authors' published run (``run.sh``).

    One :math:`\\lambda = 1 + \\mathrm{Beta}(2, 2)` for the batch (extrapolation), one
    :math:`\\mu \\sim \\mathrm{Beta}(1.6, 1.6)` for the queue, and a random permutation of the queue's rows.
    Returns the keyword arguments ``pos_lambda``, ``neg_lambda``, ``neg_index`` of :func:`feature_transformation`.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = 1.0 + float(torch.distributions.Beta(pos_alpha, pos_alpha).sample())
        mu = float(torch.distributions.Beta(neg_alpha, neg_alpha).sample())
    return {"pos_lambda": lam, "neg_lambda": mu, "neg_index": torch.randperm(n_queue, generator=generator)}
