"""The training loop: one loop for every recipe, on one process or many (``torchrun``), exactly resumable.

Determinism and resumption: every random choice of step ``s`` (which samples, which augmentations, which
captions, dropout masks) comes from generators seeded by ``(seed, s)``, and the sample order of epoch ``e`` from
``(seed, e)``. A checkpoint therefore needs only the model, the loss's parameters, the optimiser, the scheduler
and the step; ``--resume`` continues with exactly the batches and views the uninterrupted run would have seen.
Checkpoints are written to a temporary file and renamed, so a kill never leaves a half-written one.

Distributed: under ``torchrun`` each process encodes its slice of every global batch; embeddings are gathered
with gradients (:class:`contrasphere.distributed.GatherLoss`), BatchNorm statistics are those of the global batch
(:class:`contrasphere.models.GlobalBatchNorm`), and DistributedDataParallel averages gradients: K processes train
the same parameters as one process on the same global batch.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..distributed import rank, world_size
from ..losses import GatherLoss
from ..losses import create_loss, loss_spec
from .models import convert_global_batchnorm
from .config import Recipe
from .optim import build_optimizer, build_scheduler
from .tasks import Task, build_task, loss_inputs


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build(recipe: Recipe, device: torch.device) -> tuple[Task, torch.nn.Module, torch.nn.Module]:
    """The task, the model (on ``device``) and the loss module of a recipe, initialised from its seed."""
    torch.manual_seed(recipe.train.seed)
    task = build_task(recipe, device)
    model = task.build_model().to(device)
    args = dict(recipe.loss.args)
    if recipe.loss.block_size:
        args["block_size"] = recipe.loss.block_size
    return task, model, create_loss(recipe.loss.name, **args).to(device)


def train(
    recipe: Recipe, out: str | Path, *, resume: bool = False, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Train ``recipe``, writing ``recipe.json``, ``checkpoint.pt`` and ``log.jsonl`` into ``out`` (rank 0).

    ``stop_after`` ends the run after that many steps, as a preemption would (tests use it to check that
    ``resume`` is exact). Returns ``{"step", "total_steps", "task", "model", "loss_module", "log"}``.
    """
    owns_group = "WORLD_SIZE" in os.environ and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if torch.cuda.is_available() and recipe.train.device != "cpu" else "gloo")
    t, out, main_process = recipe.train, Path(out), rank() == 0
    if t.threads:
        torch.set_num_threads(t.threads)
    device = _device(t.device)
    task, model, loss_module = build(recipe, device)
    inner = model
    if world_size() > 1:
        model = DistributedDataParallel(
            convert_global_batchnorm(model),
            device_ids=[device.index] if device.index is not None else None,
            find_unused_parameters=recipe.task != "views",  # e.g. a transformer's pooler, unused by mean pooling
        )
    loss_fn = GatherLoss(loss_module)
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = build_optimizer(params, recipe.optim)
    steps_per_epoch = task.n_train // recipe.data.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"data.batch_size ({recipe.data.batch_size}) is larger than the training set ({task.n_train})")
    total = t.max_steps if t.max_steps > 0 else t.epochs * steps_per_epoch
    scheduler = build_scheduler(optimizer, recipe.optim, total)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
    step, epoch_loss, log_path, ckpt_path = 0, [], out / "log.jsonl", out / "checkpoint.pt"
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        inner.load_state_dict(state["model"]), loss_module.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"]), scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch_loss = int(state["step"]), list(state["epoch_loss"])
    log: list[dict[str, Any]] = []
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.json").write_text(recipe.to_json())
        if resume and log_path.exists():  # keep what the checkpoint covers
            log = [r for r in map(json.loads, log_path.read_text().splitlines()) if r["step"] <= step]
        log_path.write_text("".join(json.dumps(r) + "\n" for r in log))
        if step == 0:
            _write_log(log_path, log, {"epoch": 0, "step": 0, **task.heldout(model)})

    def save() -> None:
        if main_process:
            state = {"model": inner.state_dict(), "loss": loss_module.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                     "total_steps": total, "epoch_loss": epoch_loss, "recipe": recipe.to_dict()}  # fmt: skip
            _atomic_save(state, ckpt_path)

    bar = _progress(total, step, progress and main_process, recipe)
    spec_inputs, micro = loss_spec(recipe.loss.name).inputs, recipe.data.batch_size // t.accumulate
    bounds = np.linspace(0, micro, world_size() + 1).round().astype(int)
    share = slice(int(bounds[rank()]), int(bounds[rank() + 1]))
    epoch_start, task.data_seconds = time.perf_counter(), 0.0
    model.train()
    while step < total and (stop_after is None or step < stop_after):
        epoch, i = divmod(step, steps_per_epoch)
        order = torch.randperm(task.n_train, generator=torch.Generator().manual_seed(_seed(t.seed, epoch)))
        index = order[i * recipe.data.batch_size : (i + 1) * recipe.data.batch_size]
        generator = torch.Generator().manual_seed(_seed(t.seed, step, 1))
        torch.manual_seed(_seed(t.seed, step, 2, rank()))  # dropout masks
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for m in range(t.accumulate):
            sync = m == t.accumulate - 1 or not isinstance(model, DistributedDataParallel)
            with contextlib.nullcontext() if sync else model.no_sync():
                with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=bool(autocast_dtype)):
                    outputs = task.step(model, index[m * micro : (m + 1) * micro], share, generator)
                # the loss outside autocast, on float32 embeddings: logits / tau in bfloat16 lose 2-3 digits
                outputs = {k: v.float() if v.is_floating_point() else v for k, v in outputs.items()}
                loss = loss_fn(**loss_inputs(spec_inputs, outputs, recipe.loss.name)) / t.accumulate
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"step {step}: the loss is {float(loss)}; lower optim.lr or use train.precision=fp32"
                )
            scaler.scale(loss).backward()
            step_loss += float(loss.detach())
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        epoch_loss.append(step_loss)
        bar(step, step_loss)
        end_of_epoch = step % steps_per_epoch == 0 or step == total
        if end_of_epoch:
            if main_process:
                seconds = time.perf_counter() - epoch_start
                record = {
                    "epoch": math.ceil(step / steps_per_epoch), "step": step, "loss": float(np.mean(epoch_loss)),
                    "lr": scheduler.get_last_lr()[0], "seconds": seconds,
                    "samples_per_second": len(epoch_loss) * recipe.data.batch_size / seconds,
                    "data_fraction": task.data_seconds / seconds,
                }  # fmt: skip
                _write_log(log_path, log, {**record, **task.heldout(model)})
            epoch_loss, epoch_start, task.data_seconds = [], time.perf_counter(), 0.0
        if (t.checkpoint_every and step % t.checkpoint_every == 0) or end_of_epoch:
            save()
    save()
    bar(None, None)
    if dist.is_initialized():  # every rank leaves together; evaluation then runs on rank 0 alone
        model = inner  # drop the DDP wrapper (and its reducer) before the process group goes
        gc.collect()
        dist.barrier()
        if owns_group:
            dist.destroy_process_group()
    return {"step": step, "total_steps": total, "task": task, "model": inner, "loss_module": loss_module, "log": log}


def _write_log(path: Path, log: list[dict[str, Any]], record: dict[str, Any]) -> None:
    log.append(record)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    with contextlib.suppress(ImportError):  # TensorBoard when installed
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(path.parent / "tensorboard")) as writer:
            for key, value in record.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, record["step"])


def _progress(total: int, start: int, enabled: bool, recipe: Recipe) -> Any:
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
            if step is None or (step % recipe.train.log_every and step != total):
                return
            rate = (step - start) / max(1e-9, time.perf_counter() - began)
            eta = (total - step) / max(rate, 1e-9)
            print(f"step {step}/{total}  loss {loss:.4f}  {rate:.2f} step/s  eta {eta:.0f}s", file=sys.stderr)

        return line
