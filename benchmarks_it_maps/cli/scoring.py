"""``brainscore score | results | list | maps | layers | demo``: scoring models on the IT-map benchmarks."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

TABLE_COLUMNS = ("model", "benchmark", "score", "floor", "raw", "ceiling", "error", "layer", "seconds")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``score``, ``results``, ``list``, ``maps``, ``layers`` and ``demo``."""
    score = subparsers.add_parser("score", help="score a model on a benchmark and store the result",
                                  description="Score a model on a benchmark (this package's identifiers first, "
                                              "brainscore-vision's as a fallback) and record it in the results DB.")
    _model_benchmark_args(score)
    _regression_args(score)
    score.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    score.add_argument("--results", type=Path, default=None,
                       help="results database (default: DATA_HOME/results.sqlite)")
    score.add_argument("--no-record", action="store_true", help="do not store the score")
    score.add_argument("--stock-pls", action="store_true",
                       help="brainscore-vision benchmarks only: keep scikit-learn's NIPALS PLS instead of the exact "
                            "solver (slower; the two agree to NIPALS' tolerance, see benchmarks/RESULTS.md)")
    score.set_defaults(func=_score)

    results = subparsers.add_parser("results", help="list, show or export stored scores")
    commands = results.add_subparsers(dest="results_command", metavar="RESULTS_COMMAND")
    results.set_defaults(func=lambda args: results.print_help() or 2)
    listing = commands.add_parser("list", help="one line per stored score (newest first)")
    show = commands.add_parser("show", help="all fields of a model's newest score on each benchmark (or on "
                                            "--benchmark), scoring configuration included")
    show.add_argument("--model", required=True, help="model identifier as stored (brainscore results list)")
    show.add_argument("--benchmark", default=None, help="only this benchmark (default: every benchmark)")
    export = commands.add_parser("export", help="write all stored scores to a CSV file")
    export.add_argument("--csv", type=Path, required=True, help="output CSV path")
    for sub, func in ((listing, _results_list), (show, _results_show), (export, _results_export)):
        sub.add_argument("--results", type=Path, default=None,
                         help="results database (default: DATA_HOME/results.sqlite)")
        sub.set_defaults(func=func)
    listing.add_argument("--model", default=None, help="only this model")
    listing.add_argument("--benchmark", default=None, help="only this benchmark")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    lister = subparsers.add_parser("list", help="list available models or benchmarks")
    lister.add_argument("what", choices=["models", "benchmarks"], help="what to list")
    lister.add_argument("--category", default=None,
                        help="models only: cnn, transformer, robust, self-supervised, extra-data or harmonized "
                             "(any case)")
    lister.set_defaults(func=_list)

    maps = subparsers.add_parser("maps", help="per-image figures: image, neural map and predicted map")
    _model_benchmark_args(maps)
    maps.add_argument("--out", type=Path, required=True, help="output folder for the PNG files")
    maps.set_defaults(func=_maps)

    layers = subparsers.add_parser("layers", help="score candidate layers with nested cross-validation, plot by "
                                                  "depth")
    _model_benchmark_args(layers)
    _regression_args(layers)
    layers.add_argument("--layers", nargs="+", default=None, help="layers to compare (default: candidate layers)")
    layers.add_argument("--out", type=Path, default=None,
                        help="PNG path (default: DATA_HOME/figures/layers-<model>-<benchmark>.png)")
    layers.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    layers.set_defaults(func=_layers)

    demo = subparsers.add_parser("demo", help="simulate the twin and score a pretrained and a random network",
                                 description="Simulate and import the Arcaro2020 twin if missing, score the "
                                             "ImageNet-pretrained efficientnet_lite0 and a randomly initialised "
                                             "copy on Arcaro2020sim.IT-pls and -map_alignment, print the table and "
                                             "write the map figures (one per image and site of IT-pls). Both models "
                                             "use the registry's layer rule, never a local commit-layers choice, "
                                             "so the table reproduces README's.")
    demo.add_argument("--out", type=Path, default=None, help="folder for the figures (default: DATA_HOME/demo)")
    demo.add_argument("--results", type=Path, default=None,
                      help="results database (default: DATA_HOME/results.sqlite)")
    _device_args(demo)
    demo.add_argument("--images", type=int, default=14, help="images per monkey of the twin (default 14)")
    demo.add_argument("--grid", type=int, nargs=2, default=[17, 9], metavar=("G1", "G2"),
                      help="grid sizes of monkeys 1 and 2 (default 17 9); smaller values give a quick look")
    demo.set_defaults(func=_demo)


def _regression_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--regression", default="pls", choices=["pls", "ridgecv"],
                        help="pls (default: 25 components, the benchmarks' protocol) or ridgecv (ridge, alpha per "
                             "channel by cross-validation over training images); a non-default choice reports "
                             "under <benchmark>+ridgecv")
    parser.add_argument("--folds", default="loio", metavar="loio|K",
                        help="outer cross-validation over images: loio (default) or K seeded folds "
                             "(reported under <benchmark>+Kfold)")


def _folds(text: str):
    from benchmarks_it_maps.benchmarks.regression import parse_folds
    from benchmarks_it_maps.cli import UserError
    try:
        return parse_folds(text)
    except ValueError as error:
        raise UserError(f"--folds: {error}") from None


def _model_benchmark_args(parser: argparse.ArgumentParser) -> None:
    # --model_identifier / --benchmark_identifier: the spelling of `python -m brainscore_vision score`
    parser.add_argument("--model", "--model_identifier", dest="model", required=True,
                        help="model identifier (brainscore list models)")
    parser.add_argument("--benchmark", "--benchmark_identifier", dest="benchmark", required=True,
                        help="benchmark identifier (brainscore list benchmarks)")
    _device_args(parser)


def _device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA when available (bf16 autocast), else CPU (float32)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default: automatic, backs off on out-of-memory)")


def _user_error(error: BaseException):
    from benchmarks_it_maps.cli import UserError
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return UserError(str(message))


def _known_errors() -> tuple:
    from benchmarks_it_maps.benchmarks.arcaro2020 import (NonFiniteFeaturesError, NoSpatialStructureError,
                                                         UnknownBenchmarkError)
    from benchmarks_it_maps.benchmarks.ceiling import CeilingError
    from benchmarks_it_maps.runs.scoring import ScoringError
    return (ScoringError, UnknownBenchmarkError, NoSpatialStructureError, NonFiniteFeaturesError, FileNotFoundError,
            CeilingError)


def format_table(rows: Sequence[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A plain fixed-width table of dicts (floats with 4 decimals, seconds with 1)."""
    def cell(column: str, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}" if column == "seconds" else f"{value:.4f}"
        return str(value)
    cells = [[cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
def _score(args) -> int:
    from benchmarks_it_maps.runs import scoring
    try:
        result = scoring.score(args.model, args.benchmark, device=args.device, batch_size=args.batch_size,
                               results=args.results, record=not args.no_record, stock=args.stock_pls,
                               regression=args.regression, folds=_folds(args.folds))
    except scoring.ScoreNotRecordedError as error:  # the finished score first, then the one-line error
        _print_score(args, error.result)
        raise _user_error(error) from None
    except _known_errors() as error:
        raise _user_error(error) from None
    _print_score(args, result)
    return 0


def _print_score(args, result) -> None:
    from benchmarks_it_maps.runs import scoring
    summary = scoring.score_summary(result)
    note = result.attrs.get("note")  # e.g. a constant model's 0 +- 0
    if args.json:
        print(json.dumps({**{k: summary[k] for k in ("model", "benchmark", "score", "floor", "raw", "ceiling",
                                                     "error", "layer", "region_layer_map_source")},
                          **({"note": note} if note else {})}))
    else:
        print(format_table([summary]))
        if summary["region_layer_map_source"]:
            print(f"region_layer_map: {summary['region_layer_map_source']}")
        if note:
            print(f"note: {note}")
    sys.stdout.flush()


def _db(args):
    from benchmarks_it_maps.runs.results import ResultsDB
    return ResultsDB(args.results)


def _results_list(args) -> int:
    rows = _db(args).rows(model=args.model, benchmark=args.benchmark)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k not in ("attrs", "attrs_json")} for r in rows]))
    elif not rows:
        print("no stored scores")
    else:
        print(format_table(rows, ("id", "model", "benchmark", "benchmark_version", "score", "raw", "ceiling",
                                  "error", "layer", "seconds", "created_at")))
    return 0


def _results_show(args) -> int:
    from benchmarks_it_maps.cli import UserError
    db = _db(args)
    rows = db.rows(model=args.model, benchmark=args.benchmark)
    if not rows:
        raise UserError(f"no stored score for model {args.model!r}"
                        + (f" on {args.benchmark!r}" if args.benchmark else "") + f" in {db.path}")
    newest: dict = {}
    for row in rows:  # newest first: keep each benchmark's first row
        newest.setdefault(row["benchmark"], row)
    for row in newest.values():
        for key, value in row.items():
            if key in ("attrs_json", "attrs"):
                continue
            print(f"{key:18s} {value}")
        scalars = {k: v for k, v in row["attrs"].items() if isinstance(v, (int, float, str))}
        if scalars:
            print(f"{'attrs':18s} {json.dumps(scalars)}")
        if row["attrs"].get("scoring_config"):
            print(f"{'scoring_config':18s} {json.dumps(row['attrs']['scoring_config'], sort_keys=True)}")
        print()
    return 0


def _results_export(args) -> int:
    db = _db(args)
    path = db.export_csv(args.csv)
    print(f"wrote {len(db.rows())} rows to {path}")
    return 0


def _list(args) -> int:
    if args.what == "benchmarks":
        from benchmarks_it_maps import list_benchmarks
        for identifier in list_benchmarks():
            print(identifier)
        return 0
    import harmonized_models
    from benchmarks_it_maps.cli import UserError
    try:
        entries = harmonized_models.list_models(args.category)
    except ValueError as error:  # unknown --category
        raise UserError(str(error)) from None
    rows, committed = [], 0
    for e in entries:
        try:
            layer_map, source = harmonized_models.region_layer_map_with_source(e.identifier)
        except ValueError as error:  # a stored map that is not valid JSON / not a map: names the file and the fix
            raise UserError(str(error)) from None
        local = source != "registry"
        committed += local
        rows.append(dict(model=e.identifier, category=e.category, top1=None if e.top1 is None else float(e.top1),
                         it_layer=layer_map["IT"] + (" *" if local else ""), weights=e.weights_source,
                         notes=_short_note(e) if e.harmonized else ""))
    columns = ("model", "category", "top1", "it_layer", "weights")
    if any(e.harmonized for e in entries):
        columns += ("notes",)  # which network a released file holds (e.g. resnet50v2_harmonized.h5: ResNet50 v1)
    print(format_table(rows, columns))
    if committed:
        print(f"* {committed} model(s) use a region_layer_map committed locally with `brainscore commit-layers` "
              "(data home region_layer_maps/); Brain-Score plugin folders keep their own region_layer_map/*.json")
    return 0


def _short_note(entry) -> str:
    """The first clause of a harmonized entry's notes (what the released file holds), at most 90 characters."""
    note = (entry.notes or "").split(": ")[0].split("; ")[0]
    return note if len(note) <= 90 else note[:87] + "..."


def _maps(args) -> int:
    from benchmarks_it_maps.runs import scoring
    try:
        result, paths = scoring.maps(args.model, args.benchmark, args.out, device=args.device,
                                     batch_size=args.batch_size)
    except _known_errors() as error:
        raise _user_error(error) from None
    print(f"{args.model} on {args.benchmark}: {float(result):.4f}; wrote {len(paths)} figures under {args.out}")
    return 0


def _layers(args) -> int:
    from benchmarks_it_maps.runs import scoring
    from benchmarks_it_maps.home import data_home
    out = args.out or data_home() / "figures" / f"layers-{args.model}-{args.benchmark}.png".replace("/", "_")
    try:
        analyses = scoring.layer_analysis(args.model, args.benchmark, layers=args.layers, out=out,
                                          device=args.device, batch_size=args.batch_size,
                                          regression=args.regression, folds=_folds(args.folds))
    except _known_errors() as error:
        raise _user_error(error) from None
    if args.json:
        print(json.dumps([dict(benchmark=a.benchmark_identifier, layers=a.layers,
                               layer_scores=[float(v) for v in a.layer_scores], selected=a.selected,
                               nested_score=a.nested_score, nested_error=a.nested_error) for a in analyses]))
    else:
        for a in analyses:
            print(f"{a.benchmark_identifier}: nested score {a.nested_score:.4f} ± {a.nested_error:.4f} "
                  f"(ceiling {a.ceiling:.3f})")
            for layer, value in zip(a.layers, a.layer_scores):
                print(f"  {layer:30s} {value:.4f}  chosen {a.selected.count(layer)}x")
        print(f"plot: {out}")
    return 0


def _demo(args) -> int:
    from benchmarks_it_maps.home import data_home
    from benchmarks_it_maps.runs.demo import run_demo
    from benchmarks_it_maps.runs.results import ResultsDB
    start = time.perf_counter()
    out = args.out or data_home() / "demo"
    db = ResultsDB(args.results)
    rows = run_demo(out, results=db, device=args.device, batch_size=args.batch_size,
                    twin=dict(images=args.images, grids=tuple(args.grid)))
    print(format_table(rows))
    figures = sorted((out / "maps").glob("*/*/*.png"))
    print(f"map figures: {len(figures)} PNG files under {out / 'maps'}\nscores stored in {db.path}\n"
          f"total {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0
