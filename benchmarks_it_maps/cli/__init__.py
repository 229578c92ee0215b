"""The ``brainscore`` command. Each command group lives in its own module exposing ``register(subparsers)``.

A command's handler is stored as ``func`` on its parser; it returns an exit code (``None`` means 0). Errors the
user can fix are raised as :class:`UserError` and printed as one line, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

#: Command-group modules, in the order their commands appear in ``brainscore --help``.
COMMAND_MODULES = (
    "data",         # brainscore data fetch|import|simulate|summary
    "scoring",      # brainscore score | results | list | maps | layers | demo
    "features",     # brainscore features | score-features
    "models",       # brainscore commit-layers
    "keras",        # brainscore convert-keras
    "leaderboard",  # brainscore leaderboard show|compare
    "tradeoff",     # brainscore tradeoff
    "report",       # brainscore report
    "harmonize",    # brainscore harmonize train|evaluate
    "sweep",        # brainscore sweep
    "submission",   # brainscore submission
    "integration",  # brainscore integration enable|disable|status
)


class UserError(Exception):
    """An error caused by the user's input; printed as a single clear line (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainscore",
        description="Brain-Score spatial IT-map benchmarks, harmonized models and the accuracy/IT trade-off.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the handler below
        return code
    except UserError as error:
        print(f"brainscore: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `brainscore list models | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
