"""Brain-Score model plugins: timm baselines, EfficientNet-Lite, harmonized networks and local checkpoints.

Public API (imported lazily, so ``import harmonized_models`` stays cheap)::

    load_model(identifier, *, device='auto', batch_size=None, autocast=None) -> ModelCommitment
    activations_model(identifier, ...) -> TorchActivationsModel    (a plugin's get_model)
    model_layers(identifier) -> list[str]                          (a plugin's get_layers)
    region_layer_map_with_source(identifier) -> (map, source)      (registry, or committed locally: PATH)
    list_models(category=None) -> list[ModelEntry]
    get_entry(identifier) -> ModelEntry
    weights_hash(identifier) -> str
    committed_region_layer_map(identifier) -> dict   (the layers load_model commits to)
    model_from_network(network, identifier, preprocessing, it_layer, **kw) -> ModelCommitment
    extract_features(model, stimuli, layers=None, *, device='auto') -> {layer: DataArray}
    TorchActivationsModel, Preprocessing, ModelEntry, register_model, UnknownModelError
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "registry", "list_models": "registry", "get_entry": "registry", "weights_hash": "registry",
    "register_model": "registry", "load_errors": "registry",
    "committed_region_layer_map": "registry", "ModelEntry": "registry", "UnknownModelError": "registry",
    "CATEGORIES": "registry", "model_from_network": "commitment", "TorchActivationsModel": "activations",
    "Preprocessing": "preprocessing", "extract_features": "features", "activations_model": "registry",
    "model_layers": "registry", "region_layer_map_with_source": "registry",
    "canonical_identifier": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
