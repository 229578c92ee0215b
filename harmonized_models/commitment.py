"""Turning a PyTorch network into a Brain-Score ``ModelCommitment``, and the stored region -> layer commitments.

A commitment always gets an explicit ``region_layer_map``: brainscore-vision would otherwise try to select layers
on its public benchmarks (S3 data, often unreachable). Maps chosen with ``brainscore commit-layers`` are stored as
``data_home()/region_layer_maps/<identifier>.json`` and take precedence over a registry entry's default.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .preprocessing import Preprocessing

logger = logging.getLogger(__name__)

REGIONS = ("V1", "V2", "V4", "IT")
VISUAL_DEGREES = 8


def region_layer_map_path(identifier: str) -> Path:
    """Where ``brainscore commit-layers`` stores the committed region -> layer map of a model."""
    from benchmarks_it_maps.home import data_home
    safe = identifier.replace("/", "_").replace(":", "_")
    return data_home() / "region_layer_maps" / f"{safe}.json"


def validate_region_layer_map(mapping: Mapping[str, Any], source: str = "region_layer_map") -> dict[str, str]:
    """Check a region -> layer map has exactly V1, V2, V4 and IT with non-empty layer names."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{source}: expected an object mapping regions to layer names, got {type(mapping).__name__}")
    missing = [r for r in REGIONS if r not in mapping]
    unknown = [r for r in mapping if r not in REGIONS]
    if missing or unknown:
        raise ValueError(f"{source}: regions must be exactly {list(REGIONS)} (missing {missing}, unknown {unknown})")
    bad = [r for r in REGIONS if not isinstance(mapping[r], str) or not mapping[r]]
    if bad:
        raise ValueError(f"{source}: layer names of {bad} must be non-empty strings")
    return {r: mapping[r] for r in REGIONS}


def load_stored_region_layer_map(identifier: str) -> dict[str, str] | None:
    """The map stored by ``brainscore commit-layers`` for ``identifier``, or None."""
    path = region_layer_map_path(identifier)
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete the file or rerun `brainscore commit-layers`")
    mapping = payload.get("region_layer_map", payload) if isinstance(payload, dict) else payload
    return validate_region_layer_map(mapping, source=str(path))


def store_region_layer_map(identifier: str, mapping: Mapping[str, str], **provenance: Any) -> Path:
    """Atomically write the committed map (plus provenance such as the benchmark and layer scores)."""
    from benchmarks_it_maps.home import atomic_file
    mapping = validate_region_layer_map(mapping)
    path = region_layer_map_path(identifier)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"model": identifier, "region_layer_map": mapping, **provenance}, indent=2,
                                  sort_keys=False, default=str))
    return path


def model_from_network(network: torch.nn.Module, identifier: str,
                       preprocessing: Preprocessing | Mapping | int | None, it_layer: str, *,
                       region_layer_map: Mapping[str, str] | None = None, layers: Sequence[str] | None = None,
                       visual_degrees: float = VISUAL_DEGREES, behavioral_readout_layer: str | None = None,
                       **activations_kwargs: Any):
    """Wrap any torch network as a ``ModelCommitment`` that records ``it_layer`` for IT.

    Without ``region_layer_map`` every region maps to ``it_layer`` (the IT benchmarks only record IT).
    ``activations_kwargs`` go to :class:`~harmonized_models.activations.TorchActivationsModel` (device, batch_size,
    autocast, channels_last, max_batch_size, ...).
    """
    from brainscore_vision.model_helpers.brain_transformation import ModelCommitment
    from .activations import TorchActivationsModel
    if region_layer_map is None:
        region_layer_map = {region: it_layer for region in REGIONS}
    else:
        region_layer_map = {**validate_region_layer_map(region_layer_map), "IT": it_layer}
    activations = TorchActivationsModel(network, identifier, preprocessing, **activations_kwargs)
    for layer in dict.fromkeys(region_layer_map.values()):
        activations.get_layer(layer)  # unknown layer -> one clear KeyError now, not mid-benchmark
    layers = list(layers) if layers is not None else list(dict.fromkeys(region_layer_map.values()))
    return ModelCommitment(identifier=identifier, activations_model=activations, layers=layers,
                           behavioral_readout_layer=behavioral_readout_layer, region_layer_map=dict(region_layer_map),
                           visual_degrees=visual_degrees)
