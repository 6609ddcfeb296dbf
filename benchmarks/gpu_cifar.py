"""The GPU-scale CIFAR-10 run (issue 14, item 5): NT-Xent and align-uniform on ResNet-18 at the same budget.

    python benchmarks/gpu_cifar.py                    # one CUDA GPU: both losses, ~6 minutes in all
    python benchmarks/gpu_cifar.py --smoke            # the CPU, tests/fixtures data, ~10 s (what the test runs)
    bash benchmarks/gpu_cifar_prepare.sh              # here, once: CIFAR-10 into .gpu_data/ (ignored) for the call

What it trains, on the project's own loop (:func:`contrasphere.train.train`): the recipes ``cifar10-nt-xent``
(NT-Xent, tau 0.5) and ``cifar10-align-uniform`` (alpha 2, t 2, equal weights) with their optimiser (SGD, lr 0.12,
momentum 0.9, weight decay 5e-4, 100 warm-up steps, cosine to zero), batch 512 (1,024 views a step), the SimCLR
augmentation of :mod:`contrasphere.train.augment` (batched tensor operations: with the batch on the GPU it runs
there), and these changes: the encoder ``resnet18_cifar`` (torchvision's ResNet-18, 3x3 stride-1 stem, no
max-pool; MLP head 512-512-128), ``train.precision=bf16`` (autocast; the losses in float32), ``train.device=cuda``
and ``train.max_steps`` = the step count of the budget (see :func:`gpu_recipe`). Both losses get the same number of
steps, hence the same schedule and about the same wall time.

The budget: the trainer has no wall-clock limit, and its cosine schedule needs the step count up front. So the
script first times three short runs of the NT-Xent recipe (5 steps to warm up CUDA and cuDNN, then 10 and 40; the
two losses cost the same, the encoder dominates), takes the time per step from the difference of the last two
(what setting up a run costs cancels out), the fixed cost of a run from the 10-step one, and the cost of an epoch's
end (held-out metrics, a checkpoint) by timing one, and gives both losses the steps that fill ``--budget-s``
(150 s) each, or fewer where the whole script would otherwise pass ``--deadline-s`` (345 s from start, imports
included, assuming ``--eval-s`` 30 s per evaluation). ``--steps N`` skips the calibration. The JSON has the
predicted and the measured times.

Evaluation is the project's own, :meth:`contrasphere.train.tasks.ViewsTask.evaluate` (what ``contrasphere eval``
and ``reproduce vision`` use): weighted kNN (k 200, tau 0.07) and the linear probe (``fast`` protocol: Adam on
standardised features, 50 epochs as in ``reproduce vision``; the recipes' default is 100) on frozen features of all
50,000 training images, scored on the 10,000 test images, for the 512-d encoder features (the headline numbers) and
the 128-d output; alignment (alpha 2) and uniformity (t 2) of two augmented views of the first 2,000 test images;
uniformity of all 10,000 test outputs. The kNN and the probe run on the CPU (their code makes their tensors
there), the embeddings on the GPU.

The JSON (``--out``; default ``$OUT/gpu_cifar.json`` when ``OUT`` is set, else benchmarks/results/gpu_cifar.json)
is rewritten after every phase (environment, data, calibration, then per loss its training and its evaluation), so
a run stopped early still returns what it finished. Per loss: steps, epochs reached, training and evaluation wall
times, final loss, kNN and linear accuracies (fractions in [0, 1]), alignment and uniformity, the per-epoch log.
Beside them: the environment (GPU, torch) and the public anchors of issue 14 for comparison (SimCLR ResNet-18 on
CIFAR-10: 85.6% linear / 83.2% kNN after 100 epochs, dkobak/simclr-cifar10, about 20 minutes on one A100; 28 / 57
/ 66% linear after 1 / 10 / 30 epochs). Those anchors use other evaluation protocols and the official CIFAR-10
pixels (the shared copy is JPEG q75, which costs a little accuracy): a rough guide, not a like-for-like number.

The device call (the ``run`` tool), after ``bash benchmarks/gpu_cifar_prepare.sh`` here (it copies the two JPEG
tarballs, 19.4 MB, into ``.gpu_data/cifar10``, which .git/info/exclude ignores; the rest of the tree is ~3 MB)::

    command:   set -o pipefail; export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 CONTRASPHERE_DATA=$PWD/.gpu_data
               CONTRASPHERE_CACHE=/tmp/cs-cache; nvidia-smi; timeout -k 10 420 python3 benchmarks/gpu_cifar.py
               --out $OUT/gpu_cifar.json 2>&1 | tee $OUT/gpu_cifar.log
    carry:     [".gpu_data"]
    timeout_s: 480

(the command on one line). Expected (an estimate; nothing here has run on a GPU yet): ~10 s of imports and CUDA
start, ~15 s decoding the 60,000 JPEGs (once, into the cache), ~15 s of calibration, then per loss ~120 s of
training (the deadline's share, below the 150 s budget) and ~30 s of evaluation: about 5.8 minutes. ResNet-18 at
32 x 32 is ~1.1 GFLOP a view forward, ~3.4 TFLOP a step (1,024 views, forward and backward). The A100 anchor (100
epochs of 100,000 views in 20 minutes) implies ~28 TFLOP/s; assuming 2-2.5 times that on an H200 (eager PyTorch,
NCHW, bf16), a step takes 50-70 ms: ~1,700-2,400 steps (17-25 epochs) in 120 s. ``timeout 420`` stops the script
before the call's own limit: its SIGTERM handler marks the JSON (``status``: terminated during a phase) and the log
and the JSON come back.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import io
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # before torch is imported: the deadline counts its import too

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without an install (the device machine)
    sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script

from _gpu_common import cuda_info, git, source_digest  # noqa: E402

from contrasphere.train import data as D  # noqa: E402
from contrasphere.train import train  # noqa: E402
from contrasphere.train.config import Recipe, updated  # noqa: E402
from contrasphere.train.recipes import get_recipe  # noqa: E402
from contrasphere.train.rundir import write_atomic  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "cifar10"
TENSORBOARD = "torch.utils.tensorboard"
LOSSES = {"nt_xent": "cifar10-nt-xent", "align_uniform": "cifar10-align-uniform"}  # result key -> recipe
ANCHORS: dict[str, Any] = {
    "source": "issue 14 (SimCLR ResNet-18 on CIFAR-10, dkobak/simclr-cifar10: 100 epochs in about 20 minutes on one "
    "A100); accuracies as fractions",
    "simclr_resnet18_100_epochs": {"epochs": 100, "linear_accuracy": 0.856, "knn_accuracy": 0.832},
    "simclr_resnet18_linear_by_epochs": {"1": 0.28, "10": 0.57, "30": 0.66, "100": 0.856},
    "caveat": "other evaluation protocols (theirs vs this project's kNN k=200 and Adam linear probe) and the "
    "official pixels (the shared CIFAR-10 is a JPEG q75 copy): a rough guide, not a like-for-like comparison",
}


# --- settings -------------------------------------------------------------------------------------------------------
def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the run uses; ``--smoke`` is the CPU variant the test runs (fixtures data, tiny sizes)."""
    if args.smoke:
        s = {
            "mode": "smoke",
            "device": "cpu",
            "precision": "fp32",  # bf16 autocast on a CPU is emulated and slow (the trainer warns)
            "data_root": str(args.data or FIXTURES),
            "batch_size": 8,
            "crop_size": 16,  # 16 x 16 views (and evaluation images): a quarter of ResNet-18's work at 32
            "train_samples": 32,  # of the fixtures' 80 and 60: ResNet-18 on 2 CPU cores
            "test_samples": 24,
            "heldout_samples": 16,
            "probe_epochs": 3,
            "budget_s": 1.0,
            "deadline_s": 60.0,
            "eval_s": 2.0,
            "calibration_steps": (1, 2),  # no warm-up run: nothing to warm up on a CPU
            "threads": 1,  # robust on a busy 2-core CI machine (two threads there can spin-wait for each other)
            "min_steps": 2,
        }
    else:
        s = {
            "mode": "gpu",
            "device": "cuda",
            "precision": "bf16",
            "data_root": str(args.data or ""),  # empty: $CONTRASPHERE_DATA, ./data, ../shared/data, ~/data
            "batch_size": 512,
            "crop_size": 32,  # the recipes' (CIFAR-10's own size)
            "train_samples": 0,  # all 50,000 and 10,000
            "test_samples": 0,
            "heldout_samples": 2000,
            "probe_epochs": 50,  # as `reproduce vision` (the recipes say 100; the probe runs on the CPU)
            "budget_s": 150.0,
            "deadline_s": 345.0,  # the whole script, imports included: under 6 minutes
            "eval_s": 30.0,  # assumed per loss (kNN and probe on the CPU, embeddings on the GPU)
            "calibration_steps": (5, 10, 40),
            "threads": 0,  # PyTorch's default (all cores: the kNN and the probe run on the CPU)
            "min_steps": 50,
        }
    for key in ("device", "precision", "batch_size", "probe_epochs", "budget_s", "deadline_s", "eval_s", "threads"):
        value = getattr(args, key)
        if value is not None:
            s[key] = value
    s["steps"] = args.steps
    s["losses"] = args.losses
    s["cudnn_benchmark"] = not args.no_cudnn_benchmark
    return s


def gpu_recipe(loss_key: str, s: dict[str, Any], steps: int) -> Recipe:
    """The recipe ``LOSSES[loss_key]`` (its loss, optimiser and augmentation) on ResNet-18 for ``steps`` steps."""
    recipe = get_recipe(LOSSES[loss_key])
    return updated(
        recipe,
        {
            "model.encoder": "resnet18_cifar",
            "data.root": s["data_root"],
            "data.batch_size": s["batch_size"],
            "augment.crop_size": s["crop_size"],
            "data.train_samples": s["train_samples"],
            "data.test_samples": s["test_samples"],
            "train.device": s["device"],
            "train.precision": s["precision"],
            "train.max_steps": steps,
            "train.heldout_samples": s["heldout_samples"],
            "optim.warmup_steps": min(recipe.optim.warmup_steps, max(1, steps // 10)),
            "eval.probe_epochs": s["probe_epochs"],
            "eval.plots": False,
        },
    )


# --- report ---------------------------------------------------------------------------------------------------------
class Report:
    """The JSON, rewritten (atomically) after every phase."""

    def __init__(self, path: Path, s: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "benchmark": "gpu_cifar (issue 14, item 5)",
            "mode": s["mode"],
            "status": "running",
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "settings": dict(s),
            "phases": {},
            "environment": {},
            "data": {},
            "calibration": {},
            "results": {},
            "anchors": ANCHORS,
        }

    def write(self) -> None:
        self.data["elapsed_s"] = time.perf_counter() - STARTED  # the whole script, imports included
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.data, indent=2, default=_jsonable) + "\n")
        os.replace(tmp, self.path)

    def phase(self, name: str, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` as a phase: timed, its error recorded (not raised), the JSON written after it."""
        record: dict[str, Any] = {"status": "running"}
        self.data["phases"][name] = record
        self.write()
        began = time.perf_counter()
        _say(f"== {name}")
        try:
            value = fn(*args)
            record["status"] = "done"
        except Exception as err:  # a failed phase is a row of the report; later phases still run
            value = None
            record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
            _say(traceback.format_exc())
        record["seconds"] = time.perf_counter() - began
        _say(f"   {name}: {record['status']} in {record['seconds']:.1f} s")
        self.write()
        return value


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, (tuple, set)):
        return list(x)
    return str(x)


def _say(text: str) -> None:
    print(text, flush=True)


def _sync(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- phases ---------------------------------------------------------------------------------------------------------
def environment(s: dict[str, Any]) -> dict[str, Any]:
    import torchvision

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "commit": os.environ.get("CONTRASPHERE_COMMIT") or git("rev-parse", "HEAD"),
        "source_digest": source_digest(),
        "cudnn_benchmark": s["cudnn_benchmark"],
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if s["device"].startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU is visible to PyTorch (use --smoke, or --device cpu)")
        env.update(cuda_info(0, "driver_version,clocks.max.sm,power.limit"))
    return env


def load_data(s: dict[str, Any]) -> dict[str, Any]:
    """Decode CIFAR-10 once into the cache (``$CONTRASPHERE_CACHE``), so that the timed runs read one file."""
    train_set, test_set = D.cifar10(s["data_root"] or None)
    info = {"n_train": len(train_set), "n_test": len(test_set), "classes": train_set.classes}
    if s["mode"] == "gpu" and (info["n_train"], info["n_test"]) != (50000, 10000):
        info["warning"] = "not the full CIFAR-10 (50,000 + 10,000): the data folder holds something else"
    return info


def _timed_train(recipe: Recipe, device: str) -> tuple[dict[str, Any], float]:
    with tempfile.TemporaryDirectory(prefix="gpu-cifar-") as folder:
        _sync(device)
        began = time.perf_counter()
        result = train(recipe, folder, progress=False)
        _sync(device)
        return result, time.perf_counter() - began


def calibrate(s: dict[str, Any], report: Report) -> dict[str, Any]:
    """The step count of the budget, from short timed runs of the NT-Xent recipe (the losses cost the same).

    Per step: the difference of the two last runs over their difference in steps. Fixed cost of a run (building
    it, the held-out metrics at its start and end, its checkpoint): the shorter run's time less its steps. Per
    epoch: one held-out measurement and one checkpoint-sized write, timed on the longer run's model. The budget per
    loss is ``--budget-s``, or less where the whole script would otherwise pass ``--deadline-s`` (counting
    ``--eval-s`` per loss for its evaluation).
    """
    out: dict[str, Any] = report.data["calibration"]
    runs: list[tuple[int, float]] = []
    result: dict[str, Any] = {}
    for steps in s["calibration_steps"]:
        result, seconds = _timed_train(gpu_recipe("nt_xent", s, steps), s["device"])
        runs.append((steps, seconds))
        out.setdefault("runs", []).append({"steps": steps, "seconds": seconds})
        report.write()
    (short, t_short), (long, t_long) = runs[-2], runs[-1]
    per_step = (t_long - t_short) / max(1, long - short)
    if per_step <= 0:  # timing noise on a tiny run: the long run's average instead
        per_step = t_long / long
    fixed = max(0.0, t_short - short * per_step)
    per_epoch = _epoch_overhead(result, s["device"])
    steps_per_epoch = max(1, result["task"].n_train // s["batch_size"])
    del result
    _free(s["device"])
    elapsed = time.perf_counter() - STARTED
    out.update(per_step_s=per_step, fixed_s=fixed, per_epoch_s=per_epoch, steps_per_epoch=steps_per_epoch)
    out.update(plan_steps(s, per_step, fixed, per_epoch, steps_per_epoch, elapsed))
    return out


def plan_steps(
    s: dict[str, Any], per_step: float, fixed: float, per_epoch: float, steps_per_epoch: int, elapsed: float
) -> dict[str, Any]:
    """Steps per loss that fill the budget: ``--budget-s``, or what is left before ``--deadline-s`` shared out."""
    n = len(s["losses"])
    room = (s["deadline_s"] - elapsed) / n - s["eval_s"]  # what each loss may take, its evaluation set aside
    budget = min(s["budget_s"], room)
    steps = max(s["min_steps"], int((budget - fixed) / (per_step + per_epoch / steps_per_epoch)))
    return {
        "budget_s": budget,
        "budget_cut_by_deadline": budget < s["budget_s"],
        "steps": steps,
        "predicted_train_s": fixed + steps * per_step + math.ceil(steps / steps_per_epoch) * per_epoch,
    }


def _epoch_overhead(result: dict[str, Any], device: str) -> float:
    """Seconds the loop spends at an epoch's end: the held-out metrics and a checkpoint (model + momentum)."""
    task, model = result["task"], result["model"]
    _sync(device)
    began = time.perf_counter()
    task.heldout(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="gpu-cifar-") as folder:
        buffer = io.BytesIO()
        torch.save({"model": state, "momentum": state}, buffer)
        write_atomic(Path(folder) / "checkpoint.pt", buffer.getvalue())
    return time.perf_counter() - began


def train_loss(key: str, s: dict[str, Any], steps: int, held: dict[str, Any]) -> dict[str, Any]:
    """Train one loss for ``steps`` steps; its row of the JSON. The trained task and model go to ``held``."""
    row: dict[str, Any] = {"recipe": LOSSES[key], "steps_planned": steps}
    recipe = gpu_recipe(key, s, steps)
    row["loss"] = {"name": recipe.loss.name, "args": recipe.loss.args}
    cuda = s["device"].startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result, seconds = _timed_train(recipe, s["device"])
    n_train = result["task"].n_train
    steps_per_epoch = n_train // recipe.data.batch_size
    log = result["log"]
    row.update(
        steps=result["step"],
        n_train=n_train,
        n_test=len(result["task"].test),
        steps_per_epoch=steps_per_epoch,
        epochs=result["step"] * recipe.data.batch_size / n_train,
        train_wall_s=seconds,
        train_loop_s=sum(r.get("seconds", 0.0) for r in log),
        final_loss=log[-1].get("loss"),
        log=[dict(r) for r in log],
    )
    if cuda:
        row["train_peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    _say(f"   {key}: {row['steps']} steps ({row['epochs']:.2f} epochs) in {seconds:.1f} s, loss {row['final_loss']}")
    held["result"] = result
    return row


def evaluate(row: dict[str, Any], s: dict[str, Any], held: dict[str, Any]) -> None:
    """The project's evaluation of the trained model (``held``), added to ``row``."""
    result = held.pop("result")
    _sync(s["device"])
    began = time.perf_counter()
    results, _ = result["task"].evaluate(result["model"])
    _sync(s["device"])
    row["eval_wall_s"] = time.perf_counter() - began
    enc, outp = results["encoder"], results["output"]
    row.update(
        knn_accuracy=enc["knn_accuracy"],
        linear_accuracy=enc["linear_probe"]["test_accuracy"],
        linear_train_accuracy=enc["linear_probe"]["train_accuracy"],
        output_knn_accuracy=outp["knn_accuracy"],
        output_linear_accuracy=outp["linear_probe"]["test_accuracy"],
        alignment=results["heldout"]["alignment"],
        uniformity=results["heldout"]["uniformity"],
        uniformity_test_set=outp["uniformity_test_set"],
        effective_rank=outp["effective_rank"],
        feature_dims={"encoder": enc["dim"], "output": outp["dim"]},
    )
    row["anchor_linear_at_same_epochs"] = anchor_linear(row["epochs"])
    _say(
        f"   linear {100 * row['linear_accuracy']:.2f}%  kNN {100 * row['knn_accuracy']:.2f}%  alignment "
        f"{row['alignment']:.3f}  uniformity {row['uniformity']:.3f}  ({row['eval_wall_s']:.1f} s)"
    )


def anchor_linear(epochs: float) -> float | None:
    """The SimCLR anchor's linear accuracy at ``epochs``, linear in log(epochs) between the anchors (rough)."""
    points = sorted((float(e), a) for e, a in ANCHORS["simclr_resnet18_linear_by_epochs"].items())
    if not points[0][0] <= epochs <= points[-1][0]:
        return None
    for (e0, a0), (e1, a1) in zip(points, points[1:]):
        if e0 <= epochs <= e1:
            w = (math.log(epochs) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return a0 + w * (a1 - a0)
    return None


# --- main -----------------------------------------------------------------------------------------------------------
def _terminated(report: Report, signum: int, frame: Any) -> None:
    running = [name for name, p in report.data["phases"].items() if p["status"] == "running"]
    report.data["status"] = f"terminated (signal {signum}) during {', '.join(running) or 'no phase'}"
    report.write()
    _say(f"== {report.data['status']} after {report.data['elapsed_s']:.1f} s")
    sys.exit(128 + signum)


def default_out() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_cifar.json" if out else ROOT / "benchmarks" / "results" / "gpu_cifar.json"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, the tests/fixtures data, a few seconds")
    p.add_argument("--out", type=Path, default=None, help="the JSON (default $OUT/gpu_cifar.json or benchmarks/...)")
    p.add_argument("--data", type=Path, default=None, help="CIFAR-10 folder (default: the standard places)")
    p.add_argument("--budget-s", type=float, default=None, help="seconds of training per loss (default 150)")
    p.add_argument("--deadline-s", type=float, default=None, help="the whole script's target (default 345)")
    p.add_argument("--eval-s", type=float, default=None, help="evaluation seconds per loss assumed (default 30)")
    p.add_argument("--steps", type=int, default=None, help="steps per loss; skips the calibration")
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument("--device", default=None, help="default cuda (cpu with --smoke)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--probe-epochs", type=int, default=None, help="linear-probe epochs (default 100)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (0: all; --smoke: 1)")
    p.add_argument("--no-cudnn-benchmark", action="store_true", help="leave torch.backends.cudnn.benchmark off")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    s = settings(args)
    report = Report(args.out or default_out(), s)
    cudnn_benchmark, threads = torch.backends.cudnn.benchmark, torch.get_num_threads()
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    if s["device"].startswith("cuda"):
        torch.backends.cudnn.benchmark = s["cudnn_benchmark"]  # one input shape for every training step
    previous = signal.signal(signal.SIGTERM, partial(_terminated, report))  # `timeout` stops it: the JSON says so
    # no TensorBoard: the loop writes its event files when it can import it, here into folders deleted at once (and
    # the device image has it installed, this project's CI does not: the smoke run would not test that path)
    tensorboard = sys.modules.get(TENSORBOARD)
    sys.modules[TENSORBOARD] = None  # type: ignore[assignment]  # `from torch.utils.tensorboard import` fails
    try:
        return run(s, report)
    finally:
        if tensorboard is None:
            del sys.modules[TENSORBOARD]
        else:
            sys.modules[TENSORBOARD] = tensorboard
        signal.signal(signal.SIGTERM, previous)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.set_num_threads(threads)


def run(s: dict[str, Any], report: Report) -> int:
    """Every phase in turn; 0 when all of them finished."""
    env = report.phase("environment", environment, s)
    report.data["environment"] = env or {}
    info = report.phase("data", load_data, s) if env is not None else None
    report.data["data"] = info or {}
    steps = s["steps"]
    if info is not None and steps is None:
        calibration = report.phase("calibration", calibrate, s, report)
        steps = None if calibration is None else calibration["steps"]
    if steps is None or info is None:
        report.data["status"] = "failed: " + ", ".join(
            n for n, p in report.data["phases"].items() if p["status"] != "done"
        )
        report.write()
        return 1
    report.data["settings"]["steps"] = steps
    for key in s["losses"]:
        held: dict[str, Any] = {}
        row = report.phase(f"{key}/train", train_loss, key, s, steps, held)
        if row is not None:
            report.data["results"][key] = row
            report.phase(f"{key}/evaluate", evaluate, row, s, held)
        held.clear()
        _free(s["device"])
        report.write()
    failed = [name for name, p in report.data["phases"].items() if p["status"] != "done"]
    report.data["status"] = "done" if not failed else "failed: " + ", ".join(failed)
    report.write()
    _say(f"== {report.data['status']} in {report.data['elapsed_s']:.1f} s; {report.path}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
