"""``contrasphere reproduce EXPERIMENT``: the paper's findings on real data, as a report folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce the paper's findings (vision, language, image-text) and write a report",
        description="Run one of the reproductions of Wang & Isola's findings on real data and write a report folder "
        "(report.md, PNG figures, runs.json with every run's raw results). The default budget finishes in under "
        "an hour on a 2-core CPU; --budget scales the epochs and the sweep size (e.g. 10 on a GPU).",
        epilog="examples:\n  contrasphere reproduce image-text\n  contrasphere reproduce vision --budget 0.5 "
        "--out runs/vision-half",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("experiment", choices=["vision", "language", "image-text"])
    p.add_argument("--budget", type=float, default=1.0, help="scale of epochs and sweep (default: 1.0)")
    p.add_argument("--out", default=None, help="report folder (default: runs/reproduce-EXPERIMENT)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    from ..reproduce import run as reproduce

    out = Path(args.out or Path("runs") / f"reproduce-{args.experiment}")
    raw = reproduce(args.experiment, str(out), budget=args.budget, progress=args.progress)
    print(f"report: {out / 'report.md'}  (raw results: {out / 'runs.json'}; {raw['wall_seconds'] / 60:.1f} min)")
    return 0
