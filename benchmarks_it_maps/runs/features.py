"""Feature export: the regressors the Arcaro2020 benchmarks fit, written to a file, and scored back from it.

``brainscore features`` (and :func:`benchmark_features` in Python) runs a model on a dataset's images (or a folder)
and keeps exactly what the benchmark regresses on the neural maps:

``maps`` protocol (``-pls``, ``-map_alignment``)
    each layer's whole-image feature map (``harmonized_models.extract_features``) arranged as the benchmark does
    (:func:`benchmarks_it_maps.benchmarks.arcaro2020.neuroids_to_maps`) and sampled at the recording grid
    (:func:`benchmarks_it_maps.benchmarks.readout.sample_feature_maps`); several layers are concatenated.
``shift`` protocol (``-shift_pls``)
    the layers' whole responses to each shifted presentation (grid point at the centre of gaze), flattened.

Every block of the file is ``features [stimulus, grid_row, grid_col, feature]`` (float32) with ``stimulus_id``,
``image_v`` (per grid row) / ``image_u`` (per grid column) in normalised image coordinates (0 = top / left edge,
1 = bottom / right), and ``layer`` / ``channel`` per feature. A dataset gives one block per monkey (its own images and
grid), a folder one block ``stimuli``. Formats: ``.h5`` (h5py groups), ``.npz`` (``BLOCK/field`` keys, no pickles)
and ``.nc`` (one netCDF4 group per block); each file is written atomically.

:func:`score_features` feeds a file back into a benchmark's own evaluation and scoring path, with the model's feature
step replaced by the file's features: the same numbers as scoring the model (tests/test_features.py).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import netCDF4
import numpy as np
import xarray as xr

import harmonized_models
from harmonized_models.features import (activations_model_of, committed_layers, extract_features,
                                        stimulus_paths)
from benchmarks_it_maps.benchmarks import arcaro2020 as bm
from benchmarks_it_maps.benchmarks.readout import grid_coordinates, sample_feature_maps
from benchmarks_it_maps.data import conventions
from benchmarks_it_maps.home import atomic_file
from benchmarks_it_maps.runs.results import package_version

PROTOCOLS = ("maps", "shift")
FORMATS = (".h5", ".npz", ".nc")
#: Version of the file layout (bumped if a field changes meaning).
FORMAT_VERSION = 1
#: Grid of a folder of images when none is given: monkey 1's 17 x 17 positions.
DEFAULT_FOLDER_GRID = conventions.M1.grid_size
FOLDER_BLOCK = "stimuli"
_FIELDS = ("features", "stimulus_id", "image_v", "image_u", "layer", "channel")


class FeatureFileError(ValueError):
    """A feature file or request that cannot be used (the message names the file, field and fix)."""


# ----------------------------------------------------------------------------------------------------------------
# computing the features
# ----------------------------------------------------------------------------------------------------------------
def _stimulus_blocks(stimuli: str, grid_size: Optional[int]) -> dict[str, tuple[Any, int, float]]:
    """``{block: (stimulus_set, grid_size, image_size_deg)}`` for a dataset, a site or a folder of images."""
    if stimuli in bm.DATASETS:
        monkey_sites = {}
        for site in bm.SITES:  # one site per monkey: its images and grid
            monkey_sites.setdefault(conventions.SITES[site].monkey, site)
        return {monkey: _site_block(f"{stimuli}.{site}") for monkey, site in monkey_sites.items()}
    if "." in stimuli and stimuli.split(".", 1)[0] in bm.DATASETS and stimuli.split(".", 1)[1] in bm.SITES:
        return {stimuli.split(".", 1)[1]: _site_block(stimuli)}
    folder = Path(stimuli).expanduser()
    if not folder.is_dir():
        raise FeatureFileError(f"--stimuli {stimuli!r}: neither a dataset ({', '.join(bm.DATASETS)}), a site "
                               f"(e.g. {bm.DATASETS[0]}.M1ML) nor a folder of images")
    ids, paths = stimulus_paths(folder)
    stimulus_set = _folder_stimulus_set(ids, paths, folder)
    return {FOLDER_BLOCK: (stimulus_set, int(grid_size or DEFAULT_FOLDER_GRID), conventions.IMAGE_SIZE_DEG)}


def _site_block(assembly_identifier: str) -> tuple[Any, int, float]:
    site = bm.load_site_data(assembly_identifier)
    return site.stimulus_set, site.grid_size, site.image_size_deg


def _folder_stimulus_set(ids: Sequence[str], paths: Sequence[str], folder: Path):
    from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
    stimulus_set = StimulusSet([dict(stimulus_id=sid, filename=Path(p).name) for sid, p in zip(ids, paths)])
    stimulus_set.stimulus_paths = dict(zip(ids, paths))
    stimulus_set.identifier = f"folder-{folder.name}"
    return stimulus_set


def _layer_maps(array: xr.DataArray, model_identifier: str) -> np.ndarray:
    """A layer's activations as feature maps ``[N, C, h, w]``, arranged by the benchmark's own rule."""
    n = array.sizes["stimulus_id"]
    shape = array.shape[1:]
    index = np.unravel_index(np.arange(int(np.prod(shape))), shape)
    if array.dims[1:] == ("channel", "row", "col"):
        coords = dict(channel=index[0], channel_x=index[1], channel_y=index[2], embedding=None)
    elif array.dims[1:] == ("token", "embedding"):
        coords = dict(channel=index[0], channel_x=None, channel_y=None, embedding=index[1])
    else:
        coords = dict(channel=index[0], channel_x=None, channel_y=None, embedding=None)
    return bm.neuroids_to_maps(array.values.reshape(n, -1), coords, model_identifier=model_identifier,
                               layer=str(array.name))


def _block_array(values: np.ndarray, stimulus_ids: Sequence[str], grid: int, layers: Sequence[str],
                 channels: Sequence[int]) -> xr.DataArray:
    u = grid_coordinates(grid)
    return xr.DataArray(
        np.ascontiguousarray(values, dtype=np.float32), dims=("stimulus_id", "grid_row", "grid_col", "feature"),
        coords={"stimulus_id": np.asarray(stimulus_ids, dtype=str), "grid_row": np.arange(grid),
                "grid_col": np.arange(grid), "image_v": ("grid_row", u), "image_u": ("grid_col", u),
                "layer": ("feature", np.asarray(layers, dtype=str)),
                "channel": ("feature", np.asarray(channels, dtype=np.int64))},
        name="features")


def _maps_block(model, stimulus_set, grid: int, layers: Sequence[str]) -> xr.DataArray:
    arrays = extract_features(model, stimulus_set, layers)
    sampled, layer_of, channel_of = [], [], []
    for layer, array in arrays.items():
        try:
            maps = _layer_maps(array, model.identifier)
        except bm.NoSpatialStructureError as error:
            raise FeatureFileError(f"{error} (in `brainscore features`: --protocol shift)") from None
        sampled.append(sample_feature_maps(maps, grid))
        layer_of += [layer] * maps.shape[1]
        channel_of += list(range(maps.shape[1]))
    ids = next(iter(arrays.values()))["stimulus_id"].values
    return _block_array(np.concatenate(sampled, axis=-1), ids, grid, layer_of, channel_of)


def _shift_block(model, stimulus_set, grid: int, layers: Sequence[str], image_size_deg: float,
                 canvas_px: int) -> xr.DataArray:
    plan = bm.shift_plan(stimulus_set, grid, float(model.visual_degrees()), image_size_deg, canvas_px=canvas_px)
    activations = activations_model_of(model)
    if callable(getattr(activations, bm.PLACED_PRESENTATIONS_HOOK, None)):  # composed on the device, no files
        paths = [str(plan.stimulus_set.get_stimulus(sid)) for sid in plan.stimulus_set["stimulus_id"]]
        with activations.placed_presentations(paths, plan.source_images(), plan.sources, plan.tops, plan.lefts,
                                              plan.canvas_px, bm.SHIFT_BACKGROUND):
            arrays = extract_features(model, plan.stimulus_set, layers)
    else:
        arrays = extract_features(model, bm.render_shift_files(plan), layers)
    n = len(stimulus_set)
    flat = [array.values.reshape(n, grid, grid, -1) for array in arrays.values()]
    layer_of = [layer for layer, f in zip(arrays, flat) for _ in range(f.shape[-1])]
    channel_of = [i for f in flat for i in range(f.shape[-1])]
    ids = [str(sid) for sid in stimulus_set["stimulus_id"].values]
    return _block_array(np.concatenate(flat, axis=-1), ids, grid, layer_of, channel_of)


def benchmark_features(model: Any, stimuli: str, *, layers: Optional[Sequence[str]] = None, protocol: str = "maps",
                       grid_size: Optional[int] = None, device: str = "auto", batch_size: Optional[int] = None,
                       canvas_px: int = bm.SHIFT_CANVAS_PX) -> tuple[dict[str, xr.DataArray], dict]:
    """The benchmark regressors of ``model`` on ``stimuli``: ``({block: DataArray}, attrs)`` (see module docstring).

    ``stimuli``: ``'Arcaro2020'``/``'Arcaro2020sim'`` (one block per monkey), a site such as ``'Arcaro2020sim.M2ML'``
    or a folder of images (``grid_size`` positions, default 17). ``layers`` default to the committed IT layer(s),
    the ones the benchmarks record.
    """
    if protocol not in PROTOCOLS:
        raise FeatureFileError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if grid_size is not None and int(grid_size) < 2:
        raise FeatureFileError(f"--grid {grid_size}: a grid needs at least 2 positions per side")
    if isinstance(model, str):
        model = harmonized_models.load_model(model, device=device, batch_size=batch_size)
    layers = list(layers) if layers else committed_layers(model)
    blocks = {}
    for name, (stimulus_set, grid, image_size_deg) in _stimulus_blocks(stimuli, grid_size).items():
        if protocol == "maps":
            blocks[name] = _maps_block(model, stimulus_set, grid, layers)
        else:
            blocks[name] = _shift_block(model, stimulus_set, grid, layers, image_size_deg, canvas_px)
    attrs = dict(model=model.identifier, stimuli=str(stimuli), protocol=protocol, layers=",".join(layers),
                 visual_degrees=float(model.visual_degrees()), canvas_px=int(canvas_px),
                 package_version=package_version(), format_version=FORMAT_VERSION)
    return blocks, attrs


# ----------------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------------
def _format(path: Path) -> str:
    suffix = ".h5" if path.suffix.lower() == ".hdf5" else path.suffix.lower()
    if suffix not in FORMATS:
        raise FeatureFileError(f"{path}: unknown feature file type {path.suffix!r}; use .h5, .npz or .nc")
    return suffix


def _block_fields(block: xr.DataArray) -> dict[str, np.ndarray]:
    return dict(features=block.values, stimulus_id=block["stimulus_id"].values.astype(str),
                image_v=block["image_v"].values, image_u=block["image_u"].values,
                layer=block["layer"].values.astype(str), channel=block["channel"].values)


def write_features(blocks: dict[str, xr.DataArray], attrs: dict, path: str | os.PathLike) -> Path:
    """Write ``blocks`` (from :func:`benchmark_features`) to ``path`` (.h5, .npz or .nc), atomically."""
    path = Path(path)
    kind = _format(path)
    attrs = {**attrs, "blocks": ",".join(blocks)}
    with atomic_file(path) as tmp:
        if kind == ".h5":
            with h5py.File(tmp, "w") as f:
                f.attrs.update({k: v for k, v in attrs.items()})
                for name, block in blocks.items():
                    group = f.create_group(name)
                    for key, value in _block_fields(block).items():
                        group.create_dataset(key, data=value.astype(object) if value.dtype.kind == "U" else value,
                                             dtype=h5py.string_dtype() if value.dtype.kind == "U" else None)
        elif kind == ".npz":
            arrays = {f"{name}/{key}": value for name, block in blocks.items()
                      for key, value in _block_fields(block).items()}
            with open(tmp, "wb") as f:
                np.savez(f, __attrs__=np.array(json.dumps(attrs)), **arrays)
        else:
            xr.Dataset(attrs=attrs).to_netcdf(tmp, mode="w", engine="netcdf4", format="NETCDF4")
            for name, block in blocks.items():
                block.reset_coords().to_netcdf(tmp, mode="a", group=name, engine="netcdf4", format="NETCDF4")
    return path


def _check_block(path: Path, name: str, fields: dict[str, np.ndarray]) -> xr.DataArray:
    missing = [key for key in _FIELDS if key not in fields]
    if missing:
        raise FeatureFileError(f"{path}: block {name!r} lacks the field(s) {missing}; write the file with "
                               "`brainscore features`")
    features = np.asarray(fields["features"])
    if features.ndim != 4 or features.shape[1] != features.shape[2] or features.shape[1] < 2:
        raise FeatureFileError(f"{path}: {name}/features has shape {features.shape}, expected [stimuli, G, G, "
                               "features] with G >= 2")
    if features.dtype.kind != "f" or not np.all(np.isfinite(features)):
        raise FeatureFileError(f"{path}: {name}/features must be finite floating-point numbers")
    n, grid, _, n_feat = features.shape
    expected = dict(stimulus_id=(n,), image_v=(grid,), image_u=(grid,), layer=(n_feat,), channel=(n_feat,))
    for key, shape in expected.items():
        if np.shape(fields[key]) != shape:
            raise FeatureFileError(f"{path}: {name}/{key} has shape {np.shape(fields[key])}, expected {shape} "
                                   f"(from {name}/features {features.shape})")
    ids = np.asarray(fields["stimulus_id"]).astype(str)
    if len(set(ids)) != len(ids):
        raise FeatureFileError(f"{path}: {name}/stimulus_id repeats ids; every stimulus must appear once")
    block = _block_array(features, ids, grid, np.asarray(fields["layer"]).astype(str),
                         np.asarray(fields["channel"]).astype(np.int64))
    return block.assign_coords(image_v=("grid_row", np.asarray(fields["image_v"], dtype=np.float64)),
                               image_u=("grid_col", np.asarray(fields["image_u"], dtype=np.float64)))


def _read_raw(path: Path, kind: str) -> tuple[dict, dict[str, dict]]:
    if kind == ".h5":
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            blocks = {}
            for name, group in f.items():
                if not isinstance(group, h5py.Group):
                    continue
                blocks[name] = {}
                for key, dataset in group.items():
                    value = dataset.asstr()[()] if h5py.check_string_dtype(dataset.dtype) else dataset[()]
                    blocks[name][key] = np.asarray(value)
        return attrs, blocks
    if kind == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if "__attrs__" not in f.files:
                raise FeatureFileError(f"{path}: no __attrs__ entry; write the file with `brainscore features`")
            attrs = json.loads(str(f["__attrs__"]))
            blocks: dict[str, dict] = {}
            for key in f.files:
                if "/" in key:
                    name, field = key.split("/", 1)
                    blocks.setdefault(name, {})[field] = f[key]
        return attrs, blocks
    with netCDF4.Dataset(path, "r") as root:
        attrs = {k: root.getncattr(k) for k in root.ncattrs()}
        names = list(root.groups)
    blocks = {}
    for name in names:
        with xr.open_dataset(path, group=name, engine="netcdf4") as ds:
            blocks[name] = {key: np.asarray(ds[key].values) for key in _FIELDS if key in ds.variables}
    return attrs, blocks


def read_features(path: str | os.PathLike) -> tuple[dict[str, xr.DataArray], dict]:
    """Read a feature file (never executes or unpickles anything); ``({block: DataArray}, attrs)``.

    Malformed files raise :class:`FeatureFileError` naming the file, the field and the fix.
    """
    path = Path(path)
    kind = _format(path)
    if not path.is_file():
        raise FeatureFileError(f"{path}: no such feature file")
    try:
        attrs, raw = _read_raw(path, kind)
    except FeatureFileError:
        raise
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise FeatureFileError(f"{path}: not a readable {kind} feature file ({type(error).__name__}: "
                               f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if attrs.get("protocol") not in PROTOCOLS:
        raise FeatureFileError(f"{path}: attribute 'protocol' is {attrs.get('protocol')!r}, expected one of "
                               f"{PROTOCOLS}; write the file with `brainscore features`")
    if not raw:
        raise FeatureFileError(f"{path}: holds no feature blocks")
    return {name: _check_block(path, name, fields) for name, fields in raw.items()}, attrs


# ----------------------------------------------------------------------------------------------------------------
# scoring from a file
# ----------------------------------------------------------------------------------------------------------------
class _FileModel:
    """Stands in for the model in a benchmark evaluation whose feature step reads the file instead."""

    def __init__(self, identifier: str):
        self.identifier = identifier

    def visual_degrees(self) -> float:  # pragma: no cover - never asked: the features are given
        raise RuntimeError("features come from a file")


def site_features(blocks: dict[str, xr.DataArray], site: bm.ArcaroSiteBenchmark, path: str = "features") -> \
        np.ndarray:
    """The file's features ``[I, P, F]`` for the images of ``site``, in the site's order (one clear error if the
    file lacks some of them or has another grid)."""
    wanted = [str(sid) for sid in site.data.stimulus_ids]
    for name, block in blocks.items():
        have = set(block["stimulus_id"].values)
        if not have.intersection(wanted):
            continue
        missing = [sid for sid in wanted if sid not in have]
        if missing:
            raise FeatureFileError(f"{path}: block {name!r} lacks stimuli {missing[:3]} of {site.identifier}; "
                                   "export the whole dataset")
        if block.sizes["grid_row"] != site.data.grid_size:
            raise FeatureFileError(f"{path}: block {name!r} is sampled on a {block.sizes['grid_row']}-point grid, "
                                   f"{site.identifier} has {site.data.grid_size}")
        values = block.sel(stimulus_id=wanted).values
        return values.reshape(len(wanted), -1, values.shape[-1])
    raise FeatureFileError(f"{path}: no block holds the stimuli of {site.identifier}; export its dataset "
                           f"(brainscore features --stimuli {site.dataset})")


def score_features(path: str | os.PathLike, benchmark_identifier: str | Any, **benchmark_kwargs: Any):
    """Score the features stored in ``path`` on a benchmark of this package, through the benchmark's own
    evaluation and scoring (only the model's feature step is replaced by the file). Returns the Score.

    ``benchmark_identifier`` is an identifier (built with ``benchmark_kwargs``) or an Arcaro2020 benchmark object
    already built, e.g. by ``brainscore_vision.load_benchmark`` (a plugin's test scoring its precomputed features)."""
    blocks, attrs = read_features(path)
    if isinstance(benchmark_identifier, str):
        benchmark = bm.load(benchmark_identifier, **benchmark_kwargs)
    else:
        benchmark, benchmark_identifier = benchmark_identifier, benchmark_identifier.identifier
    want = benchmark.readout  # "maps" or "shift" (the residual benchmarks read like their plain twins)
    if attrs["protocol"] != want:
        raise FeatureFileError(f"{path}: holds {attrs['protocol']}-protocol features, {benchmark_identifier} needs "
                               f"{want} (brainscore features --protocol {want})")
    sites = getattr(benchmark, "children", [benchmark])
    if getattr(sites[0], "surround", 0.0):
        raise FeatureFileError(f"{path}: feature files hold the features of the bare images; the surround option "
                               f"(here {sites[0].surround:g}) needs the model itself: score it with brainscore score")
    for site in sites:
        features = site_features(blocks, site, str(path))
        site.model_features = (lambda candidate, cache=None, _f=features: (_f, str(attrs.get("layers", ""))))
    return benchmark(_FileModel(str(attrs.get("model", Path(path).stem))))
