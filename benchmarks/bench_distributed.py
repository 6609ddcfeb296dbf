"""Per-rank cost of a contrastive loss under data parallelism: full matrix on every rank vs each rank its share.

    python benchmarks/bench_distributed.py            # 2 gloo processes at 16,384 pairs + the W-rank simulation
    python benchmarks/bench_distributed.py --quick    # small sizes: checks that everything runs (a minute)

1. Two gloo processes on this machine, one thread each, a global batch of ``--pairs`` pairs (16,384) of D=128
   unit vectors split evenly, NT-Xent, CLIP, SigLIP and SupCon through :class:`contrasphere.losses.GatherLoss` in
   ``mode="full"`` (every rank reduces the whole ``N x N`` matrix) and ``mode="local"`` (each rank its share of
   the tiles). Per rank: forward + backward time (median of the repetitions after a warm-up, the slower rank),
   peak resident memory above the inputs, and the loss and gradient, whose difference between the modes is
   reported.
2. A one-process simulation of W = 1, 2, 4, ..., 64 ranks at a fixed global batch (``--sim-pairs``): the time of
   rank 0's share alone (:func:`contrasphere.pairwise.sharded` with ``simulate=True``: no collective), with its
   ratio to ``1 / W`` of the one-rank time.
3. Peak memory per rank at a fixed per-rank batch (``--memory-pairs`` pairs of ``--memory-dim`` dimensions) on
   1, 2 and 4 processes, CLIP in local and ring mode: the gathered embeddings grow with the global batch, the
   ring's blocks do not.
4. The bytes each rank sends per step in each mode (the embeddings' all-gather, the O(N) collectives of the
   sharded reductions, their backward), computed from the sizes.

Each case runs in fresh processes, so that its peak memory is its own. CPU processes on 2 shared cores stand in
for GPUs: the ratios, not the absolute times, are the result. Writes the tables to stdout and everything to
``benchmarks/results/distributed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOSSES = ("nt_xent", "clip", "siglip", "supcon")
RING = ("nt_xent", "clip", "siglip")  # SupCon has no ring mode (its class sums need the whole batch)


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _inputs(name: str, n_local: int, d: int, rank: int, torch):
    g = torch.Generator().manual_seed(100 + rank)
    z_a = torch.nn.functional.normalize(torch.randn(n_local, d, generator=g), dim=1).requires_grad_()
    z_b = torch.nn.functional.normalize(z_a.detach() + 0.3 * torch.randn(n_local, d, generator=g), dim=1)
    z_b.requires_grad_()
    if name == "supcon":
        labels = torch.randint(0, 100, (n_local,), generator=g)
        return (z_a, z_b), lambda a, b: {"z": torch.cat([a, b]), "labels": labels.repeat(2)}
    return (z_a, z_b), lambda a, b: {"z_a": a, "z_b": b}


def _worker(rank: int, world: int, init: str, case: dict, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist

    import contrasphere
    from contrasphere.losses import GatherLoss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    n_local = case["pairs"] // world
    leaves, build = _inputs(case["loss"], n_local, case["dim"], rank, torch)
    loss_fn = GatherLoss(contrasphere.create_loss(case["loss"]), mode=case["mode"])
    base = _rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    times = []
    for rep in range(case["reps"] + 1):
        for leaf in leaves:
            leaf.grad = None
        dist.barrier()
        began = time.perf_counter()
        loss = loss_fn(**build(*leaves))
        loss.backward()
        elapsed = time.perf_counter() - began
        if rep:  # the first is a warm-up
            times.append(elapsed)
    peak = _rss("VmHWM") - base
    result = {
        "rank": rank,
        "seconds": statistics.median(times),
        "times": times,
        "peak_bytes": peak,
        "loss": float(loss),
        "grad": [leaf.grad.clone() for leaf in leaves],
    }
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def run_two(case: dict) -> dict:
    import torch
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, f"{tmp}/init", case, tmp), nprocs=2, join=True)
        ranks = [torch.load(f"{tmp}/rank{r}.pt", weights_only=False) for r in range(2)]
    return {
        **case,
        "seconds": max(r["seconds"] for r in ranks),
        "peak_bytes": max(r["peak_bytes"] for r in ranks),
        "loss": ranks[0]["loss"],
        "grads": [g for r in ranks for g in r["grad"]],
        "rank_seconds": [r["seconds"] for r in ranks],
    }


def memory_sweep(per_rank: int, dim: int, worlds: list[int]) -> list[dict]:
    """Peak memory per rank at a fixed per-rank batch as ranks (and so the global batch) are added: CLIP."""
    import torch
    import torch.multiprocessing as mp

    rows = []
    for world in worlds:
        for mode in ("local", "ring"):
            case = {"loss": "clip", "mode": mode, "pairs": per_rank * world, "dim": dim, "reps": 1}
            with tempfile.TemporaryDirectory() as tmp:
                mp.spawn(_worker, args=(world, f"{tmp}/init", case, tmp), nprocs=world, join=True)
                ranks = [torch.load(f"{tmp}/rank{r}.pt", weights_only=False) for r in range(world)]
            peak = max(r["peak_bytes"] for r in ranks)
            rows.append({"world": world, "mode": mode, "global_pairs": per_rank * world, "peak_bytes": peak})
            print(f"  memory  W={world}  {mode:5s}  global {per_rank * world:6d} pairs  peak {peak / 2**20:7.1f} MiB",
                  flush=True)  # fmt: skip
    return rows


def simulate(pairs: int, dim: int, worlds: list[int], reps: int) -> list[dict]:
    """Rank 0's share of NT-Xent and CLIP at a fixed global batch, for each W, in this process."""
    import torch

    import contrasphere.functional as CF
    from contrasphere.pairwise import sharded

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    z_a = torch.nn.functional.normalize(torch.randn(pairs, dim, generator=g), dim=1).requires_grad_()
    z_b = torch.nn.functional.normalize(torch.randn(pairs, dim, generator=g), dim=1).requires_grad_()
    fns = {"nt_xent": lambda: CF.nt_xent(z_a, z_b, temperature=0.5), "clip": lambda: CF.clip_loss(z_a, z_b)}
    rows = []
    for name, fn in fns.items():
        base = None
        for world in worlds:
            times = []
            for rep in range(reps + 1):
                began = time.perf_counter()
                with sharded(0, world, simulate=True):
                    loss = fn()
                loss.backward()
                if rep:
                    times.append(time.perf_counter() - began)
            seconds = statistics.median(times)
            base = base or seconds
            rows.append({"loss": name, "world": world, "seconds": seconds, "ratio_to_1_over_W": seconds * world / base})
            print(f"  simulated {name:8s} W={world:3d}  rank 0: {seconds:8.4f} s  x W / one rank = "
                  f"{seconds * world / base:5.2f}", flush=True)  # fmt: skip
    return rows


def traffic(pairs: int, dim: int, world: int, loss: str, mode: str, bytes_per: int = 4) -> int:
    """Bytes one rank sends per step (a ring all-gather or all-reduce of S bytes sends about S (W - 1) / W)."""
    n = 2 * pairs if loss in ("nt_xent", "supcon") else pairs  # rows of the reduced matrix
    share = (world - 1) / world
    gather = 2 * pairs * dim * bytes_per * share  # the embeddings' all-gather (both views)
    gather_back = 2 * pairs * dim * bytes_per * 2 * share  # its backward: an all-reduce of the gathered gradient
    if mode == "full":
        return int(gather + gather_back)
    if loss == "siglip":
        extra = 3 * bytes_per * 2 * share  # one scalar all-reduce forward, one backward
    elif loss == "clip":  # rows gathered (n) + columns all-reduced twice forward, once backward
        extra = (n + 3 * 2 * n) * bytes_per * share + n * 2 * bytes_per * share
    else:  # the symmetric pass: a partial log-sum-exp of every row, combined forward (2) and backward (1)
        extra = 3 * 2 * n * bytes_per * share
    return int(gather + gather_back + extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that everything runs")
    parser.add_argument("--pairs", type=int, default=16384)
    parser.add_argument("--sim-pairs", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", choices=("two", "simulate", "memory"), help="run one part only")
    parser.add_argument("--memory-dim", type=int, default=1024, help="embedding size of the memory sweep")
    parser.add_argument("--memory-pairs", type=int, default=2048, help="pairs per rank in the memory sweep")
    parser.add_argument("--out", default=str(HERE / "results" / "distributed.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.sim_pairs, args.reps = 2048, 1024, 1
    import torch

    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}", flush=True)
    results: list[dict] = []
    for loss in LOSSES if args.only in (None, "two") else ():
        pair = {}
        for mode in ("full", "local", "ring") if loss in RING else ("full", "local"):
            case = {"loss": loss, "mode": mode, "pairs": args.pairs, "dim": args.dim, "reps": args.reps}
            pair[mode] = run_two(case)
            print(f"  {loss:8s} {mode:5s}  {pair[mode]['seconds']:8.3f} s per rank  "
                  f"{pair[mode]['peak_bytes'] / 2**20:8.1f} MiB", flush=True)  # fmt: skip
        full, local, ring = pair["full"], pair["local"], pair.get("ring")
        full_grads = full.pop("grads")
        grad_diff = max(float((a - b).abs().max()) for a, b in zip(full_grads, local.pop("grads")))
        ring_grad_diff = (
            None if ring is None else max(float((a - b).abs().max()) for a, b in zip(full_grads, ring.pop("grads")))
        )
        results.append(
            {
                "loss": loss,
                "full": full,
                "local": local,
                "ring": ring,
                "speedup": full["seconds"] / local["seconds"],
                "ring_speedup": None if ring is None else full["seconds"] / ring["seconds"],
                "ring_relative_loss_difference": None
                if ring is None
                else abs(full["loss"] - ring["loss"]) / abs(full["loss"]),
                "ring_max_grad_difference": ring_grad_diff,
                "loss_difference": abs(full["loss"] - local["loss"]),
                "relative_loss_difference": abs(full["loss"] - local["loss"]) / abs(full["loss"]),
                "max_grad_difference": grad_diff,
                "bytes_sent_full": traffic(args.pairs, args.dim, 2, loss, "full"),
                "bytes_sent_local": traffic(args.pairs, args.dim, 2, loss, "local"),
            }
        )
    worlds = [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= args.sim_pairs]
    sim = simulate(args.sim_pairs, args.dim, worlds, args.reps) if args.only in (None, "simulate") else []
    per_rank = 256 if args.quick else args.memory_pairs
    memory = memory_sweep(per_rank, args.memory_dim, [1, 2, 4]) if args.only in (None, "memory") else []
    lines = [
        "",
        f"2 gloo processes, {args.pairs} pairs, D={args.dim}, forward + backward per rank (slower rank, median)",
        f"{'loss':8s} {'full s':>8s} {'local s':>8s} {'speedup':>8s} {'full MiB':>9s} {'local MiB':>9s} "
        f"{'rel dloss':>9s} {'|dgrad|':>9s} {'sent full MB':>12s} {'sent local MB':>13s}",
    ]
    ring_lines = ["", "ring mode (no rank holds the global batch), same runs", f"{'loss':8s} {'ring s':>8s} "
                  f"{'vs full':>8s} {'ring MiB':>9s} {'rel dloss':>9s} {'|dgrad|':>9s}"]  # fmt: skip
    for r in results:
        lines.append(
            f"{r['loss']:8s} {r['full']['seconds']:8.3f} {r['local']['seconds']:8.3f} {r['speedup']:8.2f} "
            f"{r['full']['peak_bytes'] / 2**20:9.1f} {r['local']['peak_bytes'] / 2**20:9.1f} "
            f"{r['relative_loss_difference']:9.1e} {r['max_grad_difference']:9.1e} {r['bytes_sent_full'] / 1e6:12.2f} "
            f"{r['bytes_sent_local'] / 1e6:13.2f}"
        )
        if r["ring"] is not None:
            ring_lines.append(
                f"{r['loss']:8s} {r['ring']['seconds']:8.3f} {r['ring_speedup']:8.2f} "
                f"{r['ring']['peak_bytes'] / 2**20:9.1f} {r['ring_relative_loss_difference']:9.1e} "
                f"{r['ring_max_grad_difference']:9.1e}"
            )
    lines += ring_lines
    lines += ["", f"peak memory per rank above the inputs (CLIP, D={args.memory_dim}), {per_rank} pairs per rank: the "
              "global batch grows with the ranks"]  # fmt: skip
    for row in memory:
        lines.append(f"W={row['world']}  {row['mode']:5s}  global {row['global_pairs']:6d} pairs  "
                     f"{row['peak_bytes'] / 2**20:8.1f} MiB")  # fmt: skip
    lines += ["", f"simulated ranks, {args.sim_pairs} pairs: rank 0's share; ratio = time x W / one rank's time"]
    for row in sim:
        lines.append(
            f"{row['loss']:8s} W={row['world']:3d} {row['seconds']:8.4f} s  ratio {row['ratio_to_1_over_W']:5.2f}"
        )
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    payload = {"settings": vars(args), "cpu": torch.backends.cpu.get_cpu_capability(), "two_processes": results,
               "simulation": sim, "memory": memory}  # fmt: skip
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
