"""`brainscore tradeoff`: the accuracy / IT-predictivity trade-off of a model population (issues 5 and 15)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

_logger = logging.getLogger(__name__)

#: Neural benchmark used when the leaderboard is involved and none is given (the paper's first panel).
DEFAULT_LEADERBOARD_BENCHMARK = "MajajHong2015.IT-pls"
#: ``--leaderboard`` / ``--results`` given without a path: use the default file.
DEFAULT = "default"


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--results / --leaderboard options shared with `brainscore leaderboard compare`."""
    parser.add_argument("--results", nargs="?", const=DEFAULT, default=None, metavar="PATH",
                        help="results database (default: DATA_HOME/results.sqlite)")
    parser.add_argument("--leaderboard", nargs="?", const=DEFAULT, default=None, metavar="PATH",
                        help="Brain-Score leaderboard snapshot (.json[.gz]); without PATH: $BRAINSCORE_ITMAPS_"
                             "LEADERBOARD or the pinned snapshot (downloaded once into the data home)")


def load_leaderboard_arg(value: str | None):
    """The tidy leaderboard for a --leaderboard value, with errors turned into UserError."""
    from benchmarks_it_maps.analysis import leaderboard as lb
    from benchmarks_it_maps.cli import UserError

    try:
        return lb.load_leaderboard(None if value in (None, DEFAULT) else value)
    except lb.LeaderboardError as error:
        raise UserError(str(error)) from error


def results_arg(value: str | None):
    """The ResultsDB for a --results value (None/default -> data home)."""
    from benchmarks_it_maps.cli import UserError
    from benchmarks_it_maps.runs.results import ResultsDB

    db = ResultsDB(None if value in (None, DEFAULT) else value)
    if not db.path.is_file():
        raise UserError(f"results database {db.path} does not exist; score models first (brainscore score ...) or "
                        f"pass --results PATH / --leaderboard")
    return db


class _Sources:
    """The populations the arguments ask for, opened once: ``population(benchmark, version, min_accuracy,
    exclude_anonymous)`` is our results, the leaderboard's models, or both (see :func:`build_population`)."""

    def __init__(self, args: argparse.Namespace):
        self.accuracy = args.accuracy
        self.use_results = args.results is not None or args.leaderboard is None
        self.db = results_arg(args.results) if self.use_results else None
        self.board = load_leaderboard_arg(args.leaderboard) if args.leaderboard is not None else None
        self.notes: list[str] = []

    def versions(self, benchmark: str) -> list:
        """The benchmark versions present (leaderboard first, else the results database)."""
        from benchmarks_it_maps.analysis import leaderboard as lb

        if self.board is not None:
            values = lb.benchmark_table(self.board, benchmark)["benchmark_version"].dropna().unique()
            return sorted(int(v) for v in values) or [None]
        frame = self.db.to_frame()
        return sorted({str(v) for v in frame.loc[frame["benchmark"] == benchmark, "benchmark_version"]}) or [None]

    def population(self, benchmark: str, version=None, min_accuracy: float | None = None,
                   exclude_anonymous: bool = False):
        from benchmarks_it_maps.analysis import tradeoff as tr

        parts = []
        if self.use_results:
            local = tr.population_from_results(self.db, benchmark, accuracy=self.accuracy,
                                               version=None if self.board is not None else version)
            note = tr.left_out_note(local)
            if note and note not in self.notes:
                self.notes.append(note)
                print(f"{benchmark}: {note}", file=sys.stderr)
            if min_accuracy is not None:
                kept = local[local["accuracy"] >= min_accuracy].copy()
                kept.attrs = local.attrs
                local = kept
            parts.append(local)
        if self.board is not None:
            parts.append(tr.population_from_leaderboard(self.board, benchmark, accuracy=self.accuracy,
                                                        min_accuracy=min_accuracy,
                                                        exclude_anonymous=exclude_anonymous, version=version))
        return parts[0] if len(parts) == 1 else tr.combine_populations(parts[0], parts[1])


def build_population(args: argparse.Namespace):
    """The population table for --results / --leaderboard / both, and the benchmark it is about (the first one)."""
    from benchmarks_it_maps.analysis import leaderboard as lb
    from benchmarks_it_maps.analysis import tradeoff as tr
    from benchmarks_it_maps.cli import UserError

    benchmark = _benchmarks(args)[0]
    try:
        sources = _Sources(args)
        return sources.population(benchmark, args.version, args.min_accuracy, args.exclude_anonymous), benchmark
    except (tr.TradeoffInputError, lb.LeaderboardError) as error:
        raise UserError(str(error)) from error


def _benchmarks(args: argparse.Namespace) -> list[str]:
    from benchmarks_it_maps.cli import UserError

    if args.benchmark is None:
        if args.leaderboard is None:
            raise UserError("--benchmark is required with a results database (e.g. --benchmark "
                            "Arcaro2020.IT-residual_pls)")
        return [DEFAULT_LEADERBOARD_BENCHMARK]
    names = [name.strip() for name in args.benchmark.split(",") if name.strip()]
    if not names:
        raise UserError("--benchmark: give one identifier or several separated by commas")
    return list(dict.fromkeys(names))


def _plot_path(path: str, benchmark: str, several: bool) -> Path:
    """The figure file of one benchmark: PATH itself, or PATH with the benchmark before the suffix when several."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{benchmark}{path.suffix}") if several else path


def _options(args: argparse.Namespace, families) -> dict:
    return dict(accuracy_name=args.accuracy, n_bootstrap=args.resamples, seed=args.seed, interval=args.interval,
                bootstrap=args.bootstrap, frontier=args.frontier, quantile=args.quantile,
                family_overrides=families)


def _family_overrides(args: argparse.Namespace):
    from benchmarks_it_maps.analysis import families as fam
    from benchmarks_it_maps.cli import UserError

    if args.families is None:
        return None
    try:
        return fam.read_family_overrides(args.families)
    except fam.FamilyTableError as error:
        raise UserError(str(error)) from error


def run_tradeoff(args: argparse.Namespace) -> int:
    from benchmarks_it_maps.analysis import leaderboard as lb
    from benchmarks_it_maps.analysis import tradeoff as tr
    from benchmarks_it_maps.analysis import twolines as tl
    from benchmarks_it_maps.cli import UserError

    benchmarks = _benchmarks(args)
    families = _family_overrides(args)
    if args.sensitivity:
        return _run_sensitivity(args, benchmarks, families)
    results = []
    try:
        sources = _Sources(args)
        for benchmark in benchmarks:
            population = sources.population(benchmark, args.version, args.min_accuracy, args.exclude_anonymous)
            results.append(tr.analyze_tradeoff(population, benchmark=benchmark, progress=not args.json,
                                               source=f"the {benchmark} population", **_options(args, families)))
        if args.plot:
            for result in results:
                path = tr.plot_tradeoff(result, _plot_path(args.plot, result.benchmark, len(results) > 1))
                _logger.info("wrote %s", path)
    except (tr.TradeoffInputError, lb.LeaderboardError) as error:
        raise UserError(str(error)) from error
    adjusted = tl.holm([result.two_lines.p for result in results])
    objects = []
    for result, p_holm in zip(results, adjusted):
        data = result.to_json()
        data["two_lines"]["p_holm"] = float(p_holm)
        data["two_lines"]["holm_over"] = [r.benchmark for r in results]
        objects.append(data)
    if args.json:
        print(json.dumps(objects[0] if len(objects) == 1 else {"results": objects}, indent=1))
        return 0
    for result in results:
        print(result.format_table(max_models=args.top))
        print()
    if len(results) > 1:
        print(f"two-lines test of an inverted U, Holm-adjusted across {len(results)} benchmarks:")
        for result, p_holm in zip(results, adjusted):
            print(f"  {result.benchmark:<28} p = {result.two_lines.p:.3g}  Holm p = {p_holm:.3g}")
    return 0


def _run_sensitivity(args: argparse.Namespace, benchmarks: list[str], families) -> int:
    from benchmarks_it_maps.analysis import leaderboard as lb
    from benchmarks_it_maps.analysis import tradeoff as tr
    from benchmarks_it_maps.cli import UserError

    try:
        sources = _Sources(args)
        versions = {benchmark: [args.version] if args.version is not None else sources.versions(benchmark)
                    for benchmark in benchmarks}
        table = tr.sensitivity(sources.population, versions,
                               min_accuracies=args.min_accuracy_sweep or tr.SENSITIVITY_MIN_ACCURACY,
                               anonymous=("in", "out") if sources.board is not None else ("in",),
                               frontier=args.frontier, quantile=args.quantile, n_bootstrap=args.resamples,
                               seed=args.seed, family_overrides=families, progress=not args.json)
        if args.plot:
            _logger.info("wrote %s", tr.plot_sensitivity(table, args.plot))
    except (tr.TradeoffInputError, lb.LeaderboardError) as error:
        raise UserError(str(error)) from error
    if args.json:
        print(table.to_json(orient="records", indent=1))
    else:
        print(tr.format_sensitivity(table))
    return 0


def _fractions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions like 0.30,0.45, got {text!r}"
                                         ) from error
    if not values or not all(0 <= value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"expected fractions in [0, 1), got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `brainscore tradeoff`."""
    parser = subparsers.add_parser(
        "tradeoff", help="accuracy / IT-predictivity trade-off: frontier, peak, slopes, two-lines test, sensitivity",
        description="Fit a one-breakpoint piecewise-linear curve of neural score vs ImageNet top-1 on the "
                    "non-harmonized models (the mean curve, or the upper frontier by quantile regression), with "
                    "bootstrap intervals over model families or models, Simonsohn's two-lines test of an inverted "
                    "U (Holm-adjusted across the benchmarks given), and per-model trade-off scores.")
    add_source_arguments(parser)
    parser.add_argument("--benchmark", default=None, metavar="ID[,ID...]",
                        help=f"neural benchmark(s), comma-separated: analysed together, two-lines p-values "
                             f"Holm-adjusted across them (default with --leaderboard: {DEFAULT_LEADERBOARD_BENCHMARK})")
    parser.add_argument("--version", default=None, metavar="V",
                        help="only scores of this benchmark version (default: all; the leaderboard snapshot has one "
                             "per benchmark)")
    parser.add_argument("--accuracy", default="ImageNet-top1", metavar="ID",
                        help="accuracy benchmark on the leaderboard / in the results database (default: "
                             "ImageNet-top1; our models fall back to the model registry's top-1)")
    parser.add_argument("--frontier", choices=("mean", "upper"), default="mean",
                        help="'mean' (default): least-squares hinge, the average model at each accuracy; 'upper': "
                             "the same hinge fitted to the --quantile quantile (quantile regression), the best "
                             "models at each accuracy. Plots show both curves")
    parser.add_argument("--quantile", type=float, default=0.9, metavar="Q",
                        help="quantile of the upper frontier (default 0.9)")
    parser.add_argument("--bootstrap", choices=("families", "models"), default="families",
                        help="resampling unit of the intervals (default: families: models of one architecture "
                             "lineage are not independent); the JSON reports both")
    parser.add_argument("--families", default=None, metavar="CSV",
                        help="model families to use instead of the package's table: CSV with columns model,family")
    parser.add_argument("--resamples", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed (default 0)")
    parser.add_argument("--interval", choices=("prediction", "confidence"), default="prediction",
                        help="per-model trade-off interval. 'prediction' (default): bootstrap frontier + a resampled "
                             "residual, so a model breaks the trade-off only above the population's scatter band; "
                             "'confidence': bootstrap frontier (+ the model's own score error) only, the literal "
                             "'interval above the frontier' reading. The JSON reports which under 'interval'")
    parser.add_argument("--min-accuracy", type=float, default=None, metavar="X",
                        help="leave out models with top-1 below X (near-chance submissions)")
    parser.add_argument("--exclude-anonymous", action="store_true",
                        help="leave out leaderboard models whose name is anonymised ('Model 123')")
    parser.add_argument("--sensitivity", action="store_true",
                        help="sweep every analysis choice (minimum accuracy, anonymised in/out, benchmark version, "
                             "bootstrap unit) and print (--plot: draw) the peak and slope-above intervals of each")
    parser.add_argument("--min-accuracy-sweep", type=_fractions, default=None, metavar="X,Y,...",
                        help="minimum accuracies of --sensitivity (default 0.30,0.36,0.40,0.45,0.50,0.55,0.60)")
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help="write the figure (.png or .svg); several benchmarks: FILE_BENCHMARK.png each")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--top", type=int, default=20, metavar="N", help="models listed in the table (default 20)")
    parser.set_defaults(func=run_tradeoff)
