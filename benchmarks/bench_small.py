"""Small batches: contrasphere's losses against the plain dense PyTorch a user would write, side by side.

Below the tiling threshold every loss should cost no more than the few lines of dense PyTorch it replaces (the
issue's target: at most 1.1x at N = 256 and 1,024 pairs on CPU). Each case times forward + backward of both, the
two interleaved rep by rep in one process (so that load changes hit both alike), and reports medians and their
ratio. The references are the usual code: NT-Xent as ``cat``, matmul, ``fill_diagonal_``, ``cross_entropy``
(SimCLR implementations); InfoNCE as one ``cross_entropy``; CLIP as open_clip's ``ClipLoss``; SigLIP as
open_clip's ``SigLipLoss`` (``-logsigmoid`` of signed logits); uniformity as the paper's ``pdist`` code.

    python benchmarks/bench_small.py                  # N = 256 and 1024 pairs, D = 128, 40 reps
    python benchmarks/bench_small.py --sizes 64 256 --reps 100 --out benchmarks/results/small.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import contrasphere
import contrasphere.functional as CF

T = 0.1


def _nt_xent_plain(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n = a.shape[0]
    z = torch.cat([a, b])
    logits = z @ z.T / T
    logits.fill_diagonal_(float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, labels)


def _info_nce_plain(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(a @ b.T / T, torch.arange(a.shape[0]))


def _clip_plain(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    logits = (1 / T) * a @ b.T  # open_clip ClipLoss.get_logits + forward
    labels = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _siglip_plain(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    logits = 10.0 * a @ b.T - 10.0  # open_clip SigLipLoss: scale 10, bias -10
    labels = 2 * torch.eye(a.shape[0]) - 1
    return -F.logsigmoid(labels * logits).sum() / a.shape[0]


def _uniformity_plain(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.pdist(a, p=2).pow(2).mul(-2.0).exp().mean().log()  # Wang & Isola's code, t = 2


CASES: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "nt_xent": (lambda a, b: CF.nt_xent(a, b, temperature=T), _nt_xent_plain),
    "info_nce": (lambda a, b: CF.info_nce(a, b, temperature=T), _info_nce_plain),
    "clip": (lambda a, b: CF.clip_loss(a, b, logit_scale=1 / T), _clip_plain),
    "siglip": (lambda a, b: CF.siglip_loss(a, b, logit_scale=10.0, logit_bias=-10.0), _siglip_plain),
    "uniformity": (lambda a, b: CF.uniformity(a, t=2.0), _uniformity_plain),
}


def _time(fn: Callable[..., torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = fn(a, b)
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="pairs per batch")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/small.json"))
    parser.add_argument(
        "--no-value-checks", action="store_true", help="contrasphere.set_value_checks('never'): what a CUDA call does"
    )
    args = parser.parse_args()
    if args.no_value_checks:
        contrasphere.set_value_checks("never")

    rows = []
    print(f"{'loss':<11} {'N':>5} {'contrasphere ms':>16} {'plain ms':>9} {'ratio':>6}")
    for n in args.sizes:
        g = torch.Generator().manual_seed(n)
        a0 = F.normalize(torch.randn(n, args.dim, generator=g), dim=1)
        b0 = F.normalize(a0 + 0.5 * torch.randn(n, args.dim, generator=g), dim=1)
        for name in args.cases:
            ours, plain = CASES[name]
            a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
            torch.testing.assert_close(ours(a, b), plain(a, b), rtol=1e-4, atol=1e-5)  # the same loss
            for _ in range(3):  # warm-up: allocator, thread pool
                _time(ours, a, b), _time(plain, a, b)
            times: dict[str, list[float]] = {"contrasphere": [], "plain": []}
            for _ in range(args.reps):
                times["contrasphere"].append(_time(ours, a, b))
                times["plain"].append(_time(plain, a, b))
            med = {k: statistics.median(v) for k, v in times.items()}
            ratio = med["contrasphere"] / med["plain"]
            rows.append({"loss": name, "pairs": n, "dim": args.dim, "median_s": med, "ratio": ratio})
            print(f"{name:<11} {n:>5} {1e3 * med['contrasphere']:>16.2f} {1e3 * med['plain']:>9.2f} {ratio:>6.2f}")
    result = {
        "what": "forward + backward, median over interleaved reps, float32",
        "reps": args.reps,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "value_checks": not args.no_value_checks,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
