"""Take a model's activations out: the layers of any registered model on any images, as labelled arrays.

What THINGSvision's ``get_extractor`` / ``extract_features`` offer, on this package's models and extractor
(:class:`~harmonized_models.activations.TorchActivationsModel`, the same one the benchmarks' ``look_at`` runs), so
the arrays are exactly the activations the benchmarks see. Each layer keeps its natural shape:

* conv layers ``[N, C, h, w]`` -> dims ``(stimulus_id, channel, row, col)`` (row 0 = image top);
* token layers ``[N, T, E]`` -> ``(stimulus_id, token, embedding)`` (class/register tokens included, in order);
* anything else flattened -> ``(stimulus_id, unit)``.

The grid sampling and shift presentations of the Arcaro2020 benchmarks are composed on top of this by
``benchmarks_it_maps.runs.features`` (``brainscore features``): the model package does not depend on the benchmarks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import xarray as xr

from .registry import load_model

#: Image file suffixes a stimulus folder may hold (everything else in the folder is ignored).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Dimension names by the number of per-image axes of a layer's output.
LAYER_DIMS = {3: ("channel", "row", "col"), 2: ("token", "embedding"), 1: ("unit",)}


class FeatureExtractionError(ValueError):
    """Stimuli or layers that cannot be used (the message names what and how to fix it)."""


def stimulus_paths(stimuli: Any) -> tuple[list[str], list[str]]:
    """``(stimulus_ids, paths)`` of a StimulusSet, a folder of images (ids = file names without suffix, sorted) or
    a sequence of image paths (ids = file stems)."""
    if hasattr(stimuli, "get_stimulus") and "stimulus_id" in getattr(stimuli, "columns", ()):
        ids = list(stimuli["stimulus_id"].values)
        return [str(sid) for sid in ids], [str(stimuli.get_stimulus(sid)) for sid in ids]
    if isinstance(stimuli, (str, os.PathLike)):
        folder = Path(stimuli)
        if not folder.is_dir():
            raise FeatureExtractionError(f"{folder}: not a folder of images (or a dataset name this command knows)")
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FeatureExtractionError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    else:
        paths = [Path(p) for p in stimuli]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FeatureExtractionError(f"image files not found: {missing[:3]}")
    ids = [p.stem for p in paths]
    duplicates = sorted({sid for sid in ids if ids.count(sid) > 1})
    if duplicates:
        raise FeatureExtractionError(f"image names {duplicates[:3]} occur twice (the stimulus id is the file name "
                                     "without its suffix); rename them")
    return ids, [str(p) for p in paths]


def activations_model_of(model: Any):
    """The :class:`TorchActivationsModel` behind a ModelCommitment (or the object itself if it is one)."""
    activations = getattr(model, "activations_model", model)
    if not hasattr(activations, "run") or not hasattr(activations, "get_layer"):
        raise FeatureExtractionError(f"model {getattr(model, 'identifier', model)!r} has no harmonized_models "
                                     "activations extractor (load it with harmonized_models.load_model)")
    return activations


def committed_layers(model: Any, region: str = "IT") -> list[str]:
    """The layer(s) a ModelCommitment records for ``region`` (a comma-free name, or several for a multi-layer map)."""
    layer_map = getattr(getattr(getattr(model, "layer_model", None), "_layer_model", None), "region_layer_map", None)
    if not layer_map or region not in layer_map:
        raise FeatureExtractionError(f"model {getattr(model, 'identifier', model)!r} commits no {region} layer; "
                                     "pass layers explicitly")
    layers = layer_map[region]
    return [layers] if isinstance(layers, str) else list(layers)


def layer_array(values: np.ndarray, layer: str, stimulus_ids: Sequence[str], paths: Sequence[str]) -> xr.DataArray:
    """One layer's activations ``[N, ...]`` as a labelled array (see the module docstring for the dims)."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim - 1 not in LAYER_DIMS:
        values = values.reshape(values.shape[0], -1)
    dims = ("stimulus_id", *LAYER_DIMS[values.ndim - 1])
    coords = {"stimulus_id": np.asarray(stimulus_ids, dtype=str), "stimulus_path": ("stimulus_id",
                                                                                     np.asarray(paths, dtype=str))}
    coords.update({dim: np.arange(size) for dim, size in zip(dims[1:], values.shape[1:])})
    return xr.DataArray(values, dims=dims, coords=coords, name=layer, attrs={"layer": layer})


def extract_features(model: Any, stimuli: Any, layers: Optional[Sequence[str]] = None, *, device: str = "auto",
                     batch_size: Optional[int] = None, pretrained: bool = True) -> dict[str, xr.DataArray]:
    """Activations of ``layers`` of ``model`` for ``stimuli``: ``{layer: DataArray}`` in stimulus order.

    ``model``: a registry identifier (loaded with :func:`harmonized_models.load_model`) or a ModelCommitment /
    TorchActivationsModel of this package. ``stimuli``: a StimulusSet, a folder of images or a list of image paths.
    ``layers`` default to the model's committed IT layer(s). One forward pass per image for all layers, with the
    extractor's progress bar; the arrays are float32 and carry ``stimulus_id``/``stimulus_path`` coordinates.
    """
    if isinstance(model, str):
        model = load_model(model, device=device, batch_size=batch_size, pretrained=pretrained)
    activations = activations_model_of(model)
    layers = list(layers) if layers else committed_layers(model)
    for layer in layers:
        try:
            activations.get_layer(layer)
        except KeyError as error:
            raise FeatureExtractionError(error.args[0] if error.args else str(error)) from None
    ids, paths = stimulus_paths(stimuli)
    outputs = activations.run(paths, layers)
    return {layer: layer_array(outputs[layer], layer, ids, paths) for layer in layers}
