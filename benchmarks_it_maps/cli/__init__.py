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
    except KeyboardInterrupt:
        print("brainscore: error: interrupted (Ctrl-C); files are written atomically, run the same command again "
              "to redo or resume it", file=sys.stderr)
        return 2
    except _input_errors() as error:  # bad files or folders the command was given: one line, not a traceback
        if args.verbose:
            raise
        hint = "" if isinstance(error, ValueError) else " (run with -v for the traceback)"
        print(f"brainscore: error: {_describe(error)}{hint}", file=sys.stderr)
        return 2


def _input_errors() -> tuple[type[BaseException], ...]:
    """Errors that come from the files, folders and databases a command reads or writes (not from a bug): the
    package's own one-line errors that a command did not catch, and OS / SQLite / zip / decoding errors."""
    import sqlite3
    import zipfile

    from benchmarks_it_maps.data.fetch import FetchError
    from benchmarks_it_maps.data.matfile import MatFileError
    from benchmarks_it_maps.runs.results import ResultsDBError
    from benchmarks_it_maps.runs.scoring import ScoringError
    from harmonized_models.harmonizer.checkpoint import CheckpointError
    from harmonized_models.keras.h5 import KerasFormatError
    return (ResultsDBError, ScoringError, MatFileError, FetchError, CheckpointError, KerasFormatError, OSError,
            sqlite3.DatabaseError, UnicodeDecodeError, zipfile.BadZipFile)


def _describe(error: BaseException) -> str:
    """One line naming the file and what is wrong with it."""
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
        if getattr(error, "filename2", None):
            text += f" (-> {error.filename2})"
    elif isinstance(error, UnicodeDecodeError):
        text = f"a file is not UTF-8 text ({error.reason} at byte {error.start}); pass the intended file"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
