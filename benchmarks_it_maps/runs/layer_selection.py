"""Choosing a model's committed layer for a region on a benchmark (``brainscore commit-layers``).

Two methods:

``analysis`` (this package's maps-protocol benchmarks, ``-pls`` / ``-map_alignment``)
    :func:`benchmarks_it_maps.runs.scoring.layer_analysis`: one pass of the model over the images for all candidate
    layers, leave-one-image-out score per layer (averaged over sites for a composite). Also reports the nested
    (selection-blind) score, the honest estimate after choosing.
``rescore`` (any benchmark: ours, including the shift protocol, or brainscore-vision's, e.g.
    ``MajajHong2015public.IT-pls`` when its data can be downloaded)
    The model is committed with each candidate layer in turn and scored by the benchmark itself; the best wins.

The chosen layer replaces the region's entry in the model's default map, and the map is stored under
``data_home()/region_layer_maps/<id>.json`` (used by later ``load_model`` calls), with the per-layer scores as
provenance.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from brainscore_vision.model_helpers.brain_transformation import ModelCommitment

from benchmarks_it_maps.benchmarks import arcaro2020 as ours
from benchmarks_it_maps.home import atomic_file
from benchmarks_it_maps.runs import scoring
from harmonized_models.commitment import REGIONS, store_region_layer_map
from harmonized_models.registry import get_entry, load_model

logger = logging.getLogger(__name__)
METHODS = ("auto", "analysis", "rescore")


@dataclass
class LayerChoice:
    model: str
    benchmark: str
    region: str
    method: str
    layers: list[str]
    layer_scores: list[float]
    selected: str
    region_layer_map: dict[str, str]
    nested_score: float | None = None
    stored_at: Path | None = None
    extra: dict = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "region": self.region, "method": self.method,
                "layer_scores": dict(zip(self.layers, self.layer_scores)), "selected": self.selected,
                "nested_score": self.nested_score, "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat()}


def _benchmark_region(benchmark: Any, identifier: str) -> str:
    region = getattr(benchmark, "region", None)
    if isinstance(region, str) and region in REGIONS:
        return region
    for candidate in REGIONS:
        if f".{candidate}-" in identifier or f".{candidate}." in identifier:
            return candidate
    return "IT"


def _is_our_maps_benchmark(identifier: str) -> bool:
    try:
        return ours.load(identifier).readout == "maps"
    except KeyError:
        return False


def select_layer(model_identifier: str, benchmark_identifier: str, *, layers: Sequence[str] | None = None,
                 region: str | None = None, method: str = "auto", model: Any = None, device: str = "auto",
                 batch_size: int | None = None, store: bool = True) -> LayerChoice:
    """Score the candidate layers of ``model_identifier`` on ``benchmark_identifier`` and commit the best one.

    ``model`` may be a ready ModelCommitment (tests, networks outside the registry); by default it is loaded with
    :func:`harmonized_models.load_model`. ``layers`` default to the entry's candidate layers.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    base_map: dict[str, str]
    if model is None:
        entry = get_entry(model_identifier)
        model = load_model(model_identifier, device=device, batch_size=batch_size)
        base_map = dict(entry.region_layer_map)
        layers = list(layers or entry.candidate_layers)
    else:
        base_map = dict(model.layer_model.region_layer_map)
        layers = list(layers or model.layers)
    if not layers:
        raise ValueError(f"{model_identifier}: no candidate layers; pass layers")
    for layer in layers:
        model.activations_model.get_layer(layer)
    if method == "auto":
        method = "analysis" if _is_our_maps_benchmark(benchmark_identifier) else "rescore"
    if method == "analysis":
        analyses = scoring.layer_analysis(model, benchmark_identifier, layers=layers)
        layer_scores = np.mean([a.layer_scores for a in analyses], axis=0)
        nested = float(np.mean([a.nested_score for a in analyses]))
        region = region or "IT"
    else:
        benchmark = scoring.resolve_benchmark(benchmark_identifier)
        region = region or _benchmark_region(benchmark, benchmark_identifier)
        layer_scores = np.array([_rescore(model, benchmark, region, layer) for layer in layers])
        nested = None
    if not np.isfinite(layer_scores).any():
        raise ValueError(f"{model_identifier} on {benchmark_identifier}: no layer gave a finite score")
    best = layers[int(np.nanargmax(layer_scores))]
    choice = LayerChoice(model=model_identifier, benchmark=benchmark_identifier, region=region, method=method,
                         layers=list(layers), layer_scores=[float(v) for v in layer_scores], selected=best,
                         region_layer_map={**base_map, region: best}, nested_score=nested)
    logger.info("%s on %s: %s -> %s (%s)", model_identifier, benchmark_identifier, region, best,
                ", ".join(f"{l} {s:.3f}" for l, s in zip(layers, layer_scores)))
    if store:
        choice.stored_at = store_region_layer_map(model_identifier, choice.region_layer_map, **choice.provenance())
    return choice


def _rescore(model: Any, benchmark: Any, region: str, layer: str) -> float:
    """The benchmark's score of ``model`` committed with ``layer`` for ``region``."""
    base = dict(model.layer_model.region_layer_map)
    committed = ModelCommitment(identifier=model.identifier, activations_model=model.activations_model,
                                layers=list(dict.fromkeys([*model.layers, layer])),
                                region_layer_map={**base, region: layer}, visual_degrees=model.visual_degrees())
    score = benchmark(committed)
    return float(score)


def write_plugin_json(path: str | Path, region_layer_map: Mapping[str, str]) -> Path:
    """Write the map in Brain-Score's plugin format (``region_layer_map/<id>.json``: region -> layer)."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({r: region_layer_map[r] for r in REGIONS}, indent=2))
    return path
