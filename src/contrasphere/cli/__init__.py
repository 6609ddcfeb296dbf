"""The ``contrasphere`` command line: ``contrasphere COMMAND [options]``; ``main(argv)`` returns the exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import UserError
from . import analyze_cmd, eval_cmd, list_cmd, metrics_cmd, plot_cmd, reproduce_cmd, train_cmd

_COMMANDS = {
    "train": train_cmd,
    "eval": eval_cmd,
    "metrics": metrics_cmd,
    "plot": plot_cmd,
    "list": list_cmd,
    "reproduce": reproduce_cmd,
    "analyze": analyze_cmd,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrasphere",
        description="Contrastive representation learning on the unit hypersphere (Wang & Isola, ICML 2020).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(_COMMANDS[args.command].run(args))
    except (UserError, ImportError) as err:  # what the project says about the input (or a missing extra)
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"contrasphere {args.command}: error: {message}", file=sys.stderr)
        return 2
    # anything else is a bug in contrasphere: it keeps its traceback


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
