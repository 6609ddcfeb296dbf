"""A Lightning :class:`~lightning.pytorch.callbacks.Callback` that logs the geometry of the embeddings a
``LightningModule`` produces while it trains or validates.

**The contract.** The module's ``training_step`` (``stage="train"``, the default) or ``validation_step``
(``stage="validation"``) returns a dict that holds, besides ``"loss"``, the two sides of the batch's positive
pairs under the keys ``"z_a"`` and ``"z_b"`` (``keys=`` renames them): two ``(B, D)`` tensors, row ``i`` of one
the positive of row ``i`` of the other::

    def training_step(self, batch, batch_idx):
        z_a, z_b = self.encoder(batch["view_a"]), self.encoder(batch["view_b"])
        loss = self.loss_fn(z_a, z_b)
        return {"loss": loss, "z_a": z_a, "z_b": z_b}

:class:`GeometryCallback` keeps (detached) the ``queue_size`` most recent pairs of each process, emptied at the
start of every epoch, and at the epoch's end gathers every process's queue, computes on rank 0 (see
:func:`contrasphere.integrations._geometry.pair_geometry`)

- ``{prefix}alignment``: :func:`contrasphere.metrics.alignment` of the pairs (Wang & Isola, ICML 2020);
- ``{prefix}uniformity``: :func:`contrasphere.metrics.uniformity` of all ``2N`` embeddings;
- ``{prefix}effective_rank``: :func:`contrasphere.metrics.effective_rank` of the same (RankMe, Garrido et al.,
  ICML 2023),

broadcasts them, and logs them on every rank with ``pl_module.log(..., on_epoch=True, sync_dist=True,
reduce_fx="max")``: the values are already those of the union of all processes and identical everywhere, so the
reduction over ranks (a max) leaves them unchanged, Lightning's rule that epoch-level values be synced is kept,
and a ``ModelCheckpoint`` or ``EarlyStopping`` may monitor them. (Lightning logs them as float32 tensors;
``callback.last`` holds the float64 values.) ``prefix`` defaults to ``"train_"`` or
``"val_"`` after ``stage``. Sanity-check validation batches are not measured.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

try:
    import lightning.pytorch as pl
except ImportError as err:  # pragma: no cover - only without the extra
    raise ImportError(
        "contrasphere.integrations.lightning needs lightning >= 2.0: pip install 'contrasphere[lightning]'"
    ) from err

from .. import _validate as check
from ..errors import InputError, InputTypeError
from ._geometry import NAMES, as_embeddings, check_normalize, check_settings, pair_geometry

__all__ = ["GeometryCallback"]

Stage = Literal["train", "validation"]


def gather_rows(trainer: pl.Trainer, z: Tensor, dim: int) -> Tensor:
    """Every process's ``(n_r, dim)`` rows ``z`` in rank order, on every process (a collective).

    The processes may hold different numbers of rows (0 included, with ``dim`` then unknown there, so pass 0):
    each pads to the largest count and the padding is dropped after Lightning's ``all_gather``. The rows travel
    in float64 and come back in float64 if any process had float64 rows, else in float32 (both exact).
    """
    if trainer.world_size == 1:
        return z
    device = trainer.strategy.root_device
    meta = torch.tensor([z.shape[0], dim, int(z.dtype == torch.float64)], dtype=torch.long, device=device)
    metas = trainer.strategy.all_gather(meta).reshape(-1, 3)
    sizes = [int(n) for n in metas[:, 0]]
    dims = {int(d) for d in metas[:, 1]} - {0}
    if len(dims) > 1:
        raise InputError(f"the processes' embeddings have different dimensions {sorted(dims)}")
    width = dims.pop() if dims else 0
    if max(sizes) == 0:  # every process knows this: none goes on to the second collective
        return z.new_zeros(0, width)
    dtype = torch.float64 if bool(metas[:, 2].any()) else torch.float32
    padded = torch.zeros(max(sizes), width, dtype=torch.float64, device=device)
    if z.shape[0]:
        padded[: z.shape[0]] = z.to(device=device, dtype=torch.float64)
    everything = trainer.strategy.all_gather(padded).reshape(len(sizes), max(sizes), width)
    return torch.cat([everything[r, :size] for r, size in enumerate(sizes)]).to(dtype)


class _Queue:
    """The most recent ``size`` rows of pairs ``(a, b)``, kept as the chunks they came in (no copy per step)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.chunks: deque[tuple[Tensor, Tensor]] = deque()
        self.rows = 0
        self.dim = 0

    def clear(self) -> None:
        self.chunks.clear()
        self.rows = 0

    def add(self, a: Tensor, b: Tensor) -> None:
        if self.dim and a.shape[1] != self.dim:
            raise InputError(
                f"the embeddings have dimension {a.shape[1]} but earlier batches had {self.dim}; one "
                "GeometryCallback measures one embedding space"
            )
        self.dim = a.shape[1]
        # half precision as float32 (exact, and what the metrics compute in); float64 stays float64
        dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
        a, b = a.to(dtype), b.to(dtype)
        self.chunks.append((a[-self.size :], b[-self.size :]))
        self.rows += min(a.shape[0], self.size)
        while self.rows - self.chunks[0][0].shape[0] >= self.size:
            self.rows -= self.chunks.popleft()[0].shape[0]

    def pairs(self) -> tuple[Tensor, Tensor]:
        if not self.chunks:
            empty = torch.zeros(0, self.dim)
            return empty, empty
        a = torch.cat([c[0] for c in self.chunks])[-self.size :]
        b = torch.cat([c[1] for c in self.chunks])[-self.size :]
        return a, b


class GeometryCallback(pl.Callback):
    """Logs alignment, uniformity and effective rank of the most recent positive pairs at each epoch's end.

    See the module's docstring for the contract with the ``LightningModule`` (its steps return a dict with
    ``keys[0]`` and ``keys[1]``, two ``(B, D)`` tensors of paired embeddings). ``queue_size`` bounds the pairs
    kept per process (memory ``2 * queue_size * D`` floats); the values are measured on the union of every
    process's queue with :func:`contrasphere.metrics.alignment` (``alpha``),
    :func:`~contrasphere.metrics.uniformity` (``t``, ``max_points``, ``seed``) and
    :func:`~contrasphere.metrics.effective_rank`, each with ``normalize``. ``last`` holds the latest values
    (keys with the prefix) on every process.
    """

    def __init__(
        self,
        *,
        stage: Stage = "train",
        keys: tuple[str, str] = ("z_a", "z_b"),
        queue_size: int = 4096,
        alpha: float = 2.0,
        t: float = 2.0,
        normalize: bool = True,
        max_points: int | None = None,
        seed: int = 0,
        prefix: str | None = None,
        prog_bar: bool = False,
    ) -> None:
        if stage not in ("train", "validation"):
            raise InputError(f"stage must be 'train' or 'validation', got {stage!r}")
        if not (isinstance(keys, (tuple, list)) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
            raise InputTypeError(
                f"keys must be two strings, the names of z_a and z_b in the step's output, got {keys!r}"
            )
        self.stage: Stage = stage
        self.keys = (keys[0], keys[1])
        self.queue = _Queue(check.integer(queue_size, "queue_size"))
        self.alpha, self.t, self.max_points = check_settings(alpha, t, max_points)
        self.normalize, self.seed, self.prog_bar = check_normalize(normalize), seed, prog_bar
        self.prefix = prefix if prefix is not None else ("train_" if stage == "train" else "val_")
        self.last: dict[str, float] = {}

    def _collect(self, outputs: Any) -> None:
        step = "training_step" if self.stage == "train" else "validation_step"
        if not isinstance(outputs, Mapping) or any(key not in outputs for key in self.keys):
            got = f"a dict with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else type(outputs).__name__
            raise InputError(
                f"GeometryCallback(stage={self.stage!r}) reads the embeddings from what {step} returns, which must "
                f"be a dict holding {self.keys[0]!r} and {self.keys[1]!r} (two (B, D) tensors of paired "
                f"embeddings), e.g. return {{'loss': loss, {self.keys[0]!r}: z_a, {self.keys[1]!r}: z_b}}; got {got}"
            )
        a = as_embeddings(outputs[self.keys[0]], f"{step}'s {self.keys[0]!r}")
        b = as_embeddings(outputs[self.keys[1]], f"{step}'s {self.keys[1]!r}")
        check.same_shape(a, b, self.keys[0], self.keys[1])
        self.queue.add(a, b)

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        a, b = self.queue.pairs()
        a_all = gather_rows(trainer, a, self.queue.dim)
        b_all = gather_rows(trainer, b, self.queue.dim)
        self.queue.clear()
        if a_all.shape[0] == 0:  # no batch on any process (the same on all: no collective is skipped by one)
            return
        values: dict[str, float] | None = None
        if trainer.is_global_zero:
            measured = pair_geometry(
                a_all,
                b_all,
                alpha=self.alpha,
                t=self.t,
                normalize=self.normalize,
                max_points=self.max_points,
                seed=self.seed,
            )
            values = {f"{self.prefix}{name}": measured[name] for name in NAMES}
        values = trainer.strategy.broadcast(values, src=0)
        assert values is not None
        self.last = values
        for name, value in values.items():
            # identical on every rank already: the reduction over ranks that Lightning asks for at epoch level
            # (sync_dist) is a max, which returns the value unchanged whatever the number of ranks
            pl_module.log(
                name, value, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max", prog_bar=self.prog_bar
            )

    # training
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stage == "train":
            self.queue.clear()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.stage == "train":
            self._collect(outputs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stage == "train":
            self._measure(trainer, pl_module)

    # validation
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stage == "validation":
            self.queue.clear()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.stage == "validation" and not trainer.sanity_checking:
            self._collect(outputs)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stage == "validation" and not trainer.sanity_checking:
            self._measure(trainer, pl_module)
