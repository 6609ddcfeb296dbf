"""``contrasphere metrics``: alignment, uniformity and friends of an embedding file, as a table and as JSON."""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from .. import metrics
from ..errors import ConfigError
from ..io import load_tensor, split_key

DEFAULT_MAX_POINTS = 50_000

EPILOG = """\
examples:
  contrasphere metrics --example
  contrasphere metrics emb.npy --positives emb_aug.npy
  contrasphere metrics emb.safetensors:image --positives emb.safetensors:text --out report.json
  contrasphere metrics emb.pt --pairs pairs.npy --t 2 --alpha 2
  contrasphere metrics emb.npy --views view1.npy view2.npy view3.npy
  contrasphere metrics emb.npy --views views.npy

Embeddings are projected onto the unit sphere first (the paper's metrics are defined there); with --no-normalize
they must already lie on it. Uniformity is exact up to --max-points embeddings and measured on a seeded random
subset above that; anisotropy, Wasserstein uniformity, alpha-ReQ and the effective rank use every embedding.
LiDAR needs several views of each sample: one (V, N, D) file, or V files of (N, D) whose row n is the same sample
(--example uses the digits and their shifted copies as 2 views).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "metrics",
        help="alignment, uniformity, anisotropy, spectra, LiDAR, modality gap and norms of an embedding file",
        description="Measure a set of embeddings: alignment of positive pairs and uniformity (Wang & Isola 2020), "
        "anisotropy (mean cosine of distinct pairs), Wasserstein uniformity (Fang et al. 2024), effective rank "
        "(RankMe), alpha-ReQ (eigenspectrum decay), LiDAR (given views), the gap and cosines between two paired "
        "sets, and the norms. Reads .npy, .pt or .safetensors (FILE:NAME picks one tensor of several); prints a "
        "table and writes JSON.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("embeddings", nargs="?", help="an (N, D) embedding file")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--positives", metavar="FILE", help="an (N, D) file whose row i is the positive of row i")
    group.add_argument("--pairs", metavar="FILE", help="a (P, 2) integer file of row indices of positive pairs")
    p.add_argument(
        "--views",
        metavar="FILE",
        nargs="+",
        help="views of each sample for LiDAR: one (V, N, D) file, or V files of (N, D) (row n: the same sample)",
    )
    p.add_argument("--example", action="store_true", help="measure the example embeddings shipped with contrasphere")
    p.add_argument("--alpha", type=float, default=2.0, help="alignment exponent (default: 2, as in the paper)")
    p.add_argument("--t", type=float, default=2.0, help="uniformity scale (default: 2, as in the paper)")
    p.add_argument("--no-normalize", dest="normalize", action="store_false", help="require embeddings on the sphere")
    p.add_argument(
        "--max-points",
        type=int,
        default=DEFAULT_MAX_POINTS,
        help=f"measure uniformity on a random subset this large (default: {DEFAULT_MAX_POINTS}; 0 means all)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of that subset (default: 0)")
    p.add_argument("--out", default="metrics.json", help="where to write the JSON (default: metrics.json)")


def example_paths() -> tuple[Path, Path]:
    """The shipped example: sklearn digits as unit pixel vectors and their one-pixel-shifted positives."""
    root = resources.files("contrasphere") / "examples"
    return Path(str(root / "digits.npy")), Path(str(root / "digits_shifted.npy"))


def run(args: argparse.Namespace) -> int:
    if args.example:
        if args.embeddings or args.pairs or args.positives or args.views:
            raise ConfigError("--example measures the shipped files; give no embedding file with it")
        emb_path, pos_path = example_paths()
        args.embeddings, args.positives = str(emb_path), str(pos_path)
        args.views = [args.embeddings, args.positives]  # two views of each digit: itself and its shifted copy
    if not args.embeddings:
        raise ConfigError("give an embedding file (or --example to measure the shipped example)")
    start = time.perf_counter()
    z = load_tensor(*split_key(args.embeddings))
    positives = load_tensor(*split_key(args.positives)) if args.positives else None
    pairs = load_tensor(*split_key(args.pairs)) if args.pairs else None
    views = None
    if args.views:
        loaded = [load_tensor(*split_key(v)) for v in args.views]
        views = loaded[0] if len(loaded) == 1 else loaded
    max_points = None if args.max_points == 0 else args.max_points
    result: dict[str, Any] = {
        "embeddings": args.embeddings,
        "positives": args.positives,
        "pairs": args.pairs,
        "views": args.views,
        **metrics.report(
            z,
            positives,
            views=views,
            pairs=pairs,
            alpha=args.alpha,
            t=args.t,
            normalize=args.normalize,
            max_points=max_points,
            seed=args.seed,
        ),
    }
    result["seconds"] = round(time.perf_counter() - start, 3)
    print(format_table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def format_table(r: dict[str, Any]) -> str:
    norms = r["norms"]
    projected = "projected onto the unit sphere" if r["normalize"] else "used as given (on the unit sphere)"
    rows = [
        ("embeddings", f"{r['embeddings']}  ({r['n']} x {r['dim']}, {projected})"),
        ("norms", f"mean {norms['mean']:.4g}, std {norms['std']:.3g}, min {norms['min']:.4g}, max {norms['max']:.4g}"),
    ]
    if "alignment" in r:
        src = r["positives"] or r["pairs"]
        what = f"{r['alignment']:.4f}   over {r['n_pairs']} pairs from {src}; 0 = pairs coincide, lower is better"
        rows.append((f"alignment (alpha={r['alpha']:g})", what))
    subset = "" if r["uniformity_points"] == r["n"] else f" on a random {r['uniformity_points']} of {r['n']}"
    optimum = r["uniformity_optimum"]
    best = "" if optimum is None else f"; the uniform distribution on S^{r['dim'] - 1} gives {optimum:.4f}"
    rows.append((f"uniformity (t={r['t']:g})", f"{r['uniformity']:.4f}{subset}   lower is more uniform{best}"))
    w2 = f"{r['wasserstein_uniformity']:.4f}   -W2 to N(0, I/D), higher is more uniform; 0 at best, -1.4142 = one point"
    rows.append(("Wasserstein uniformity", w2))
    rows.append(("anisotropy", f"{r['anisotropy']:.4f}   mean cosine of distinct pairs; 0 = isotropic, 1 = one point"))
    rows.append(("effective rank", f"{r['effective_rank']:.2f}   of at most {min(r['n'], r['dim'])} (RankMe)"))
    if r["alpha_req"] is None:
        rows.append(("alpha-ReQ", "none   fewer than 2 non-zero covariance eigenvalues: no decay to fit"))
    else:
        first, last = r["alpha_req_ranks"]
        decay = f"{r['alpha_req']:.4f}   power-law decay of the covariance spectrum over ranks {first}-{last}"
        rows.append(("alpha-ReQ", f"{decay}; 0 = flat"))
    if "lidar" in r:
        views = f"{r['lidar_views']} views of {r['lidar_samples']} samples"
        bound = min(r["dim"], r["lidar_samples"] - 1)
        rows.append(("LiDAR", f"{r['lidar']:.2f}   of at most about {bound} ({views}; Thilak et al.)"))
    if "modality_gap" in r:
        rows.append(("mean gap to positives", f"{r['modality_gap']:.4f}   distance between the two sets' means"))
        s = r["modality_spread"]
        cosines = f"{s['matching']:.4f} paired, {s['non_matching']:.4f} unpaired"
        rows.append(("cosine to positives", f"{cosines}; within each set {s['intra_a']:.4f} and {s['intra_b']:.4f}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
