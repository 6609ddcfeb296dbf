"""The geometry metrics as :class:`torchmetrics.Metric` s: ``update`` per batch, ``compute`` over everything seen.

Each class equals the function of :mod:`contrasphere.metrics` of the same name, with the same keyword arguments,
on the concatenation of every batch passed to ``update`` since the last ``reset``, and under DDP (or any
``torch.distributed`` process group torchmetrics syncs over) on the union of every process's batches:

- :class:`Alignment`: :func:`contrasphere.metrics.alignment`, the mean of :math:`\\lVert a - b\\rVert^\\alpha`
  over positive pairs (Wang & Isola, ICML 2020, Eq. 1 as a metric); its state is a float64 sum and a count, so
  it needs no memory for the embeddings and syncs exactly;
- :class:`Uniformity`: :func:`contrasphere.metrics.uniformity`, the log of the mean Gaussian potential over
  pairs (Wang & Isola 2020, Eq. 2);
- :class:`EffectiveRank`: :func:`contrasphere.metrics.effective_rank`, RankMe (Garrido et al., ICML 2023);
- :class:`ModalityGap`: :func:`contrasphere.metrics.modality_gap`, the distance between the two modalities'
  mean embeddings (Liang et al., NeurIPS 2022).

Uniformity, effective rank and the modality gap are not sums over rows, so those three keep the embeddings
(``dist_reduce_fx="cat"``), like torchmetrics' retrieval and AUROC metrics: memory grows with the number of rows
seen (pass ``compute_on_cpu=True`` to keep them in host memory). The rows are kept flattened, in float32 (float64
input stays float64), so that a process that saw no batch still takes part in the gather; under DDP every process
should feed embeddings of one dtype. ``compute()`` returns a 0-dim float64 tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

try:
    from torchmetrics import Metric
    from torchmetrics.utilities.data import dim_zero_cat
except ImportError as err:  # pragma: no cover - only without the extra
    raise ImportError(
        "contrasphere.integrations.torchmetrics needs torchmetrics >= 1.0: pip install 'contrasphere[torchmetrics]'"
    ) from err

from .. import _validate as check
from .. import metrics
from ..errors import InputError
from ._geometry import check_normalize

__all__ = ["Alignment", "EffectiveRank", "ModalityGap", "Uniformity"]


def _result(value: float, device: torch.device) -> Tensor:
    # float64 keeps the core's precision; Apple's MPS has no float64
    dtype = torch.float32 if device.type == "mps" else torch.float64
    return torch.tensor(value, dtype=dtype, device=device)


class _RowsMetric(Metric):
    """A metric whose states are whole sets of embeddings: checks each batch and keeps it flattened."""

    is_differentiable = False
    full_state_update = False
    dim: Tensor

    def __init__(self, normalize: bool, states: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalize = check_normalize(normalize)
        self._states = states
        for name in states:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        # the embedding dimension (0 before the first update): the largest over processes, so that a process
        # without data agrees with the others
        self.add_state("dim", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="max")

    def _check(self, z: Tensor, name: str, dim: int) -> Tensor:
        """Check a ``(B, D)`` batch ``z`` against the settings and the dimension ``dim`` (0: any); return it
        detached and flattened, in float32 (float64 stays float64). Changes no state."""
        z = check.embeddings(z, name, keep_dtype=True).detach()
        if dim and z.shape[1] != dim:
            raise InputError(
                f"{name} has dimension {z.shape[1]} but the earlier updates of this {type(self).__name__} had "
                f"dimension {dim}; one metric measures one embedding space: call reset() first, or use one metric "
                "per space"
            )
        norms = torch.linalg.vector_norm(z.double(), dim=1)
        zero = norms == 0
        if self.normalize and bool(zero.any()):
            raise InputError(
                f"{name} has {int(zero.sum())} all-zero row(s) (e.g. row {int(zero.nonzero()[0])}), which have no "
                "direction to project onto the sphere; drop them before update()"
            )
        if not self.normalize and float((norms - 1).abs().max()) > metrics.NORM_TOLERANCE:
            raise InputError(
                f"{name} is not on the unit sphere (norms range from {float(norms.min()):.4g} to "
                f"{float(norms.max()):.4g}) but this {type(self).__name__} was built with normalize=False; build it "
                "with normalize=True to project the embeddings first (or normalise them yourself)"
            )
        return (z if z.dtype == torch.float64 else z.float()).flatten()

    def _append(self, name: str, flat: Tensor, dim: int) -> None:
        state = getattr(self, name)
        assert isinstance(state, list)  # between syncs torchmetrics keeps a "cat" state as a list
        state.append(flat)
        self.dim = torch.tensor(dim, dtype=torch.long, device=self.dim.device)

    def _rows(self, name: str) -> Tensor:
        """Every row kept in state ``name``, as ``(N, D)`` (all processes' after a sync)."""
        state = getattr(self, name)
        flat = dim_zero_cat(state) if not (isinstance(state, list) and not state) else torch.zeros(0)
        dim = int(self.dim)
        if dim == 0 or flat.numel() == 0:
            raise InputError(
                f"{type(self).__name__}.compute() found no embeddings: call update() with at least one batch "
                "first (after reset(), or on any process, the state is empty)"
            )
        if flat.numel() % dim:
            raise InputError(
                f"{type(self).__name__} holds {flat.numel()} values, not a whole number of rows of dimension "
                f"{dim}: the processes fed embeddings of different dimensions"
            )
        return flat.reshape(-1, dim)


class Alignment(Metric):
    r"""Alignment of positive pairs, :func:`contrasphere.metrics.alignment` over every batch seen (lower is better).

    The mean of :math:`\lVert \hat a_i - \hat b_i\rVert_2^\alpha` over all positive pairs (Wang & Isola,
    "Understanding Contrastive Representation Learning through Alignment and Uniformity on the Hypersphere",
    ICML 2020), between 0 and :math:`2^\alpha`. ``update(z_a, z_b)`` takes two ``(B, D)`` batches paired row by
    row; ``update(z, pairs=p)`` one batch and a ``(P, 2)`` integer array of row indices of positive pairs within
    it. The state is a float64 sum of the pairs' distances and their count, summed over processes (exact).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, *, alpha: float = 2.0, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = check.positive(alpha, "alpha")
        self.normalize = check_normalize(normalize)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, z_a: Tensor, z_b: Tensor | None = None, *, pairs: Tensor | None = None) -> None:
        """Add a batch of pairs: rows of ``z_a`` and ``z_b``, or the rows of ``z_a`` that ``pairs`` indexes."""
        value = metrics.alignment(z_a, z_b, pairs=pairs, alpha=self.alpha, normalize=self.normalize)
        n = len(z_a) if pairs is None else len(pairs)
        self.total += value * n
        self.count += n

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            raise InputError("Alignment.compute() found no pairs: call update(z_a, z_b) with at least one batch first")
        return _result(float(self.total) / int(self.count), self.total.device)


class Uniformity(_RowsMetric):
    r"""Uniformity, :func:`contrasphere.metrics.uniformity` of every embedding seen (lower is more uniform).

    :math:`\log \frac{2}{N(N-1)} \sum_{i<j} e^{-t\lVert \hat z_i - \hat z_j\rVert^2}` over all ``N`` rows passed to
    ``update(z)`` (Wang & Isola, ICML 2020). Every pair of the union counts, across batches and processes, which a
    mean of per-batch uniformities would not give. ``max_points`` measures a uniformly drawn subset (seeded by
    ``seed``; under DDP drawn from the rows in rank order).
    """

    higher_is_better = False
    z: list[Tensor] | Tensor

    def __init__(
        self, *, t: float = 2.0, normalize: bool = True, max_points: int | None = None, seed: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(normalize, ("z",), **kwargs)
        self.t = check.scale(t, "t")
        self.max_points = None if max_points is None else check.integer(max_points, "max_points", 2, " or None")
        self.seed = seed

    def update(self, z: Tensor) -> None:
        """Add a ``(B, D)`` batch of embeddings."""
        self._append("z", self._check(z, "z", int(self.dim)), z.shape[1])

    def compute(self) -> Tensor:
        z = self._rows("z")
        value = metrics.uniformity(z, t=self.t, normalize=self.normalize, max_points=self.max_points, seed=self.seed)
        return _result(value, z.device)


class EffectiveRank(_RowsMetric):
    r"""RankMe, :func:`contrasphere.metrics.effective_rank` of every embedding seen (higher is less collapsed).

    The exponential of the entropy of the normalised singular values of the ``(N, D)`` matrix of all rows passed
    to ``update(z)`` (Garrido, Balestriero, Najman & LeCun, "RankMe: Assessing the Downstream Performance of
    Pretrained Self-Supervised Representations by Their Rank", ICML 2023), between 1 and ``min(N, D)``.
    """

    higher_is_better = True
    z: list[Tensor] | Tensor

    def __init__(self, *, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(normalize, ("z",), **kwargs)

    def update(self, z: Tensor) -> None:
        """Add a ``(B, D)`` batch of embeddings."""
        self._append("z", self._check(z, "z", int(self.dim)), z.shape[1])

    def compute(self) -> Tensor:
        z = self._rows("z")
        return _result(metrics.effective_rank(z, normalize=self.normalize), z.device)


class ModalityGap(_RowsMetric):
    r"""The modality gap, :func:`contrasphere.metrics.modality_gap` of every pair of batches seen.

    :math:`\lVert \bar a - \bar b\rVert_2`, the distance between the mean of all ``z_a`` rows and the mean of all
    ``z_b`` rows, each on the unit sphere (Liang, Zhang, Kwon, Yeung & Zou, "Mind the Gap: Understanding the
    Modality Gap in Multi-modal Contrastive Representation Learning", NeurIPS 2022), between 0 and 2.
    ``update(z_a, z_b)`` takes a batch of each modality; they need the same dimension, not the same size.
    """

    higher_is_better = False
    z_a: list[Tensor] | Tensor
    z_b: list[Tensor] | Tensor

    def __init__(self, *, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(normalize, ("z_a", "z_b"), **kwargs)

    def update(self, z_a: Tensor, z_b: Tensor) -> None:
        """Add a ``(B_a, D)`` batch of one modality and a ``(B_b, D)`` batch of the other."""
        a = self._check(z_a, "z_a", int(self.dim))
        b = self._check(z_b, "z_b", int(self.dim))
        check.same_dim(z_a, z_b, "z_a", "z_b")
        self._append("z_a", a, z_a.shape[1])
        self._append("z_b", b, z_b.shape[1])

    def compute(self) -> Tensor:
        z_a, z_b = self._rows("z_a"), self._rows("z_b")
        return _result(metrics.modality_gap(z_a, z_b, normalize=self.normalize), z_a.device)
