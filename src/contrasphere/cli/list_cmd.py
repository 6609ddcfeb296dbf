"""``contrasphere list``: what is registered."""

from __future__ import annotations

import argparse
import json

from ..losses import LossSpec, list_losses, loss_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list the registered losses, training recipes or datasets",
        description="List the registered losses (with their papers), the training recipes, or the datasets.",
    )
    p.add_argument(
        "what",
        nargs="?",
        default="losses",
        choices=["losses", "recipes", "datasets"],
        help="what to list (default: losses)",
    )
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print JSON instead of a table")
    form.add_argument("--markdown", action="store_true", help="print the comparison table of docs/objectives.md")


def describe(spec: LossSpec) -> dict:
    """One registry entry as a JSON-ready dict: name, paper, inputs (and whether it takes sample ids), engine use
    and distributed support."""
    uses_engine = "block_size" in spec.hyperparameters
    distributed = "gathers " + ", ".join(i for i in spec.inputs if i not in spec.shared)
    if spec.indices:
        distributed += f" ({', '.join(spec.indices)} offset by rank)"
    if spec.shared:
        distributed += f"; {', '.join(spec.shared)} shared, not gathered"
    return {
        "name": spec.name,
        "class": spec.cls.__name__,
        "function": f"{spec.fn.__name__}" if spec.fn is not None else None,
        "paper": spec.paper,
        "inputs": list(spec.inputs),
        "takes_ids": spec.takes_ids,
        "engine": uses_engine,
        "dense_pairs": spec.dense_pairs,
        "distributed": distributed,
    }


def markdown() -> str:
    rows = [describe(loss_spec(name)) for name in list_losses()]
    lines = [
        "| name | module | function | paper | inputs | tiled engine | distributed (`GatherLoss`) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        engine = "yes (`block_size`)" if r["engine"] else "not needed: no N x N matrix"
        if r["dense_pairs"]:
            engine = "no: dense N x N"
        inputs = ", ".join(f"`{i}`" for i in r["inputs"]) + (" (+ `ids`)" if r["takes_ids"] else "")
        function = f"`{r['function']}`" if r["function"] else "(own math: state, per-step draws or learned parameters)"
        cells = [f"`{r['name']}`", f"`{r['class']}`", function, r["paper"], inputs, engine, r["distributed"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _recipes() -> list[dict]:
    from ..train.recipes import get_recipe, list_recipes

    out = []
    for name in list_recipes():
        r = get_recipe(name)
        out.append(
            {
                "name": name,
                "task": r.task,
                "dataset": r.data.dataset,
                "encoder": r.model.encoder,
                "loss": r.loss.name,
                "description": r.description,
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    if args.what in ("recipes", "datasets"):
        from ..train.data import DATASETS

        rows = _recipes() if args.what == "recipes" else [{"name": k, "description": v} for k, v in DATASETS.items()]
        if args.json:
            print(json.dumps(rows, indent=2))
        elif args.markdown:
            print(
                "| name | description |\n|---|---|\n"
                + "\n".join(f"| `{r['name']}` | {r['description']} |" for r in rows)
            )
        else:
            width = max(len(r["name"]) for r in rows)
            for r in rows:
                print(f"{r['name']:<{width}}  {r['description']}")
        return 0
    if args.json:
        print(json.dumps([describe(loss_spec(name)) for name in list_losses()], indent=2))
        return 0
    if args.markdown:
        print(markdown())
        return 0
    table = [
        (s.name, s.cls.__name__, s.fn.__name__ if s.fn else "-", ", ".join(s.inputs), s.paper)
        for s in map(loss_spec, list_losses())
    ]
    header = ("loss", "module", "function", "inputs", "paper")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(4)]
    for row in [header, *table]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + f"  {row[4]}")
    return 0
