"""``brainscore data``: fetch, import, simulate and summarise the Arcaro2020 spatial IT recordings."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``brainscore data fetch|import|simulate|summary``."""
    parser = subparsers.add_parser("data", help="fetch, import, simulate and summarise the Arcaro2020 data",
                                   description="The Arcaro, Ponce & Livingstone 2020 spatial IT recordings as "
                                               "Brain-Score data (StimulusSet + NeuroidAssemblies in the data home).")
    commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    fetch = commands.add_parser("fetch", help="download the public archive (resumable), check it, import it")
    fetch.add_argument("dataset", choices=["arcaro2020"], help="the dataset (only arcaro2020)")
    fetch.add_argument("--url", default=None, help="archive URL (default: the public serrelab bucket)")
    fetch.add_argument("--sha256", default=None, help="expected sha256 of the archive (without it, or a hash "
                       "pinned in the package, the first download is trusted and its hash recorded)")
    fetch.add_argument("--force", action="store_true", help="download and import again")
    fetch.set_defaults(func=_fetch)

    imp = commands.add_parser("import", help="import a local copy of the archive (zip or extracted folder)",
                              description="Import Arcaro2020.zip (or its extracted folder) as the StimulusSet "
                                          "'Arcaro2020' and assemblies 'Arcaro2020.M1PL|M1ML|M2ML'; a simulated twin "
                                          "(with generator.json) goes under 'Arcaro2020sim'.")
    imp.add_argument("dataset", choices=["arcaro2020"], help="the dataset (only arcaro2020)")
    imp.add_argument("path", type=Path, help="Arcaro2020.zip, its extracted folder, or a simulated twin")
    imp.add_argument("--force", action="store_true", help="re-import even if identical content is imported")
    imp.set_defaults(func=_import)

    sim = commands.add_parser("simulate", help="write a simulated twin archive with known ground truth",
                              description="Write an archive in exactly the released layout whose neurons are noisy "
                                          "low-rank readouts of a fixed-seed random timm CNN (sidecar "
                                          "generator.json). Import it with `brainscore data import arcaro2020 PATH`.")
    sim.add_argument("--out", type=Path, required=True, help="output .zip (or folder)")
    sim.add_argument("--seed", type=int, default=0,
                     help="seed of the generating network, images and noise (default 0; the demo's twin)")
    sim.add_argument("--images", type=int, default=14, help="images per monkey (default 14)")
    sim.add_argument("--grid", type=int, nargs="+", default=[17, 9], metavar="G",
                     help="grid size for both monkeys, or M1 and M2 (default 17 9)")
    sim.add_argument("--repetitions", type=int, default=4,
                     help="trials per image and position (default 4; they give the split-half ceiling)")
    sim.add_argument("--mat-version", choices=["5", "7.3"], default="5",
                     help="MAT-file format of the archive: 5 (scipy) or 7.3 (HDF5), as the released files may be "
                          "(default 5)")
    sim.add_argument("--import", dest="do_import", action="store_true", help="import it afterwards")
    sim.set_defaults(func=_simulate)

    plot = commands.add_parser("plot", help="plot each image above its mean response map for one site")
    plot.add_argument("identifier", help="e.g. Arcaro2020.M1ML or Arcaro2020sim.M2ML")
    plot.add_argument("--out", type=Path, required=True, help="output PNG")
    plot.add_argument("--window", type=int, nargs=2, default=None, metavar=("START", "END"),
                      help="response window in ms (default: the site's)")
    plot.set_defaults(func=_plot)

    summary = commands.add_parser("summary", help="show what is imported (images, channels, grid, time per site)")
    summary.add_argument("identifier", nargs="?", default=None, help="Arcaro2020 or Arcaro2020sim (default: both)")
    summary.add_argument("--json", action="store_true", help="print the manifest as JSON")
    summary.set_defaults(func=_summary)


def _user_errors():
    from benchmarks_it_maps.cli import UserError
    from benchmarks_it_maps.data.assemblies import ArcaroDataError
    from benchmarks_it_maps.data.fetch import FetchError
    return UserError, (ArcaroDataError, FetchError, FileNotFoundError, KeyError)


def _print_summary(summary: dict) -> None:
    from benchmarks_it_maps.data.assemblies import format_summary
    status = summary.get("status")
    if status:
        print(f"{summary['family']}: {'already imported, unchanged' if status == 'unchanged' else 'imported'}"
              f" ({summary.get('folder', '')})")
    print(format_summary(summary))


def _fetch(args) -> int:
    from benchmarks_it_maps.data import conventions as cv
    from benchmarks_it_maps.data.fetch import fetch_arcaro2020
    UserError, errors = _user_errors()
    try:
        result = fetch_arcaro2020(args.url or cv.ARCHIVE_URL, force=args.force, expected_sha256=args.sha256)
    except errors as error:
        raise UserError(_one_line(error)) from None
    print(f"{result['archive']}: sha256 {result['sha256']} ({result['sha256_check']})")
    if result["sha256_check"] == "trusted on first use":
        print(f"note: this hash was not verified (no --sha256, none pinned); later fetches must match it; verify "
              f"elsewhere with --sha256 {result['sha256']}")
    _print_summary(result)
    return 0


def _import(args) -> int:
    from benchmarks_it_maps.data.assemblies import import_arcaro2020
    UserError, errors = _user_errors()
    try:
        summary = import_arcaro2020(args.path, force=args.force)
    except errors as error:
        raise UserError(_one_line(error)) from None
    _print_summary(summary)
    return 0


def _simulate(args) -> int:
    from benchmarks_it_maps.data.simulate import simulate_archive
    UserError, errors = _user_errors()
    if len(args.grid) not in (1, 2):
        raise UserError("--grid takes one size (both monkeys) or two (M1 M2)")
    grids = (args.grid[0], args.grid[-1])
    try:
        out = simulate_archive(args.out, seed=args.seed, images=args.images, grids=grids,
                               repetitions=args.repetitions, mat_version=args.mat_version)
    except ValueError as error:
        raise UserError(_one_line(error)) from None
    print(f"simulated twin written to {out} (seed {args.seed}, {args.images} images per monkey, grids "
          f"{grids[0]}x{grids[0]} and {grids[1]}x{grids[1]}, {args.repetitions} repetitions)")
    if args.do_import:
        return _import(argparse.Namespace(path=out, force=False))
    print(f"import it with: brainscore data import arcaro2020 {out}")
    return 0


def _plot(args) -> int:
    from benchmarks_it_maps.data.assemblies import plot_site
    UserError, errors = _user_errors()
    try:
        out = plot_site(args.identifier, args.out, window=tuple(args.window) if args.window else None)
    except errors + (ValueError,) as error:
        raise UserError(_one_line(error)) from None
    print(f"wrote {out}")
    return 0


def _summary(args) -> int:
    from benchmarks_it_maps.data.assemblies import format_summary, summary
    from benchmarks_it_maps.home import data_home
    UserError, errors = _user_errors()
    try:
        manifests = summary(args.identifier)
    except errors as error:
        raise UserError(_one_line(error)) from None
    if not manifests:
        raise UserError(f"nothing imported in {data_home()}; run `brainscore data fetch arcaro2020`, "
                        "`brainscore data import arcaro2020 PATH` or `brainscore data simulate --out PATH --import`")
    if args.json:
        print(json.dumps(manifests, indent=1, sort_keys=True))
    else:
        print("\n".join(format_summary(m) for m in manifests.values()))
    return 0


def _one_line(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split())
