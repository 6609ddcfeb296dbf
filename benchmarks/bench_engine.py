"""Speed and memory of the pairwise engine against dense PyTorch, the paper's code and the peer libraries.

    python benchmarks/bench_engine.py                 # the full table (about 15 minutes on 2 cores)
    python benchmarks/bench_engine.py --quick         # small sizes, a minute: checks that everything runs
    python benchmarks/bench_engine.py --thp           # the same with PyTorch's transparent huge pages on

Each case (objective, implementation, size, dtype) runs in its own process, so that its peak memory is its own:
the peak resident memory during the timed runs minus the resident memory with the inputs allocated. Times are the
median of several forward + backward passes after one warm-up. The same run measures the machine's matrix-multiply
rate (float32 and bfloat16, (M x D) @ (D x M) into a preallocated output), and reports each loss's achieved rate,
counting 6 * M * M * D flops for a forward + backward over an M x M matrix of D-dim embeddings. Peer libraries come
from the ``bench`` extra (pytorch-metric-learning, lightly, open_clip); a missing one is reported, not fatal.
Writes the table to stdout and everything to benchmarks/results/engine[-thp].json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# --- implementations (run inside the case's process) -----------------------------------------------------------------
def _implementations():
    import torch
    import torch.nn.functional as F

    from contrasphere import functional as CF

    def dense_nt_xent(z_a, z_b, tau):
        z = torch.cat([z_a, z_b])
        logits = (z @ z.T) / tau
        logits.fill_diagonal_(-float("inf"))
        n = z_a.shape[0]
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
        return F.cross_entropy(logits, targets)

    def dense_clip(z_a, z_b, scale):
        logits = scale * z_a @ z_b.T
        targets = torch.arange(z_a.shape[0])
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

    def dense_siglip(z_a, z_b, scale, bias):
        logits = scale * z_a @ z_b.T + bias
        labels = 2 * torch.eye(z_a.shape[0]) - 1
        return -F.logsigmoid(labels * logits).sum() / z_a.shape[0]

    def paper_uniformity(z, t):  # Wang & Isola, Figure 5
        return torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log()

    def pml_nt_xent(z_a, z_b, tau):
        from pytorch_metric_learning.losses import NTXentLoss

        n = z_a.shape[0]
        labels = torch.arange(n).repeat(2)
        return NTXentLoss(temperature=tau)(torch.cat([z_a, z_b]), labels)

    def lightly_nt_xent(z_a, z_b, tau):
        from lightly.loss import NTXentLoss

        return NTXentLoss(temperature=tau)(z_a, z_b)

    def open_clip_clip(z_a, z_b, scale):
        from open_clip.loss import ClipLoss

        return ClipLoss()(z_a, z_b, torch.tensor(scale))

    def open_clip_siglip(z_a, z_b, scale, bias):
        from open_clip.loss import SigLipLoss

        return SigLipLoss()(z_a, z_b, torch.tensor(scale), torch.tensor(bias))

    tau, t, scale, bias = 0.1, 2.0, 10.0, -10.0
    return {
        ("nt_xent", "contrasphere"): lambda a, b: CF.nt_xent(a, b, temperature=tau),
        ("nt_xent", "dense"): lambda a, b: dense_nt_xent(a, b, tau),
        ("nt_xent", "pytorch-metric-learning"): lambda a, b: pml_nt_xent(a, b, tau),
        ("nt_xent", "lightly"): lambda a, b: lightly_nt_xent(a, b, tau),
        ("uniformity", "contrasphere"): lambda a, b: CF.uniformity(a, t=t),
        ("uniformity", "paper (pdist)"): lambda a, b: paper_uniformity(a, t),
        ("clip", "contrasphere"): lambda a, b: CF.clip_loss(a, b, logit_scale=scale),
        ("clip", "dense"): lambda a, b: dense_clip(a, b, scale),
        ("clip", "open_clip"): lambda a, b: open_clip_clip(a, b, scale),
        ("siglip", "contrasphere"): lambda a, b: CF.siglip_loss(a, b, logit_scale=scale, logit_bias=bias),
        ("siglip", "dense"): lambda a, b: dense_siglip(a, b, scale, bias),
        ("siglip", "open_clip"): lambda a, b: open_clip_siglip(a, b, scale, bias),
    }


def matrix_rows(objective: str, n: int) -> int:
    """The side M of the score matrix: NT-Xent contrasts 2N views, the others N."""
    return 2 * n if objective == "nt_xent" else n


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_case(case: dict) -> dict:
    """Time one case in this process; returns the measurements."""
    import torch
    import torch._dynamo  # noqa: F401  (a custom operator's first call imports it: ~150 MB, once per process, not per call)

    torch.manual_seed(0)
    fn = _implementations()[(case["objective"], case["impl"])]
    dtype = getattr(torch, case["dtype"])
    n, d = case["n"], case["d"]
    z_a = _normalize(torch.randn(n, d)).to(dtype).requires_grad_()
    z_b = _normalize(z_a.detach().float() + 0.3 * torch.randn(n, d)).to(dtype).requires_grad_()
    base = _rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current resident size
    times, value = [], None
    for rep in range(case["reps"] + 1):
        z_a.grad = z_b.grad = None
        start = time.perf_counter()
        loss = fn(z_a, z_b)
        loss.backward()
        elapsed = time.perf_counter() - start
        value = float(loss)
        if rep > 0 or case["reps"] == 0:
            times.append(elapsed)
        if case["reps"] == 0:
            break
    peak = _rss("VmHWM") - base
    seconds = statistics.median(times)
    m = matrix_rows(case["objective"], n)
    return {
        **case,
        "seconds": seconds,
        "runs": times,
        "peak_bytes": peak,
        "value": value,
        "gflops": 6 * m * m * d / seconds / 1e9,
    }


def _normalize(x):
    import torch.nn.functional as F

    return F.normalize(x, dim=1)


def bf16_skip_reason() -> str | None:
    """Why this machine cannot run the bfloat16 cases in useful time (None if it can)."""
    import torch

    from contrasphere.pairwise import native_low_precision

    if native_low_precision(torch.device("cpu"), torch.bfloat16):
        return None
    return (
        f"this CPU has no bfloat16 matrix units (no AVX512-BF16 or AMX; torch reports "
        f"{torch.backends.cpu.get_cpu_capability()}): a bfloat16 product runs emulated, about 75x slower than "
        "float32, so the bfloat16 rows and the bfloat16 matmul probe are skipped"
    )


def matmul_rates(sizes: list[tuple[int, int]], reps: int = 5) -> list[dict]:
    import torch

    out = []
    dtypes = (torch.float32,) if bf16_skip_reason() else (torch.float32, torch.bfloat16)
    for m, d in sizes:
        for dtype in dtypes:
            a = torch.randn(m, d).to(dtype)
            c = torch.empty(m, m, dtype=dtype)
            torch.mm(a, a.T, out=c)
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                torch.mm(a, a.T, out=c)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            out.append(
                {"m": m, "d": d, "dtype": str(dtype).removeprefix("torch."), "gflops": 2 * m * m * d / seconds / 1e9}
            )
    return out


# --- the plan ---------------------------------------------------------------------------------------------------------
def plan(quick: bool) -> list[dict]:
    def case(objective, impl, n, d=128, dtype="float32", reps=3):
        return {"objective": objective, "impl": impl, "n": n, "d": d, "dtype": dtype, "reps": reps}

    if quick:
        quick = [case(o, i, 256 if "metric" in i else 1024, reps=2) for (o, i) in _keys()]
        return quick + [case("nt_xent", "contrasphere", 1024, 512), case("nt_xent", "contrasphere", 4096, reps=1)]
    big = 16_384
    cases = [
        case("nt_xent", "contrasphere", big),
        case("nt_xent", "contrasphere", big, dtype="bfloat16"),
        case("nt_xent", "dense", big, reps=2),
        case("nt_xent", "lightly", big, reps=1),
        # pytorch-metric-learning's NT-Xent builds a (positives x negative pairs) mask: cubic memory, so N=256
        case("nt_xent", "pytorch-metric-learning", 256),
        case("nt_xent", "contrasphere", 256),
        case("nt_xent", "dense", 256),
        case("nt_xent", "contrasphere", 4096),
        case("nt_xent", "dense", 4096),
        case("nt_xent", "contrasphere", 8192, 512, reps=2),
        case("nt_xent", "contrasphere", 8192, 512, dtype="bfloat16", reps=2),
        case("uniformity", "contrasphere", big),
        case("uniformity", "paper (pdist)", big),
        case("clip", "contrasphere", big),
        case("clip", "dense", big, reps=2),
        case("clip", "open_clip", big, reps=2),
        case("siglip", "contrasphere", big),
        case("siglip", "dense", big, reps=2),
        case("siglip", "open_clip", big, reps=2),
        case("nt_xent", "contrasphere", 65_536, reps=0),
    ]
    return cases


def _keys():
    return [
        ("nt_xent", "contrasphere"),
        ("nt_xent", "dense"),
        ("nt_xent", "pytorch-metric-learning"),
        ("nt_xent", "lightly"),
        ("uniformity", "contrasphere"),
        ("uniformity", "paper (pdist)"),
        ("clip", "contrasphere"),
        ("clip", "dense"),
        ("clip", "open_clip"),
        ("siglip", "contrasphere"),
        ("siglip", "dense"),
        ("siglip", "open_clip"),
    ]


def spawn(case: dict, env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(case)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {**case, "error": tail[0][:200]}
    return json.loads(lines[-1])


def table(results: list[dict], rates: list[dict]) -> str:
    f32 = {r["d"]: r["gflops"] for r in rates if r["dtype"] == "float32"}
    lines = [
        "matrix multiply: " + ", ".join(f"{r['dtype']} D={r['d']} {r['gflops']:.0f} GFLOP/s" for r in rates),
        "",
        (
            f"{'objective':<11} {'implementation':<24} {'N':>6} {'D':>4} {'dtype':<9} {'median s':>9} "
            f"{'peak MB':>8} {'GFLOP/s':>8} {'% f32 mm':>8} {'value':>10} {'rel. diff':>9}"
        ),
    ]
    reference = {
        (r["objective"], r["n"], r["d"]): r
        for r in results
        if r["impl"] == "contrasphere" and r["dtype"] == "float32" and "error" not in r
    }
    for r in results:
        head = f"{r['objective']:<11} {r['impl']:<24} {r['n']:>6} {r['d']:>4} {r['dtype']:<9}"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']}")
            continue
        ref = reference.get((r["objective"], r["n"], r["d"]))
        diff = "" if ref is None else f"{abs(r['value'] - ref['value']) / max(abs(ref['value']), 1e-12):.1e}"
        pct = 100 * r["gflops"] / f32[r["d"]] if r["d"] in f32 else float("nan")
        lines.append(
            f"{head} {r['seconds']:>9.2f} {r['peak_bytes'] / 2**20:>8.0f} {r['gflops']:>8.0f} {pct:>7.0f}% "
            f"{r['value']:>10.5f} {diff:>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check that every case runs")
    parser.add_argument("--thp", action="store_true", help="run the cases with THP_MEM_ALLOC_ENABLE=1")
    parser.add_argument("--only", default="", help="run only the cases whose objective or implementation has this")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/engine[-thp].json)")
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE="1" if args.thp else "0")
    import torch

    rates = matmul_rates([(4096, 128), (4096, 512)])
    cases = [c for c in plan(args.quick) if args.only in c["objective"] or args.only in c["impl"]]
    skip = bf16_skip_reason()
    if skip:
        print(f"skipped {sum(c['dtype'] == 'bfloat16' for c in cases)} case(s): {skip}", file=sys.stderr)
        cases = [c for c in cases if c["dtype"] != "bfloat16"]
    results = []
    for i, case in enumerate(cases, 1):
        print(
            f"[{i}/{len(cases)}] {case['objective']} {case['impl']} N={case['n']} D={case['d']} {case['dtype']}",
            file=sys.stderr,
            flush=True,
        )
        results.append(spawn(case, env))
    print(table(results, rates))
    out = Path(
        args.out or HERE / "results" / f"engine{'-thp' if args.thp else ''}{'-quick' if args.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "thp": args.thp,
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_skipped": skip,
    }
    out.write_text(json.dumps({"machine": meta, "matmul": rates, "results": results}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
