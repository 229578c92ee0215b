"""`brainscore tradeoff`: the accuracy / IT-predictivity trade-off of a model population (issue 5)."""
from __future__ import annotations

import argparse
import json
import logging

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


def build_population(args: argparse.Namespace):
    """The population table for --results / --leaderboard / both, and the benchmark it is about."""
    from benchmarks_it_maps.analysis import leaderboard as lb
    from benchmarks_it_maps.analysis import tradeoff as tr
    from benchmarks_it_maps.cli import UserError

    use_results = args.results is not None or args.leaderboard is None
    benchmark = args.benchmark
    if benchmark is None:
        if args.leaderboard is None:
            raise UserError("--benchmark is required with a results database (e.g. --benchmark Arcaro2020.IT-pls)")
        benchmark = DEFAULT_LEADERBOARD_BENCHMARK
    parts = []
    try:
        if use_results:
            parts.append(tr.population_from_results(results_arg(args.results), benchmark, accuracy=args.accuracy))
        if args.leaderboard is not None:
            frame = load_leaderboard_arg(args.leaderboard)
            public = tr.population_from_leaderboard(frame, benchmark, accuracy=args.accuracy,
                                                    min_accuracy=args.min_accuracy,
                                                    exclude_anonymous=args.exclude_anonymous)
            parts.append(public)
    except (tr.TradeoffInputError, lb.LeaderboardError) as error:
        raise UserError(str(error)) from error
    population = parts[0] if len(parts) == 1 else tr.combine_populations(parts[0], parts[1])
    return population, benchmark


def run_tradeoff(args: argparse.Namespace) -> int:
    from benchmarks_it_maps.analysis import tradeoff as tr
    from benchmarks_it_maps.cli import UserError

    population, benchmark = build_population(args)
    try:
        result = tr.analyze_tradeoff(population, benchmark=benchmark, accuracy_name=args.accuracy,
                                     n_bootstrap=args.bootstrap, seed=args.seed, interval=args.interval,
                                     progress=not args.json, source=f"the {benchmark} population")
        if args.plot:
            path = tr.plot_tradeoff(result, args.plot)
            _logger.info("wrote %s", path)
    except tr.TradeoffInputError as error:
        raise UserError(str(error)) from error
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print(result.format_table(max_models=args.top))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `brainscore tradeoff`."""
    parser = subparsers.add_parser(
        "tradeoff", help="accuracy / IT-predictivity trade-off: frontier, peak, slopes, per-model scores",
        description="Fit the piecewise-linear frontier of neural score vs ImageNet top-1 on the non-harmonized "
                    "models (bootstrap intervals) and score every model against it.")
    add_source_arguments(parser)
    parser.add_argument("--benchmark", default=None, metavar="ID",
                        help=f"neural benchmark (default with --leaderboard: {DEFAULT_LEADERBOARD_BENCHMARK})")
    parser.add_argument("--accuracy", default="ImageNet-top1", metavar="ID",
                        help="accuracy benchmark on the leaderboard / in the results database (default: "
                             "ImageNet-top1; our models fall back to the model registry's top-1)")
    parser.add_argument("--plot", default=None, metavar="FILE", help="write the figure (.png or .svg)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed (default 0)")
    parser.add_argument("--interval", choices=("prediction", "confidence"), default="prediction",
                        help="per-model trade-off interval. 'prediction' (default): bootstrap frontier + a resampled "
                             "residual, so a model breaks the trade-off only above the population's scatter band; "
                             "'confidence': bootstrap frontier (+ the model's own score error) only, the literal "
                             "'interval above the frontier' reading. The JSON reports which under 'interval'")
    parser.add_argument("--min-accuracy", type=float, default=None, metavar="X",
                        help="leave out leaderboard models with top-1 below X (near-chance submissions)")
    parser.add_argument("--exclude-anonymous", action="store_true",
                        help="leave out leaderboard models whose name is anonymised ('Model 123')")
    parser.add_argument("--top", type=int, default=20, metavar="N", help="models listed in the table (default 20)")
    parser.set_defaults(func=run_tradeoff)
