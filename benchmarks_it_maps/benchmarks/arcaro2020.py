"""Brain-Score benchmarks for the spatial IT activity maps of Arcaro, Ponce & Livingstone (2020).

Identifiers: ``{Arcaro2020,Arcaro2020sim}.{M1PL,M1ML,M2ML,IT}-{pls,shift_pls,map_alignment,residual_pls,
residual_shift_pls}``. ``IT`` is the composite (one vote per monkey: M1PL and M1ML 0.25 each, M2ML 0.5).

The protocols share one regression (:func:`benchmarks_it_maps.benchmarks.metric.loio_pls`, leave-one-image-out
PLS; Pearson r per channel across grid positions, median over channels, mean over images):

``maps`` (``-pls``, the paper's, corrected; PAPER_NOTES 8.6)
    The model looks at each whole image once (``start_recording('IT')`` + ``look_at``). The image fills the model's
    input: the neural grid spans the 16 deg image edge to edge, and the grid is sampled in *normalised image
    coordinates*, so the readout is exact whatever the model's ``visual_degrees``. Brain-Score's ``place_on_screen``
    is deliberately not used: for the usual 8 deg model it would centre-crop the 16 deg image to its central 8 deg
    and throw away three quarters of the grid (and the paper feeds the whole image). The committed IT response is
    reshaped into feature maps ``[N, C, h, w]`` (conv: ``channel``/``channel_x`` (row)/``channel_y`` (column);
    transformers: ``channel`` = token, ``embedding`` = feature, class/register tokens dropped, patch tokens on their
    square grid), sampled at the recording grid by bilinear interpolation, and regressed on the neural maps.
``shift`` (``-shift_pls``, PAPER_NOTES 8.7)
    Replays the experiment: for each grid position, the 16 deg image is placed so that the grid point sits at the
    centre of the model's visual field (``visual_degrees()`` wide), grey outside the image. The model's IT response
    to each presentation (all neuroids, any architecture) is the regressor for the neural response at that position,
    reduced per fold by PCA (at most 1000 components) fitted on the training images only. The image spans the
    benchmark's ``_visual_degrees`` (16) on a screen of ``candidate.visual_degrees()``, as with Brain-Score's
    ``place_on_screen`` (:func:`shift_plan`). Models whose activations model has the ``placed_presentations`` hook
    (this package's) get the presentations composed as tensors on their device; any other BrainModel gets PNG files
    with the same pixels (:func:`look_at_shifted`; docs/BENCHMARKS.md).
    Caveat, measured on the simulated twin (whose neurons read the *whole-image* feature map, like the maps
    protocol): a CNN's response at the centre of a shifted presentation is not its whole-image feature at that point
    (strided layers are not shift-equivariant, the surround changes to grey), and every network encodes where the
    grey surround lies in its field, so the shift protocol does not single out the generator there (M2ML, 16 deg
    field: generator 0.835, other seed 0.818, generator at layer1 0.818). On a twin whose neurons follow the shift
    protocol (``simulate.simulate_archive(protocol='shift')``) it does (tests/test_benchmark_recovery.py).
``residual`` (``-residual_pls``, ``-residual_shift_pls``; issue 11)
    The same leave-one-image-out PLS fit as ``-pls`` (``-shift_pls``), but before the per-channel Pearson r across
    positions the training images' mean neural map (per channel, per position) is subtracted from both the
    prediction and the held-out map (:func:`benchmarks_it_maps.benchmarks.metric.residual_per_channel`). The per-image
    spatial correlation of ``-pls`` is dominated by the position profile every image shares (an image-blind predictor
    scores well there); the residual statistic keeps only what is specific to the image, so the image-blind predictor
    scores exactly 0. Its ceiling is the split-half reliability of the residual maps.
``map_alignment`` (``-map_alignment``)
    The maps-protocol predictions of each held-out image, averaged over channels, compared with the channel-averaged
    neural map by Spearman rho at G x G (headline) and at int(G/4) x int(G/4).

Scores follow Brain-Score's convention (docs/BENCHMARKS.md): the ceiling is a Spearman-Brown corrected split-half
reliability (:mod:`benchmarks_it_maps.benchmarks.ceiling`; ``ceiling_method='auto'``: over repetitions when the data
has them, otherwise over interleaved time bins; ``'cross_channel'`` and ``'pairwise'`` are named options), and the
ceiled score is raw^2 / ceiling bounded to [0, 1] (:func:`ceiled_value`; attrs ``unbounded``, ``r_ceiled`` =
raw / sqrt(ceiling), ``error`` by the delta method, the raw SEM in ``raw.attrs['error']``). Map alignment ceils its
Spearman statistic with the split-half Spearman reliability of the channel-averaged map. Every score carries its
floor: ``position_only`` (the image-blind predictor: each held-out map predicted by the mean neural map of the
training images) and ``shuffled_image`` (the model's own features of another image), raw and ceiled. The ``IT``
composites give one vote per monkey with a joint bootstrap error (:func:`composite_score`); only
``<dataset>.IT-residual_pls`` has the leaderboard parent ``'IT'``.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from brainscore_core.metrics import Score
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
from brainscore_vision.benchmark_helpers import bound_score
from brainscore_vision.benchmarks import BenchmarkBase
from PIL import Image
from tqdm.auto import tqdm

from benchmarks_it_maps.benchmarks import ceiling as ceilings
from benchmarks_it_maps.benchmarks import metric
from benchmarks_it_maps.benchmarks import regression as regressions
from benchmarks_it_maps.benchmarks import surround as screen
from benchmarks_it_maps.benchmarks.readout import grid_coordinates, sample_feature_maps
from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.home import atomic_dir, data_home

logger = logging.getLogger(__name__)

DATASETS = ("Arcaro2020", "Arcaro2020sim")
SITES = ("M1PL", "M1ML", "M2ML")
COMPOSITE = "IT"
#: identifier suffix -> protocol name
SUFFIX_PROTOCOL = {"pls": "maps", "shift_pls": "shift", "map_alignment": "map_alignment",
                   "residual_pls": "residual_maps", "residual_shift_pls": "residual_shift"}
#: protocol -> how the model's regressors are read: ``maps`` (whole image, feature map at the grid) or ``shift``
READOUT = {"maps": "maps", "map_alignment": "maps", "residual_maps": "maps", "shift": "shift",
           "residual_shift": "shift"}
#: protocols scored by the residual statistic (:func:`benchmarks_it_maps.benchmarks.metric.residual_per_channel`)
RESIDUAL_PROTOCOLS = ("residual_maps", "residual_shift")
#: Score-changing revisions of these benchmarks.
VERSION = 2
#: The composite whose score the leaderboard aggregates (``parent='IT'``): the image-specific residual benchmark.
LEADERBOARD_SUFFIX = "residual_pls"
#: The brain region every benchmark records from.
REGION = "IT"
#: Shift protocol: width (px) of the model's visual field on the rendered canvas; models resize inputs anyway.
SHIFT_CANVAS_PX = 224
#: Shift protocol: the grey outside the image (Brain-Score's ``place_on_screen`` background).
SHIFT_BACKGROUND = (128, 128, 128)
#: Brain-Score's screen convention (``self._visual_degrees``, as upstream's benchmarks declare it): the stimuli span
#: 16 deg. The shift protocol places the image of this size on the model's screen of ``candidate.visual_degrees()``
#: (``place_on_screen`` semantics, see :func:`shift_plan`); the maps protocol shows the whole image (module docstring).
VISUAL_DEGREES = cv.IMAGE_SIZE_DEG
#: Brain-Score's ``self._number_of_trials``: one presentation per stimulus. The neural targets are averaged over
#: repetitions and the models are deterministic, so repeated trials (microsaccades) would only add noise the
#: repetition-averaged data does not have, at number_of_trials times the cost.
NUMBER_OF_TRIALS = 1
#: Most prefix (class/register/distillation) tokens a transformer layer may carry before its square patch grid.
MAX_PREFIX_TOKENS = 16
CEILING_METHODS = ("auto", "split_half", "time_split", "cross_channel", "pairwise")
#: Below this reliability a ceiling cannot be estimated: the benchmark says so instead of dividing by ~0.
MIN_RELIABILITY = 0.1

#: One entry, as brainscore-core's ``reference_from_bibtex`` requires: the recordings. (The model plugins cite
#: Linsley et al. 2023, whose harmonized networks they are.)
BIBTEX = """@article{arcaro2020,
  title={The neurons that mistook a hat for a face},
  author={Arcaro, Michael J and Ponce, Carlos and Livingstone, Margaret},
  journal={eLife},
  volume={9},
  pages={e53798},
  year={2020},
  doi={10.7554/eLife.53798},
  url={https://elifesciences.org/articles/53798}
}"""


class UnknownBenchmarkError(KeyError):
    """An identifier that names none of this package's benchmarks (the message lists close names)."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else ""


class NoSpatialStructureError(ValueError):
    """The model's IT response cannot be arranged into a spatial feature map (maps protocol impossible)."""


class NonFiniteFeaturesError(ValueError):
    """The model's IT response holds NaN or Inf values (a broken network: the regression cannot fit it). The same
    model gives them again on every attempt, so a sweep does not retry it."""


# ----------------------------------------------------------------------------------------------------------------
# identifiers
# ----------------------------------------------------------------------------------------------------------------
def benchmark_identifiers() -> list[str]:
    """All benchmark identifiers of this package, sorted."""
    return sorted(f"{dataset}.{site}-{suffix}" for dataset in DATASETS for site in (*SITES, COMPOSITE)
                  for suffix in SUFFIX_PROTOCOL)


def parse_identifier(identifier: str) -> tuple[str, str, str]:
    """``'Arcaro2020sim.M1ML-pls'`` -> ``('Arcaro2020sim', 'M1ML', 'pls')``; unknown ids raise with suggestions."""
    known = benchmark_identifiers()
    if identifier not in known:
        close = difflib.get_close_matches(str(identifier), known, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"
        raise UnknownBenchmarkError(f"unknown benchmark identifier {identifier!r}{hint}")
    data, suffix = identifier.split("-", 1)
    dataset, site = data.split(".", 1)
    return dataset, site, suffix


# ----------------------------------------------------------------------------------------------------------------
# neural data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SiteData:
    """One recording site's maps, ready for the metric. Images in ``stimulus_ids`` order everywhere."""

    assembly_identifier: str
    stimulus_ids: list
    targets: np.ndarray              #: [I, G, G, K] window-averaged (repetition-averaged) maps
    trials: Optional[np.ndarray]     #: [I, G, G, K, R] per-repetition maps, or None without repetitions
    bins: Optional[np.ndarray]       #: [I, G, G, K, T] repetition-averaged maps of each time bin in the window
    channels: np.ndarray             #: [K] channel labels
    stimulus_set: Any                #: StimulusSet of exactly these images, unique identifier
    window: tuple                    #: (start, end) ms
    image_size_deg: float
    source_sha256: str
    orientation: str = "identity"    #: symmetry applied at import on top of the conventional flip (data attrs)

    @property
    def grid_size(self) -> int:
        return int(self.targets.shape[1])


def load_site_data(assembly_identifier: str, window: Optional[tuple] = None, *, assembly=None) -> SiteData:
    """Load one site through the data API and arrange its maps (targets, trials) and stimuli.

    ``assembly`` is the site's assembly when it was loaded elsewhere (e.g. by brainscore-vision's ``load_dataset``
    from the BrainIO packages on S3, with its stimulus set in ``attrs['stimulus_set']``); default: this package's
    data home."""
    if assembly is None:
        assembly = data.load_assembly(assembly_identifier)
    maps = data.response_maps(assembly, window=window, average_repetitions=True)
    maps = maps.transpose("stimulus_id", "row", "col", "channel")
    stimulus_ids = list(maps["stimulus_id"].values)
    trials = None
    if "repetition" in assembly.coords or _has_level(assembly, "repetition"):
        raw = data.response_maps(assembly, window=window, average_repetitions=False)
        if "repetition" in raw.dims and raw.sizes["repetition"] >= 2:
            raw = raw.transpose("stimulus_id", "row", "col", "channel", "repetition")
            raw = raw.sel(stimulus_id=stimulus_ids)
            trials = np.asarray(raw.values, dtype=np.float64)
    window = tuple(window) if window is not None else tuple(assembly.attrs.get("default_window", (None, None)))
    source_sha256 = str(assembly.attrs.get("source_sha256", ""))
    stimulus_set = subset_stimulus_set(assembly.attrs["stimulus_set"], stimulus_ids, assembly_identifier,
                                            source_sha256)
    return SiteData(assembly_identifier=assembly_identifier, stimulus_ids=stimulus_ids,
                    targets=np.asarray(maps.values, dtype=np.float64), trials=trials,
                    bins=window_bins(assembly, window, stimulus_ids),
                    channels=np.asarray(maps["channel"].values), stimulus_set=stimulus_set,
                    window=tuple(int(t) for t in window),
                    image_size_deg=float(assembly.attrs.get("image_size_deg", 16)),
                    source_sha256=source_sha256, orientation=str(assembly.attrs.get("orientation", "identity")))


def window_bins(assembly, window: tuple, stimulus_ids: Sequence) -> np.ndarray:
    """Repetition-averaged maps ``[I, G, G, K, T]`` of each time bin lying inside ``window``, images in
    ``stimulus_ids`` order (the samples the time-split ceiling interleaves)."""
    mask = data.window_mask(assembly, window)
    starts, ends = assembly["time_bin_start"].values[mask], assembly["time_bin_end"].values[mask]
    maps = []
    for start, end in zip(starts, ends):
        one = data.response_maps(assembly, window=(float(start), float(end)), average_repetitions=True)
        maps.append(np.asarray(one.transpose("stimulus_id", "row", "col", "channel").sel(
            stimulus_id=list(stimulus_ids)).values, dtype=np.float64))
    return np.stack(maps, axis=-1)


def ceiled_value(raw: float, ceiling: float) -> tuple[float, float]:
    """Brain-Score's ceiling convention (``explained_variance`` then ``bound_score``): ``(bounded, unbounded)`` with
    unbounded = sign(raw) raw^2 / ceiling (the sign keeps a negative correlation from counting as explained
    variance) and bounded = unbounded clipped to [0, 1]. ``ceiling`` is a split-half reliability."""
    unbounded = float(np.sign(raw) * raw ** 2 / ceiling)
    bounded = Score(unbounded)
    bound_score(bounded)  # brainscore-vision's own clip to [0, 1]
    return float(bounded), unbounded


def ceiled_values(raw: np.ndarray, ceiling: float) -> np.ndarray:
    """:func:`ceiled_value`'s bounded value for an array of raw values at once (the composite's bootstrap draws);
    the same clip to [0, 1] as ``bound_score``, without building a Score per value."""
    raw = np.asarray(raw, dtype=np.float64)
    return np.clip(np.sign(raw) * raw ** 2 / float(ceiling), 0.0, 1.0)


def ceiled_error(raw: float, raw_error: float, ceiling: float) -> float:
    """Error of raw^2 / ceiling from the raw error (delta method: 2 |raw| error / ceiling)."""
    return float(2.0 * abs(raw) * raw_error / ceiling)


def _has_level(assembly, name: str) -> bool:
    try:
        assembly[name]
        return True
    except KeyError:
        return False


def subset_stimulus_set(stimulus_set, stimulus_ids: Sequence, assembly_identifier: str, content_key: str = ""):
    """The stimulus rows of ``stimulus_ids``, in that order, with an identifier unique to this image subset and
    data content (Brain-Score caches activations by stimulus-set identifier; a subset must never reuse its
    parent's, and re-imported data must never meet stale activations)."""
    index = {sid: i for i, sid in enumerate(stimulus_set["stimulus_id"].values)}
    missing = [sid for sid in stimulus_ids if sid not in index]
    if missing:
        raise ValueError(f"assembly {assembly_identifier}: stimulus_ids {missing[:3]} are missing from its "
                         "attrs['stimulus_set']; re-import the data (brainscore data import)")
    rows = stimulus_set.iloc[[index[sid] for sid in stimulus_ids]].reset_index(drop=True)
    subset = StimulusSet(rows)
    subset.stimulus_paths = {sid: stimulus_set.get_stimulus(sid) for sid in stimulus_ids}
    digest = hashlib.sha1("|".join([content_key, *map(str, stimulus_ids)]).encode()).hexdigest()[:10]
    parent = getattr(stimulus_set, "identifier", None) or assembly_identifier.split(".")[0]
    subset.identifier = f"{parent}-{digest}"
    return subset


# ----------------------------------------------------------------------------------------------------------------
# model responses
# ----------------------------------------------------------------------------------------------------------------
def neuroid_coord(assembly, name: str) -> Optional[np.ndarray]:
    try:
        return np.asarray(assembly[name].values)
    except KeyError:
        return None


def record_responses(candidate, window: tuple, stimulus_set, number_of_trials: int = NUMBER_OF_TRIALS):
    """The committed IT response to ``stimulus_set``, as ``[presentations, neuroids]`` in stimulus-set order."""
    candidate.start_recording(REGION, time_bins=[tuple(int(t) for t in window)])
    responses = candidate.look_at(stimulus_set, number_of_trials=number_of_trials)
    if "time_bin" in responses.dims:
        responses = responses.mean("time_bin") if responses.sizes["time_bin"] > 1 else responses.isel(time_bin=0)
    responses = responses.transpose("presentation", "neuroid")
    check_finite(responses, getattr(candidate, "identifier", "model"))
    order = _reorder(responses["stimulus_id"].values, stimulus_set["stimulus_id"].values)
    return responses.isel(presentation=order)


def check_finite(responses, model_identifier: str, layer: str | None = None) -> None:
    """Raise :class:`NonFiniteFeaturesError` (model, layer, how many values) when the responses (a NeuroidAssembly
    or a layer output array) hold NaN or Inf, before they reach the regression (where they would fail somewhere
    inside PLS)."""
    values = np.asarray(getattr(responses, "values", responses))
    if not np.issubdtype(values.dtype, np.floating):
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    n_nan = int(np.isnan(values).sum())
    n_inf = int(values.size - finite.sum()) - n_nan
    images = int((~finite).any(axis=tuple(range(1, values.ndim))).sum()) if values.ndim > 1 else 1
    layer = layer if layer is not None else ",".join(_layer_names(responses))
    raise NonFiniteFeaturesError(
        f"model {model_identifier!r}: its IT response (layer {layer}) holds {n_nan} NaN and {n_inf} Inf of "
        f"{values.size} values ({images} of {values.shape[0]} images); the network is broken (NaN/Inf weights or "
        "statistics, an overflow, a division by zero): fix or retrain it; scoring it again gives the same")


def _reorder(have: Sequence, want: Sequence) -> np.ndarray:
    position = {sid: i for i, sid in enumerate(have)}
    missing = [sid for sid in want if sid not in position]
    if missing:
        raise RuntimeError(f"the model returned no response for stimulus_ids {missing[:3]}")
    return np.array([position[sid] for sid in want])


def _layer_names(responses) -> list[str]:
    layers = neuroid_coord(responses, "layer")
    if layers is None:
        return ["?"]
    return list(dict.fromkeys(str(l) for l in layers))


def neuroids_to_maps(values: np.ndarray, coords: dict, *, model_identifier: str = "model",
                     layer: str = "?", shift_identifier: str = "<dataset>.<site>-shift_pls") -> np.ndarray:
    """Arrange ``[N, neuroids]`` responses into feature maps ``[N, C, h, w]`` using the neuroid coordinates.

    Conv layers: ``channel``, ``channel_x`` (row), ``channel_y`` (column). Transformer layers: ``channel`` = token,
    ``embedding`` = feature; tokens before the square patch grid (class, register, distillation) are dropped.
    Anything else raises :class:`NoSpatialStructureError` pointing to the shift protocol.
    """
    def no_space(reason: str) -> NoSpatialStructureError:
        return NoSpatialStructureError(
            f"model {model_identifier!r}: the IT response (layer {layer}) has no spatial structure ({reason}), so "
            f"the maps protocol cannot read it at the recording grid. Commit a spatial IT layer (a conv feature map "
            f"or transformer patch tokens), or score this model with the shift protocol, which only needs look_at: "
            f"{shift_identifier}")

    channel = coords.get("channel")
    x, y, embedding = coords.get("channel_x"), coords.get("channel_y"), coords.get("embedding")
    n = values.shape[0]
    if channel is None:
        raise no_space("its neuroids carry no 'channel' coordinate")
    if x is not None and y is not None and not _all_nan(x):
        if _any_nan(x) or _any_nan(y):
            raise no_space("some neuroids have no channel_x/channel_y position")
        c_val, c_idx = np.unique(channel, return_inverse=True)
        x_val, x_idx = np.unique(np.asarray(x, dtype=float), return_inverse=True)
        y_val, y_idx = np.unique(np.asarray(y, dtype=float), return_inverse=True)
        shape = (len(c_val), len(x_val), len(y_val))
        if len(x_val) * len(y_val) < 2:
            raise no_space(f"its feature map is {len(x_val)} x {len(y_val)}")
        if int(np.prod(shape)) != values.shape[1]:
            raise no_space(f"{values.shape[1]} neuroids do not fill a {shape} channel x row x column grid")
        maps = np.full((n, *shape), np.nan, dtype=np.float32)
        maps[:, c_idx, x_idx, y_idx] = values
        return maps
    if embedding is not None and not _all_nan(embedding):
        t_val, t_idx = np.unique(channel, return_inverse=True)
        e_val, e_idx = np.unique(embedding, return_inverse=True)
        n_tokens = len(t_val)
        side = math.isqrt(n_tokens)
        if side * side != n_tokens:  # prefix tokens: the largest square that leaves at most MAX_PREFIX_TOKENS
            prefix = n_tokens - side * side
        else:
            prefix = 0
        if side < 2 or prefix > MAX_PREFIX_TOKENS:
            raise no_space(f"{n_tokens} tokens do not form a square patch grid after at most "
                           f"{MAX_PREFIX_TOKENS} class/register tokens")
        if len(t_val) * len(e_val) != values.shape[1]:
            raise no_space(f"{values.shape[1]} neuroids do not fill a {n_tokens} token x {len(e_val)} grid")
        tokens = np.full((n, n_tokens, len(e_val)), np.nan, dtype=np.float32)
        tokens[:, t_idx, e_idx] = values
        patches = tokens[:, prefix:, :].reshape(n, side, side, len(e_val))
        return np.ascontiguousarray(patches.transpose(0, 3, 1, 2))
    raise no_space("its neuroids have no channel_x/channel_y or token/embedding coordinates (e.g. a pooled or "
                   "fully connected layer)")


def _all_nan(values) -> bool:
    try:
        return bool(np.all(np.isnan(np.asarray(values, dtype=float))))
    except (TypeError, ValueError):
        return False


def _any_nan(values) -> bool:
    try:
        return bool(np.any(np.isnan(np.asarray(values, dtype=float))))
    except (TypeError, ValueError):
        return True


def grid_features_from_responses(responses, grid_size: int, *, model_identifier: str = "model",
                                 shift_identifier: str = "<dataset>.<site>-shift_pls",
                                 span: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Committed responses ``[N presentations, neuroids]`` -> features at the grid ``[N, G, G, F]``.

    Each layer (a committed region may map to several) is reshaped to feature maps and sampled at the grid
    separately; the layers' features are concatenated. ``span``: the image's extent on the presented canvas
    (:func:`benchmarks_it_maps.benchmarks.surround.image_span`; ``(0, 1)`` when the image filled it).
    """
    layers = neuroid_coord(responses, "layer")
    groups = [slice(None)] if layers is None else [np.flatnonzero(layers == l) for l in dict.fromkeys(layers)]
    names = ["?"] if layers is None else [str(l) for l in dict.fromkeys(layers)]
    values = np.asarray(responses.values, dtype=np.float32)
    sampled = []
    for name, group in zip(names, groups):
        coords = {key: (c[group] if c is not None else None) for key in ("channel", "channel_x", "channel_y",
                                                                       "embedding")
                  for c in [neuroid_coord(responses, key)]}
        maps = neuroids_to_maps(values[:, group], coords, model_identifier=model_identifier, layer=name,
                                shift_identifier=shift_identifier)
        sampled.append(sample_feature_maps(maps, grid_size, span))
    return np.concatenate(sampled, axis=-1)


#: Neuroid coordinates of a layer output ``[N, *shape]`` by the rank of ``shape``, as this package's extractor
#: packages them (``harmonized_models.activations``: ``np.unravel_index`` over the output's own layout).
_OUTPUT_COORDS = {1: ("channel",), 2: ("channel", "embedding"), 3: ("channel", "channel_x", "channel_y")}


def computes_off_cpu(candidate) -> bool:
    """Whether the candidate's activations model computes on an accelerator (this package's
    ``TorchActivationsModel`` on a non-CPU ``device``); False for a CPU model or any model that does not say."""
    device = getattr(getattr(candidate, "activations_model", None), "device", None)
    return getattr(device, "type", "cpu") != "cpu"


def committed_layer_outputs(candidate, stimulus_set) -> Optional[dict[str, np.ndarray]]:
    """The committed IT layers' outputs ``{layer: [N, ...]}`` in stimulus-set order, straight from the activations
    model's ``run(paths, layers)``, for candidates that have one (this package's ``TorchActivationsModel`` in a
    ``ModelCommitment``): the arrays ``look_at`` would package into a NeuroidAssembly, without packaging 50k-neuroid
    multi-indices. None for any other BrainModel (the benchmark then uses ``look_at``)."""
    run = getattr(getattr(candidate, "activations_model", None), "run", None)
    layer_map = getattr(getattr(getattr(candidate, "layer_model", None), "_layer_model", None), "region_layer_map",
                        None)
    if not callable(run) or not isinstance(layer_map, dict) or REGION not in layer_map:
        return None
    layers = layer_map[REGION]
    layers = [layers] if isinstance(layers, str) else list(layers)
    paths = [str(stimulus_set.get_stimulus(sid)) for sid in stimulus_set["stimulus_id"].values]
    outputs = run(paths, layers)
    if any(np.ndim(outputs[layer]) - 1 not in _OUTPUT_COORDS for layer in layers):
        return None
    outputs = {layer: np.asarray(outputs[layer], dtype=np.float32) for layer in layers}
    for layer, output in outputs.items():
        check_finite(output, getattr(candidate, "identifier", "model"), layer)
    return outputs


def grid_features_from_outputs(outputs: dict[str, np.ndarray], grid_size: int, *, model_identifier: str = "model",
                               shift_identifier: str = "<dataset>.<site>-shift_pls",
                               span: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """:func:`grid_features_from_responses` for raw layer outputs (:func:`committed_layer_outputs`): each output's
    neuroid coordinates are those its packaging would give, so both paths read the same maps."""
    sampled = []
    for layer, output in outputs.items():
        shape = output.shape[1:]
        index = np.unravel_index(np.arange(int(np.prod(shape))), shape)
        names = _OUTPUT_COORDS[len(shape)]
        coords = {key: None for key in ("channel", "channel_x", "channel_y", "embedding")}
        coords.update({name: index[i] for i, name in enumerate(names)})
        maps = neuroids_to_maps(output.reshape(len(output), -1), coords, model_identifier=model_identifier,
                                layer=layer, shift_identifier=shift_identifier)
        sampled.append(sample_feature_maps(maps, grid_size, span))
    return np.concatenate(sampled, axis=-1)


# ----------------------------------------------------------------------------------------------------------------
# shift protocol stimuli
# ----------------------------------------------------------------------------------------------------------------
#: Name of the optional method of a candidate's ``activations_model`` that serves the shift protocol's presentations
#: from tensors instead of image files (see :func:`look_at_shifted`; ``harmonized_models``' activations model has it).
PLACED_PRESENTATIONS_HOOK = "placed_presentations"


def shift_position_id(stimulus_id: Any, row: int, col: int) -> str:
    return f"{stimulus_id}--r{row:02d}c{col:02d}"


@dataclass
class ShiftPlan:
    """The shift protocol's presentations as geometry: which source image goes where on a grey canvas.

    Presentation ``n`` is a ``canvas_px`` square of :data:`SHIFT_BACKGROUND` with source image ``sources[n]``
    (resized once to ``image_px`` square, :meth:`source_images`) pasted with its top-left pixel at canvas row
    ``tops[n]``, column ``lefts[n]`` (integers, possibly negative or beyond the canvas: the part outside is cut, as
    PIL's ``paste`` does). ``stimulus_set`` has one row per presentation (image-major, then grid row, then column)
    and the paths the file renderer (:func:`render_shift_files`) writes them to.
    """

    stimulus_set: Any
    source_paths: list
    image_px: int
    canvas_px: int
    sources: np.ndarray   #: [N] index into ``source_paths``
    tops: np.ndarray      #: [N] canvas row of the image's top edge
    lefts: np.ndarray     #: [N] canvas column of the image's left edge
    folder: Path

    def source_images(self) -> np.ndarray:
        """The source images resized to ``image_px`` (bicubic, RGB), uint8 ``[I, image_px, image_px, 3]``."""
        return np.stack([np.asarray(_resized_source(path, self.image_px)) for path in self.source_paths])


def _resized_source(path, image_px: int) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB").resize((image_px, image_px), Image.BICUBIC)


def shift_plan(stimulus_set, grid_size: int, visual_degrees: float, image_size_deg: float = 16.0, *,
               canvas_px: int = SHIFT_CANVAS_PX, cache_dir: Optional[Path] = None) -> ShiftPlan:
    """The shifted presentations (nothing rendered): per image and grid point (row k, column l), a ``canvas_px``
    canvas spanning ``visual_degrees`` (the model's screen) with the ``image_size_deg`` image (the benchmark's
    ``visual_degrees``, as in Brain-Score's ``place_on_screen``) placed so that image point (k/(G-1), l/(G-1)) is at
    the canvas centre, grey outside. For the centre grid point this is exactly ``place_on_screen``'s screen (the
    image centred; cropped when the screen is smaller, grey around it when larger); the other points translate it
    by whole pixels. The stimulus-set identifier is unique per (image set, grid, degrees, canvas)."""
    stimulus_ids = list(stimulus_set["stimulus_id"].values)
    source_paths = [stimulus_set.get_stimulus(sid) for sid in stimulus_ids]
    image_px = int(round(canvas_px * image_size_deg / float(visual_degrees)))
    key = hashlib.sha1("|".join([getattr(stimulus_set, "identifier", "") or ""] + [
        f"{sid}:{_file_signature(path)}" for sid, path in zip(stimulus_ids, source_paths)]).encode()).hexdigest()[:10]
    identifier = (f"{getattr(stimulus_set, 'identifier', None) or 'stimuli'}-shift-g{grid_size}"
                  f"-deg{float(visual_degrees):g}-img{float(image_size_deg):g}-px{canvas_px}-{key}")
    folder = Path(cache_dir or data_home() / "stimuli" / "shift") / identifier
    rows, sources, tops, lefts = [], [], [], []
    positions = grid_coordinates(grid_size)  # normalised image coordinate of each grid index
    for i, sid in enumerate(stimulus_ids):
        for r, u_row in enumerate(positions):
            for c, u_col in enumerate(positions):
                rows.append(dict(stimulus_id=shift_position_id(sid, r, c), source_stimulus_id=sid, grid_row=r,
                                 grid_col=c, image_u=float(u_col), image_v=float(u_row),
                                 filename=f"{shift_position_id(sid, r, c)}.png"))
                sources.append(i)
                tops.append(int(round(canvas_px / 2 - u_row * image_px)))
                lefts.append(int(round(canvas_px / 2 - u_col * image_px)))
    shifted = StimulusSet(rows)
    shifted.stimulus_paths = {row["stimulus_id"]: folder / row["filename"] for row in rows}
    shifted.identifier = identifier
    return ShiftPlan(stimulus_set=shifted, source_paths=source_paths, image_px=image_px, canvas_px=canvas_px,
                     sources=np.asarray(sources, dtype=np.int64), tops=np.asarray(tops, dtype=np.int64),
                     lefts=np.asarray(lefts, dtype=np.int64), folder=folder)


def render_shift_files(plan: ShiftPlan):
    """Write the plan's presentations as PNG files (once, atomically; PNG is lossless) and return its StimulusSet:
    the path for any BrainModel, which only has ``look_at``."""
    folder = plan.folder
    if not (folder / "complete").exists():
        filenames = list(plan.stimulus_set["filename"])
        with atomic_dir(folder) as tmp:
            for i, path in enumerate(tqdm(plan.source_paths, desc="rendering shifted stimuli", unit="image")):
                image = _resized_source(path, plan.image_px)
                for n in np.flatnonzero(plan.sources == i):
                    canvas = Image.new("RGB", (plan.canvas_px, plan.canvas_px), SHIFT_BACKGROUND)
                    canvas.paste(image, (int(plan.lefts[n]), int(plan.tops[n])))
                    canvas.save(tmp / filenames[n])
            (tmp / "complete").write_text(plan.stimulus_set.identifier + "\n")
    return plan.stimulus_set


def shift_stimulus_set(stimulus_set, grid_size: int, visual_degrees: float, image_size_deg: float = 16.0, *,
                       canvas_px: int = SHIFT_CANVAS_PX, cache_dir: Optional[Path] = None):
    """Render the shifted presentations (:func:`shift_plan`) as PNG files under the cache (:func:`render_shift_files`)
    and return their StimulusSet (rows ordered image-major, then row, then column)."""
    return render_shift_files(shift_plan(stimulus_set, grid_size, visual_degrees, image_size_deg,
                                         canvas_px=canvas_px, cache_dir=cache_dir))


def placed_presentations_hook(candidate):
    """The candidate's tensor hook for placed presentations (``candidate.activations_model.placed_presentations``),
    or None (then the presentations are rendered to files). Duck-typed: any activations model may provide it."""
    hook = getattr(getattr(candidate, "activations_model", None), PLACED_PRESENTATIONS_HOOK, None)
    return hook if callable(hook) else None


def look_at_shifted(candidate, window: tuple, plan: ShiftPlan, *, number_of_trials: int = 1,
                    use_tensors: bool = True):
    """The committed IT response to the plan's presentations ``[N, neuroids]``, in plan order.

    When the candidate's activations model offers ``placed_presentations(paths, images, sources, tops, lefts,
    canvas_px, background)`` (a context manager; ``harmonized_models.TorchActivationsModel`` does), the
    presentations are composed as tensors on the model's device, batch by batch, and ``look_at`` runs through the
    model's own Brain-Score chain (region, time bins, packaging) with no image file written or read; the same
    pixels as :func:`render_shift_files` (tests/test_shift_tensors.py). Otherwise (any other BrainModel, or
    ``use_tensors=False``) the presentations are rendered to PNG files and shown with ``look_at``.
    """
    hook = placed_presentations_hook(candidate) if use_tensors else None
    if hook is None:
        return record_responses(candidate, window, render_shift_files(plan), number_of_trials=number_of_trials)
    paths = [str(plan.stimulus_set.get_stimulus(sid)) for sid in plan.stimulus_set["stimulus_id"]]
    with hook(paths=paths, images=plan.source_images(), sources=plan.sources, tops=plan.tops, lefts=plan.lefts,
              canvas_px=plan.canvas_px, background=SHIFT_BACKGROUND):
        return record_responses(candidate, window, plan.stimulus_set, number_of_trials=number_of_trials)


def _file_signature(path) -> str:
    stat = os.stat(path)
    return f"{Path(path).name}:{stat.st_size}"


# ----------------------------------------------------------------------------------------------------------------
# benchmarks
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SiteResult:
    """Everything one site evaluation produced (kept on the benchmark as ``last_result`` for figures)."""

    data: SiteData
    fit: metric.MapsFit
    predictions: np.ndarray         #: [I, G, G, K]
    alignment: dict
    layer: str
    model_identifier: str
    #: raw statistic of the floor predictors: ``position_only`` (image-blind) and ``shuffled_image``
    floor: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def _per_image(fit: metric.MapsFit, alignment: dict, protocol: str) -> np.ndarray:
    """The raw statistic of each held-out image (what the headline averages)."""
    return np.asarray(alignment["full"] if protocol == "map_alignment" else fit.per_fold, dtype=np.float64)


def _score(value: float, **attrs) -> Score:
    score = Score(float(value))
    score.attrs.update(attrs)
    return score


class _ProtocolMixin:
    """What a benchmark's ``protocol`` implies, shared by the site and composite benchmarks."""

    protocol: str

    @property
    def readout(self) -> str:
        """``'maps'`` or ``'shift'``: how the model's regressors are read (see the module docstring)."""
        return READOUT[self.protocol]

    @property
    def residual(self) -> bool:
        """Whether this benchmark scores the residual maps (``-residual_pls``, ``-residual_shift_pls``)."""
        return self.protocol in RESIDUAL_PROTOCOLS


class ArcaroSiteBenchmark(_ProtocolMixin, BenchmarkBase):
    """One recording site (M1PL, M1ML or M2ML) under one protocol; see the module docstring.

    ``data`` replaces the site's data (e.g. maps generated in a test with a known ground truth); by default it is
    loaded through :mod:`benchmarks_it_maps.data.assemblies` on first use.
    """

    def __init__(self, dataset: str, site: str, protocol: str, *, ceiling_method: str = "auto",
                 window: Optional[tuple] = None, n_components: int = metric.N_COMPONENTS,
                 max_pca_components: int = metric.MAX_PCA_COMPONENTS, shift_canvas_px: int = SHIFT_CANVAS_PX,
                 surround: float = 0.0, data: Optional[SiteData] = None):
        if dataset not in DATASETS or site not in SITES:
            raise UnknownBenchmarkError(f"unknown dataset/site {dataset}.{site}; datasets {DATASETS}, sites {SITES}")
        suffix = {v: k for k, v in SUFFIX_PROTOCOL.items()}.get(protocol)
        if suffix is None:
            raise ValueError(f"protocol must be one of {tuple(SUFFIX_PROTOCOL.values())}, got {protocol!r}")
        if ceiling_method not in CEILING_METHODS:
            raise ValueError(f"ceiling_method must be one of {CEILING_METHODS}, got {ceiling_method!r}")
        self.dataset, self.site, self.protocol = dataset, site, protocol
        self.assembly_identifier = f"{dataset}.{site}"
        self.ceiling_method = ceiling_method
        self.window = window
        self.n_components = n_components
        self.max_pca_components = max_pca_components
        self.shift_canvas_px = shift_canvas_px
        #: Brain-Score's screen convention: the image size in degrees and the trials per stimulus (module constants)
        self._visual_degrees = VISUAL_DEGREES
        self._number_of_trials = NUMBER_OF_TRIALS
        #: whether the shift protocol may compose presentations as tensors (:func:`look_at_shifted`); False forces
        #: the PNG files (same pixels)
        self.shift_tensors = True
        #: whether the maps protocol may read this package's models' layer outputs directly
        #: (:func:`committed_layer_outputs`); False forces ``look_at`` (same features, tests/test_benchmark.py)
        self.direct_outputs = True
        #: maps protocol: grey border around the image, as a fraction of its width (0: the image fills the model's
        #: input); see :mod:`benchmarks_it_maps.benchmarks.surround`
        self.surround = float(surround)
        if self.surround and self.readout != "maps":
            raise ValueError(f"{dataset}.{site}-{suffix}: the surround option belongs to the maps protocol; the "
                             "shift protocol already shows the image on a grey canvas")
        #: PLS solver of the metric (``metric.PLS_SOLVERS``); ``'sklearn'`` reproduces Brain-Score's NIPALS PLS
        self.pls_solver = "exact"
        #: regression and outer folds of the metric (``regressions.REGRESSIONS``, ``'loio'`` or K); other than the
        #: default only through ``runs.scoring.configure_regression``, which also renames the benchmark
        self.regression, self.folds, self.ridge_backend = "pls", "loio", "numpy"
        self.last_result: Optional[SiteResult] = None
        #: optional dict shared between benchmarks to reuse model features of the same images (same model)
        self.feature_cache: Optional[dict] = None
        self._data: Optional[SiteData] = data  # None: loaded on first use through the data API
        self._ceiling_score: Optional[Score] = None
        super().__init__(identifier=f"{dataset}.{site}-{suffix}", ceiling_func=self._compute_ceiling,
                         version=VERSION, parent=f"{dataset}.{COMPOSITE}-{suffix}", bibtex=BIBTEX)

    # -- data and ceiling --------------------------------------------------------------------------------------
    @property
    def data(self) -> SiteData:
        if self._data is None:
            self._data = load_site_data(self.assembly_identifier, self.window)
        if self._data.image_size_deg != self._visual_degrees:
            raise ValueError(f"{self.identifier}: the data's images span {self._data.image_size_deg:g} deg, the "
                             f"benchmark's visual_degrees is {self._visual_degrees:g}; re-import the data or set "
                             "benchmark._visual_degrees to the data's image size")
        return self._data

    @data.setter
    def data(self, value: SiteData) -> None:
        """Replace the site's data (e.g. loaded through brainscore-vision); the ceiling is recomputed from it."""
        self._data, self._ceiling_score = value, None

    @property
    def ceiling(self) -> Score:
        """Computed once per instance from the loaded data (not cached on disk by identifier, so re-imported data
        never meets a stale ceiling)."""
        if self._ceiling_score is None:
            self._ceiling_score = self._compute_ceiling()
        return self._ceiling_score

    def resolved_ceiling_method(self) -> str:
        if self.ceiling_method != "auto":
            return self.ceiling_method
        return "split_half" if self.data.trials is not None else "time_split"

    def _compute_ceiling(self) -> Score:
        """The ceiling Score: a Spearman-Brown corrected split-half reliability (Brain-Score's convention), over
        repetitions (``split_half``) or, without them, over interleaved time bins (``time_split``); r-scale
        estimators (``cross_channel``, ``pairwise``: named options for comparison) are squared."""
        method = self.resolved_ceiling_method()
        spearman = self.protocol == "map_alignment"
        if spearman and method in ("split_half", "time_split"):  # reliability of the channel-averaged map
            result = self._estimate(method, channel_mean=True, spearman=True)
            result.method += "_channel_mean"
        else:
            result = self._estimate(method)
        reliability = result.reliability
        if not reliability >= MIN_RELIABILITY:
            raise ceilings.CeilingError(
                f"{self.identifier}: the {result.method} reliability of {self.assembly_identifier} is "
                f"{reliability:.3f}, below {MIN_RELIABILITY}: no ceiling can be estimated for this site, so its "
                "scores cannot be normalised")
        return _score(reliability, error=result.reliability_error(), method=result.method, scale="reliability",
                      estimator_value=result.value, estimator_scale=result.scale,
                      per_channel=np.asarray(result.per_channel), per_image=np.asarray(result.per_image),
                      **{k: v for k, v in result.extra.items()})

    def _estimate(self, method: str, *, channel_mean: bool = False,
                  spearman: bool = False) -> ceilings.CeilingResult:
        data = self.data
        n_img, grid, _, n_chan = data.targets.shape
        if method == "split_half":
            if data.trials is None:
                raise ceilings.CeilingError(
                    f"{self.identifier}: ceiling_method='split_half' needs repeated trials, but "
                    f"{self.assembly_identifier} has none; use 'time_split' (the default without repetitions), "
                    "'cross_channel' or 'pairwise'")
            trials = data.trials.mean(axis=3, keepdims=True) if channel_mean else data.trials
            return ceilings.split_half_ceiling(trials.reshape(n_img, grid * grid, trials.shape[3], -1),
                                               residual=self.residual, spearman=spearman)
        if method == "time_split":
            bins = data.bins.mean(axis=3, keepdims=True) if channel_mean else data.bins
            return ceilings.time_split_ceiling(bins.reshape(n_img, grid * grid, bins.shape[3], -1),
                                               residual=self.residual, spearman=spearman,
                                               label=self.assembly_identifier)
        if self.residual:
            raise ceilings.CeilingError(f"{self.identifier}: ceiling_method={method!r} has no residual-map version; "
                                        "use 'split_half' or 'time_split'")
        if self.protocol == "map_alignment":  # the former default: split halves of the channels
            result = ceilings.split_half_ceiling(data.targets.reshape(n_img, grid * grid, 1, -1), spearman=True)
            result.method = "channel_split_half_channel_mean"
            return result
        if method == "cross_channel":
            return ceilings.cross_channel_ceiling(data.targets.reshape(n_img, grid * grid, n_chan),
                                                  n_components=self.n_components)
        return ceilings.pairwise_channel_ceiling(data.targets)

    # -- model features ----------------------------------------------------------------------------------------
    def shift_identifier(self) -> str:
        return f"{self.dataset}.{self.site}-shift_pls"

    def features_key(self, candidate) -> tuple:
        """What :meth:`model_features` depends on (its cache key): sites shown the same images share it."""
        data, protocol = self.data, self.readout
        degrees = float(candidate.visual_degrees()) if protocol == "shift" else None
        return (id(candidate), candidate.identifier, data.stimulus_set.identifier, data.window, data.grid_size,
                protocol, degrees, self.surround if protocol == "maps" else None)

    def model_features(self, candidate, cache: Optional[dict] = None) -> tuple[np.ndarray, str]:
        """The model's regressors ``[I, P, F]`` for this site's images under this benchmark's protocol, and the
        layer name(s). ``cache`` (shared by a composite) avoids recomputing the same monkey's images."""
        data = self.data
        protocol = self.readout
        degrees = float(candidate.visual_degrees()) if protocol == "shift" else None
        key = self.features_key(candidate)
        if cache is not None and key in cache:
            return cache[key]
        n_img, grid = len(data.stimulus_ids), data.grid_size
        if protocol == "maps":
            shown, span = data.stimulus_set, (0.0, 1.0)
            if self.surround:
                shown, span = screen.surround_stimulus_set(data.stimulus_set, self.surround)
            outputs = committed_layer_outputs(candidate, shown) if self.direct_outputs else None
            if outputs is not None:
                features = grid_features_from_outputs(outputs, grid, model_identifier=candidate.identifier,
                                                      shift_identifier=self.shift_identifier(), span=span)
                layers = list(outputs)
            else:
                responses = record_responses(candidate, data.window, shown, self._number_of_trials)
                features = grid_features_from_responses(responses, grid, model_identifier=candidate.identifier,
                                                        shift_identifier=self.shift_identifier(), span=span)
                layers = _layer_names(responses)
            features = features.reshape(n_img, grid * grid, -1)
        else:
            plan = shift_plan(data.stimulus_set, grid, degrees, self._visual_degrees, canvas_px=self.shift_canvas_px)
            responses = look_at_shifted(candidate, data.window, plan, number_of_trials=self._number_of_trials,
                                        use_tensors=self.shift_tensors)
            features = np.asarray(responses.values, dtype=np.float32).reshape(n_img, grid * grid, -1)
            layers = _layer_names(responses)
        result = (features, ",".join(layers))
        if cache is not None:
            cache[key] = result
        return result

    # -- scoring -----------------------------------------------------------------------------------------------
    def evaluate(self, candidate, cache: Optional[dict] = None) -> SiteResult:
        """Run the experiment on the model and fit the metric (no ceiling normalisation)."""
        data = self.data
        features, layer = self.model_features(candidate, cache)
        n_img, grid, _, n_chan = data.targets.shape
        targets = self.site_targets()
        fit_key, shuffled_key = self.fit_keys(candidate, features)
        fit = cache.get(fit_key) if cache is not None else None
        shuffled = cache.get(shuffled_key) if cache is not None else None
        if fit is None or shuffled is None:
            fit, shuffled = self._fit(candidate, features, targets)
            if cache is not None:
                cache[fit_key], cache[shuffled_key] = fit, shuffled
        if self.residual:  # same PLS predictions, scored on the maps minus the training images' mean map
            fit = metric.residual_fit(fit, targets)
        predictions = fit.predictions.reshape(n_img, grid, grid, n_chan)
        alignment = metric.map_alignment(predictions, data.targets)
        floor = dict(position_only=self._statistic(metric.training_mean_maps(targets), targets),
                     shuffled_image=self._statistic(shuffled.predictions, targets))
        result = SiteResult(data=data, fit=fit, predictions=predictions, alignment=alignment, layer=layer,
                            model_identifier=candidate.identifier, floor=floor)
        self.last_result = result
        return result

    def site_targets(self) -> np.ndarray:
        """The site's maps as regression targets ``[I, P, K]``."""
        n_img, grid, _, n_chan = self.data.targets.shape
        return self.data.targets.reshape(n_img, grid * grid, n_chan)

    def fit_keys(self, candidate, features: np.ndarray) -> tuple[tuple, tuple]:
        """The cache keys of this site's fit and of its ``shuffled_image`` floor for these features: ``-pls``,
        ``-residual_pls`` and ``-map_alignment`` fit the same regression, so a shared cache fits it once."""
        fit_key = ("fit", id(candidate), candidate.identifier, self.readout == "shift", self.n_components,
                   self.max_pca_components, self.pls_solver, self.regression, self.folds,
                   hashlib.sha1(self.site_targets().tobytes()).hexdigest(), features.shape)
        return fit_key, ("shuffled",) + fit_key

    @property
    def stacked_fits(self) -> bool:
        """Whether this site's fits are the default metric (maps readout, leave-one-image-out PLS, exact solver),
        which :func:`metric.loio_pls_with_floors` fits together with its floor and with other sites' fits."""
        return (self.readout == "maps" and self.regression == "pls" and self.folds == "loio"
                and self.pls_solver == "exact")

    def log_fit(self, candidate, features: np.ndarray) -> None:
        """One log line as this site's regression starts (what is fitted on what)."""
        logger.info("%s: fitting %s (%d images, %d positions, %d features, %d channels)", self.identifier,
                    candidate.identifier, *features.shape, self.site_targets().shape[2])

    def _fit(self, candidate, features: np.ndarray, targets: np.ndarray) -> tuple[metric.MapsFit, metric.MapsFit]:
        """The site's cross-validated fit and its ``shuffled_image`` floor (the model's features of another
        image: :func:`metric.shuffled_image_features`)."""
        self.log_fit(candidate, features)
        if self.stacked_fits:
            return metric.loio_pls_with_floors(features, [targets], n_components=self.n_components)[0]
        reduce = metric.pca_reducer(self.max_pca_components) if self.readout == "shift" else None
        fit = regressions.cross_validated_fit(features, targets, n_components=self.n_components, reduce=reduce,
                                              progress=True, solver=self.pls_solver, **self._regression_options())
        shuffled = regressions.cross_validated_fit(metric.shuffled_image_features(features), targets,
                                                   n_components=self.n_components, reduce=reduce,
                                                   solver=self.pls_solver, **self._regression_options())
        return fit, shuffled

    def _regression_options(self) -> dict:
        return dict(regression=self.regression, folds=self.folds, backend=self.ridge_backend)

    def _statistic(self, predictions: np.ndarray, targets: np.ndarray) -> float:
        """This benchmark's raw statistic of held-out predictions ``[I, P, K]`` (for the floor predictors)."""
        if self.protocol == "map_alignment":
            n_img, grid = self.data.targets.shape[:2]
            shape = (n_img, grid, grid, -1)
            return metric.map_alignment(predictions.reshape(shape), targets.reshape(shape))["score"]
        return metric.maps_fit(predictions, targets, residual=self.residual).score

    def __call__(self, candidate) -> Score:
        return self.score_result(self.evaluate(candidate, self.feature_cache))

    def _call_with_cache(self, candidate, cache: dict) -> Score:
        return self.score_result(self.evaluate(candidate, cache))

    def score_result(self, result: SiteResult) -> Score:
        """Ceiled Score with all attrs from an evaluation."""
        ceiling = self.ceiling
        fit, alignment = result.fit, result.alignment
        if self.protocol == "map_alignment":
            raw_value, raw_error = alignment["score"], alignment["error"]
        else:
            raw_value, raw_error = fit.score, fit.error
        raw = _score(raw_value, error=raw_error)
        ceiling_value = float(ceiling)
        bounded, unbounded = ceiled_value(raw_value, ceiling_value)
        floor = result.floor
        return _score(
            bounded, raw=raw, ceiling=ceiling, error=ceiled_error(raw_value, raw_error, ceiling_value),
            unbounded=unbounded, r_ceiled=float(raw_value / np.sqrt(ceiling_value)),
            position_only=floor["position_only"],
            position_only_ceiled=ceiled_value(floor["position_only"], ceiling_value)[0],
            shuffled_image=floor["shuffled_image"],
            shuffled_image_ceiled=ceiled_value(floor["shuffled_image"], ceiling_value)[0],
            per_image=_per_image(fit, alignment, self.protocol), layer=result.layer, protocol=self.protocol,
            model_identifier=result.model_identifier,
            benchmark_identifier=self.identifier, ceiling_method=ceiling.attrs.get("method"),
            stimulus_ids=np.asarray(result.data.stimulus_ids, dtype=str), channels=np.asarray(result.data.channels),
            per_fold=fit.per_fold, per_channel=fit.per_channel, pls_raw=fit.score, pls_error=fit.error,
            n_components=fit.n_components, alignment=alignment["score"],
            alignment_coarse=alignment["score_coarse"], alignment_per_image=alignment["full"],
            alignment_coarse_per_image=alignment["coarse"], alignment_error=alignment["error"],
            window=np.asarray(result.data.window), data_orientation=result.data.orientation,
            surround=self.surround)


def site_weights(sites: Sequence[str] = SITES) -> dict[str, float]:
    """One vote per monkey: each monkey weighs 1 / (number of monkeys), shared equally by its sites
    (M1PL 0.25, M1ML 0.25, M2ML 0.5). Monkey 1's two arrays record the same images in the same animal (their
    per-image scores correlate), so they are one sample of the population, not two."""
    monkeys: dict[str, list[str]] = {}
    for site in sites:
        monkeys.setdefault(cv.SITES[site].monkey, []).append(site)
    return {site: 1.0 / len(monkeys) / len(members) for members in monkeys.values() for site in members}


#: Bootstrap draws (over images) of the composite's error, and their seed.
N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0


@functools.lru_cache(maxsize=16)
def bootstrap_draws(sizes: tuple[int, ...], n_bootstrap: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) \
        -> tuple[np.ndarray, ...]:
    """The composite errors' resampling of images: for each monkey (``sizes``: its image count), an index array
    ``[n_bootstrap, images]`` drawn with replacement, draw by draw and monkey by monkey from one seeded generator
    (so a monkey's draws do not depend on how many images the others have). They depend on the image counts alone,
    so they are drawn once per process (read-only arrays) and shared by every score of the same data."""
    rng = np.random.default_rng(seed)
    draws = [np.empty((n_bootstrap, n), dtype=np.int64) for n in sizes]
    for b in range(n_bootstrap):
        for monkey, n in enumerate(sizes):
            draws[monkey][b] = rng.integers(0, n, n)
    for idx in draws:
        idx.flags.writeable = False
    return tuple(draws)


def composite_score(per_image: dict[str, np.ndarray], ceilings: dict[str, float], monkeys: dict[str, str], *,
                    n_bootstrap: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict:
    """The composite of site scores with one vote per monkey and a joint bootstrap error.

    ``per_image``: each site's raw statistic per image (monkey's image order; sites of one monkey share it),
    ``ceilings``: each site's reliability, ``monkeys``: site -> monkey. The value is the weighted mean
    (:func:`site_weights`) of the sites' bounded ceiled scores (raw^2 / ceiling of the mean raw). The error is the
    standard deviation over ``n_bootstrap`` draws that resample each monkey's images with replacement, the same
    draw for all sites of that monkey (so correlated sites are not counted as independent evidence); the ceilings
    are held fixed, as in the sites' own errors.
    """
    sites = list(per_image)
    by_monkey: dict[str, list[str]] = {}
    for site in sites:
        by_monkey.setdefault(monkeys[site], []).append(site)
    weights = {site: 1.0 / len(by_monkey) / len(members) for members in by_monkey.values() for site in members}
    for members in by_monkey.values():
        if len({len(per_image[site]) for site in members}) != 1:
            raise ValueError(f"sites {members} of one monkey must score the same images")

    value = float(sum(weights[s] * ceiled_value(float(np.mean(per_image[s])), ceilings[s])[0] for s in sites))
    draws_of = dict(zip(by_monkey, bootstrap_draws(tuple(len(per_image[members[0]]) for members in
                                                         by_monkey.values()), n_bootstrap, seed)))
    draws = np.zeros(n_bootstrap)
    for monkey, members in by_monkey.items():
        idx = draws_of[monkey]                                              # [n_bootstrap, images]
        for s in members:
            draws += weights[s] * ceiled_values(np.asarray(per_image[s], dtype=np.float64)[idx].mean(axis=1),
                                                ceilings[s])
    return dict(value=value, error=float(draws.std(ddof=1)), weights=weights)


class ArcaroCompositeBenchmark(_ProtocolMixin, BenchmarkBase):
    """``<dataset>.IT-<suffix>``: one vote per monkey (:func:`site_weights`: M1PL and M1ML 0.25 each, M2ML 0.5) over
    the sites' ceiled scores, with a bootstrap error over images that keeps each image's scores on monkey 1's two
    sites together (:func:`composite_score`). ``raw`` and ``ceiling`` are the same weighted means of the sites' raw
    scores and reliabilities (informative; the score is the mean of the sites' ceiled scores, not raw^2 / ceiling).
    Only ``<dataset>.IT-residual_pls`` has a leaderboard parent (``'IT'``); see docs/BENCHMARKS.md."""

    def __init__(self, dataset: str, protocol: str, **site_kwargs):
        self.children = [ArcaroSiteBenchmark(dataset, site, protocol, **site_kwargs) for site in SITES]
        self.dataset, self.protocol = dataset, protocol
        suffix = {v: k for k, v in SUFFIX_PROTOCOL.items()}[protocol]
        super().__init__(identifier=f"{dataset}.{COMPOSITE}-{suffix}", ceiling_func=self._compute_ceiling,
                         version=VERSION, parent=REGION if suffix == LEADERBOARD_SUFFIX else None, bibtex=BIBTEX)
        self._ceiling_score: Optional[Score] = None
        #: optional dict shared between benchmarks to reuse model features of the same images (same model)
        self.feature_cache: Optional[dict] = None
        self.weights = site_weights(SITES)

    @property
    def ceiling(self) -> Score:
        if self._ceiling_score is None:
            self._ceiling_score = self._compute_ceiling()
        return self._ceiling_score

    def _weighted(self, values: Sequence[float]) -> float:
        return float(sum(self.weights[site] * v for site, v in zip(SITES, values)))

    def _compute_ceiling(self) -> Score:
        values = [float(child.ceiling) for child in self.children]
        errors = [float(child.ceiling.attrs.get("error", 0.0)) for child in self.children]
        weights = [self.weights[site] for site in SITES]
        return _score(self._weighted(values), error=float(np.sqrt(np.sum(np.square(np.multiply(weights, errors))))),
                      per_site=dict(zip([c.identifier for c in self.children], values)), scale="reliability")

    def __call__(self, candidate) -> Score:
        cache: dict = self.feature_cache if self.feature_cache is not None else {}
        self._fit_together(candidate, cache)
        scores = [child._call_with_cache(candidate, cache) for child in self.children]
        ids = [child.identifier for child in self.children]
        values = [float(s) for s in scores]
        raws = [float(s.attrs["raw"]) for s in scores]
        site_ceilings = [float(s.attrs["ceiling"]) for s in scores]
        joint = composite_score({site: s.attrs["per_image"] for site, s in zip(SITES, scores)},
                                dict(zip(SITES, site_ceilings)), {site: cv.SITES[site].monkey for site in SITES})
        raw = _score(self._weighted(raws), error=_raw_bootstrap_error(scores, self.weights))
        floors = {key: self._weighted([float(s.attrs[key]) for s in scores])
                  for key in ("position_only", "position_only_ceiled", "shuffled_image", "shuffled_image_ceiled")}
        layers = list(dict.fromkeys(str(s.attrs["layer"]) for s in scores))
        return _score(
            joint["value"], raw=raw, ceiling=self.ceiling, error=joint["error"], **floors,
            site_weights=dict(zip(ids, [self.weights[site] for site in SITES])),
            layer=",".join(layers), protocol=self.protocol, model_identifier=scores[0].attrs["model_identifier"],
            benchmark_identifier=self.identifier,
            site_scores=dict(zip(ids, values)), site_raw=dict(zip(ids, raws)),
            site_errors=dict(zip(ids, [float(s.attrs["error"]) for s in scores])),
            site_ceilings=dict(zip(ids, site_ceilings)),
            per_fold={i: s.attrs["per_fold"] for i, s in zip(ids, scores)},
            per_channel={i: s.attrs["per_channel"] for i, s in zip(ids, scores)},
            alignment=self._weighted([float(s.attrs["alignment"]) for s in scores]),
            alignment_coarse=self._weighted([float(s.attrs["alignment_coarse"]) for s in scores]),
            data_orientation=",".join(dict.fromkeys(str(s.attrs["data_orientation"]) for s in scores)),
            surround=self.children[0].surround)

    def _fit_together(self, candidate, cache: dict) -> None:
        """Fit the sites shown the same images (monkey 1's two arrays), and each site's floor, in one stacked solve
        per monkey (:func:`metric.loio_pls_with_floors`), into ``cache`` where the sites' own evaluations find
        them; sites whose metric is not the default fit themselves. Where the model computes on an accelerator
        (:func:`computes_off_cpu`), a monkey's fits run on a background thread while the model sees the next
        monkey's images, which takes them off the forward pass's critical path; on a CPU the two would share the
        cores and each slow the other (benchmarks/RESULTS.md), so the fits run in turn. The numbers do not depend
        on it: each fit is computed the same way wherever it runs."""
        together: dict[tuple, list] = {}
        for child in self.children:
            if child.stacked_fits:
                together.setdefault((child.features_key(candidate), child.n_components), []).append(child)
        background = ThreadPoolExecutor(max_workers=1) if computes_off_cpu(candidate) else contextlib.nullcontext()
        with background as fitter:
            pending = []
            for children in together.values():
                features, _ = children[0].model_features(candidate, cache)
                keys = [child.fit_keys(candidate, features) for child in children]
                if all(key in cache for pair in keys for key in pair):
                    continue
                for child in children:
                    child.log_fit(candidate, features)
                job = functools.partial(metric.loio_pls_with_floors, features,
                                        [child.site_targets() for child in children],
                                        n_components=children[0].n_components)
                pending.append((keys, fitter.submit(job) if fitter is not None else job()))
            for keys, fits in pending:
                fits = fits.result() if fitter is not None else fits
                for (fit_key, shuffled_key), (fit, shuffled) in zip(keys, fits):
                    cache[fit_key], cache[shuffled_key] = fit, shuffled

    @property
    def last_results(self) -> list[Optional[SiteResult]]:
        return [child.last_result for child in self.children]


def _raw_bootstrap_error(scores: Sequence[Score], weights: dict[str, float]) -> float:
    """Bootstrap error of the weighted mean raw statistic (monkey 1's images resampled jointly for its sites)."""
    per_image = {site: np.asarray(s.attrs["per_image"]) for site, s in zip(SITES, scores)}
    by_monkey: dict[str, list[str]] = {}
    for site in SITES:
        by_monkey.setdefault(cv.SITES[site].monkey, []).append(site)
    sizes = tuple(len(per_image[members[0]]) for members in by_monkey.values())
    draws = np.zeros(N_BOOTSTRAP)
    for members, idx in zip(by_monkey.values(), bootstrap_draws(sizes, N_BOOTSTRAP, BOOTSTRAP_SEED)):
        draws += sum(weights[site] * per_image[site][idx].mean(axis=1) for site in members)
    return float(draws.std(ddof=1))


def load(identifier: str, **kwargs) -> BenchmarkBase:
    """Build the benchmark for ``identifier`` (see :func:`benchmark_identifiers`); kwargs go to the site benchmarks
    (``ceiling_method``, ``window``, ``n_components``, ...)."""
    dataset, site, suffix = parse_identifier(identifier)
    protocol = SUFFIX_PROTOCOL[suffix]
    if site == COMPOSITE:
        return ArcaroCompositeBenchmark(dataset, protocol, **kwargs)
    return ArcaroSiteBenchmark(dataset, site, protocol, **kwargs)
