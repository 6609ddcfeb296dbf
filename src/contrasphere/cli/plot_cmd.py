"""``contrasphere plot``: figures of embeddings (needs the ``viz`` extra)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..io import load_tensor, split_key


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="figures: 2-d features on the circle with their vMF density of angles",
        description="Plot (N, 2) embeddings on the circle S^1 with a von Mises-Fisher kernel density of their angles "
        "(Wang & Isola, Figure 3). Reads .npy, .pt or .safetensors (FILE:NAME picks one tensor); writes a PNG and a "
        "JSON of the density on a grid.",
    )
    p.add_argument("kind", choices=["circle"], help="the figure to draw")
    p.add_argument("embeddings", help="an (N, 2) embedding file")
    p.add_argument("--labels", metavar="FILE", help="an (N,) integer file of class labels (one density per class)")
    p.add_argument("--kappa", type=float, default=25.0, help="concentration of the vMF kernel (default: 25)")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--out", default="circle.png", help="the PNG to write (default: circle.png; JSON beside it)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import viz

    z = load_tensor(*split_key(args.embeddings))
    labels = load_tensor(*split_key(args.labels)) if args.labels else None
    out = viz.plot_circle(z, args.out, labels=labels, kappa=args.kappa, title=args.title)
    grid = np.linspace(-np.pi, np.pi, 361)
    density = viz.vmf_density(viz.angles_of(z), grid, kappa=args.kappa)
    record = {
        "embeddings": args.embeddings,
        "n": int(z.shape[0]),
        "kappa": args.kappa,
        "grid": grid.tolist(),
        "density": density.tolist(),
        "png": str(out),
    }
    json_path = Path(out).with_suffix(".json")
    json_path.write_text(json.dumps(record) + "\n")
    print(f"wrote {out} and {json_path}")
    return 0
