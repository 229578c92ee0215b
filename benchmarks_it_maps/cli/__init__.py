"""The ``brainscore`` command. Each command group lives in its own module exposing ``register(subparsers)``.

A command's handler is stored as ``func`` on its parser; it returns an exit code (``None`` means 0). Errors the
user can fix are raised as :class:`UserError` and printed as one line, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Sequence

# brainscore-core's Score class triggers this at import, on every command; it is not the user's business.
warnings.filterwarnings("ignore", message=r"xarray subclass \w+ should explicitly define __slots__",
                        category=FutureWarning)

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


def package_version() -> str:
    """The installed version of brainscore-itmaps (``0+unknown`` from a bare checkout)."""
    try:
        return version("brainscore-itmaps")
    except PackageNotFoundError:  # pragma: no cover
        return "0+unknown"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help, once: not when the help already states a default, and not for
    flags or options without a default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or any(action.default is value for value in (None, False, True))
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class TqdmLoggingHandler(logging.StreamHandler):
    """Log records written through ``tqdm.write``, so they appear above a running progress bar, not inside it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def configure_logging(verbose: bool = False) -> None:
    """INFO (``-v``: DEBUG) to stderr through :class:`TqdmLoggingHandler`; chatty third-party loggers at WARNING."""
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a host that configured logging (pytest, an app) keeps its own
        handler = TqdmLoggingHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        for name in ("timm", "brainscore_vision", "brainscore_core", "brainio", "result_caching", "botocore",
                     "urllib3", "httpx", "huggingface_hub", "PIL", "matplotlib", "submitit", "numexpr"):
            logging.getLogger(name).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainscore",
        description="Brain-Score spatial IT-map benchmarks, harmonized models and the accuracy/IT trade-off. "
                    "Data, weights, results and default outputs live in the data home $BRAINSCORE_ITMAPS_HOME "
                    "(default ~/.brainscore_itmaps).")
    parser.add_argument("--version", action="version", version=f"%(prog)s (brainscore-itmaps) {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


INTERRUPTED = ("interrupted (Ctrl-C); files are written atomically, run the same command again to redo or resume "
               "it")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (0 done, 2 a one-line error or Ctrl-C).

    ``argv=None`` (the ``brainscore`` program): once the command has finished, a Ctrl-C during the interpreter's
    shutdown exits at once with the command's code instead of the traceback CPython prints for it ("Exception
    ignored in ... atexit", exit code unchanged): the command's outcome stands."""
    try:
        code = _main(argv)
    except KeyboardInterrupt:  # while the commands are imported, or while an error line is printed
        print(f"brainscore: error: {INTERRUPTED}", file=sys.stderr)
        code = 2
    if argv is None:
        _exit_quietly_on_a_late_interrupt(code)
    return code


def _exit_quietly_on_a_late_interrupt(code: int) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    signal.signal(signal.SIGINT, handler)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _InterruptWatch() as watch:
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the handler below
        if watch.interrupted:  # a Ctrl-C that a library swallowed (or that CPython dropped in a __del__ / callback)
            raise KeyboardInterrupt
        return code
    except UserError as error:
        print(f"brainscore: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `brainscore list models | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as interrupt:  # (a command may say what it left behind in the exception's message)
        print(f"brainscore: error: {str(interrupt) or INTERRUPTED}", file=sys.stderr)
        return 2
    except _input_errors() as error:  # bad files or folders the command was given: one line, not a traceback
        if args.verbose:
            raise
        hint = "" if isinstance(error, ValueError) else " (run with -v for the traceback)"
        print(f"brainscore: error: {_describe(error)}{hint}", file=sys.stderr)
        return 2


class _InterruptWatch:
    """While a command runs, SIGINT raises KeyboardInterrupt as usual and is also remembered: an interrupt that
    something swallowed still ends the command with exit code 2. CPython drops (prints as "Exception ignored")
    a KeyboardInterrupt raised inside a ``__del__``, a weakref or garbage-collector callback, so without this a
    Ctrl-C could let the command finish with exit code 0. Only the main thread's default handler is replaced (a
    host that installed its own keeps it); the previous handler is restored on exit."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def __enter__(self) -> "_InterruptWatch":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _input_errors() -> tuple[type[BaseException], ...]:
    """Errors that come from the files, folders and databases a command reads or writes (not from a bug): the
    package's own one-line errors that a command did not catch, and OS / SQLite / zip / decoding errors."""
    import sqlite3
    import zipfile

    from benchmarks_it_maps.benchmarks.arcaro2020 import NonFiniteFeaturesError
    from benchmarks_it_maps.data.fetch import FetchError
    from benchmarks_it_maps.data.matfile import MatFileError
    from benchmarks_it_maps.runs.results import ResultsDBError
    from benchmarks_it_maps.runs.scoring import ScoringError
    from harmonized_models.harmonizer.checkpoint import CheckpointError
    from harmonized_models.keras.h5 import KerasFormatError
    return (ResultsDBError, ScoringError, MatFileError, FetchError, CheckpointError, KerasFormatError,
            NonFiniteFeaturesError, OSError, sqlite3.DatabaseError, UnicodeDecodeError, zipfile.BadZipFile)


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
