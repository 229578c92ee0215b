"""`brainscore leaderboard show|compare`: the public Brain-Score leaderboard, and a local model among it (issue 5)."""
from __future__ import annotations

import argparse
import json
import logging
import math

from benchmarks_it_maps.cli.tradeoff import DEFAULT_LEADERBOARD_BENCHMARK, load_leaderboard_arg, results_arg

_logger = logging.getLogger(__name__)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def run_show(args: argparse.Namespace) -> int:
    from benchmarks_it_maps.analysis import leaderboard as lb
    from benchmarks_it_maps.cli import UserError

    frame = load_leaderboard_arg(args.leaderboard)
    if args.benchmark is None:
        print(f"{'benchmark':<60} {'version':>7} {'models':>6} {'X':>5} {'nan':>5} {'median':>7} {'max':>7}")
        for name, rows in frame.groupby("benchmark", sort=True):
            versions = ",".join(str(v) for v in sorted(rows["benchmark_version"].dropna().unique())) or "-"
            ok = rows["value"].dropna()
            print(f"{name:<60} {versions:>7} {len(ok):>6} {int((rows['status'] == 'X').sum()):>5} "
                  f"{int((rows['status'] == 'nan').sum()):>5} {_fmt(ok.median() if len(ok) else None):>7} "
                  f"{_fmt(ok.max() if len(ok) else None):>7}")
        print(f"{frame['model_id'].nunique()} models, {frame['benchmark'].nunique()} benchmarks "
              f"({frame.attrs.get('source', '')})")
        return 0
    try:
        table = lb.benchmark_table(frame, args.benchmark)
    except lb.LeaderboardError as error:
        raise UserError(str(error)) from error
    table = table.sort_values("value", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = table["value"].rank(ascending=False, method="min").astype(int)
    shown = table if args.top is None else table.head(args.top)
    width = max([5] + [len(name) for name in shown["label"]])
    version = ",".join(str(v) for v in sorted(table["benchmark_version"].dropna().unique()))
    print(f"{args.benchmark} (v{version}): {len(table)} models with a value")
    print(f"{'rank':>4}  {'model':<{width}} {'value':>7} {'raw':>7} {'error':>7}")
    for row in shown.itertuples(index=False):
        print(f"{row.rank:>4}  {row.label:<{width}} {_fmt(row.value):>7} {_fmt(row.raw):>7} {_fmt(row.error):>7}")
    if len(table) > len(shown):
        print(f"... {len(table) - len(shown)} more (use --top 0 for all)")
    return 0


def compare_model(model: str, db, frame, *, tradeoff_benchmark: str | None = None, accuracy: str = "ImageNet-top1",
                  n_bootstrap: int = 1000, seed: int = 0, interval: str = "prediction",
                  plot: str | None = None) -> dict:
    """Rank and percentile of a local model's scores among the public ones, and its point on the trade-off plot.

    The trade-off point is the model's score minus the leaderboard frontier at its top-1, with a ``interval``
    ('prediction' or 'confidence', see :mod:`benchmarks_it_maps.analysis.tradeoff`) bootstrap interval. It is None (and no plot
    is written) when the model has no local ``tradeoff_benchmark`` score or that benchmark is not on the leaderboard;
    ``tradeoff_missing`` then says which. ``tradeoff_benchmark=None``: the first of the model's locally scored
    benchmarks that is on the leaderboard (its own data, e.g. MajajHong2015's, is not public, so no default can be
    assumed scorable)."""
    import pandas as pd

    from benchmarks_it_maps.analysis import leaderboard as lb
    from benchmarks_it_maps.analysis import tradeoff as tr
    from benchmarks_it_maps.cli import UserError

    local = pd.DataFrame(db.rows(model=model))
    if local.empty:
        known = sorted({row["model"] for row in db.rows()})
        import difflib
        close = difflib.get_close_matches(model, known, n=5, cutoff=0.4)
        raise UserError(f"model {model!r} has no scores in {db.path}"
                        + (f"; did you mean {', '.join(close)}?" if close else "; score it first (brainscore score)"))
    local = local.sort_values(["created_at", "id"]).groupby("benchmark").tail(1)
    on_board = set(lb.benchmarks(frame))
    if tradeoff_benchmark is None:
        scored_on_board = sorted(set(local["benchmark"]) & on_board - {accuracy})
        tradeoff_benchmark = scored_on_board[0] if scored_on_board else None
    ranks = []
    for row in local.sort_values("benchmark").itertuples(index=False):
        entry = {"benchmark": row.benchmark, "score": float(row.score), "local_version": row.benchmark_version}
        if row.benchmark in on_board:
            public = lb.benchmark_table(frame, row.benchmark)
            rank, percentile, n = lb.rank_against(public["value"], float(row.score))
            versions = sorted(int(v) for v in public["benchmark_version"].dropna().unique())
            entry.update(rank=rank, n=n, percentile=percentile, leaderboard_versions=versions)
        else:
            entry.update(rank=None, n=0, percentile=None, leaderboard_versions=[])
        ranks.append(entry)

    point = None
    own = local[local["benchmark"] == tradeoff_benchmark]
    if len(own) and tradeoff_benchmark in on_board:
        try:
            recorded = local[local["benchmark"] == accuracy]
            info = {}
            try:
                info = tr.registry_info(model)
            except tr.TradeoffInputError:
                if recorded.empty:
                    raise
            top1 = float(recorded["score"].iloc[0]) if len(recorded) else info.get("top1")
            if top1 is None:
                raise tr.TradeoffInputError(f"model {model!r} has no top-1 accuracy (registry 'top1' is empty); "
                                            f"record an {accuracy!r} score for it")
            public = tr.population_from_leaderboard(frame, tradeoff_benchmark, accuracy=accuracy)
            public["in_fit"] = ~public["harmonized"]
            mine = pd.DataFrame([{"model": model, "accuracy": float(top1), "score": float(own["score"].iloc[0]),
                                  "error": pd.to_numeric(own["error"].iloc[0], errors="coerce"),
                                  "category": info.get("category") or "Unknown",
                                  "harmonized": bool(info.get("harmonized")), "in_fit": False, "source": "results"}])
            population = tr.combine_populations(mine, public)
            result = tr.analyze_tradeoff(population, benchmark=tradeoff_benchmark, accuracy_name=accuracy,
                                         n_bootstrap=n_bootstrap, seed=seed, interval=interval)
            if plot:
                tr.plot_tradeoff(result, plot, highlight=[model])
        except tr.TradeoffInputError as error:
            raise UserError(str(error)) from error
        row = result.models[result.models["model"] == model].iloc[0]
        point = {"benchmark": tradeoff_benchmark, "accuracy": float(row.accuracy), "score": float(row.score),
                 "frontier": float(row.frontier), "tradeoff": float(row.tradeoff),
                 "tradeoff_ci": [float(row.ci_low), float(row.ci_high)], "interval": result.interval,
                 "breaks_tradeoff": bool(row.breaks_tradeoff),
                 "peak_accuracy": result.peak_accuracy, "peak_ci": list(result.peak_ci),
                 "n_leaderboard_models": int(result.n_fit)}
    missing = None
    if point is None:
        missing = ("none of the model's local scores is on a leaderboard benchmark (the Arcaro2020 benchmarks are "
                   "not on the public leaderboard; for a local population use brainscore tradeoff --results)"
                   if tradeoff_benchmark is None else
                   f"{tradeoff_benchmark} is not on the leaderboard (trade-off benchmarks: its IT benchmarks, e.g. "
                   f"{DEFAULT_LEADERBOARD_BENCHMARK}; for a local population use brainscore tradeoff --results)"
                   if tradeoff_benchmark not in on_board else
                   f"the model has no local {tradeoff_benchmark} score (pick one with --benchmark)")
        if plot:
            _logger.warning("no trade-off plot written: %s", missing)
    return {"model": model, "ranks": ranks, "tradeoff": point, "tradeoff_benchmark": tradeoff_benchmark,
            "tradeoff_missing": missing}


def run_compare(args: argparse.Namespace) -> int:
    db = results_arg(args.results)
    frame = load_leaderboard_arg(args.leaderboard)
    report = compare_model(args.model, db, frame, tradeoff_benchmark=args.benchmark, accuracy=args.accuracy,
                           n_bootstrap=args.bootstrap, seed=args.seed, interval=args.interval, plot=args.plot)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{args.model} among the public Brain-Score models ({frame.attrs.get('source', '')})")
    width = max([9] + [len(entry["benchmark"]) for entry in report["ranks"]])
    print(f"{'benchmark':<{width}} {'score':>7} {'rank':>11} {'percentile':>10}")
    for entry in report["ranks"]:
        if entry["rank"] is None:
            print(f"{entry['benchmark']:<{width}} {entry['score']:7.3f} {'not on the leaderboard':>22}")
            continue
        note = ""
        if entry["leaderboard_versions"] and str(entry["local_version"]) not in map(str, entry["leaderboard_versions"]):
            public_versions = ",".join(map(str, entry["leaderboard_versions"]))
            note = f"  (local v{entry['local_version']}, leaderboard v{public_versions})"
        rank = f"{entry['rank']}/{entry['n']}"
        print(f"{entry['benchmark']:<{width}} {entry['score']:7.3f} {rank:>11} {entry['percentile']:9.1f}%{note}")
    point = report["tradeoff"]
    if point is None:
        print(f"no trade-off point: {report['tradeoff_missing']}")
    else:
        print(f"trade-off ({point['benchmark']}): top-1 {point['accuracy']:.3f}, score {point['score']:.3f}, "
              f"frontier {point['frontier']:.3f}, trade-off {point['tradeoff']:+.3f} "
              f"{point['interval']} interval [{point['tradeoff_ci'][0]:+.3f}, {point['tradeoff_ci'][1]:+.3f}] -> "
              f"{'breaks the trade-off' if point['breaks_tradeoff'] else 'does not break the trade-off'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `brainscore leaderboard show|compare`."""
    parser = subparsers.add_parser("leaderboard", help="the public Brain-Score leaderboard and a model among it")
    commands = parser.add_subparsers(dest="leaderboard_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    show = commands.add_parser("show", help="benchmarks on the leaderboard, or the ranking on one benchmark")
    show.add_argument("--benchmark", default=None, metavar="ID", help="rank the models on this benchmark")
    show.add_argument("--leaderboard", default=None, metavar="PATH",
                      help="snapshot file (.json[.gz]); default: $BRAINSCORE_ITMAPS_LEADERBOARD or the pinned one")
    show.add_argument("--top", type=lambda s: None if int(s) == 0 else int(s), default=20, metavar="N",
                      help="rows to list (0 = all; default 20)")
    show.set_defaults(func=run_show)

    compare = commands.add_parser("compare", help="rank/percentile of a local model per benchmark, trade-off point")
    compare.add_argument("--model", required=True, metavar="ID", help="model identifier in the results database")
    compare.add_argument("--results", default=None, metavar="PATH",
                         help="results database (default: DATA_HOME/results.sqlite)")
    compare.add_argument("--leaderboard", default=None, metavar="PATH", help="snapshot file (.json[.gz])")
    compare.add_argument("--benchmark", default=None, metavar="ID",
                         help="benchmark of the trade-off point (default: the first of the model's local scores "
                              "that is on the leaderboard, if any)")
    compare.add_argument("--accuracy", default="ImageNet-top1", metavar="ID",
                         help="accuracy benchmark of the trade-off's x axis (default ImageNet-top1)")
    compare.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                         help="bootstrap resamples of the frontier's interval (default 1000)")
    compare.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the bootstrap (default 0)")
    compare.add_argument("--interval", choices=("prediction", "confidence"), default="prediction",
                         help="interval of the trade-off point: frontier + population scatter (default; 'breaks the "
                              "trade-off' = above the scatter band) or frontier (+ own error) only (= above the mean "
                              "curve)")
    compare.add_argument("--plot", default=None, metavar="FILE", help="write the trade-off figure (.png/.svg)")
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.set_defaults(func=run_compare)
