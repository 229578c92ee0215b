"""``brainscore features`` (export a model's benchmark regressors) and ``brainscore score-features`` (score a file)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``features`` and ``score-features``."""
    features = subparsers.add_parser(
        "features", help="write a model's benchmark features (grid-sampled maps or shift responses) to a file",
        description="Run a model on a dataset's images (or a folder) and write what the Arcaro2020 benchmarks "
                    "regress on: each layer's whole-image feature map sampled at the recording grid (--protocol "
                    "maps) or its responses to the shifted presentations (--protocol shift), with stimulus ids and "
                    "grid coordinates. .h5, .npz or .nc, written atomically.")
    features.add_argument("--model", "--model_identifier", dest="model", required=True,
                          help="model identifier (brainscore list models)")
    features.add_argument("--stimuli", required=True,
                          help="Arcaro2020, Arcaro2020sim, a site (Arcaro2020sim.M2ML) or a folder of images")
    features.add_argument("--layers", nargs="+", default=None, help="layers (default: the committed IT layer)")
    features.add_argument("--protocol", default="maps", choices=["maps", "shift"],
                          help="maps: whole-image feature maps sampled at the grid (-pls); shift: responses to the "
                               "shifted presentations (-shift_pls) (default maps)")
    features.add_argument("--grid", type=int, default=None,
                          help="grid positions per side for a folder of images (default 17)")
    features.add_argument("--out", type=Path, required=True, help="output file: .h5, .npz or .nc")
    features.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                          help="auto: CUDA when available (bf16 autocast), else CPU (float32)")
    features.add_argument("--batch-size", type=int, default=None,
                          help="images per forward pass (default: automatic, backs off on out-of-memory)")
    features.set_defaults(func=_features)

    scorer = subparsers.add_parser(
        "score-features", help="score a feature file on a benchmark (as if the model were scored)",
        description="Feed a file written by `brainscore features` into a benchmark's own evaluation: the same "
                    "score as scoring the model that produced it. Not stored in the results database.")
    scorer.add_argument("file", type=Path, help="feature file (.h5, .npz or .nc)")
    scorer.add_argument("--benchmark", "--benchmark_identifier", dest="benchmark", required=True,
                        help="benchmark identifier (brainscore list benchmarks)")
    scorer.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    scorer.set_defaults(func=_score_features)


def _errors() -> tuple:
    from harmonized_models import load_errors
    from harmonized_models.features import FeatureExtractionError
    from benchmarks_it_maps.benchmarks.arcaro2020 import NoSpatialStructureError, UnknownBenchmarkError
    from benchmarks_it_maps.runs.features import FeatureFileError
    return (FeatureFileError, FeatureExtractionError, NoSpatialStructureError, UnknownBenchmarkError, KeyError,
            FileNotFoundError, *load_errors())


def _user_error(error: BaseException):
    from benchmarks_it_maps.cli import UserError
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return UserError(str(message))


def _features(args) -> int:
    from benchmarks_it_maps.runs import features
    try:
        features._format(args.out)  # a bad suffix fails before the model runs
        blocks, attrs = features.benchmark_features(args.model, args.stimuli, layers=args.layers,
                                                    protocol=args.protocol, grid_size=args.grid,
                                                    device=args.device, batch_size=args.batch_size)
        path = features.write_features(blocks, attrs, args.out)
    except _errors() as error:
        raise _user_error(error) from None
    shapes = ", ".join(f"{name} {tuple(block.shape)}" for name, block in blocks.items())
    print(f"wrote {path}: {attrs['protocol']} features of {attrs['model']} ({attrs['layers']}): {shapes}")
    return 0


def _score_features(args) -> int:
    from benchmarks_it_maps.runs import features
    from benchmarks_it_maps.runs.scoring import score_summary
    try:
        result = features.score_features(args.file, args.benchmark)
    except _errors() as error:
        raise _user_error(error) from None
    summary = score_summary(result)
    keys = ("model", "benchmark", "score", "raw", "ceiling", "error", "layer")
    if args.json:
        print(json.dumps({k: summary.get(k) for k in keys}))
    else:
        from benchmarks_it_maps.cli.scoring import format_table
        print(format_table([summary], keys))
    return 0
