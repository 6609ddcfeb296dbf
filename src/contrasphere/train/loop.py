"""The training loop: one loop for every recipe, on one process or many (``torchrun``), exactly resumable.

Determinism and resumption: every random choice of step ``s`` (which samples, which augmentations, which
captions, dropout masks) comes from generators seeded by ``(seed, s)``, and the sample order of epoch ``e`` from
``(seed, e)``. A checkpoint therefore needs only the model, the loss's parameters, the optimiser, the scheduler
and the step (:mod:`.checkpoint`); ``--resume`` continues with exactly the batches and views the uninterrupted
run would have seen.

Distributed: under ``torchrun`` each process prepares and encodes its share of every global batch; embeddings are
gathered with gradients (:class:`contrasphere.losses.GatherLoss`), BatchNorm statistics are those of the global
batch (:class:`contrasphere.train.models.GlobalBatchNorm`), and DistributedDataParallel averages gradients: K
processes train the same parameters as one process on the same global batch.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from ..errors import ConfigError, MissingRunError
from ..losses import GatherLoss, loss_spec
from ..pairwise._tiling import EMULATED_BF16, native_low_precision, warn_once
from . import checkpoint
from .config import Recipe
from .models import convert_global_batchnorm
from .optim import build_optimizer, build_scheduler
from .rundir import RunLock, holds_run, open_run, read_log, write_atomic
from .tasks import Task, build_task

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers; ``s`` and ``-s`` differ (negatives are read as 64-bit two's complement)."""
    words = [int(p) % (1 << 64) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; under torchrun each process takes its local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and distributed.is_initialized():
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def build(recipe: Recipe, device: torch.device) -> tuple[Task, nn.Module, nn.Module]:
    """The task, the model (on ``device``) and the loss module of a recipe, initialised from its seed."""
    torch.manual_seed(recipe.train.seed)
    spec = loss_spec(recipe.loss.name)
    task = build_task(recipe, spec, device)
    model = task.build_model().to(device)
    args = dict(recipe.loss.args)
    if recipe.loss.block_size is not None:
        args["block_size"] = recipe.loss.block_size
    return task, model, spec.cls(**args).to(device)


def rank_share(size: int, ranks: int, rank: int) -> slice:
    """The rows of a micro-batch of ``size`` that process ``rank`` of ``ranks`` prepares and encodes."""
    bounds = np.linspace(0, size, ranks + 1).round().astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


def global_batch(seed: int, step: int, steps_per_epoch: int, n_train: int, batch_size: int) -> Tensor:
    """The sample indices of step ``step``: its slice of the epoch's order, seeded by ``(seed, epoch)``."""
    epoch, i = divmod(step, steps_per_epoch)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(_seed(seed, epoch)))
    return order[i * batch_size : (i + 1) * batch_size]


def schedule_length(recipe: Recipe, n_train: int) -> tuple[int, int]:
    """``(steps per epoch, total optimiser steps)`` of a run on ``n_train`` training samples."""
    steps_per_epoch = n_train // recipe.data.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"data.batch_size ({recipe.data.batch_size}) is larger than the training set ({n_train})")
    t = recipe.train
    return steps_per_epoch, t.max_steps if t.max_steps > 0 else t.epochs * steps_per_epoch


def _wrap(model: nn.Module, device: torch.device, task_name: str) -> nn.Module:
    if distributed.world_size() == 1:
        return model
    return DistributedDataParallel(
        convert_global_batchnorm(model),
        device_ids=[device.index] if device.index is not None else None,
        find_unused_parameters=task_name != "views",  # e.g. a transformer's pooler, unused by mean pooling
    )


class _Log:
    """``log.jsonl``, one record per epoch (and one at step 0), written atomically by the main process only; the
    same records go to TensorBoard when it is installed and to Weights & Biases when ``log.wandb`` says so."""

    def __init__(self, out: Path, main: bool, resume_step: int | None, recipe: Recipe) -> None:
        self.path, self.main = out / "log.jsonl", main
        self.records = [r for r in read_log(out) if r["step"] <= resume_step] if resume_step is not None else []
        self.wandb: Any = None
        if main:
            self._flush()
            if recipe.log.wandb != "off":
                self.wandb = _wandb_run(recipe, out)

    def _flush(self) -> None:
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        self.records.append(record)
        self._flush()
        with contextlib.suppress(ImportError):  # TensorBoard when installed
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(str(self.path.parent / "tensorboard")) as writer:
                for key, value in record.items():
                    if key not in ("epoch", "step") and isinstance(value, (int, float)):
                        writer.add_scalar(key, value, record["step"])
        if self.wandb is not None:
            numbers = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
            self.wandb.log(numbers, step=record["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _wandb_run(recipe: Recipe, out: Path) -> Any:
    """A Weights & Biases run in ``out/wandb`` (offline: nothing leaves the machine), with the recipe as config."""
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            f"log.wandb={recipe.log.wandb} needs Weights & Biases: pip install wandb (or log.wandb=off)"
        ) from None
    return wandb.init(
        mode="offline" if recipe.log.wandb == "offline" else "online",
        dir=str(out),
        project=recipe.log.wandb_project,
        name=out.name,
        config=recipe.to_dict(),
        reinit="finish_previous",
    )


def _step(run: _Run, index: Tensor, generator: torch.Generator) -> tuple[float, float]:
    """One optimiser step over ``accumulate`` micro-batches; returns the loss and the seconds spent on data."""
    t, task, model, parts = run.recipe.train, run.task, run.model, run.parts
    micro = run.recipe.data.batch_size // t.accumulate
    share = rank_share(micro, distributed.world_size(), distributed.rank())
    dtype = AUTOCAST.get(t.precision)
    autocast = partial(torch.autocast, run.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    parts.optimizer.zero_grad(set_to_none=True)
    step_loss, data_seconds = 0.0, 0.0
    for m in range(t.accumulate):
        began = time.perf_counter()
        # data preparation runs under autocast as it always has, so that runs stay bit-identical to earlier ones
        with autocast():
            batch = task.batch(index[m * micro : (m + 1) * micro], share, generator)
        data_seconds += time.perf_counter() - began
        accumulating = m < t.accumulate - 1 and isinstance(model, DistributedDataParallel)
        with model.no_sync() if accumulating else contextlib.nullcontext():  # type: ignore[operator]
            with autocast():
                inputs = task.embed(model, batch)
            loss = run.loss_fn(**inputs) / t.accumulate  # outside autocast: the task hands float32 embeddings
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"step {run.step}: the loss is {float(loss)}; lower optim.lr or use train.precision=fp32"
                )
            parts.scaler.scale(loss).backward()
        step_loss += float(loss.detach())
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    return step_loss, data_seconds


def _epoch_record(
    step: int,
    steps_per_epoch: int,
    losses: list[float],
    lr: float,
    seconds: float,
    data_seconds: float,
    batch_size: int,
) -> dict[str, Any]:
    return {
        "epoch": math.ceil(step / steps_per_epoch),
        "step": step,
        "loss": float(np.mean(losses)),
        "lr": lr,
        "seconds": seconds,
        "samples_per_second": len(losses) * batch_size / seconds,
        "data_fraction": data_seconds / seconds,
    }


@dataclass
class _Run:
    """A run in progress: its parts, where it writes, and the step and epoch it is at."""

    recipe: Recipe
    out: Path
    task: Task
    inner: nn.Module  # the model itself; ``model`` is it or its DistributedDataParallel wrapper
    model: nn.Module
    loss_fn: GatherLoss
    parts: checkpoint.Trainable
    device: torch.device
    steps_per_epoch: int
    total: int
    log: _Log
    owns_group: bool
    lock: RunLock | None
    step: int = 0
    start_step: int = 0
    epoch_loss: list[float] = field(default_factory=list)
    epoch_start: float = field(default_factory=time.perf_counter)
    data_seconds: float = 0.0

    @property
    def main(self) -> bool:
        return distributed.rank() == 0

    def heldout(self) -> dict[str, float]:
        return self.task.heldout(self.inner) if self.main else {}

    def save(self) -> None:
        if self.main:
            ckpt, recipe = self.out / checkpoint.CHECKPOINT, self.recipe.to_dict()
            checkpoint.save(
                ckpt, self.parts, step=self.step, total_steps=self.total, epoch_loss=self.epoch_loss, recipe=recipe
            )

    def end_epoch(self) -> None:
        if self.main:
            lr, elapsed = float(self.parts.scheduler.get_last_lr()[0]), time.perf_counter() - self.epoch_start
            record = _epoch_record(
                self.step,
                self.steps_per_epoch,
                self.epoch_loss,
                lr,
                elapsed,
                self.data_seconds,
                self.recipe.data.batch_size,
            )
            self.log.write({**record, **self.heldout()})
        self.epoch_loss, self.epoch_start, self.data_seconds = [], time.perf_counter(), 0.0

    def within_epoch_heldout(self) -> None:
        epoch = math.ceil(self.step / self.steps_per_epoch)
        record = {"epoch": epoch, "step": self.step, "loss": float(np.mean(self.epoch_loss))}
        self.log.write({**record, **self.heldout()})

    def finish(self) -> dict[str, Any]:
        if distributed.is_initialized():  # every rank leaves together; evaluation then runs on rank 0 alone
            self.model = self.inner  # drop the DDP wrapper (and its reducer) before the process group goes
            gc.collect()
            distributed.leave(destroy=self.owns_group)
        self.release()
        keys = {"task": self.task, "model": self.inner, "loss_module": self.parts.loss, "log": self.log.records}
        return {"step": self.step, "start_step": self.start_step, "total_steps": self.total, **keys}

    def release(self) -> None:
        self.log.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def check_ranks(recipe: Recipe, ranks: int) -> None:
    """Every process needs at least one sample of every micro-batch (the split may be uneven)."""
    micro = recipe.data.batch_size // recipe.train.accumulate
    if micro < ranks:
        raise ConfigError(
            f"data.batch_size {recipe.data.batch_size} / train.accumulate {recipe.train.accumulate} = {micro} "
            f"samples per micro-batch cannot give each of the {ranks} processes one; use data.batch_size >= "
            f"{ranks * recipe.train.accumulate} or fewer processes"
        )


def warn_emulated_precision(precision: str, device: torch.device) -> bool:
    """Warn (once) when ``train.precision=bf16`` asks a CPU for bfloat16 it has no matrix units for; True if so.

    Autocast then runs every convolution and matrix product in emulated bfloat16 (measured on an AVX2 machine: the
    digits recipe 4.3x slower than fp32); the run still trains, but fp32 is the faster choice there.
    """
    if precision != "bf16" or device.type != "cpu" or native_low_precision(device, torch.bfloat16):
        return False
    warn_once(
        "bf16-train",
        EMULATED_BF16.format(cap=torch.backends.cpu.get_cpu_capability())
        + ": train.precision=bf16 makes this run slower, not faster (the digits recipe 4.3x slower on an AVX2 "
        "machine); use train.precision=fp32 here",
    )
    return True


def check_device(name: str) -> None:
    """A CUDA device must exist before any work starts."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no GPU is visible to PyTorch; use train.device=cpu (or auto)")
    if name.startswith("cuda:") and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"train.device={name} but only {torch.cuda.device_count()} GPU(s) are visible")


def _start(recipe: Recipe, out: Path, resume: bool, overwrite: bool) -> _Run:
    """Lock the folder, join the process group, build everything, restore the checkpoint on ``resume``."""
    t = recipe.train
    check_device(t.device)
    owns_group = distributed.init_from_env(use_cuda=t.device != "cpu", timeout=t.dist_timeout)
    check_ranks(recipe, distributed.world_size())
    main = distributed.rank() == 0
    lock = open_run(out, resume=resume, overwrite=overwrite) if main else None
    try:
        return _build_run(recipe, out, resume, owns_group, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build_run(recipe: Recipe, out: Path, resume: bool, owns_group: bool, lock: RunLock | None) -> _Run:
    t = recipe.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    warn_emulated_precision(t.precision, device)
    state, ckpt = None, out / checkpoint.CHECKPOINT
    if resume and not ckpt.exists():
        if not holds_run(out):
            raise MissingRunError(f"--resume: no checkpoint at {ckpt}; start without --resume")
        resume = False  # killed before its first checkpoint: the run starts again from step 0
    if resume:
        state = checkpoint.load(ckpt, device)
        checkpoint.check_resume(state["recipe"], recipe.to_dict(), ckpt)
    task, inner, loss_module = build(recipe, device)
    model, loss_fn = _wrap(inner, device, recipe.task), GatherLoss(loss_module, mode=recipe.loss.distributed)
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = build_optimizer(params, recipe.optim)
    steps_per_epoch, total = schedule_length(recipe, task.n_train)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    parts = checkpoint.Trainable(inner, loss_module, optimizer, build_scheduler(optimizer, recipe.optim, total), scaler)
    step, epoch_loss = checkpoint.restore(state, parts) if state is not None else (0, list[float]())
    if step > total:
        raise ConfigError(
            f"the run is at step {step} of its checkpoint but train.epochs / train.max_steps now give {total} steps "
            "in all; raise them to continue it"
        )
    main = lock is not None
    if main:
        write_atomic(out / "recipe.json", recipe.to_json())
    log = _Log(out, main, step if resume else None, recipe)
    run = _Run(
        recipe,
        out,
        task,
        inner,
        model,
        loss_fn,
        parts,
        device,
        steps_per_epoch,
        total,
        log,
        owns_group,
        lock,
        step,
        step,
        epoch_loss,
    )
    if step == 0:
        log.write({"epoch": 0, "step": 0, **run.heldout()})
    return run


def train(
    recipe: Recipe,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``recipe``, writing ``recipe.json``, ``checkpoint.pt`` and ``log.jsonl`` into ``out`` (rank 0).

    A folder that holds a run is refused unless ``resume`` (continue it; its recipe must match the checkpoint's
    but for :data:`contrasphere.train.checkpoint.RESUMABLE_CHANGES`) or ``overwrite`` (discard it). ``stop_after``
    ends the run after that many steps, as a preemption would (tests use it to check that ``resume`` is exact).
    Returns ``{"step", "start_step", "total_steps", "task", "model", "loss_module", "log"}``.
    """
    run = _start(recipe, Path(out), resume, overwrite)
    try:
        return _loop(run, progress, stop_after)
    finally:
        run.release()


def _loop(run: _Run, progress: bool, stop_after: int | None) -> dict[str, Any]:
    recipe = run.recipe
    t = recipe.train
    bar = _progress(run.total, run.step, progress and run.main, recipe)
    run.model.train()
    while run.step < run.total and (stop_after is None or run.step < stop_after):
        index = global_batch(t.seed, run.step, run.steps_per_epoch, run.task.n_train, recipe.data.batch_size)
        generator = torch.Generator().manual_seed(_seed(t.seed, run.step, 1))
        torch.manual_seed(_seed(t.seed, run.step, 2, distributed.rank()))  # dropout masks
        loss, data_seconds = _step(run, index, generator)
        run.step, run.data_seconds = run.step + 1, run.data_seconds + data_seconds
        run.epoch_loss.append(loss)
        bar(run.step, loss)
        end_of_epoch = run.step % run.steps_per_epoch == 0 or run.step == run.total
        if t.heldout_every and run.step % t.heldout_every == 0 and not end_of_epoch:
            run.within_epoch_heldout()
        if end_of_epoch:
            run.end_epoch()
        if (t.checkpoint_every and run.step % t.checkpoint_every == 0) or end_of_epoch:
            run.save()
    run.save()
    bar(None, None)
    return run.finish()


def _progress(total: int, start: int, enabled: bool, recipe: Recipe) -> Callable[[int | None, float | None], None]:
    """A progress callback ``(step, loss)``; ``(None, None)`` closes it. tqdm when installed, else log lines."""
    if not enabled:
        return lambda step, loss: None
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=f"train {recipe.name}", unit="step", dynamic_ncols=True)

        def update(step: int | None, loss: float | None) -> None:
            if step is None:
                bar.close()
                return
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        return update
    except ImportError:
        began = time.perf_counter()

        def line(step: int | None, loss: float | None) -> None:
            if step is None or loss is None or (step % recipe.train.log_every and step != total):
                return
            rate = (step - start) / max(1e-9, time.perf_counter() - began)
            eta = (total - step) / max(rate, 1e-9)
            print(f"step {step}/{total}  loss {loss:.4f}  {rate:.2f} step/s  eta {eta:.0f}s", file=sys.stderr)

        return line
