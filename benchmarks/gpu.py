"""The one-shot GPU check of the pairwise engine: correctness on CUDA, then speed and memory against the peers.

    python benchmarks/gpu.py                      # on one CUDA GPU: every phase, under --budget-s seconds
    python benchmarks/gpu.py --smoke              # on the CPU, tiny sizes, a few seconds (what the test runs)
    bash benchmarks/gpu_run.sh                    # what the device machine runs: carried wheels, then this script

Phases, each timed and written to the JSON (``--out``, default benchmarks/results/gpu.json) as soon as it ends, so
that a run killed half-way still leaves what it measured; a phase or case that would not fit in what is left of the
budget is skipped with the reason:

1. **environment**: GPU, driver, torch / triton / Python versions, contrasphere's commit (``CONTRASPHERE_COMMIT``
   or ``git``) and a digest of ``src/contrasphere`` (``--digest`` prints it here, to match a report to a tree), and
   which peers imported (open_clip, inf-cl, siglip-kernel), with their versions or the import error.
2. **matmul**: the GPU's bf16 matrix-multiply rate, ``(N x D) @ (D x N)`` at N = 16,384, D = 768 into a
   preallocated output (the shape of the losses' score matrices; the reference of every achieved fraction below),
   and 8192^3 for comparison with the datasheet.
3. **correctness**: every registered pairwise loss (those with a ``block_size``) on CUDA against the same loss in
   float64 on the CPU (dense), value and the gradient of every differentiable input and parameter, for float32 and
   bfloat16 inputs, through the tiled path (``block_size=64``, N = 300 rows: the last tile is partial) and the
   dense path (``block_size=0``). The bfloat16 reference is the float64 loss of the same bf16-rounded inputs. Errors
   are relative: ``|v - r| / max(|r|, 1e-3)`` for the value, ``||g - r|| / ||r||`` for a gradient (the largest over
   the tensors is reported). It also counts the host-device synchronisations of one float32 forward + backward
   (``torch.cuda.set_sync_debug_mode('warn')``), with the lines that caused them.
4. **speed** (per size, SigLIP, then CLIP, then NT-Xent, the costliest, so that a spent budget cuts it first):
   forward + backward (``torch.autograd.grad`` of the loss with respect to both embeddings) at
   N = 16,384, 65,536 and 262,144 pairs, D = 768, bf16, for NT-Xent (T = 0.1), CLIP (1/T = 1/0.07) and SigLIP
   (t = 10, b = -10): contrasphere with its default ``block_size``, plain dense PyTorch, open_clip's ClipLoss and
   SigLipLoss, inf-cl's ``cal_inf_loss`` and siglip-kernel's ``fused_siglip_loss``. Times are CUDA-event medians of
   up to ``--reps`` reps after one warm-up; peak memory is ``torch.cuda.max_memory_allocated`` over the timed reps
   (inputs included; the inputs' own bytes and what was allocated before the reps are reported beside it). A case
   whose dense matrix would need more than 100 GB, or whose time predicted from the previous size (quadratic in N)
   would not fit, is skipped with the reason; an out-of-memory error, a timeout or an exception is recorded, not
   fatal (and that implementation is not tried at larger N). contrasphere's host-device synchronisations are
   counted once, at the smallest N.

FLOP convention (the "useful" FLOPs of the dense algorithm, the same count for every implementation): an R x C
score matrix of D-dim embeddings costs 2RCD forward and 4RCD backward (the two products G @ B and G^T @ A), 6RCD in
all. NT-Xent's matrix is the symmetric 2N x 2N one (R = C = 2N); CLIP's and SigLIP's are N x N (CLIP reduces its
rows and columns from one matrix). The tiled engine's recomputation in the backward pass (another 2RCD) and
savings from symmetry are not counted either way, so the fraction of the matmul rate compares implementations on
the same work. inf-cl has no NT-Xent: its row is ``cal_inf_loss`` over the same 2N x 2N matrix with the partner as
label and the diagonal not excluded (the same work, not the same loss: its value is not compared).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import math
import os
import platform
import signal
import statistics
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script

from _gpu_common import cuda_info, git, source_digest  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu.json"

# --- settings -----------------------------------------------------------------------------------------------------
TAU, CLIP_SCALE, SIGLIP_SCALE, SIGLIP_BIAS = 0.1, 1 / 0.07, 10.0, -10.0
OBJECTIVES = ("siglip", "clip", "nt_xent")  # per size, cheapest first: a spent budget cuts NT-Xent
SIZES = (16_384, 65_536, 262_144)
DIM = 768
DENSE_LIMIT_BYTES = 100e9  # a dense case whose estimated peak is above this is skipped
# estimated peak of the dense implementations, in copies of the bf16 score matrix: scores, scaled scores, softmax /
# logsigmoid outputs, their gradients (SigLIP also builds a +-1 label matrix)
DENSE_COPIES = {"nt_xent": 6, "clip": 6, "siglip": 8}
# correctness: rows, dimension, queue rows, tile rows (300 = 4 x 64 + 44: the last tile is partial)
CHECK_N, CHECK_D, CHECK_M, CHECK_BLOCK = 300, 72, 333, 64
TOLERANCES = {  # relative error of the value, of each gradient
    "float32": {"value": 1e-4, "grad": 1e-3},
    "bfloat16": {"value": 5e-3, "grad": 2e-2},  # a bf16 gradient is itself rounded to ~2e-3 of its norm
}
VALUE_FLOOR = 1e-3  # the value's relative error is taken against max(|ref|, this)
FIRST = ["nt_xent", "clip", "siglip", "info_nce", "supcon", "uniformity", "align_uniform", "moco", "dcl"]
SMALL_MOCHI = {"n_hard": 8, "s_mix": 6, "s_query": 3}
NO_GRAD_ROLES = ("mix_lambda", "prior", "synthetic")
PEERS = {  # import name: distribution name
    "open_clip": "open_clip_torch",
    "inf_cl": "inf-cl",
    "siglip_kernel": "siglip-kernel",
}
NEEDS_CUDA = ("inf_cl", "siglip_kernel")  # their kernels are Triton only


# --- the report ---------------------------------------------------------------------------------------------------
def _clean(x: Any) -> Any:
    """JSON-safe: non-finite floats become None (a NaN error is a failure, recorded by the pass flag)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, torch.dtype):
        return str(x).removeprefix("torch.")
    return x


class Report:
    """The JSON document, written (atomically) after every phase and every speed case."""

    def __init__(self, path: Path, mode: str, budget_s: float) -> None:
        self.path = path
        self.t0 = time.monotonic()
        self.budget_s = budget_s
        self.data: dict[str, Any] = {
            "schema": 1,
            "mode": mode,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "budget_s": budget_s,
            "phases": {},
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(_clean(self.data), indent=1) + "\n")
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a phase; an exception inside is recorded (with its traceback) and does not stop the run."""
        record: dict[str, Any] = {"status": "running", "started_at_s": round(self.elapsed(), 2)}
        self.data["phases"][name] = record
        t = time.monotonic()
        print(f"\n== {name} (at {self.elapsed():.0f} s of {self.budget_s:.0f})", flush=True)
        try:
            yield record
            if record["status"] == "running":
                record["status"] = "done"
        except Exception as err:  # a phase that breaks is reported; the next one still runs
            record["status"] = "error"
            record["error"] = f"{type(err).__name__}: {err}"
            record["traceback"] = traceback.format_exc(limit=8)
            print(f"   phase {name} failed: {record['error']}", flush=True)
        finally:
            record["seconds"] = round(time.monotonic() - t, 2)
            self.save()

    def skip(self, name: str, reason: str) -> None:
        self.data["phases"][name] = {"status": "skipped", "reason": reason, "seconds": 0.0}
        print(f"\n== {name}: skipped ({reason})", flush=True)
        self.save()


class CaseTimeout(Exception):
    """Raised by the alarm of :func:`time_limit`."""


@contextlib.contextmanager
def time_limit(seconds: float | None, enabled: bool) -> Iterator[None]:
    """Raise :class:`CaseTimeout` in the main thread after ``seconds`` (a safety net on top of the predictions:
    Python regains control between kernel launches, not inside one; only in the main thread, only when enabled)."""
    usable = enabled and seconds is not None and hasattr(signal, "setitimer")
    usable = usable and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"over its {seconds:.1f} s limit")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(float(seconds or 0), 0.05))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device, collect: bool = True) -> None:
    """Release what a case left (``collect``: also the reference cycles an exception's traceback can hold)."""
    if collect:
        gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# --- 1. environment -------------------------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def import_peers(enabled: bool = True) -> dict[str, dict[str, Any]]:
    """Import each peer; what failed is reported with its error, never raised."""
    import importlib

    peers: dict[str, dict[str, Any]] = {}
    for module, dist in PEERS.items():
        if not enabled:
            peers[module] = {"ok": False, "version": None, "error": "not imported (--smoke without --peers)"}
            continue
        try:
            mod = importlib.import_module(module)
            peers[module] = {"ok": True, "version": _version(dist), "file": getattr(mod, "__file__", None)}
        except Exception as err:  # a peer missing or broken on this machine is a row of the report
            peers[module] = {"ok": False, "version": _version(dist), "error": f"{type(err).__name__}: {err}"}
    return peers


def environment(device: torch.device, env: dict[str, Any], peers: bool = True) -> None:
    """Fill ``env`` (in place: what was read before an error stays in the report)."""
    env.update(
        python=sys.version.split()[0],
        platform=platform.platform(),
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        commit=os.environ.get("CONTRASPHERE_COMMIT") or git("rev-parse", "HEAD"),
        source_digest=source_digest(),
        cpu_count=os.cpu_count(),
        device=str(device),
        matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        float32_matmul_precision=torch.get_float32_matmul_precision(),
    )
    try:
        import contrasphere

        env.update(contrasphere=contrasphere.__version__, contrasphere_file=contrasphere.__file__)
    except Exception as err:  # the engine does not import: every later phase will say so too
        env["contrasphere"] = f"not importable: {type(err).__name__}: {err}"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    env["git_dirty"] = None if dirty is None else bool(dirty)
    try:
        import triton  # type: ignore[import-untyped,import-not-found,unused-ignore]

        env["triton"] = triton.__version__
    except Exception as err:  # no triton: the engine's kernels cannot run, which the report must say
        env["triton"] = f"not importable: {type(err).__name__}: {err}"
    if device.type == "cuda":
        env.update(cuda_info(device, "driver_version,clocks.sm,clocks.max.sm,power.limit"))
    try:  # which path the engine takes for a bf16 tensor on this device, where it says (best effort)
        from contrasphere.pairwise import _tiling

        probe = getattr(_tiling, "use_triton", None)
        sample = torch.ones(2, 2, device=device, dtype=torch.bfloat16)
        env["engine_use_triton"] = "no use_triton in the engine" if probe is None else bool(probe(sample))
    except Exception as err:  # the engine's probe changed: say so, do not stop
        env["engine_use_triton"] = f"{type(err).__name__}: {err}"
    env["peers"] = import_peers(peers)


# --- 2. the matmul rate -------------------------------------------------------------------------------------------
def time_matmul(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, reps: int) -> dict[str, Any]:
    """Median time of ``(m x k) @ (k x n)`` into a preallocated output, and the FLOP rate ``2mkn / t``."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, generator=g, device=device, dtype=dtype)
    b = torch.randn(k, n, generator=g, device=device, dtype=dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)

    def product() -> None:
        torch.mm(a, b, out=out)

    t = statistics.median(_time_reps(product, device, warmup=3, reps=reps))
    return {"m": m, "k": k, "n": n, "dtype": dtype, "reps": reps, "ms": t * 1e3, "flops_per_s": 2 * m * k * n / t}


def _time_reps(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int) -> list[float]:
    """Seconds of each of ``reps`` calls after ``warmup`` calls: CUDA events on a GPU (one event sync at the end of
    each rep, nothing else), the host clock on a CPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return times


def matmul_phase(device: torch.device, smoke: bool) -> dict[str, Any]:
    if smoke:
        shapes = {"bf16_loss_shape": (128, 16, 128)}
    else:
        shapes = {"bf16_loss_shape": (16_384, DIM, 16_384), "bf16_square_8192": (8192, 8192, 8192)}
    result: dict[str, Any] = {}
    for key, (m, k, n) in shapes.items():
        result[key] = time_matmul(m, k, n, torch.bfloat16, device, reps=3 if smoke else 20)
        r = result[key]
        print(f"   {key:18s} {m} x {k} x {n}: {r['ms']:.3f} ms, {r['flops_per_s'] / 1e12:.1f} TFLOP/s", flush=True)
    result["reference_flops_per_s"] = result["bf16_loss_shape"]["flops_per_s"]
    result["reference"] = "bf16_loss_shape: (N x D) @ (D x N), N = 16,384, D = 768, the shape of the losses' products"
    _free(device)
    return result


# --- 3. correctness -------------------------------------------------------------------------------------------------
def pairwise_losses() -> list[str]:
    """Every registered loss that goes through the pairwise engine (it takes a ``block_size``), core ones first."""
    import contrasphere
    from contrasphere.losses import loss_spec

    names = [n for n in contrasphere.list_losses() if "block_size" in loss_spec(n).hyperparameters]
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def build_loss(name: str, dim: int, **kwargs: Any) -> torch.nn.Module:
    """``create_loss`` with what a loss needs to know of the data (as tests/conftest.py ``make_loss`` does)."""
    import contrasphere

    if name == "swav":
        kwargs = {"dim": dim, "num_prototypes": 10, **kwargs}
    if name == "amcl":
        kwargs = {"dim": dim, "num_heads": 1, **kwargs}
    if name in ("isogclr", "sogclr"):
        kwargs = {"num_samples": 1000, **kwargs}
    if name == "mochi":
        kwargs = {**SMALL_MOCHI, **kwargs}
    return contrasphere.create_loss(name, **kwargs)


def master_inputs(name: str, n: int, d: int, m: int, seed: int) -> dict[str, torch.Tensor]:
    """float64 CPU inputs for every role the loss's spec names (unit vectors, labels with positives, a queue...);
    MoCHi also gets its synthetic negatives (drawn here, so that CPU and GPU see the same ones)."""
    from contrasphere.losses import loss_spec

    g = torch.Generator().manual_seed(seed)

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)

    z_a = unit(n, d)
    z_b = F.normalize(z_a + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    views = torch.stack([z_a, z_b, unit(n, d)])
    by_role = {
        "z_a": z_a,
        "z_b": z_b,
        "z": torch.cat([z_a, z_b]),
        "labels": torch.randint(0, max(n // 2, 1), (2 * n,), generator=g),
        "q": z_a,
        "k": z_b,
        "queue": unit(m, d),
        "views": views,
        "modalities": views,
        "mix_index": torch.randperm(n, generator=g),
        "mix_lambda": 0.5 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64),
        "prior": torch.randn(n, 2, generator=g, dtype=torch.float64),
    }
    spec = loss_spec(name)
    inputs = {role: by_role[role] for role in spec.inputs}
    if name == "mochi":
        from contrasphere.functional.mixing import mochi_negatives

        inputs["synthetic"] = mochi_negatives(
            inputs["q"], inputs["queue"], **SMALL_MOCHI, generator=torch.Generator().manual_seed(seed + 1)
        )
    return inputs


def cast_inputs(
    name: str, master: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device, *, reference: bool
) -> dict[str, torch.Tensor]:
    """The inputs rounded to ``dtype``; on ``device`` (the case), or as float64 on the CPU (its reference: the same
    rounded values, exactly). Floating inputs that are not shared (a queue) nor weights get ``requires_grad``."""
    from contrasphere.losses import loss_spec

    spec = loss_spec(name)
    out = {}
    for role, value in master.items():
        if value.is_floating_point():
            value = value.to(dtype)
            value = value.double() if reference else value.to(device)
            value.requires_grad_(role not in spec.shared and role not in NO_GRAD_ROLES)
        else:
            value = value if reference else value.to(device)
        out[role] = value
    return out


def evaluate(module: torch.nn.Module, inputs: dict[str, torch.Tensor], seed: int | None) -> tuple[Any, dict[str, Any]]:
    """The loss and its gradient with respect to every input that requires it and every parameter."""
    if seed is not None:  # the same draws (feature transformation's, on the CPU generator) on both sides
        torch.manual_seed(seed)
    value = module(**inputs)
    tensors = {role: v for role, v in inputs.items() if v.requires_grad}
    tensors.update({f"param:{k}": p for k, p in module.named_parameters()})
    grads = torch.autograd.grad(value, list(tensors.values()), allow_unused=True)
    return value.detach(), dict(zip(tensors, grads))


def relative_error(got: Any, ref: Any, floor: float = 0.0) -> float:
    """``||got - ref|| / max(||ref||, floor)`` in float64 on the CPU; ``inf`` if ``got`` is not finite or missing."""
    if got is None or ref is None:
        return 0.0 if got is None and ref is None else math.inf
    g = torch.as_tensor(got).detach().to("cpu", torch.float64)
    r = torch.as_tensor(ref).detach().to("cpu", torch.float64)
    if g.shape != r.shape or not bool(torch.isfinite(g).all()):
        return math.inf
    denom = max(float(torch.linalg.vector_norm(r)), floor, 1e-300)
    return float(torch.linalg.vector_norm(g - r)) / denom


def compare(
    value: Any, grads: dict[str, Any], ref_value: Any, ref_grads: dict[str, Any], tol: dict[str, float]
) -> dict[str, Any]:
    """Errors of a loss and its gradients against the reference, and whether both are within ``tol``.

    A missing or extra gradient, a NaN or a shape mismatch counts as an infinite error (JSON: null), never a pass.
    """
    value_err = relative_error(value, ref_value, VALUE_FLOOR)
    grad_errs = {key: relative_error(grads.get(key), ref_grads.get(key)) for key in sorted({*grads, *ref_grads})}
    grad_err = max(grad_errs.values(), default=0.0)
    return {
        "value": float(value) if value is not None else None,
        "ref_value": float(ref_value) if ref_value is not None else None,
        "value_rel_err": value_err,
        "grad_rel_err": grad_err,
        "grad_rel_errs": grad_errs,
        "tolerance": dict(tol),
        "pass": bool(value_err <= tol["value"] and grad_err <= tol["grad"]),
    }


def count_syncs(fn: Callable[[], Any], device: torch.device) -> dict[str, Any] | None:
    """Host-device synchronisations of ``fn()`` (``set_sync_debug_mode('warn')``), with where they came from."""
    if device.type != "cuda" or not hasattr(torch.cuda, "set_sync_debug_mode"):
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    where = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in syncs})
    return {"count": len(syncs), "where": where[:8]}


def correctness_case(
    name: str,
    dtype: torch.dtype,
    block_size: int,
    device: torch.device,
    *,
    n: int = CHECK_N,
    d: int = CHECK_D,
    m: int = CHECK_M,
    seed: int = 0,
    build: Callable[..., torch.nn.Module] = build_loss,
    syncs: bool = False,
) -> dict[str, Any]:
    """One loss, dtype and path on ``device`` against float64 dense on the CPU. ``build`` makes the module that runs
    on ``device`` (the reference is always :func:`build_loss`); the test injects a wrong one to see it flagged."""
    master = master_inputs(name, n, d, m, seed)
    ref_module = build_loss(name, d, block_size=0).double()
    ref_value, ref_grads = evaluate(ref_module, cast_inputs(name, master, dtype, device, reference=True), seed)
    module = build(name, d, block_size=block_size)
    if build is build_loss:  # the same parameters and state as the reference's (deterministic today, but be sure)
        module.load_state_dict(build_loss(name, d, block_size=0).state_dict())
    module = module.to(device)  # float32 parameters, the inputs in `dtype` (mixed precision as in training)
    inputs = cast_inputs(name, master, dtype, device, reference=False)
    fresh = copy.deepcopy(module) if syncs else None  # a stateful loss starts the second call from the same state
    value, grads = evaluate(module, inputs, seed)
    result = compare(value, grads, ref_value, ref_grads, TOLERANCES[str(dtype).removeprefix("torch.")])
    if fresh is not None:  # the second call (kernels compiled): its syncs are the loss's own, not the seeding's
        result["host_syncs"] = count_syncs(lambda: evaluate(fresh, inputs, None), device)
    return result


def correctness_phase(
    report: Report, record: dict[str, Any], device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    names = args.losses or pairwise_losses()
    n, d, m, block = (40, 16, 23, 16) if args.smoke else (CHECK_N, CHECK_D, CHECK_M, CHECK_BLOCK)
    deadline = time.monotonic() + args.correctness_s
    section: dict[str, Any] = {
        "settings": {
            "n": n,
            "d": d,
            "queue_rows": m,
            "tiled_block_size": block,
            "reference": "the same loss, block_size=0, float64 on the CPU, of the same (rounded) inputs",
            "tolerances": TOLERANCES,
            "value_error": f"|v - r| / max(|r|, {VALUE_FLOOR})",
            "grad_error": "||g - r|| / ||r||, the largest over the inputs and parameters",
            "budget_s": args.correctness_s,
        },
        "cases": [],
        "skipped": [],
    }
    report.data["correctness"] = section
    alarms = not args.smoke
    for name in names:
        for dtype in (torch.float32, torch.bfloat16):
            for path, bs in (("tiled", block), ("dense", 0)):
                case: dict[str, Any] = {"loss": name, "dtype": dtype, "path": path, "block_size": bs}
                left = deadline - time.monotonic()
                if left < 1.0:
                    section["skipped"].append({**case, "reason": "the correctness budget is spent"})
                    continue
                t = time.monotonic()
                try:
                    with time_limit(min(left, args.case_cap_s), alarms):
                        case.update(
                            correctness_case(name, dtype, bs, device, n=n, d=d, m=m, syncs=dtype == torch.float32)
                        )
                except CaseTimeout as err:
                    case.update({"pass": False, "error": f"timeout: {err}"})
                except Exception as err:  # a loss that raises on this device is a failed row
                    case.update({"pass": False, "error": f"{type(err).__name__}: {err}"[:500]})
                case["seconds"] = round(time.monotonic() - t, 3)
                section["cases"].append(case)
                _print_check(case)
        report.save()
    _free(device)
    cases = section["cases"]
    section["summary"] = {
        "cases": len(cases),
        "passed": sum(bool(c.get("pass")) for c in cases),
        "failed": [f"{c['loss']}/{_dt(c['dtype'])}/{c['path']}" for c in cases if not c.get("pass")],
        "skipped": len(section["skipped"]),
    }
    if section["skipped"]:
        record["status"] = "partial"
        record["reason"] = f"{len(section['skipped'])} case(s) skipped: the correctness budget was spent"
    return section


def _dt(dtype: Any) -> str:
    return {"torch.float32": "fp32", "torch.bfloat16": "bf16"}.get(str(dtype), str(dtype))


def _fmt(x: Any, spec: str = ".1e") -> str:
    return "   -   " if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _print_check(c: dict[str, Any]) -> None:
    ok = "ok  " if c.get("pass") else "FAIL"
    syncs = c.get("host_syncs")
    extra = f" syncs={syncs['count']}" if syncs else ""
    err = f"  {c['error']}" if c.get("error") else ""
    print(
        f"   {ok} {c['loss']:24s} {_dt(c['dtype'])} {c['path']:5s} value {_fmt(c.get('value_rel_err'))} "
        f"grad {_fmt(c.get('grad_rel_err'))} {c['seconds']:6.2f}s{extra}{err}",
        flush=True,
    )


# --- 4. speed and memory ------------------------------------------------------------------------------------------
def flop_count(objective: str, n: int, d: int) -> int:
    """Useful FLOPs of forward + backward (module docstring): 6 R C D over the objective's score matrix."""
    side = 2 * n if objective == "nt_xent" else n
    return 6 * side * side * d


def dense_bytes(objective: str, n: int) -> float:
    """Estimated peak bytes of the dense implementations: a few bf16 copies of the score matrix."""
    side = 2 * n if objective == "nt_xent" else n
    return DENSE_COPIES[objective] * side * side * 2.0


def dense_impls(device: torch.device) -> dict[str, Callable[..., torch.Tensor]]:
    """The few-line dense references in plain PyTorch."""

    def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        n = z_a.shape[0]
        z = torch.cat([z_a, z_b])
        logits = (z @ z.T) / TAU
        logits.fill_diagonal_(float("-inf"))
        targets = torch.cat([torch.arange(n, 2 * n, device=device), torch.arange(n, device=device)])
        return F.cross_entropy(logits, targets)

    def clip(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        logits = CLIP_SCALE * z_a @ z_b.T
        targets = torch.arange(z_a.shape[0], device=device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

    def siglip(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        logits = SIGLIP_SCALE * z_a @ z_b.T + SIGLIP_BIAS
        labels = 2 * torch.eye(z_a.shape[0], device=device, dtype=logits.dtype) - 1
        return -F.logsigmoid(labels * logits).sum() / z_a.shape[0]

    return {"nt_xent": nt_xent, "clip": clip, "siglip": siglip}


def implementations(
    objective: str, device: torch.device, peers: dict[str, dict[str, Any]]
) -> list[tuple[str, Callable[..., torch.Tensor] | None, str]]:
    """``(name, fn(z_a, z_b) -> loss or None, note or the reason it cannot run)`` for each implementation."""
    import contrasphere

    hyper = {"nt_xent": {"temperature": TAU}, "clip": {"init_temperature": 0.07}, "siglip": {}}[objective]
    module = contrasphere.create_loss(objective, **hyper).to(device)
    rows: list[tuple[str, Callable[..., torch.Tensor] | None, str]] = [
        ("contrasphere", lambda a, b: module(a, b), "create_loss with the default block_size")
    ]

    def peer(name: str) -> str | None:
        info = peers.get(name, {})
        if not info.get("ok"):
            return f"{name} not importable: {info.get('error', 'not tried')}"
        if name in NEEDS_CUDA and device.type != "cuda":
            return f"{name} needs CUDA"
        return None

    scalar = lambda x: torch.tensor(float(x), device=device)  # noqa: E731
    if objective in ("nt_xent", "clip"):
        why = peer("inf_cl")
        if why:
            rows.append(("inf_cl", None, why))
        else:
            from inf_cl import cal_inf_loss  # type: ignore[import-untyped,import-not-found,unused-ignore]

            if objective == "clip":
                rows.append(
                    (
                        "inf_cl",
                        lambda a, b: (cal_inf_loss(a * CLIP_SCALE, b) + cal_inf_loss(b * CLIP_SCALE, a)) / 2,
                        "cal_inf_loss both ways (float32 Triton kernels, head_dim 256), scale folded into q",
                    )
                )
            else:

                def inf_nt_xent(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                    n = a.shape[0]
                    z = torch.cat([a, b])
                    labels = torch.cat([torch.arange(n, 2 * n, device=device), torch.arange(n, device=device)])
                    return cal_inf_loss(z / TAU, z, labels=labels)

                rows.append(("inf_cl", inf_nt_xent, "2N x 2N with the diagonal kept: the same work, not the same loss"))
    if objective in ("clip", "siglip"):
        why = peer("open_clip")
        if why:
            rows.append(("open_clip", None, why))
        else:
            from open_clip.loss import ClipLoss, SigLipLoss  # type: ignore[import-untyped,import-not-found,unused-ignore]

            if objective == "clip":
                clip_loss, scale = ClipLoss(), scalar(CLIP_SCALE)
                rows.append(("open_clip", lambda a, b: clip_loss(a, b, scale), "open_clip.loss.ClipLoss"))
            else:
                siglip_loss, t, bias = SigLipLoss(), scalar(SIGLIP_SCALE), scalar(SIGLIP_BIAS)
                rows.append(("open_clip", lambda a, b: siglip_loss(a, b, t, bias), "open_clip.loss.SigLipLoss"))
    if objective == "siglip":
        why = peer("siglip_kernel")
        if why:
            rows.append(("siglip_kernel", None, why))
        else:
            from siglip_kernel import fused_siglip_loss  # type: ignore[import-untyped,import-not-found,unused-ignore]

            log_t, bias = scalar(math.log(SIGLIP_SCALE)), scalar(SIGLIP_BIAS)
            rows.append(
                (
                    "siglip_kernel",
                    lambda a, b: fused_siglip_loss(a, b, log_t, bias),
                    "fused_siglip_loss, backend auto (bf16: chunked cuBLAS + Triton BCE)",
                )
            )
    rows.append(("dense", dense_impls(device)[objective], "cat, matmul, fill_diagonal_, cross_entropy / logsigmoid"))
    return rows


def speed_inputs(n: int, d: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 unit vectors and correlated positives, leaves that require grad (random: never zeros)."""
    g = torch.Generator(device=device).manual_seed(seed)
    z_a = F.normalize(torch.randn(n, d, generator=g, device=device), dim=1)
    z_b = F.normalize(z_a + 0.5 * torch.randn(n, d, generator=g, device=device), dim=1)
    return z_a.bfloat16().requires_grad_(), z_b.bfloat16().requires_grad_()


def speed_case(
    fn: Callable[..., torch.Tensor],
    n: int,
    d: int,
    device: torch.device,
    reps: int,
    cap_s: float,
    syncs: bool = False,
) -> dict[str, Any]:
    """Warm-up, one timed rep, then as many more (up to ``reps``) as fit in ``cap_s``; peak memory over the timed
    reps. Inside each timed rep: the forward, ``torch.autograd.grad``, the end event and its sync, nothing else.
    ``syncs``: afterwards, count the host-device synchronisations of one more (untimed) step."""
    z_a, z_b = speed_inputs(n, d, device, seed=n)
    inputs_bytes = 2 * z_a.numel() * z_a.element_size()
    t0 = time.monotonic()

    def step() -> None:
        loss = fn(z_a, z_b)
        torch.autograd.grad(loss, (z_a, z_b))

    loss = fn(z_a, z_b)  # the warm-up: compilation, autotuning, handles
    grads = torch.autograd.grad(loss, (z_a, z_b))
    value = float(loss.detach())
    grads_finite = all(bool(torch.isfinite(g.float()).all()) for g in grads)
    del loss, grads
    _sync(device)
    warm_s = time.monotonic() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = _time_reps(step, device, warmup=0, reps=1)
    more = int(max(0.0, cap_s - (time.monotonic() - t0)) // max(times[0], 1e-6))
    if reps > 1 and more > 0:
        times += _time_reps(step, device, warmup=0, reps=min(reps - 1, more))
    result: dict[str, Any] = {
        "status": "ok",
        "value": value,
        "grads_finite": grads_finite,
        "warmup_s": round(warm_s, 3),
        "reps": len(times),
        "ms": statistics.median(times) * 1e3,
        "ms_all": [round(t * 1e3, 3) for t in times],
        "inputs_bytes": inputs_bytes,
    }
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        result.update(peak_bytes=peak, base_bytes=base, peak_above_base_bytes=peak - base)
    else:
        result.update(peak_bytes=None, memory_note="not measured on the CPU")
    if syncs:
        result["host_syncs"] = count_syncs(step, device)
    return result


def speed_phase(report: Report, record: dict[str, Any], device: torch.device, args: argparse.Namespace) -> None:
    peers = report.data.get("environment", {}).get("peers", {})
    rate = (report.data.get("matmul") or {}).get("reference_flops_per_s")
    sizes, d = args.sizes, args.dim
    section: dict[str, Any] = {
        "settings": {
            "sizes": sizes,
            "d": d,
            "dtype": "bfloat16",
            "reps": args.reps,
            "hyperparameters": {
                "nt_xent_T": TAU,
                "clip_scale": CLIP_SCALE,
                "siglip_t": SIGLIP_SCALE,
                "siglip_b": SIGLIP_BIAS,
            },
            "flops": "useful FLOPs of the dense algorithm: 6 R C D, R = C = 2N (NT-Xent) or N (CLIP, SigLIP)",
            "matmul_reference_flops_per_s": rate,
            "dense_limit_bytes": args.dense_limit_gb * 1e9,
            "timing": "CUDA events, median of the timed reps after one warm-up; peak = max_memory_allocated",
        },
        "cases": [],
    }
    report.data["speed"] = section
    last: dict[tuple[str, str], tuple[int, float]] = {}  # (objective, impl) -> (n, seconds per rep)
    failed: dict[tuple[str, str], str] = {}  # (objective, impl) -> how it failed at a smaller size
    alarms = not args.smoke
    for n in sizes:
        for objective in OBJECTIVES:
            try:
                impls = implementations(objective, device, peers)
            except Exception as err:  # contrasphere itself broken: every row says so
                impls = [("contrasphere", None, f"{type(err).__name__}: {err}")]
            reference_value = None
            for impl, fn, note in impls:
                case: dict[str, Any] = {"objective": objective, "impl": impl, "n": n, "note": note}
                case["flops"] = flop_count(objective, n, d)
                left = report.remaining() - args.reserve_s
                cap = min(args.case_cap_s, left)
                prev = last.get((objective, impl))
                predicted = prev[1] * (n / prev[0]) ** 2 if prev else None
                if fn is None:
                    case.update(status="skipped", reason=note)
                elif (objective, impl) in failed:
                    case.update(status="skipped", reason=failed[(objective, impl)])
                elif impl in ("dense", "open_clip") and dense_bytes(objective, n) > args.dense_limit_gb * 1e9:
                    gb, limit = dense_bytes(objective, n) / 1e9, args.dense_limit_gb
                    case.update(status="skipped", reason=f"the dense matrix needs about {gb:.3g} GB (limit {limit:g})")
                elif left < 2.0:
                    case.update(status="skipped", reason=f"the budget is spent ({left:.0f} s left)")
                elif prev is not None and predicted is not None and 2 * predicted > cap:
                    case.update(
                        status="skipped",
                        reason=f"predicted {predicted:.1f} s per rep (from N = {prev[0]}, quadratic): warm-up and "
                        f"one rep do not fit in {cap:.0f} s",
                    )
                else:
                    t = time.monotonic()
                    try:
                        with time_limit(cap + 5.0, alarms):
                            syncs = impl == "contrasphere" and n == sizes[0]
                            case.update(speed_case(fn, n, d, device, args.reps, cap, syncs=syncs))
                        last[(objective, impl)] = (n, case["ms"] / 1e3)
                    except torch.cuda.OutOfMemoryError as err:
                        case.update(status="oom", reason=str(err).splitlines()[0][:300])
                    except CaseTimeout as err:
                        case.update(status="timeout", reason=str(err))
                    except Exception as err:  # a peer that breaks on this input is a row of the report
                        case.update(status="error", reason=f"{type(err).__name__}: {err}"[:500])
                    case["seconds"] = round(time.monotonic() - t, 2)
                    _free(device, collect=case.get("status") != "ok")
                    if case.get("status") in ("oom", "timeout", "error"):
                        failed[(objective, impl)] = f"{case['status']} at N = {n}: a larger N is not tried"
                if case.get("status") == "ok":
                    if rate:
                        achieved = case["flops"] / (case["ms"] / 1e3)
                        case.update(flops_per_s=achieved, matmul_fraction=achieved / rate)
                    if impl == "contrasphere":
                        reference_value = case["value"]
                    comparable = not (impl == "inf_cl" and objective == "nt_xent")
                    if reference_value is not None and comparable and impl != "contrasphere":
                        case["value_rel_diff_vs_contrasphere"] = abs(case["value"] - reference_value) / max(
                            abs(reference_value), VALUE_FLOOR
                        )
                section["cases"].append(case)
                _print_speed(case)
                report.save()
    section["targets"] = targets(section["cases"])
    if any(c["status"] == "skipped" and "budget" in c.get("reason", "") for c in section["cases"]):
        record["status"] = "partial"
        record["reason"] = "some cases skipped: the budget was spent"


def _print_speed(c: dict[str, Any]) -> None:
    head = f"   {c['objective']:8s} N={c['n']:<7d} {c['impl']:14s}"
    if c["status"] != "ok":
        print(f"{head} {c['status']}: {c.get('reason', '')}", flush=True)
        return
    peak = c.get("peak_bytes")
    mem = f"{peak / 1e9:7.2f} GB" if peak is not None else "    -   "
    frac = c.get("matmul_fraction")
    frac_s = f"{100 * frac:5.1f}% of mm" if frac is not None else ""
    print(f"{head} {c['ms']:10.2f} ms {mem} {frac_s}  reps={c['reps']}  value={c['value']:.4f}", flush=True)


def targets(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's GPU targets, read off the measured cases (None where a needed case did not run)."""

    def get(objective: str, impl: str, n: int) -> dict[str, Any] | None:
        for c in cases:
            if (c["objective"], c["impl"], c["n"], c["status"]) == (objective, impl, n, "ok"):
                return c
        return None

    out: dict[str, Any] = {}
    ours, theirs = get("siglip", "contrasphere", 65_536), get("siglip", "siglip_kernel", 65_536)
    if ours and theirs:
        ratio = ours["ms"] / theirs["ms"]
        out["siglip_65k_vs_siglip_kernel"] = {
            "time_ratio": ratio,
            "peak_gb": ours["peak_bytes"] / 1e9,
            "pass": ratio <= 2.0 and ours["peak_bytes"] <= 2e9,
            "target": "<= 2x siglip-kernel's time and <= 2 GB",
        }
    for objective in ("nt_xent", "clip"):
        for n in sorted({c["n"] for c in cases}):
            ours, theirs = get(objective, "contrasphere", n), get(objective, "inf_cl", n)
            if ours and theirs and ours.get("peak_bytes") is not None:
                ratio = ours["ms"] / theirs["ms"]
                out[f"{objective}_{n}_vs_inf_cl"] = {
                    "time_ratio": ratio,
                    "memory_ratio": ours["peak_bytes"] / theirs["peak_bytes"],
                    "pass": ratio <= 1.5 and ours["peak_bytes"] <= theirs["peak_bytes"],
                    "target": "within 1.5x of inf-cl's time at equal or lower memory",
                }
    for c in cases:
        if c["impl"] == "contrasphere" and c["n"] >= 65_536 and c["status"] == "ok" and "matmul_fraction" in c:
            out[f"{c['objective']}_{c['n']}_matmul_fraction"] = {
                "fraction": c["matmul_fraction"],
                "pass": c["matmul_fraction"] >= 0.5,
                "target": ">= 50% of the bf16 matmul rate at N >= 65k",
            }
    return out


# --- the summary table ------------------------------------------------------------------------------------------------
def print_summary(data: dict[str, Any]) -> None:
    print("\n== summary", flush=True)
    env = data.get("environment", {})
    print(f"   {env.get('gpu', env.get('device'))}  torch {env.get('torch')}  triton {env.get('triton')}")
    print(f"   commit {env.get('commit')}  source {env.get('source_digest')}")
    for name, info in env.get("peers", {}).items():
        state = info.get("version") if info.get("ok") else f"missing ({info.get('error', '')[:80]})"
        print(f"   peer {name}: {state}")
    for name, phase in data.get("phases", {}).items():
        why = f"  ({phase['reason']})" if phase.get("reason") else ""
        print(f"   phase {name:12s} {phase.get('status'):8s} {phase.get('seconds', 0):7.1f} s{why}")
    mm = data.get("matmul") or {}
    if mm.get("reference_flops_per_s"):
        print(f"   bf16 matmul (reference): {mm['reference_flops_per_s'] / 1e12:.1f} TFLOP/s")
    check = data.get("correctness")
    if check:
        s = check.get("summary", {})
        print(f"   correctness: {s.get('passed')}/{s.get('cases')} passed, {s.get('skipped')} skipped")
        for failed in s.get("failed", []):
            print(f"     failed: {failed}")
        synced = sorted({c["loss"] for c in check["cases"] if (c.get("host_syncs") or {}).get("count")})
        if synced:
            print(f"     host syncs in: {', '.join(synced)}")
    speed = data.get("speed")
    if speed:
        print(f"   {'objective':8s} {'N':>7s} {'impl':14s} {'ms':>10s} {'peak GB':>8s} {'% mm':>6s}  status")
        for c in speed["cases"]:
            ms = f"{c['ms']:10.2f}" if c.get("ms") is not None else "         -"
            peak = f"{c['peak_bytes'] / 1e9:8.2f}" if c.get("peak_bytes") is not None else "       -"
            frac = f"{100 * c['matmul_fraction']:6.1f}" if c.get("matmul_fraction") is not None else "     -"
            print(f"   {c['objective']:8s} {c['n']:7d} {c['impl']:14s} {ms} {peak} {frac}  {c['status']}")
        for key, t in speed.get("targets", {}).items():
            print(f"   target {key}: {'pass' if t['pass'] else 'MISS'}  {_clean({k: v for k, v in t.items()})}")
    print(f"   total {data.get('elapsed_s')} s", flush=True)


# --- main -------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report (written after every phase)")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, a few losses, one rep: checks the script")
    p.add_argument("--budget-s", type=float, default=210.0, help="wall-clock budget of all phases (default 210)")
    p.add_argument("--correctness-s", type=float, default=None, help="budget of the correctness phase")
    p.add_argument("--case-cap-s", type=float, default=30.0, help="the longest one case may take (default 30)")
    p.add_argument("--reserve-s", type=float, default=5.0, help="budget kept back for the summary (default 5)")
    p.add_argument("--phases", default="matmul,correctness,speed", help="comma-separated phases to run")
    p.add_argument("--losses", default=None, help="comma-separated losses to check (default: every pairwise loss)")
    p.add_argument("--sizes", default=None, help="comma-separated N of the speed phase")
    p.add_argument("--dim", type=int, default=None, help="embedding dimension of the speed phase")
    p.add_argument("--reps", type=int, default=None, help="timed reps per speed case (default 5; smoke 1)")
    p.add_argument("--device", default=None, help="cuda (default), or cpu to try the full run's logic on a CPU")
    p.add_argument("--dense-limit-gb", type=float, default=DENSE_LIMIT_BYTES / 1e9, help="skip dense cases above")
    p.add_argument("--peers", action="store_true", help="with --smoke: import the peers too (on a GPU: always)")
    p.add_argument("--digest", action="store_true", help="print the digest of src/contrasphere and exit")
    args = p.parse_args(argv)
    args.losses = (
        args.losses.split(",") if args.losses else (["nt_xent", "clip", "siglip", "mochi"] if args.smoke else None)
    )
    args.sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([64] if args.smoke else list(SIZES))
    args.dim = args.dim or (16 if args.smoke else DIM)
    args.reps = args.reps or (1 if args.smoke else 5)
    if args.correctness_s is None:
        args.correctness_s = 0.35 * args.budget_s
    args.phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.digest:
        print(source_digest())
        return 0
    kind = args.device or ("cpu" if args.smoke else "cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        report = Report(args.out, "cuda", args.budget_s)
        report.data["error"] = "no CUDA device: run with --smoke (or --device cpu) on a CPU"
        report.save()
        print(report.data["error"], file=sys.stderr)
        return 2
    device = torch.device("cuda", torch.cuda.current_device()) if kind == "cuda" else torch.device(kind)
    report = Report(args.out, "smoke" if args.smoke else device.type, args.budget_s)
    report.data["argv"] = sys.argv[1:] if argv is None else argv
    with report.phase("environment") as record:
        report.data["environment"] = {}
        environment(device, report.data["environment"], peers=args.peers or not args.smoke)
        for key in ("gpu", "torch", "triton", "contrasphere", "commit", "source_digest", "engine_use_triton"):
            print(f"   {key}: {report.data['environment'].get(key)}")
        for name, info in report.data["environment"]["peers"].items():
            print(f"   peer {name}: {info.get('version') if info['ok'] else info['error'][:120]}")
    torch.manual_seed(0)
    for name, run in (("matmul", None), ("correctness", correctness_phase), ("speed", speed_phase)):
        if name not in args.phases:
            report.skip(name, "not asked for (--phases)")
            continue
        if report.remaining() < args.reserve_s + 2:
            report.skip(name, f"the budget is spent ({report.remaining():.0f} s left)")
            continue
        with report.phase(name) as record:
            if name == "matmul":
                report.data["matmul"] = matmul_phase(device, args.smoke)
            else:
                args.correctness_s = min(args.correctness_s, report.remaining() - args.reserve_s)
                run(report, record, device, args)  # type: ignore[misc]
    report.save()
    print_summary(report.data)
    print(f"\nwrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
