"""``brainscore commit-layers``: choose a model's committed layer for a region on a benchmark and store it."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``commit-layers``."""
    parser = subparsers.add_parser(
        "commit-layers", help="select a model's IT (or other region's) layer on a benchmark and store the map",
        description="Score the model's candidate layers on a benchmark (this package's maps-protocol benchmarks "
                    "use one pass and leave-one-image-out scores; any other benchmark, e.g. brainscore-vision's "
                    "MajajHong2015public.IT-pls when its data is reachable, is run once per layer), commit the best "
                    "layer and store the region_layer_map under the data home, where later runs of this model "
                    "pick it up.")
    parser.add_argument("--model", required=True, help="model identifier (brainscore list models)")
    parser.add_argument("--benchmark", required=True, help="benchmark identifier (ours or brainscore-vision's)")
    parser.add_argument("--layers", nargs="+", default=None, help="candidate layers (default: the entry's)")
    parser.add_argument("--region", choices=["V1", "V2", "V4", "IT"], default=None,
                        help="region to commit (default: the benchmark's, else IT)")
    parser.add_argument("--method", choices=["auto", "analysis", "rescore"], default="auto",
                        help="analysis: nested cross-validation in one pass (this package's -pls / -map_alignment); "
                             "rescore: run the benchmark once per layer (any benchmark); auto picks (default)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the map in Brain-Score plugin format (region_layer_map/<id>.json)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA when available (bf16 autocast), else CPU (float32)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default: automatic, backs off on out-of-memory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_commit_layers)


def _commit_layers(args) -> int:
    from benchmarks_it_maps.cli import UserError
    from benchmarks_it_maps.benchmarks.arcaro2020 import NoSpatialStructureError
    from benchmarks_it_maps.runs.scoring import ScoringError
    from harmonized_models import load_errors
    from benchmarks_it_maps.runs.layer_selection import select_layer, write_plugin_json
    try:
        choice = select_layer(args.model, args.benchmark, layers=args.layers, region=args.region,
                              method=args.method, device=args.device, batch_size=args.batch_size)
    except KeyError as error:
        raise UserError(str(error.args[0]) if error.args else str(error)) from None
    except (ScoringError, NoSpatialStructureError, FileNotFoundError, *load_errors()) as error:
        raise UserError(str(error)) from None
    if args.out is not None:
        write_plugin_json(args.out, choice.region_layer_map)
    if args.json:
        print(json.dumps({"model": choice.model, "benchmark": choice.benchmark, "region": choice.region,
                          "method": choice.method, "selected": choice.selected,
                          "layer_scores": dict(zip(choice.layers, choice.layer_scores)),
                          "nested_score": choice.nested_score, "region_layer_map": choice.region_layer_map,
                          "stored_at": str(choice.stored_at), "out": str(args.out) if args.out else None}))
    else:
        for layer, value in zip(choice.layers, choice.layer_scores):
            marker = "  <- committed" if layer == choice.selected else ""
            print(f"  {layer:30s} {value:.4f}{marker}")
        if choice.nested_score is not None:
            print(f"nested (selection-blind) score: {choice.nested_score:.4f}")
        print(f"{choice.region} -> {choice.selected}; stored at {choice.stored_at}"
              + (f"; plugin JSON {args.out}" if args.out else ""))
    return 0
