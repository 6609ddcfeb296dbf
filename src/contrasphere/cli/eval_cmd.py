"""``contrasphere eval RUN``: evaluate a trained checkpoint again and rewrite its report."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import ConfigError
from .train_cmd import print_summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained checkpoint (kNN, linear probe, STS, retrieval) and write its report",
        description="Load a run folder (or its checkpoint.pt) written by `contrasphere train`, run the evaluation "
        "protocols of its recipe, and write eval.json and report/ into the run folder.",
        epilog="example:\n  contrasphere eval runs/digits\n"
        "  contrasphere eval runs/digits --set eval.probe_protocol=paper",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a run folder or its checkpoint.pt")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an eval.* field of the saved recipe, e.g. --set eval.knn_k=20",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")


def run(args: argparse.Namespace) -> int:
    from ..train.config import apply_overrides
    from ..train.rundir import write_atomic
    from ..train.runs import evaluate_run, load_run

    bad = [o for o in args.overrides if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"eval only overrides eval.* fields, got {', '.join(bad)}; retrain to change the others")
    began = time.perf_counter()
    recipe, task, model, state = load_run(args.checkpoint, args.device)
    apply_overrides(recipe, args.overrides)
    folder = Path(args.checkpoint)
    folder = folder if folder.is_dir() else folder.parent
    results = evaluate_run(folder, task, model, recipe, steps=int(state["step"]))
    results["eval_seconds"] = time.perf_counter() - began
    write_atomic(folder / "eval.json", json.dumps(results, indent=2))
    print_summary(results, folder)
    return 0
