"""Objectives over more than two views or modalities, margins on the positive, and continuously weighted positives."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .. import _validate as check
from ..pairwise import acc_dtype, row_logsumexp, sym_row_logsumexp
from .contrastive import _dot, _ids, _others, _pair, info_nce


def _stack(views: Tensor | Sequence[Tensor], name: str, min_views: int) -> Tensor:
    """``(V, N, D)`` from a tensor or a sequence of ``(N, D)`` tensors, checked."""
    if not isinstance(views, Tensor):
        views = list(views)
        if not views:
            raise ValueError(f"{name} is empty: give at least {min_views} tensors of shape (N, D)")
        for i, v in enumerate(views):
            check.embeddings(v, f"{name}[{i}]", keep_dtype=True)
            check.same_shape(v, views[0], f"{name}[{i}]", f"{name}[0]")
        views = torch.stack(views)
    if views.ndim != 3:
        raise ValueError(f"{name} must have shape (V, N, D) (V views of N samples), got {tuple(views.shape)}")
    if views.shape[0] < min_views:
        raise ValueError(f"{name} holds {views.shape[0]} view(s); this objective needs at least {min_views}")
    check.embeddings(views.reshape(-1, views.shape[2]), name, keep_dtype=True)
    return views


@check.hyperparameters(temperature=check.temperature)
def cmc(views: Tensor | Sequence[Tensor], *, temperature: float = 0.07, block_size: int | None = None) -> Tensor:
    r"""Contrastive multiview coding, full graph: InfoNCE between every ordered pair of views.

    :math:`\mathcal{L} = \frac{1}{V(V-1)} \sum_{i \ne j} \mathcal{L}_{\mathrm{NCE}}(v_i, v_j)` (Tian et al.,
    "Contrastive Multiview Coding", ECCV 2020, Eq. 6 "full graph"; the paper sums the ``V(V-1)`` terms, this
    averages them so that the scale does not grow with ``V``). With two views it is the symmetric InfoNCE.

    Shape:
        views: ``(V, N, D)`` or a sequence of ``V`` tensors ``(N, D)``, ``V >= 2``. Returns a scalar.

    Args:
        temperature: :math:`\tau > 0` (0.07 in the paper).
    """
    views = _stack(views, "views", 2)
    n_views = views.shape[0]
    terms = [
        info_nce(views[i], views[j], temperature=temperature, block_size=block_size)
        for i in range(n_views)
        for j in range(n_views)
        if i != j
    ]
    return torch.stack(terms).mean()


@check.hyperparameters(logit_scale=check.scale_tensor)
def symile(
    modalities: Tensor | Sequence[Tensor], *, logit_scale: Tensor | float = 1 / 0.07, block_size: int | None = None
) -> Tensor:
    r"""Symile: contrast each modality against the element-wise product of all the others.

    The multilinear inner product :math:`\mathrm{MIP}(x^1, \dots, x^M) = \sum_d \prod_m x^m_d` scores a tuple; for
    each target modality ``m``, sample ``i`` must pick out its own :math:`x^m_i` among the batch's
    :math:`x^m_j` given the product :math:`\odot_{l \ne m} x^l_i` of its other modalities (the ``O(N)``-negatives
    form); the loss averages the ``M`` cross-entropies (Saporta et al., "Contrasting with Symile: Simple
    Model-Agnostic Representation Learning for Unlimited Modalities", NeurIPS 2024, Eq. 5). With two modalities
    it is CLIP's loss. Each direction is an InfoNCE through the engine.

    Shape:
        modalities: ``(M, N, D)`` or a sequence of ``M`` tensors ``(N, D)``, ``M >= 2``. Returns a scalar.

    Args:
        logit_scale: the inverse temperature, already exponentiated; a float or a learnable 0-dim tensor.
    """
    xs = _stack(modalities, "modalities", 2)
    dtype = acc_dtype(xs)
    xs = xs.to(dtype)
    m = xs.shape[0]
    terms = []
    for target in range(m):
        others = torch.prod(torch.cat([xs[:target], xs[target + 1 :]]), dim=0)
        s_pos = logit_scale * _dot(others, xs[target])
        lse = row_logsumexp(others, xs[target], scale=logit_scale, block_size=block_size)
        terms.append((lse - s_pos).mean())
    return torch.stack(terms).mean()


@check.hyperparameters(temperature=check.temperature, margin=check.non_negative)
def margin_info_nce(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 1 / 30,
    margin: float = 0.1,
    kind: Literal["additive", "angular"] = "additive",
    symmetric: bool = True,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""InfoNCE with a margin on the positive pair's cosine similarity.

    The positive score :math:`\cos\theta_{ii}` becomes :math:`\cos\theta_{ii} - m` (``"additive"``, as in
    AM-Softmax) or :math:`\cos(\theta_{ii} + m)` (``"angular"``, as in AAM-Softmax/ArcFace), so the positive
    must beat the negatives by a margin: :math:`\mathcal{L}_i = -\log \frac{e^{\phi_{ii}/\tau}}{e^{\phi_{ii}/\tau}
    + \sum_{j \ne i} e^{\cos\theta_{ij}/\tau}}` (Lepage & Dehak, "Experimenting with Additive Margins for
    Contrastive Self-Supervised Speaker Verification", Interspeech 2023, Eq. 3-4). ``symmetric`` averages the
    ``a -> b`` and ``b -> a`` directions. ``margin = 0`` gives InfoNCE.

    Shape:
        z_a, z_b: ``(N, D)`` unit vectors (the margin acts on cosines). Returns a scalar.

    Args:
        temperature: :math:`\tau > 0`; the default 1/30 is the scale ``s = 30`` common with AM/AAM-Softmax.
        margin: :math:`m \ge 0` (0.1 by default; the paper explores 0.1 to 0.3).
        ids: ``(N,)`` integer sample ids, or None: pairs that share an id are never each other's negatives (see
            :mod:`contrasphere.functional.contrastive`).
    """
    z_a, z_b = _pair(z_a, z_b)
    ids = _ids(ids, z_a)
    scale = 1.0 / temperature
    cos = _dot(z_a, z_b)
    if kind == "additive":
        positive = cos - margin
    else:  # cos(theta + m), with theta kept off 0 and pi where acos has an infinite derivative
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        positive = torch.cos(theta + margin)
    directions = [(z_a, z_b), (z_b, z_a)] if symmetric else [(z_a, z_b)]
    terms = []
    for anchor, other in directions:
        negatives = row_logsumexp(
            anchor, other, scale=scale, exclude_diagonal=True, row_ids=ids, col_ids=ids, block_size=block_size
        )
        terms.append((torch.logaddexp(scale * positive, negatives) - scale * positive).mean())
    return torch.stack(terms).mean()


@check.hyperparameters(temperature=check.temperature)
def cwcl(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 0.07,
    z_ref: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""Continuously weighted contrastive loss: every pair is a positive, weighted by intra-modal similarity.

    With weights :math:`w_{ij} = (1 + \langle r_i, r_j\rangle) / 2 \in [0, 1]` from unit reference embeddings
    ``r`` (the frozen, pre-trained modality: by default ``z_a`` itself, detached) and :math:`p_{ij} =
    \mathrm{softmax}_j(\langle a_i, b_j\rangle / \tau)`,
    :math:`\mathcal{L}_{a \to b} = -\frac1N \sum_i \frac{1}{\sum_j w_{ij}} \sum_j w_{ij} \log p_{ij}`, and the
    loss averages both directions (Srinivasa et al., "CWCL: Cross-Modal Transfer with Continuously Weighted
    Contrastive Loss", NeurIPS 2023, Eq. 3). With :math:`w = I` it is CLIP's loss. The weighted sums
    :math:`\sum_j w_{ij}\langle a_i, b_j\rangle` are computed as :math:`\frac12(\langle a_i, \sum_j b_j\rangle +
    r_i^\top (R^\top B) a_i)`: linear in ``N``; only the log-sum-exp goes through the engine.

    Shape:
        z_a, z_b: ``(N, D)``; z_ref: ``(N, D')`` or None. Returns a scalar.
    """
    z_a, z_b = _pair(z_a, z_b, min_rows=2, why="weights compare samples with each other")
    ref = z_a if z_ref is None else check.embeddings(z_ref, "z_ref", keep_dtype=True)
    if ref.shape[0] != z_a.shape[0]:
        raise ValueError(f"z_ref needs one row per sample ({z_a.shape[0]}), got {ref.shape[0]}")
    dtype = acc_dtype(z_a)
    a, b = z_a.to(dtype), z_b.to(dtype)
    r = torch.nn.functional.normalize(ref.detach().to(dtype), dim=1)
    weight_sums = (a.shape[0] + r @ r.sum(0)) / 2  # sum_j w_ij
    scale = 1.0 / temperature
    terms = []
    for (x, y), (raw_x, raw_y) in zip(((a, b), (b, a)), ((z_a, z_b), (z_b, z_a))):
        weighted = (x @ y.sum(0) + ((r @ (r.T @ y)) * x).sum(1)) / 2  # sum_j w_ij <x_i, y_j>
        lse = row_logsumexp(raw_x, raw_y, scale=scale, block_size=block_size)
        terms.append((lse - scale * weighted / weight_sums).mean())
    return torch.stack(terms).mean()


@check.hyperparameters(
    alpha=check.positive, beta=check.positive, tau_pos=check.non_negative_scale, tau_neg=check.non_negative_scale
)
def cacr(
    views: Tensor | Sequence[Tensor],
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    tau_pos: float = 1.0,
    tau_neg: float = 1.0,
) -> Tensor:
    r"""Contrastive attraction and contrastive repulsion (CACR).

    Zheng et al., "Contrastive Attraction and Contrastive Repulsion for Representation Learning", TMLR 2023 (the
    authors' code, Euclidean cost). With ``V`` views and squared distances :math:`d`:

    - attraction: each view is pulled towards the sample's other views, farther ones weighted more,
      :math:`\frac{1}{V}\sum_x \frac1N\sum_n \sum_{y \ne x} \pi^+_{ny}\, \alpha d(z^x_n, z^y_n)` with
      :math:`\pi^+ = \mathrm{softmax}_y(\tau^+ d(z^x_n, z^y_n))`;
    - repulsion: for each pair of views, every other sample is pushed away, closer ones weighted more,
      :math:`-\frac1N\sum_i \sum_{j \ne i} \pi^-_{ij}\, \beta d(z^x_i, z^y_j)` with
      :math:`\pi^- = \mathrm{softmax}_j(-\tau^- d(z^x_i, z^y_j))`, averaged over the pairs ``x < y``.

    The loss is their sum. As in the authors' code the conditional weights :math:`\pi` carry gradient. With two
    views the attraction is ``alpha`` times the alignment loss. The repulsion is computed densely, one ``N x N``
    matrix per pair of views.

    Shape:
        views: ``(V, N, D)`` or a sequence of ``V`` tensors ``(N, D)``, ``V >= 2``, ``N >= 2``. Returns a scalar.
    """
    zs = _stack(views, "views", 2)
    if zs.shape[1] < 2:
        raise ValueError("CACR's repulsion needs at least 2 samples per view")
    zs = zs.to(acc_dtype(zs))
    n_views, n = zs.shape[0], zs.shape[1]
    attraction = []
    for x in range(n_views):
        others = torch.cat([zs[:x], zs[x + 1 :]])  # (V-1, N, D)
        cost = alpha * (zs[x][None] - others).pow(2).sum(2).T  # (N, V-1)
        attraction.append((cost * torch.softmax(tau_pos * cost / alpha, dim=1)).sum(1).mean())
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=zs.device)
    repulsion = []
    for x in range(n_views):
        for y in range(x + 1, n_views):
            d = (zs[x].pow(2).sum(1, keepdim=True) + zs[y].pow(2).sum(1) - 2 * zs[x] @ zs[y].T).clamp_min(0)
            d = d[off_diagonal].view(n, n - 1)
            repulsion.append(-beta * (torch.softmax(-tau_neg * d, dim=1) * d).sum(1).mean())
    return torch.stack(attraction).mean() + torch.stack(repulsion).mean()


@check.hyperparameters(temperature=check.temperature, alpha=check.positive)
def macl(
    z_a: Tensor,
    z_b: Tensor,
    *,
    temperature: float = 0.1,
    alpha: float = 2.0,
    schedule: Literal["power", "linear"] = "power",
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    r"""Model-aware contrastive learning: a temperature that follows the alignment, and a reweighted InfoNCE.

    Huang et al., "Model-Aware Contrastive Learning: Towards Escaping the Dilemmas", ICML 2023 (the authors'
    ``MACLa`` / ``MACLb``). With :math:`A = \frac1N\sum_i \langle a_i, b_i\rangle` (no gradient), the temperature
    is :math:`\tau = \tau_0 \alpha^A` (``"power"``) or :math:`\tau_0 (1 + \alpha A)` (``"linear"``), and with
    :math:`P_{ij} = \mathrm{softmax}_j(\langle a_i, b_j\rangle / \tau)` the loss is
    :math:`-\frac1N\sum_i W_i \log P_{ii}` with :math:`W_i = 1 / \sum_{j \ne i} P_{ij}` (no gradient), which undoes
    the vanishing of the gradient as the positive dominates. One direction, ``a`` to ``b``, as the authors' code.
    Each term is computed from :math:`x_i = \log \sum_{j \ne i} P_{ij} / P_{ii}` as :math:`(1 + e^{-x_i})
    \log(1 + e^{x_i})`, whose derivative with :math:`W_i` held fixed is exactly 1: finite and accurate in float32
    at any temperature, where the authors' product of an overflowing weight and an underflowing log-probability is
    off by percents from :math:`\tau_0 \approx 0.02` in float32 (0.005 in float64) and NaN below 0.002.

    Shape:
        z_a, z_b: ``(N, D)`` unit vectors, ``N >= 2``. Returns a scalar.

    Args:
        temperature: :math:`\tau_0 > 0` (0.1); alpha: the base :math:`\alpha > 0` of ``"power"`` (the authors'
            default 2.0) or the slope :math:`\beta` of ``"linear"`` (their default 1.0).
        ids: ``(N,)`` integer sample ids, or None: pairs that share an id are never each other's negatives (see
            :mod:`contrasphere.functional.contrastive`).
    """
    z_a, z_b = _pair(z_a, z_b, min_rows=2, why="the weights need negatives")
    ids = _ids(ids, z_a)
    if ids is not None:
        _others(ids, "MACL")
    positive = _dot(z_a, z_b)
    a_mean = positive.detach().mean()
    tau = temperature * (alpha**a_mean if schedule == "power" else 1 + alpha * a_mean)
    # the linear schedule crosses 0 at A = -1 / alpha
    if check.check_values(tau) and not float(tau) >= check.MIN_TEMPERATURE:
        raise ValueError(
            f"MACL's temperature tau_0 {'alpha^A' if schedule == 'power' else '(1 + alpha A)'} is {float(tau):.3g} at "
            f"the batch's mean positive similarity A = {float(a_mean):.3g}; it must be at least "
            f"{check.MIN_TEMPERATURE:g}: normalise the embeddings (A lies in [-1, 1] for unit vectors) and, with "
            "schedule='linear', keep alpha below 1 / |A|"
        )
    s_pos = positive / tau
    lse_negatives = row_logsumexp(
        z_a, z_b, scale=1.0 / tau, exclude_diagonal=True, row_ids=ids, col_ids=ids, block_size=block_size
    )
    # x_i = log(sum_{j != i} P_ij / P_ii), formed directly: through log P_ii = s_pos - logaddexp(...) it cancels
    # to 0 once the positive dominates (x < -17 in float32), and W_i = 1 + e^{-x_i} overflows below x = -88
    x = lse_negatives - s_pos
    # W_i (-log P_ii) = (1 + e^{-x}) softplus(x); with W_i held fixed, as the authors' code holds it, its derivative
    # in x is W_i sigmoid(x) = 1 exactly, so each term is its value (computed without overflow) with x's gradient
    return (_weighted_nll(x.detach()) + (x - x.detach())).mean()


def _weighted_nll(x: Tensor) -> Tensor:
    """``(1 + e^{-x}) log(1 + e^x)`` for every entry, finite for any finite ``x`` (it tends to 1 as ``x -> -inf``).

    With ``u = e^{-|x|}``: ``(1 + u) log1p(u) / u`` for ``x < 0`` and ``(1 + u) (x + log1p(u))`` for ``x >= 0``,
    ``u`` kept above the smallest normal number so that an underflowed ``e^x`` gives the limit 1, not 0 / 0.
    """
    u = torch.exp(-x.abs()).clamp_min(torch.finfo(x.dtype).tiny)
    return torch.where(x < 0, (1 + u) * torch.log1p(u) / u, (1 + u) * (x + torch.log1p(u)))


@check.hyperparameters(t=check.scale, sigma=check.temperature, lambda_=check.optional(check.positive))
def decoupled_uniformity(
    views: Tensor | Sequence[Tensor],
    prior: Tensor | None = None,
    *,
    t: float = 2.0,
    kernel: Literal["rbf", "cosine"] = "rbf",
    sigma: float = 1.0,
    lambda_: float | None = 0.01,
    block_size: int | None = None,
) -> Tensor:
    r"""Decoupled uniformity, optionally with prior knowledge through a kernel (KCL).

    Dufumier et al., "Integrating Prior Knowledge in Contrastive Learning with Kernel", ICML 2023 (the authors'
    ``DecoupledUniformityLoss``). Each view is projected onto the sphere, the views of a sample are averaged into a
    centroid :math:`\mu_i` (not re-normalised: its norm keeps the alignment), and the loss is the uniformity of the
    centroids, :math:`\log \frac{1}{N(N-1)}\sum_{i \ne j} e^{-t\lVert\mu_i - \mu_j\rVert^2}`. With a ``prior``
    (weak attributes or a generative model's representation of each sample), the centroids are the kernel ridge
    estimates :math:`\hat\mu = (K + \lambda I)^{-1} K \bar z` with :math:`K` the prior's kernel matrix (no
    gradient), so samples with similar priors share their centroid. The uniformity runs through the engine; the
    prior's ``N x N`` kernel solve is dense.

    Shape:
        views: ``(V, N, D)`` or a sequence of ``V`` tensors ``(N, D)``; prior: ``(N,)`` or ``(N, P)`` or None.

    Args:
        t: the uniformity scale (2); kernel: ``"rbf"`` (:math:`e^{-\lVert p - p'\rVert^2 / 2\sigma^2}`) or
            ``"cosine"``; sigma: the RBF width; lambda_: the ridge :math:`\lambda` (0.01; None means
            :math:`1/\sqrt N`, as the authors' code).
    """
    from .align_uniform import uniformity

    zs = _stack(views, "views", 1)
    n = zs.shape[1]
    centroids = torch.nn.functional.normalize(zs.to(acc_dtype(zs)), dim=-1).mean(0)
    if prior is not None:
        prior = check.promote(prior) if isinstance(prior, Tensor) else prior
        if not isinstance(prior, Tensor) or prior.shape[0] != n or prior.ndim > 2:
            raise ValueError(f"prior needs one row of attributes per sample, shape ({n},) or ({n}, P)")
        check.finite(prior, "prior")
        # the kernel in float64 (no gradient): 2 sigma^2 reaches 2e-40 at the smallest sigma, a float32 subnormal
        p = prior.detach().double().reshape(n, -1)
        if kernel == "rbf":
            gram = torch.exp(-((p[:, None, :] - p[None, :, :]) ** 2).sum(-1) / (2 * sigma**2))
        else:
            unit = torch.nn.functional.normalize(p, dim=1)
            gram = unit @ unit.T
        gram = gram.to(centroids.dtype)
        ridge = 1.0 / math.sqrt(n) if lambda_ is None else lambda_
        weights = torch.linalg.solve(gram + ridge * torch.eye(n, dtype=gram.dtype, device=gram.device), gram)
        centroids = weights @ centroids
    return uniformity(centroids, t=t, block_size=block_size)


@check.hyperparameters(temperature=check.temperature)
def poly_view(
    views: Tensor | Sequence[Tensor],
    *,
    temperature: float = 0.2,
    method: Literal["geometric", "arithmetic"] = "geometric",
    block_size: int | None = None,
) -> Tensor:
    r"""Poly-view contrastive loss: ``V`` views per sample, every view an anchor for every other view.

    Shidani et al., "Poly-View Contrastive Learning", ICLR 2024. For anchor view :math:`\alpha` of sample ``j`` and
    target view :math:`\beta \ne \alpha`, the candidates are the target :math:`z_{j\beta}` and every view of every
    other sample; :math:`p_{j\alpha\beta}` is the target's softmax probability (scores :math:`\langle\cdot,
    \cdot\rangle/\tau`). The geometric form averages :math:`-\log p` over the :math:`V-1` targets; the arithmetic
    form takes :math:`-\log` of the mean of :math:`p`; both are averaged over anchors and samples. With two views
    both forms are NT-Xent. The candidate sets and the geometric form match the ``PVCLoss`` of the Multi-View-CL
    repository (github.com/pakoromilas/Multi-View-CL), which follows the paper's pseudo-code.

    The candidate sets' log-sum-exp is one symmetric engine reduction over the ``V N`` stacked views with every
    view of the same sample excluded (offsets multiples of ``N``), so memory stays linear.

    Shape:
        views: ``(V, N, D)`` or a sequence of ``V`` tensors ``(N, D)``, ``V >= 2``, ``N >= 2``. Returns a scalar.
    """
    zs = _stack(views, "views", 2)
    n_views, n = zs.shape[0], zs.shape[1]
    if n < 2:
        raise ValueError("poly-view contrast needs at least 2 samples: the other samples are the negatives")
    scale = 1.0 / temperature
    same_sample = tuple(t * n for t in range(-(n_views - 1), n_views))  # every view of the anchor's sample
    others = sym_row_logsumexp(
        zs.reshape(n_views * n, -1),
        scale=scale,
        exclude_diagonal=True,
        exclude_offsets=same_sample,
        block_size=block_size,
    ).reshape(n_views, n)  # (V, N): log-sum-exp over all views of the other samples
    zf = zs.to(acc_dtype(zs))
    by_sample = zf.transpose(0, 1)  # (N, V, D)
    # (V, V, N): anchor view a, target view b (a batched product: einsum's output strides differ between its fake
    # and real kernels, which breaks the flatten below under torch.compile)
    positive = scale * (by_sample @ by_sample.transpose(1, 2)).permute(1, 2, 0).contiguous()
    ce = torch.logaddexp(others[:, None, :], positive) - positive  # -log p, for every (a, b, sample)
    # the off-diagonal (a != b) entries, row by row, by index (a boolean mask's shape would depend on its values)
    off = torch.tensor([a * n_views + b for a in range(n_views) for b in range(n_views) if a != b], device=zs.device)
    ce = ce.flatten(0, 1).index_select(0, off).reshape(n_views, n_views - 1, n)
    if method == "geometric":
        return ce.mean()
    return (math.log(n_views - 1) - torch.logsumexp(-ce, dim=1)).mean()
