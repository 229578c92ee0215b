"""``brainscore data``: fetch, import, simulate and summarise the Arcaro2020 spatial IT recordings."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``brainscore data fetch|import|simulate|plot|orientation|channels|summary``."""
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
    imp.add_argument("--orientation", default="identity", metavar="SYMMETRY",
                     help="extra symmetry applied to every map after the conventional flip (one of: "
                          "identity flip_ud flip_lr rot180 transpose transpose_flip_ud transpose_flip_lr "
                          "transpose_rot180; see `brainscore data orientation`)")
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

    orient = commands.add_parser("orientation", help="score a model on the maps under the 8 symmetries of the square",
                                 description="Check the assumed orientation of imageRF against the data: a reference "
                                             "model is scored (leave-one-image-out PLS, image-specific residual "
                                             "statistic) on each site's maps under identity, flip_ud, flip_lr, "
                                             "rot180, transpose, transpose_flip_ud, transpose_flip_lr and "
                                             "transpose_rot180 (transpose first, then the flip). The winner, its "
                                             "margin and a bootstrap over images are printed. --apply NAME "
                                             "re-imports the data with that symmetry. See docs/DATA.md.")
    orient.add_argument("dataset", choices=["Arcaro2020", "Arcaro2020sim"], help="imported dataset to check")
    orient.add_argument("--model", default="efficientnet_lite0", help="reference model (any registry id)")
    orient.add_argument("--sites", nargs="+", default=None, metavar="SITE", help="default: M1PL M1ML M2ML")
    orient.add_argument("--bootstrap", type=int, default=1000, help="image resamples (default 1000)")
    orient.add_argument("--json", action="store_true", help="print one JSON object per site, as a list")
    orient.add_argument("--apply", default=None, metavar="SYMMETRY",
                        help="re-import the dataset from its recorded source with this symmetry (nothing is scored)")
    orient.add_argument("--device", default="auto", help="auto: CUDA when available, else CPU")
    orient.set_defaults(func=_orientation)

    chan = commands.add_parser("channels", help="plot monkey 1's channel correlation and the PL/ML boundary",
                               description="Channel-by-channel correlation of monkey 1's maps (mean map removed) "
                                           "with the assumed PL/ML boundary marked; says where the data put it.")
    chan.add_argument("dataset", choices=["Arcaro2020", "Arcaro2020sim"], help="imported dataset to plot")
    chan.add_argument("--out", type=Path, default=None, help="output PNG (default: print only)")
    chan.add_argument("--json", action="store_true", help="print the boundaries and contrasts as JSON")
    chan.set_defaults(func=_channels)

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
        summary = import_arcaro2020(args.path, force=args.force,
                                    orientation=getattr(args, "orientation", "identity"))
    except errors + (ValueError,) as error:
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


def _orientation(args) -> int:
    from benchmarks_it_maps.data import conventions as cv
    from benchmarks_it_maps.data.assemblies import import_arcaro2020, summary
    from benchmarks_it_maps.runs.orientation import format_table, orientation_diagnostic
    from benchmarks_it_maps.runs.scoring import ScoringError, resolve_model
    UserError, errors = _user_errors()
    if args.apply is not None:
        if args.apply not in cv.SYMMETRIES:
            raise UserError(f"--apply {args.apply!r}: expected one of {', '.join(cv.SYMMETRIES)}")
        manifest = summary(args.dataset).get(args.dataset)
        if manifest is None:
            raise UserError(f"{args.dataset} is not imported; import it first (brainscore data import arcaro2020 PATH)")
        source = Path(manifest["source"])
        if not source.exists():
            raise UserError(f"{source} (the recorded source of {args.dataset}) is gone; run `brainscore data import "
                            f"arcaro2020 PATH --orientation {args.apply}`")
        try:
            result = import_arcaro2020(source, orientation=args.apply)
        except errors as error:
            raise UserError(_one_line(error)) from None
        print(f"{args.dataset} re-imported from {source} with orientation {args.apply} ({result['status']})")
        return 0
    sites = args.sites or list(cv.SITES)
    unknown = [s for s in sites if s not in cv.SITES]
    if unknown:
        raise UserError(f"unknown site(s) {unknown}: expected {', '.join(cv.SITES)}")
    try:
        candidate = resolve_model(args.model, device=args.device)
        rows = orientation_diagnostic(args.dataset, candidate, sites=sites, n_boot=args.bootstrap)
    except errors + (ScoringError,) as error:
        raise UserError(_one_line(error)) from None
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
    return 0


def _channels(args) -> int:
    from benchmarks_it_maps.data.channels import format_split, plot_split, split_check
    UserError, errors = _user_errors()
    try:
        result = split_check(args.dataset)
    except errors as error:
        raise UserError(_one_line(error)) from None
    if args.out is not None:
        plot_split(result, args.out)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "correlation"}, indent=1))
    else:
        print(format_split(result))
        if args.out is not None:
            print(f"wrote {args.out}")
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
