"""``brainscore integration enable|disable|status``: brainscore-vision's own loaders and command find our models."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``integration``."""
    parser = subparsers.add_parser(
        "integration", help="make `python -m brainscore_vision score` find this package's models and benchmarks",
        description="Write (enable) or remove (disable) a start-up hook in a site-packages folder: every process "
                    "of that environment that imports brainscore_vision then registers this package's models "
                    "(all of them, not only those with a plugin folder), benchmarks and data, as "
                    "benchmarks_it_maps.enable_brainscore_integration() does in one process. "
                    "BRAINSCORE_ITMAPS_INTEGRATION=0 turns it off for one process.")
    parser.add_argument("action", choices=["enable", "disable", "status"],
                        help="enable: write the hook; disable: remove it; status: say whether it is there")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="the user site-packages instead of the environment's")
    where.add_argument("--site-dir", type=Path, default=None, help="an explicit site-packages folder")
    parser.set_defaults(func=_integration)


def _integration(args) -> int:
    from benchmarks_it_maps.cli import UserError
    from benchmarks_it_maps.submission import autoenable
    directory = autoenable.hook_dir(user=args.user, site_dir=args.site_dir)
    if args.action == "enable":
        if args.user:
            directory.mkdir(parents=True, exist_ok=True)  # as pip --user does; read at the next interpreter start
        if not directory.is_dir():
            raise UserError(f"--site-dir {directory}: no such folder (pass a site-packages folder on sys.path)")
        try:
            paths = autoenable.write_hook(directory)
        except OSError as error:
            raise UserError(f"cannot write the start-up hook into {directory}: {error.strerror or error}; "
                            "try --user") from None
        print(f"enabled: wrote {paths[1]} and {paths[0].name}; `python -m brainscore_vision score "
              "--model_identifier ID --benchmark_identifier ID` now finds this package's identifiers")
    elif args.action == "disable":
        removed = autoenable.remove_hook(directory)
        print(f"disabled: removed {', '.join(map(str, removed))}" if removed else f"not enabled in {directory}")
    else:
        enabled = (directory / autoenable.PTH_NAME).is_file()
        print(f"{'enabled' if enabled else 'not enabled'} in {directory}")
    return 0
