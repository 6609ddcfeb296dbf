"""``contrasphere train RECIPE``: train, evaluate and write a report folder."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import ConfigError

EPILOG = """examples:
  contrasphere train digits                          # the demo: about a minute on a laptop CPU
  contrasphere train cifar10-nt-xent --set train.epochs=5 --set data.batch_size=256
  contrasphere train cifar10-align-uniform --set loss.args.t=3 --out runs/au-t3
  contrasphere train digits --tiny                   # a few steps on a few samples (smoke test)
  contrasphere train digits --show                   # print the recipe with every field, do nothing
  contrasphere train digits --out runs/d --resume    # continue an interrupted run exactly
  torchrun --nproc_per_node 2 -m contrasphere.cli train digits   # the same run on 2 processes

The run folder holds recipe.json, checkpoint.pt (written atomically), log.jsonl (per epoch: loss, held-out
alignment and uniformity, throughput), eval.json and report/ (report.md and PNG figures).
`contrasphere list recipes` shows the recipes; `contrasphere list datasets` the datasets."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an encoder from a recipe, evaluate it and write a report",
        description="Train an encoder with a recipe (data, augmentation, model, loss, optimiser, schedule), then "
        "evaluate it (kNN and linear probe, STS, or retrieval) and write a report folder with JSON and figures.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="a recipe name (see `contrasphere list recipes`) or a recipe.json file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set optim.lr=0.05 (repeatable)",
    )
    p.add_argument("--tiny", action="store_true", help="the recipe's tiny preset: a few steps on a few samples")
    p.add_argument("--out", default=None, help="run folder (default: runs/RECIPE)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="discard the run already in the folder and start again")
    p.add_argument("--show", action="store_true", help="print the full recipe as JSON and exit")
    p.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip the evaluation and report")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEPS",
        help="stop after this many steps, as a preemption would (resume with --resume)",
    )


def load_recipe(name: str, tiny: bool, overrides: list[str]):
    from ..train.config import Recipe, apply_overrides
    from ..train.recipes import get_recipe

    if name.endswith(".json"):
        try:
            saved = json.loads(Path(name).read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read the recipe {name}: {err}") from None
        recipe = Recipe.from_dict(saved)
        if tiny:
            raise ConfigError("--tiny applies to registered recipes, not to a recipe.json")
        return apply_overrides(recipe, overrides)
    return get_recipe(name, "tiny" if tiny else "default", overrides)


def run(args: argparse.Namespace) -> int:
    from ..distributed import rank
    from ..train import train
    from ..train.rundir import write_atomic
    from ..train.runs import evaluate_run

    recipe = load_recipe(args.recipe, args.tiny, args.overrides)
    if args.show:
        print(recipe.to_json())
        return 0
    out = Path(args.out or Path("runs") / recipe.name)
    if rank() == 0:
        print(f"contrasphere train {recipe.name}: {recipe.description}\n  run folder: {out}", file=sys.stderr)
    began = time.perf_counter()
    result = train(
        recipe, out, resume=args.resume, overwrite=args.overwrite, progress=args.progress, stop_after=args.stop_after
    )
    seconds = time.perf_counter() - began
    if rank() != 0:
        return 0
    if result["step"] < result["total_steps"]:
        print(f"stopped at step {result['step']} of {result['total_steps']}; continue with --resume", file=sys.stderr)
        return 0
    trained = result["step"] - result["start_step"]
    if not args.evaluate:
        print(
            f"trained {trained} steps in {seconds:.1f} s (now at step {result['step']}); "
            f"checkpoint: {out / 'checkpoint.pt'}"
        )
        return 0
    results = evaluate_run(out, result["task"], result["model"], recipe, steps=result["step"])
    results["train_seconds"] = seconds
    results["total_seconds"] = time.perf_counter() - began
    write_atomic(out / "eval.json", json.dumps(results, indent=2))
    print_summary(results, out)
    return 0


def print_summary(results: dict, out: Path) -> None:
    from ..train.runs import _flat

    width = max(len(k) for k, _ in _flat(results))
    for key, value in _flat(results):
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {text}")
    print(f"report: {out / 'report' / 'report.md'}  (results: {out / 'eval.json'})")
