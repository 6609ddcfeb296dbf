"""``contrasphere list``: what is registered."""

from __future__ import annotations

import argparse
import json

from ..losses import list_losses, loss_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered losses", description="List the registered losses.")
    p.add_argument("what", nargs="?", default="losses", choices=["losses"], help="what to list (default: losses)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = [loss_spec(name) for name in list_losses()]
    if args.json:
        print(json.dumps([{"name": s.name, "inputs": list(s.inputs), "paper": s.paper} for s in rows], indent=2))
        return 0
    width = max(len(s.name) for s in rows)
    print(f"{'loss':<{width}}  {'inputs':<12}  paper")
    for s in rows:
        print(f"{s.name:<{width}}  {', '.join(s.inputs):<12}  {s.paper}")
    return 0
