"""Regularisers of the embedding distribution: KoLeo, SIGReg, VICReg, MMCR and the global orthogonal regulariser.

None of them contrasts a positive with negatives through a softmax; each constrains how the batch fills the space
(nearest-neighbour distances, the projections' distribution, per-coordinate variances and covariances, the
centroids' spectrum, the moments of non-matching inner products). None needs the pairwise engine: memory stays
``O(N D + D^2)`` (KoLeo searches its nearest neighbours in blocks of the engine's tile size, VICReg forms two
``D x D`` covariances, GOR the smaller of an ``N x N`` score matrix and two ``D x D`` Gram matrices).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _validate as check
from ..pairwise import TILE_PAIRS, acc_dtype
from .contrastive import _pair
from .multiview import _stack

# inner products KoLeo's nearest-neighbour search holds at a time (the engine's tile: 8 MB in float32)
_NN_PAIRS = TILE_PAIRS


def _count(minimum: int) -> check.Rule:
    """A rule for an integer hyperparameter of at least ``minimum``."""

    def rule(value: object, name: str) -> int:
        return check.integer(value, name, minimum)

    return rule


@torch.no_grad()
def _nearest_neighbours(x: Tensor) -> Tensor:
    """For each row of ``x`` (unit vectors), the index of the other row with the largest inner product, ``(N,)``.

    Searched in blocks of rows of at most ``_NN_PAIRS`` inner products, without gradient (an index has none); a
    row never picks itself.
    """
    n = x.shape[0]
    step = max(1, _NN_PAIRS // n)
    found = []
    for start in range(0, n, step):
        dots = x[start : start + step] @ x.T
        rows = torch.arange(dots.shape[0], device=x.device)
        dots[rows, rows + start] = -torch.inf
        found.append(dots.argmax(dim=1))
    return torch.cat(found)


@check.hyperparameters(eps=check.positive)
def koleo(z: Tensor, *, eps: float = 1e-8) -> Tensor:
    r"""KoLeo: spread the embeddings by pushing each one away from its nearest neighbour.

    The Kozachenko-Leonenko entropy estimator as a loss: with :math:`\hat z_i = z_i / \max(\|z_i\|, \epsilon)`,
    :math:`\mathcal{L} = -\frac{1}{N}\sum_i \log\big(\min_{j \ne i} \|\hat z_i - \hat z_j\| + \epsilon\big)`
    (Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019; computed as DINOv2's
    ``KoLeoLoss`` does: normalise, find each row's nearest neighbour as the largest inner product of the other
    rows, without gradient, then differentiate the distances to those neighbours). The gradient reaches each row
    and its neighbour. One difference from DINOv2, on purpose: the distance is the Euclidean norm of the
    difference, where DINOv2's ``nn.PairwiseDistance(eps=1e-8)`` adds ``eps`` to each coordinate of the difference
    (a shift of about 1e-8 that is not rotation invariant); and the search masks a row itself with ``-inf`` rather
    than ``-1``, so that two antipodal rows cannot tie with themselves. The search visits blocks of rows of at most
    2M inner products (the engine's tile), so memory stays linear in ``N``. Under ``GatherLoss`` the neighbours
    are searched in the global batch; DINOv2 applies the loss to each process's batch (and each global crop).

    Shape:
        z: ``(N, D)`` with ``N >= 2``, normalised here. Returns a scalar.

    Args:
        eps: :math:`\epsilon > 0`, DINOv2's 1e-8: the normalisation's floor and the distance's offset inside the
            log (a duplicated row gives :math:`-\log \epsilon`, not infinity).
    """
    z = check.embeddings(z, "z", min_rows=2, why="each embedding needs a nearest neighbour among the others")
    x = F.normalize(z, dim=1, eps=eps)
    nearest: Tensor = _nearest_neighbours(x.detach())
    distances = torch.linalg.vector_norm(x - x[nearest], dim=1)
    return -torch.log(distances + eps).mean()


def _draw(dim: int, count: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, count, generator=g, dtype=torch.float64)
    norms: Tensor = torch.linalg.vector_norm(a, dim=0, keepdim=True)
    return a / norms


_draw_cached = functools.lru_cache(maxsize=4)(_draw)  # the fixed directions of step=None, reused at every call


def _directions(dim: int, count: int, seed: int, step: int | None) -> Tensor:
    """The directions of ``seed`` (cached: read-only), or of a 63-bit seed mixed from ``(seed, step)``."""
    if step is None:
        return _draw_cached(dim, count, seed)
    return _draw(dim, count, int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> 1))


def sigreg_directions(dim: int, *, num_directions: int = 256, seed: int = 0, step: int | None = None) -> Tensor:
    """The unit directions :func:`sigreg` projects onto: ``(dim, num_directions)`` float64 columns, on the CPU.

    Standard normal columns, normalised, drawn from ``torch.Generator().manual_seed(s)`` with ``s = seed`` when
    ``step`` is None, else a seed mixed from ``(seed, step)`` (numpy's ``SeedSequence``): the same directions on
    every device, process and dtype for the same ``seed`` and ``step``.
    """
    check.integer(dim, "dim")
    check.integer(num_directions, "num_directions")
    check.integer(seed, "seed", 0)
    if step is not None:
        check.integer(step, "step", 0)
    return _directions(dim, num_directions, seed, step).clone()


@check.hyperparameters(
    num_directions=_count(1), knots=_count(2), t_max=check.positive, seed=_count(0), step=check.optional(_count(0))
)
def sigreg(
    views: Tensor | Sequence[Tensor],
    *,
    num_directions: int = 256,
    knots: int = 17,
    t_max: float = 3.0,
    seed: int = 0,
    step: int | None = None,
) -> Tensor:
    r"""SIGReg: the sketched isotropic Gaussian regulariser of LeJEPA (the Epps-Pulley statistic on random slices).

    Each view's batch is projected onto ``M`` random unit directions :math:`a_m`; each 1-d projection
    :math:`x_{im} = \langle z_i, a_m\rangle` is compared with the standard normal through its empirical
    characteristic function :math:`\psi_m(t) = \frac{1}{N}\sum_i e^{\mathrm{i} t x_{im}}`, by the Epps-Pulley
    statistic :math:`T_m = N \int |\psi_m(t) - \varphi(t)|^2 w(t)\,dt` with :math:`\varphi(t) = w(t) =
    e^{-t^2/2}`; the loss is the mean of :math:`T_m` over directions and views (Balestriero & LeCun, "LeJEPA:
    Provable and Scalable Self-Supervised Learning Without the Heuristics", 2025, SIGReg; as the authors' code
    computes it, ``SIGReg`` of their MINIMAL.md and ``lejepa.univariate.EppsPulley`` with
    ``SlicingUnivariateTest(reduction="mean")``). Concretely: :math:`|\psi - \varphi|^2 = (\overline{\cos} -
    \varphi)^2 + \overline{\sin}^2` on ``knots`` points :math:`t_k` evenly spaced on ``[0, t_max]``, integrated by
    the trapezoid rule over ``[-t_max, t_max]`` using the integrand's symmetry (weights ``dt`` at 0 and ``t_max``,
    ``2 dt`` between, times :math:`\varphi(t_k)`). That equals the trapezoid rule on the symmetric grid of
    ``2 knots - 1`` points that the paper's listing uses (its ``linspace(-5, 5, 17)`` is ``t_max=5, knots=9``).

    Applied per view, as the paper's LeJEPA loss does (``mean(SIGReg(emb) for emb in views)``): ``views`` is
    ``(V, N, D)``. The embeddings are used as given (no normalisation: the target is the isotropic Gaussian, not
    the sphere). For embeddings drawn from :math:`N(0, I)` the expected statistic is :math:`\sum_k w_k (1 -
    e^{-t_k^2})` (about 1.06 at the defaults) whatever ``N``; for any other distribution it grows linearly in
    ``N``.

    **Directions.** The paper draws fresh directions at every step from a generator seeded with the global step,
    the same on every device, and shows that redrawing matters (its Figure 7: 16 directions redrawn at every step
    beat thousands kept fixed). Here they come from :func:`sigreg_directions`, drawn on the CPU from ``seed``
    alone (``step=None``: the same directions at every call) or from ``(seed, step)`` (pass the training step:
    fresh directions at every step, the same on every rank and on resumption). The module
    :class:`contrasphere.losses.SIGRegLoss` counts its calls and passes the count as ``step``. In a distributed run,
    gather the batch (``GatherLoss``): the statistic of the global batch, exact for uneven batches, where the
    authors' code averages the per-rank characteristic functions.

    Shape:
        views: ``(V, N, D)`` or a sequence of ``V`` tensors ``(N, D)``, ``V >= 1``. Returns a scalar.
        Memory: ``V x N x M x knots`` for the projections' cosines and sines.

    Args:
        num_directions: ``M``, the number of random slices (256, as the authors' minimal code).
        knots: integration points on ``[0, t_max]`` (17); t_max: the integration bound (3, as the authors' code).
        seed: seeds the directions (0); step: None (the default) or the step whose directions to draw; see above.
    """
    x = check.promote(_stack(views, "views", 1))
    n = x.shape[1]
    directions = _directions(x.shape[2], num_directions, seed, step).to(device=x.device, dtype=x.dtype)
    t = torch.linspace(0.0, t_max, knots, dtype=torch.float64)
    dt = t_max / (knots - 1)
    phi = torch.exp(-t.square() / 2)
    weights = torch.full((knots,), 2 * dt, dtype=torch.float64)
    weights[[0, -1]] = dt
    t, phi, weights = (v.to(device=x.device, dtype=x.dtype) for v in (t, phi, weights * phi))
    xt = (x @ directions).unsqueeze(-1) * t  # (V, N, M, knots)
    err = (torch.cos(xt).mean(1) - phi).square() + torch.sin(xt).mean(1).square()  # (V, M, knots)
    return (err @ weights).mean() * n


@check.hyperparameters(
    invariance_weight=check.non_negative,
    variance_weight=check.non_negative,
    covariance_weight=check.non_negative,
    gamma=check.positive,
    eps=check.positive,
)
def vicreg(
    z_a: Tensor,
    z_b: Tensor,
    *,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    r"""VICReg: variance-invariance-covariance regularisation of two views' embeddings.

    :math:`\mathcal{L} = \lambda\, s(Z_a, Z_b) + \mu\, \tfrac{1}{2}[v(Z_a) + v(Z_b)] + \nu\, [c(Z_a) + c(Z_b)]`
    with the invariance :math:`s = \frac{1}{ND}\sum_i \|a_i - b_i\|^2`, the variance hinge :math:`v(Z) =
    \frac{1}{D}\sum_j \max(0, \gamma - \sqrt{\mathrm{Var}(z^j) + \epsilon})` (unbiased variance of each
    coordinate over the batch) and the covariance :math:`c(Z) = \frac{1}{D}\sum_{j \ne k} C(Z)_{jk}^2`,
    :math:`C(Z) = \frac{1}{N-1}\sum_i (z_i - \bar z)(z_i - \bar z)^\top` (Bardes, Ponce & LeCun, "VICReg:
    Variance-Invariance-Covariance Regularization for Self-Supervised Learning", ICLR 2022, Eq. 1-6). As the
    authors' code (``main_vicreg.py``, ``VICReg.forward``) computes it: the invariance is ``F.mse_loss``, a mean
    over ``N x D`` where Eq. 5 sums over ``D``, and the variance term averages the two branches where Eq. 6 sums
    them; the weights 25, 25, 1 are the paper's for these normalisations. Embeddings are used as given (the paper's
    expander outputs, not normalised). Computed on the whole batch: under ``GatherLoss`` the invariance too is the
    global batch's (the authors' code takes it per process, which equals it for equal per-process batches).

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2``. Returns a scalar. Memory ``D x D`` for each covariance.

    Args:
        invariance_weight, variance_weight, covariance_weight: :math:`\lambda, \mu, \nu \ge 0` (25, 25, 1; the
            code's ``sim_coeff``, ``std_coeff``, ``cov_coeff``).
        gamma: :math:`\gamma > 0`, the target standard deviation (1); eps: :math:`\epsilon > 0` (1e-4).
    """
    z_a, z_b = _pair(z_a, z_b, min_rows=2, why="the variance and covariance terms need a batch variance")
    dtype = acc_dtype(z_a)
    a, b = z_a.to(dtype), z_b.to(dtype)
    n, d = a.shape
    invariance = F.mse_loss(a, b)
    a, b = a - a.mean(dim=0), b - b.mean(dim=0)
    std_a, std_b = torch.sqrt(a.var(dim=0) + eps), torch.sqrt(b.var(dim=0) + eps)
    variance = F.relu(gamma - std_a).mean() / 2 + F.relu(gamma - std_b).mean() / 2
    cov_a, cov_b = a.T @ a / (n - 1), b.T @ b / (n - 1)
    covariance = _off_diagonal(cov_a).square().sum() / d + _off_diagonal(cov_b).square().sum() / d
    return invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance


def _off_diagonal(c: Tensor) -> Tensor:
    """The off-diagonal entries of a square matrix, flattened (the VICReg and Barlow Twins codes' trick)."""
    d = c.shape[0]
    return c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


@check.hyperparameters(local_weight=check.optional(check.non_negative))
def mmcr(views: Tensor | Sequence[Tensor], *, local_weight: float | None = None) -> Tensor:
    r"""MMCR: maximise the nuclear norm of the matrix of the samples' centroids over their views.

    With each view normalised onto the sphere and :math:`c_i = \frac{1}{V}\sum_v \hat z_{v,i}` the centroid of
    sample ``i``, :math:`C = [c_1, \dots, c_N]^\top` (``N x D``): :math:`\mathcal{L} = -\|C\|_* + \frac{\lambda}{N}
    \sum_i \|Z_i\|_*`, where :math:`\|\cdot\|_*` is the nuclear norm (the sum of singular values) and :math:`Z_i`
    the ``V x D`` matrix of sample ``i``'s views (Yerxa et al., "Learning Efficient Coding of Natural Images with
    Maximum Manifold Capacity Representations", NeurIPS 2023; as the authors' code ``MMCR_Loss`` computes it:
    ``lmbda * local_nuc / batch_size - global_nuc``). The global term is *not* divided by ``N``, as in that code:
    the loss lies in :math:`[-\min(N, \sqrt{N D}), 0]` (:math:`-N` for orthonormal centroids of identical views,
    :math:`-\sqrt{N}` for a collapsed batch, 0 when every sample's views cancel). The code's default, and this
    one, has no local term.

    Shape:
        views: ``(V, N, D)`` or a sequence of ``V`` tensors ``(N, D)``, ``V >= 2``; normalised here. Returns a
        scalar. Costs one SVD of the ``N x D`` centroids (and ``N`` of ``V x D`` with the local term).

    Args:
        local_weight: :math:`\lambda \ge 0`, the weight of the local (per-sample) nuclear norms, the code's
            ``lmbda``; None or 0 (the default, the code's 0.0): no local term.
    """
    x = F.normalize(check.promote(_stack(views, "views", 2)), dim=-1)
    loss: Tensor = -torch.linalg.svdvals(x.mean(dim=0)).sum()
    if local_weight:
        loss = loss + local_weight * torch.linalg.svdvals(x.transpose(0, 1)).sum() / x.shape[1]
    return loss


@check.hyperparameters(threshold=check.optional(check.non_negative))
def gor(z_a: Tensor, z_b: Tensor, *, threshold: float | None = None) -> Tensor:
    r"""The global orthogonal regulariser: non-matching pairs should be as spread out as uniform unit vectors.

    With :math:`s` the inner products of non-matching pairs, :math:`M_1 = \mathrm{mean}(s)` and :math:`M_2 =
    \mathrm{mean}(s^2)`: :math:`\mathcal{L} = M_1^2 + \max(0, M_2 - 1/D)` (Zhang et al., "Learning Spread-out
    Local Feature Descriptors", ICCV 2017; the HardNet code's ``global_orthogonal_regularization``). For two
    points drawn uniformly on the sphere :math:`E[s] = 0` and :math:`E[s^2] = 1/D`. The non-matching pairs here
    are the in-batch negatives: every :math:`(a_i, b_j)`, :math:`i \ne j` (the paper pairs each anchor with one
    sampled non-matching descriptor). Computed from the ``N x N`` inner products when ``N <= D`` and from the
    ``D x D`` Gram matrices otherwise (:math:`\sum_{i,j} \langle a_i, b_j\rangle^2 = \langle A^\top A, B^\top
    B\rangle_F`, minus the matching pairs): memory at most that of the inputs. Embeddings are used as given
    (the descriptors are unit vectors in the paper; normalise first).

    EmbeddingGemma's spread-out term (Schechter Vera et al., 2025) is a variant of this: the second moment alone,
    over the pairs within each side (queries with queries, documents with documents), as sentence-transformers'
    ``GlobalOrthogonalRegularizationLoss(mode="gemma")`` computes it; it is not this function.

    Shape:
        z_a, z_b: ``(N, D)`` with ``N >= 2``, row i of one matching row i of the other. Returns a scalar.

    Args:
        threshold: the second moment's hinge; None (the default): :math:`1/D`, the paper's; 0 penalises the raw
            second moment.
    """
    z_a, z_b = _pair(z_a, z_b, min_rows=2, why="the moments average over pairs of different samples")
    dtype = acc_dtype(z_a)
    a, b = z_a.to(dtype), z_b.to(dtype)
    n, d = a.shape
    pairs = n * (n - 1)
    if n <= d:
        s = (a @ b.T).masked_fill(torch.eye(n, dtype=torch.bool, device=a.device), 0.0)
        first, second = s.sum(), s.square().sum()
    else:
        matching = (a * b).sum(dim=1)
        first = a.sum(dim=0) @ b.sum(dim=0) - matching.sum()
        second = ((a.T @ a) * (b.T @ b)).sum() - matching.square().sum()
    m1, m2 = first / pairs, second / pairs
    bound = 1.0 / d if threshold is None else threshold
    return m1.square() + F.relu(m2 - bound)
