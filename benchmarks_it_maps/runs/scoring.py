"""Scoring models on benchmarks: one call that loads both, times the run and stores the result; the layer analysis
(nested cross-validation over candidate layers); and the per-image map figures.

Identifiers are looked up in this package first (``harmonized_models`` models, ``Arcaro2020*`` benchmarks) and fall
back to brainscore-vision's own registries (``brainscore_vision.load_model`` / ``load_benchmark``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from brainscore_core.plugin_management.import_plugin import ImportPlugin
from PIL import Image
from tqdm.auto import tqdm

import harmonized_models
from brainscore_vision.model_helpers.activations import core as activations_core
from benchmarks_it_maps.benchmarks import arcaro2020 as bm
from benchmarks_it_maps.benchmarks import metric
from benchmarks_it_maps.benchmarks import regression as regressions
from benchmarks_it_maps.benchmarks.arcaro2020 import _reorder, grid_features_from_responses
from benchmarks_it_maps.benchmarks.metric import sem
from benchmarks_it_maps.data.conventions import IMAGE_SIZE_DEG
from benchmarks_it_maps.home import atomic_file, data_home, save_figure
from benchmarks_it_maps.runs import upstream
from benchmarks_it_maps.runs.results import ResultsDB, ResultsDBError, _jsonable

logger = logging.getLogger(__name__)


class ScoringError(ValueError):
    """A model or benchmark that cannot be found or used (message says which and what to do)."""


class ScoreNotRecordedError(ScoringError):
    """The score was computed but the results database could not store it; ``result`` holds the Score and
    ``side_file`` the JSON copy written to the data home (None when that failed too)."""

    def __init__(self, message: str, result: Any, side_file: Path | None):
        super().__init__(message)
        self.result, self.side_file = result, side_file


def _remove_resolution_probe() -> None:
    """Delete the probe image brainscore-vision's extractor writes once per process into a temp folder it never
    removes (``brainscore-resolution-probe-*``); it is written again if needed."""
    path = getattr(activations_core, "_probe_image_path", None)
    if path and Path(path).parent.name.startswith("brainscore-resolution-probe-"):
        shutil.rmtree(Path(path).parent, ignore_errors=True)
        activations_core._probe_image_path = None


def _flag_constant(result: Any, model_id: str) -> None:
    """A model whose features carry nothing scores exactly 0 +- 0; say so instead of reporting it silently."""
    error = result.attrs.get("error")
    try:
        zero = float(result) == 0 and (error is None or float(np.asarray(error)) == 0)
    except (TypeError, ValueError):
        return
    if zero:
        result.attrs["note"] = "score 0 +- 0: the model's IT features do not vary (a constant model?)"
        logger.warning("%s: %s", model_id, result.attrs["note"])


def _save_unrecorded(row: dict) -> Path | None:
    """Keep a score the database refused: ``<data home>/unrecorded/<time>-<model>-<benchmark>.json``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stamp}-{row['model']}-{row['benchmark']}")[:150] + ".json"
    try:
        path = data_home() / "unrecorded" / name
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(row, indent=1, default=str))
        return path
    except OSError as error:
        logger.error("could not keep the score in the data home either: %s", error)
        return None


# ----------------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------------
def resolve_benchmark(identifier: str, **kwargs: Any):
    """This package's benchmark ``identifier``, else brainscore-vision's; unknown -> ScoringError with close names,
    known to brainscore-vision but not loadable here (no network, no S3 credentials) -> ScoringError saying so."""
    try:
        return bm.load(identifier, **kwargs)
    except bm.UnknownBenchmarkError as error:
        ours_error = error
    if not registered_in_brainscore_vision("benchmarks", identifier):
        raise ScoringError(f"{ours_error} (nor is it a benchmark of the installed brainscore-vision)")
    import brainscore_vision
    try:
        return brainscore_vision.load_benchmark(identifier)
    except Exception as error:  # S3 errors (offline, no credentials), missing plugin dependencies, ...
        logger.debug("brainscore_vision.load_benchmark(%r) failed: %r", identifier, error)
        raise ScoringError(not_loadable_message("benchmark", identifier, error)) from None


def registered_in_brainscore_vision(kind: str, identifier: str) -> bool:
    """Whether brainscore-vision knows ``identifier`` (``kind``: 'models' or 'benchmarks'): already in its registry
    (registered in this process, e.g. by a user's code or ``enable_brainscore_integration``), or registered by an
    installed plugin (brainscore's own text scan of the plugin folders; nothing is imported or downloaded)."""
    import brainscore_vision
    if identifier in getattr(brainscore_vision, f"{kind[:-1]}_registry", {}):
        return True
    try:
        ImportPlugin("brainscore_vision", kind, identifier)
        return True
    except AssertionError:
        return False


def not_loadable_message(kind: str, identifier: str, error: BaseException) -> str:
    """One line for a brainscore-vision model/benchmark that exists but cannot be loaded on this machine."""
    text = f"{type(error).__name__}: {error}"
    if any(name in text for name in ("NoCredentialsError", "EndpointConnectionError", "ConnectionError",
                                     "Could not connect", "Unable to locate credentials", "URLError")):
        why = ("its data or weights are on Brain-Score's S3 storage, which needs network access (and AWS credentials "
               "for private data such as MajajHong2015's)")
    else:
        why = "brainscore-vision failed to load it"
    short = text if len(text) <= 300 else text[:297] + "..."
    return (f"{identifier} is a brainscore-vision {kind}, but it cannot be loaded here: {why} ({short}). "
            f"This package's own {kind}s work offline: brainscore list {kind}s")


def resolve_model(identifier: str, *, device: str = "auto", batch_size: Optional[int] = None):
    """This package's model ``identifier`` (``harmonized_models.load_model``), else brainscore-vision's."""
    try:
        return harmonized_models.load_model(identifier, device=device, batch_size=batch_size)
    except KeyError as error:
        ours_error = error
    except harmonized_models.load_errors() as error:  # bad checkpoint folder, weights unavailable or not verifying
        raise ScoringError(str(error)) from None
    message = ours_error.args[0] if ours_error.args else str(ours_error)
    if not registered_in_brainscore_vision("models", identifier):
        raise ScoringError(f"{message} (nor is it a model of the installed brainscore-vision)")
    import brainscore_vision
    try:
        return brainscore_vision.load_model(identifier)
    except Exception as error:
        logger.debug("brainscore_vision.load_model(%r) failed: %r", identifier, error)
        raise ScoringError(not_loadable_message("model", identifier, error)) from None


def weights_hash(model_identifier: str) -> str:
    """The results-DB weights key: ``harmonized_models.weights_hash`` for our models, else a brainscore-vision tag."""
    try:
        return harmonized_models.weights_hash(model_identifier)
    except KeyError:
        return f"brainscore-vision:{model_identifier}"


def _results_db(results):
    if results is None or isinstance(results, (str, os.PathLike)):
        return ResultsDB(results)
    return results


def _version(benchmark) -> Any:
    try:
        version = benchmark.version
    except NotImplementedError:
        version = 0
    return 0 if version is None else version


# ----------------------------------------------------------------------------------------------------------------
# what makes two scores comparable: the scoring configuration (part of the results database's key)
# ----------------------------------------------------------------------------------------------------------------
#: Benchmark attributes that change a score without changing the benchmark's identifier or version.
BENCHMARK_OPTIONS = ("ceiling_method", "window", "n_components", "max_pca_components", "shift_canvas_px",
                     "pls_solver", "regression", "folds", "ridge_backend", "surround")
#: Options left out of the configuration while they have their default (scores from before they existed keep
#: their resume key).
DEFAULT_OPTIONS = {"regression": "pls", "folds": "loio", "ridge_backend": "numpy", "surround": 0.0}


def configure_regression(benchmark: Any, regression: str = "pls", folds: str | int = "loio",
                         ridge_backend: Optional[str] = None) -> Any:
    """Set the metric's regression and outer folds on one of this package's benchmarks (all sites of a composite)
    and, when they differ from the published protocol, rename it ``<identifier>+<regression>[+<K>fold]``
    (:func:`benchmarks_it_maps.benchmarks.regression.variant_identifier`). ``ridge_backend`` default: himalaya on a
    CUDA machine, numpy otherwise. Foreign benchmarks accept only the defaults."""
    regression = regressions.check_regression(regression)
    folds = regressions.parse_folds(folds)
    targets = [benchmark, *getattr(benchmark, "children", [])]
    if not hasattr(targets[-1], "regression"):
        if (regression, folds) != ("pls", "loio"):
            raise ScoringError(f"{benchmark.identifier}: --regression/--folds apply to this package's Arcaro2020 "
                               "benchmarks only (brainscore-vision's benchmarks fix their own metric)")
        return benchmark
    if ridge_backend is None:
        import torch
        ridge_backend = "himalaya" if regression == "ridgecv" and torch.cuda.is_available() else "numpy"
    for target in targets:
        target.regression, target.folds, target.ridge_backend = regression, folds, ridge_backend
        published = target.__dict__.setdefault("_published_identifier", target.identifier)
        target._identifier = regressions.variant_identifier(published, regression, folds)
    return benchmark


def benchmark_options(benchmark: Any) -> dict:
    """The options a benchmark object was built with (``benchmark.scoring_options()`` when it defines one, else
    the :data:`BENCHMARK_OPTIONS` attributes it has; a composite answers for its sites). {} for foreign benchmarks
    (brainscore-vision's are fixed by identifier and version)."""
    if hasattr(benchmark, "scoring_options"):
        return dict(benchmark.scoring_options())
    target = (getattr(benchmark, "children", None) or [benchmark])[0]
    options = {}
    for name in BENCHMARK_OPTIONS:
        if hasattr(target, name):
            value = getattr(target, name)
            if name in DEFAULT_OPTIONS and value == DEFAULT_OPTIONS[name]:
                continue
            options[name] = list(value) if isinstance(value, tuple) else value
    return options


def _candidate_precision(candidate: Any) -> Optional[str]:
    activations = getattr(candidate, "activations_model", None)
    if activations is None or not hasattr(activations, "autocast_dtype"):
        return None
    dtype = activations.autocast_dtype
    return "float32" if dtype is None else str(dtype).replace("torch.", "")


def _candidate_layer_map(candidate: Any) -> Optional[dict]:
    layer_model = getattr(getattr(candidate, "layer_model", None), "_layer_model", None)
    layer_map = getattr(layer_model, "region_layer_map", None)
    return None if layer_map is None else {str(k): str(v) for k, v in dict(layer_map).items()}


def expected_precision(device: str = "auto", cuda_available: Optional[bool] = None) -> str:
    """The arithmetic our models score with on ``device`` (bf16 autocast on CUDA, float32 elsewhere), for planning
    a sweep whose workers may run elsewhere (``cuda_available``: whether they see a GPU; default: this machine)."""
    if device == "auto":
        if cuda_available is None:
            import torch
            cuda_available = torch.cuda.is_available()
        device = "cuda" if cuda_available else "cpu"
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def scoring_config(model: Any, benchmark: Any, *, candidate: Any = None, precision: Optional[str] = None,
                   stock: bool = False) -> dict:
    """Everything besides (model, benchmark identifier and version, package version, weights) that changes a score:
    the model's region -> layer map (a ``brainscore commit-layers`` choice changes it), the benchmark's options and
    the arithmetic (``float32`` / ``bfloat16``).

    ``model``: a registry identifier (the map ``load_model`` commits to; nothing is built), a brainscore-vision
    identifier (map None: its plugin fixes the layers) or a built model (its own map). ``candidate``: the built
    model, whose precision is read (else ``precision``, e.g. :func:`expected_precision` when planning a sweep).
    ``benchmark``: an identifier or a benchmark object. For brainscore-vision's benchmarks the configuration also
    names the PLS solver they run with (``regression_solver``: exact unless ``stock``, see :mod:`.upstream`).
    """
    if isinstance(model, str):
        layer_map = harmonized_models.committed_region_layer_map(model) if is_registry_model(model) else None
    else:
        candidate = model if candidate is None else candidate
        layer_map = _candidate_layer_map(model)
    if candidate is not None:
        precision = _candidate_precision(candidate)
    if isinstance(benchmark, str):
        benchmark = resolve_benchmark(benchmark)
    config = dict(region_layer_map=layer_map, benchmark_options=benchmark_options(benchmark), precision=precision)
    if not is_ours(benchmark):
        config[upstream.SOLVER_ATTR] = upstream.planned_solver(benchmark, stock=stock)
    return config


def is_ours(benchmark: Any) -> bool:
    """Whether ``benchmark`` is one of this package's Arcaro2020 benchmarks (else brainscore-vision's)."""
    return isinstance(benchmark, (bm.ArcaroSiteBenchmark, bm.ArcaroCompositeBenchmark))


def is_registry_model(model_identifier: str) -> bool:
    """Whether ``harmonized_models`` knows ``model_identifier`` (else it is left to brainscore-vision)."""
    try:
        harmonized_models.get_entry(model_identifier)
        return True
    except (KeyError, ValueError):
        return False


def config_hash(config: dict) -> str:
    """A short stable identity of a :func:`scoring_config` (``cfg:`` + 16 hex digits of a sha256)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return "cfg:" + hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------------------------------
def score(model_identifier: Any, benchmark_identifier: Any, *, device: str = "auto",
          batch_size: Optional[int] = None, results: Any = None, record: bool = True,
          weights_hash_value: Optional[str] = None, stock: bool = False, regression: str = "pls",
          folds: str | int = "loio"):
    """Score a model on a benchmark, time it, and (``record=True``) store it in the results DB.

    ``model_identifier``/``benchmark_identifier`` are identifiers (ours first, then brainscore-vision's) or
    already-built BrainModel / Benchmark objects. ``results``: a ResultsDB, a path, or None for the default DB.
    Returns the ceiled Score with attrs raw, ceiling, error, layer, model_identifier, benchmark_identifier,
    ``seconds`` (and, for this package's benchmarks, the floor: ``position_only(_ceiled)``, ``shuffled_image``).
    A brainscore-vision neural benchmark with the ``pls`` metric runs with the exact PLS solver
    (:mod:`benchmarks_it_maps.runs.upstream`) unless ``stock=True``; attr ``regression_solver`` says which ran
    (it is part of the scoring configuration, so stock and exact scores are stored apart).
    """
    benchmark = (resolve_benchmark(benchmark_identifier)
                 if isinstance(benchmark_identifier, str) else benchmark_identifier)
    if (regression, regressions.parse_folds(folds)) != ("pls", "loio"):
        configure_regression(benchmark, regression, folds)
    candidate = (resolve_model(model_identifier, device=device, batch_size=batch_size)
                 if isinstance(model_identifier, str) else model_identifier)
    # one spelling per checkpoint folder: harmonized:ckpt/a and harmonized:./ckpt/a are one row, not two
    model_id = (harmonized_models.canonical_identifier(model_identifier) if isinstance(model_identifier, str)
                else candidate.identifier)
    solver = None if is_ours(benchmark) else (upstream.STOCK if stock else upstream.accelerate(benchmark))
    start = time.perf_counter()
    if hasattr(benchmark, "preallocate_memory") and os.environ.get("BRAINSCORE_SKIP_MEMORY_CHECK") != "1":
        benchmark.preallocate_memory(candidate)
    try:
        result = benchmark(candidate)
    finally:
        _remove_resolution_probe()
    seconds = time.perf_counter() - start
    result.attrs["model_identifier"] = model_id
    result.attrs["benchmark_identifier"] = benchmark.identifier
    result.attrs["seconds"] = seconds
    if solver is not None:
        result.attrs[upstream.SOLVER_ATTR] = solver
    site = (getattr(benchmark, "children", None) or [benchmark])[0]
    if hasattr(site, "regression"):
        result.attrs["regression"], result.attrs["folds"] = site.regression, site.folds
    if "layer" not in result.attrs:
        layer_map = getattr(getattr(getattr(candidate, "layer_model", None), "_layer_model", None),
                            "region_layer_map", None)
        if layer_map is not None:
            result.attrs["layer"] = str(dict(layer_map).get("IT", "")) or None
    if getattr(candidate, "region_layer_map_source", None):  # harmonized_models.load_model: registry or local
        result.attrs["region_layer_map_source"] = candidate.region_layer_map_source
    logger.info("%s on %s: %.4f (%.1f s)", model_id, benchmark.identifier, float(result), seconds)
    _flag_constant(result, model_id)
    config = scoring_config(model_identifier if isinstance(model_identifier, str) else candidate, benchmark,
                            candidate=candidate, stock=stock)
    result.attrs["scoring_config"] = config
    result.attrs["config_hash"] = config_hash(config)
    if record:
        db = _results_db(results)
        key = dict(benchmark_version=_version(benchmark), weights_hash=weights_hash_value or weights_hash(model_id),
                   seconds=seconds, layer=result.attrs.get("layer"), config_hash=result.attrs["config_hash"])
        try:
            db.record(model_id, benchmark.identifier, result, **key)
        except (ResultsDBError, sqlite3.Error, OSError) as error:  # the score is finished: never throw it away
            row = {"model": model_id, "benchmark": benchmark.identifier, "score": float(result), **key,
                   "results_db": str(getattr(db, "path", db)), "db_error": str(error),
                   "attrs": _jsonable(dict(result.attrs))}
            side = _save_unrecorded(row)
            raise ScoreNotRecordedError(
                f"{model_id} on {benchmark.identifier} scored {float(result):.4f} but it was not recorded: "
                f"{' '.join(str(error).split())}; " + (f"kept in {side}" if side else "not kept anywhere else"),
                result, side) from None
    return result



def score_summary(result) -> dict:
    """The headline numbers of a Score as plain Python values (the CLI's ``--json`` keys and table columns)."""
    def number(value):
        if value is None:
            return None
        try:
            return float(np.asarray(getattr(value, "values", value)).reshape(()))
        except (TypeError, ValueError):
            return None
    return dict(model=result.attrs.get("model_identifier"), benchmark=result.attrs.get("benchmark_identifier"),
                score=number(result), floor=number(result.attrs.get("position_only_ceiled")),
                raw=number(result.attrs.get("raw")), ceiling=number(result.attrs.get("ceiling")),
                error=number(result.attrs.get("error")), layer=result.attrs.get("layer"),
                seconds=number(result.attrs.get("seconds")),
                region_layer_map_source=result.attrs.get("region_layer_map_source"))


# ----------------------------------------------------------------------------------------------------------------
# layer analysis (nested cross-validation)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class LayerAnalysis:
    """Per-layer leave-one-image-out scores and the nested (held-out-image-blind) layer selection of one site."""

    benchmark_identifier: str
    layers: list
    layer_scores: np.ndarray        #: [L] ceiled LOIO score of each layer (sign(r) r^2 / ceiling, not bounded)
    layer_errors: np.ndarray        #: [L] its error (delta method from the SEM over images)
    selected: list                  #: [I] layer chosen for each held-out image (from the other images only)
    per_fold: np.ndarray            #: [I] raw statistic of each held-out image with its selected layer
    ceiling: float                  #: the site's reliability
    floor: float = 0.0              #: ceiled score of the image-blind predictor (position_only_ceiled)
    extra: dict = field(default_factory=dict)

    @property
    def nested_score(self) -> float:
        """Ceiled (raw^2 / ceiling, bounded to [0, 1]) mean raw statistic of the nested selection."""
        return bm.ceiled_value(float(self.per_fold.mean()), self.ceiling)[0]

    @property
    def nested_error(self) -> float:
        return bm.ceiled_error(float(self.per_fold.mean()), sem(self.per_fold), self.ceiling)


def _criterion(protocol: str, features: np.ndarray, targets: np.ndarray, grid: int, n_components: int,
               regression: str = "pls", folds: str | int = "loio"):
    """Cross-validate on the given images (LOIO PLS unless ``regression``/``folds`` say otherwise) and return
    (score, per-image values) under the benchmark's headline metric."""
    fit = regressions.cross_validated_fit(features, targets, n_components=n_components, regression=regression,
                                          folds=_inner_folds(folds, targets.shape[0]))
    if protocol in bm.RESIDUAL_PROTOCOLS:
        fit = metric.residual_fit(fit, targets)
    if protocol == "map_alignment":
        n_img, _, n_chan = targets.shape
        alignment = metric.map_alignment(fit.predictions.reshape(n_img, grid, grid, n_chan),
                                         targets.reshape(n_img, grid, grid, n_chan))
        return alignment["score"], alignment["full"]
    return fit.score, fit.per_fold


def _inner_folds(folds: str | int, n_images: int) -> str | int:
    """K folds on a subset of the images: at most one fold per image (then LOIO)."""
    folds = regressions.parse_folds(folds)
    return "loio" if folds == "loio" or folds >= n_images else folds


def nested_layer_selection(features_by_layer: dict, targets: np.ndarray, grid: int, *, protocol: str = "maps",
                           n_components: int = 25, progress: bool = True, regression: str = "pls",
                           folds: str | int = "loio") -> dict:
    """For each held-out image, choose the layer with the best LOIO score on the *other* images only, then score
    the held-out image with that layer (fitted on the other images). Returns per-layer LOIO scores, the choices
    and the nested per-image scores (all raw)."""
    layers = list(features_by_layer)
    n_img = targets.shape[0]
    full = {}
    for layer in tqdm(layers, desc="layer LOIO scores", unit="layer", disable=not progress):
        full[layer] = _criterion(protocol, features_by_layer[layer], targets, grid, n_components, regression, folds)
    selected, per_fold = [], np.zeros(n_img)
    for held_out in tqdm(range(n_img), desc="nested layer selection", unit="image", disable=not progress):
        keep = np.delete(np.arange(n_img), held_out)
        inner = [_criterion(protocol, features_by_layer[layer][keep], targets[keep], grid, n_components, regression,
                            folds)[0] for layer in layers]
        best = layers[int(np.argmax(inner))]
        selected.append(best)
        # the outer fold of the full LOIO fit of ``best`` is exactly "fit on the other images, predict this one"
        per_fold[held_out] = full[best][1][held_out]
    return dict(layers=layers, layer_scores=np.array([full[l][0] for l in layers]),
                layer_per_image=np.array([full[l][1] for l in layers]), selected=selected, per_fold=per_fold)


def _layer_features(candidate, site, layers: Sequence[str]) -> dict:
    """Maps-protocol features ``[I, P, C]`` of every layer, from one pass of the model's activations extractor."""
    data = site.data
    activations_model = getattr(candidate, "activations_model", None)
    if activations_model is None:
        raise ScoringError(f"model {candidate.identifier!r} exposes no activations_model (not a ModelCommitment); "
                           "the layer analysis needs access to its layers")
    try:
        responses = activations_model(data.stimulus_set, layers=list(layers))
    except KeyError as error:  # an unknown layer name
        message = error.args[0] if error.args else str(error)
        raise ScoringError(f"{message}; pass layers that exist in the model (default: its candidate layers)") \
            from None
    responses = responses.isel(presentation=_reorder(responses["stimulus_id"].values, data.stimulus_ids))
    layer_coord = np.asarray(responses["layer"].values)
    n_img, grid = len(data.stimulus_ids), data.grid_size
    out = {}
    for layer in layers:
        sub = responses.isel(neuroid=np.flatnonzero(layer_coord == layer))
        out[layer] = grid_features_from_responses(sub, grid, model_identifier=candidate.identifier).reshape(
            n_img, grid * grid, -1)
    return out


def layer_analysis(model: Any, benchmark_identifier: str, *, layers: Optional[Sequence[str]] = None,
                   out: Optional[str | os.PathLike] = None, device: str = "auto",
                   batch_size: Optional[int] = None, regression: str = "pls",
                   folds: str | int = "loio") -> list[LayerAnalysis]:
    """Score candidate layers on a maps-protocol benchmark (``-pls`` or ``-map_alignment``) with nested
    cross-validation, per site; optionally plot score by depth to ``out`` (PNG). ``layers`` defaults to the model's
    candidate layers (registry entry, else the ModelCommitment's ``layers``). ``regression``/``folds``: see
    :func:`configure_regression` (the sites then report under the variant identifiers)."""
    candidate = resolve_model(model, device=device, batch_size=batch_size) if isinstance(model, str) else model
    target = configure_regression(bm.load(benchmark_identifier), regression, folds)
    if target.readout == "shift":
        raise ScoringError(f"{benchmark_identifier}: the layer analysis runs on the maps protocol (-pls or "
                           "-map_alignment); the shift protocol scores the committed IT layer only")
    if layers is None:
        layers = _candidate_layers(model, candidate)
    sites = target.children if isinstance(target, bm.ArcaroCompositeBenchmark) else [target]
    analyses = []
    for site in sites:
        features = _layer_features(candidate, site, layers)
        n_img, grid, _, n_chan = site.data.targets.shape
        targets = site.data.targets.reshape(n_img, grid * grid, n_chan)
        result = nested_layer_selection(features, targets, grid, protocol=site.protocol,
                                        n_components=site.n_components, regression=site.regression,
                                        folds=site.folds)
        ceiling = float(site.ceiling)
        per_image = result["layer_per_image"]
        analyses.append(LayerAnalysis(
            benchmark_identifier=site.identifier, layers=list(layers),
            layer_scores=np.array([bm.ceiled_value(float(v), ceiling)[1] for v in result["layer_scores"]]),
            layer_errors=np.array([bm.ceiled_error(float(np.mean(v)), sem(v), ceiling) for v in per_image]),
            selected=result["selected"], per_fold=result["per_fold"], ceiling=ceiling,
            floor=bm.ceiled_value(site._statistic(metric.training_mean_maps(targets), targets), ceiling)[0]))
        logger.info("%s: nested score %.3f; layers chosen %s", site.identifier, analyses[-1].nested_score,
                    sorted(set(result["selected"])))
    if out is not None:
        committed = (_candidate_layer_map(candidate) or {}).get("IT")
        default = (harmonized_models.get_entry(model).region_layer_map["IT"]
                   if isinstance(model, str) and is_registry_model(model) else None)
        plot_layer_analysis(analyses, out, title=f"{candidate.identifier} on {benchmark_identifier}",
                            committed_layer=committed, default_layer=default)
    return analyses


def _candidate_layers(model: Any, candidate) -> list[str]:
    if isinstance(model, str):
        try:
            import harmonized_models
            entry = harmonized_models.get_entry(model)
            if entry.candidate_layers:
                return list(entry.candidate_layers)
        except KeyError:
            pass
    layers = getattr(candidate, "layers", None)
    if not layers:
        raise ScoringError(f"model {candidate.identifier!r} has no candidate layers; pass layers=[...]")
    return list(layers)


def plot_layer_analysis(analyses: Sequence[LayerAnalysis], out: str | os.PathLike, title: str = "", *,
                        committed_layer: Optional[str] = None, default_layer: Optional[str] = None) -> Path:
    """Ceiled LOIO score by layer depth per site (error bars), with the nested score and the chosen layers; the
    model's committed IT layer (what ``brainscore score`` uses) and the registry rule's default, when given, are
    marked by vertical lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(out)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(analyses[0].layers) + 3), 4.2))
    depth = np.arange(len(analyses[0].layers))
    for analysis in analyses:
        line = ax.errorbar(depth, analysis.layer_scores, yerr=analysis.layer_errors, marker="o", capsize=3,
                           label=f"{analysis.benchmark_identifier} (nested {analysis.nested_score:.3f} "
                                 f"± {analysis.nested_error:.3f})")
        ax.axhline(analysis.nested_score, color=line[0].get_color(), linestyle="--", linewidth=1)
        ax.axhline(analysis.floor, color=line[0].get_color(), linestyle=":", linewidth=1.2)
        counts = {layer: analysis.selected.count(layer) for layer in analysis.layers}
        for d, layer in zip(depth, analysis.layers):
            if counts[layer]:
                ax.annotate(f"{counts[layer]}x", (d, analysis.layer_scores[d]), textcoords="offset points",
                            xytext=(0, 6), ha="center", fontsize=7, color=line[0].get_color())
    layers = list(analyses[0].layers)
    marks = [(committed_layer, "-", "committed IT layer (brainscore score uses it)")]
    if default_layer != committed_layer:
        marks.append((default_layer, "-.", "registry rule's IT layer"))
    for layer, style, label in marks:
        if layer in layers:
            ax.axvline(layers.index(layer), color="0.35", linestyle=style, linewidth=1.2, label=f"{label}: {layer}")
        elif layer:
            ax.plot([], [], " ", label=f"{label}: {layer} (not among these layers)")
    ax.set_xticks(depth)
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("layer (by depth)")
    ax.set_ylabel("ceiled score (leave-one-image-out)")
    ax.set_title(title + "\n(dashed: nested score; dotted: floor = image-blind predictor;\nNx: times chosen for a "
                 "held-out image)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, format="png", dpi=120)


# ----------------------------------------------------------------------------------------------------------------
# map figures
# ----------------------------------------------------------------------------------------------------------------
def site_results(benchmark) -> list:
    """The SiteResults of the last call of a site or composite benchmark."""
    results = benchmark.last_results if isinstance(benchmark, bm.ArcaroCompositeBenchmark) else [
        benchmark.last_result]
    if any(r is None for r in results):
        raise ScoringError(f"{benchmark.identifier} has not been run yet")
    return results


def write_map_figures(benchmark, out_dir: str | os.PathLike, site_identifiers: Optional[Sequence[str]] = None,
                      prefix: str = "") -> list[Path]:
    """One PNG per (site, image) from the benchmark's last run: the image, the channel-averaged neural map, the
    channel-averaged predicted map (held-out prediction) and the floor's prediction (the image-blind predictor: the
    mean neural map of the other images), side by side, with colour bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    children = benchmark.children if isinstance(benchmark, bm.ArcaroCompositeBenchmark) else [benchmark]
    out_dir = Path(out_dir)
    paths = []
    for child, result in zip(children, site_results(benchmark)):
        data = result.data
        neural = data.targets.mean(axis=-1)
        predicted = result.predictions.mean(axis=-1)
        n_img, grid, _, n_chan = data.targets.shape
        blind = metric.training_mean_maps(data.targets.reshape(n_img, grid * grid, n_chan)).reshape(
            data.targets.shape).mean(axis=-1)
        floor = result.floor.get("position_only")
        half_deg = IMAGE_SIZE_DEG / 2
        for i, sid in enumerate(data.stimulus_ids):
            fig, axes = plt.subplots(1, 4, figsize=(14.5, 3.9), layout="constrained")
            with Image.open(data.stimulus_set.get_stimulus(sid)) as image:
                axes[0].imshow(np.asarray(image.convert("RGB")), extent=(-half_deg, half_deg, half_deg, -half_deg))
            axes[0].set_title(f"{sid}", fontsize=8)
            # one colour scale for the three maps, so that their amplitudes compare (the predicted map is shrunk
            # towards the mean by the regression; Pearson r ignores that)
            panels = ((axes[1], neural[i], "neural map (channel mean)"),
                      (axes[2], predicted[i], "predicted map (held out)"),
                      (axes[3], blind[i], "floor: mean map of the other images"))
            low = min(float(np.min(values)) for _, values, _ in panels)
            high = max(float(np.max(values)) for _, values, _ in panels)
            for ax, values, name in panels:
                # grid points span the image edge to edge: point k sits at (k / (G-1) - 1/2) x 16 deg
                step = IMAGE_SIZE_DEG / (values.shape[0] - 1)
                shown = ax.imshow(values, extent=(-half_deg - step / 2, half_deg + step / 2,
                                                  half_deg + step / 2, -half_deg - step / 2),
                                  cmap="viridis", vmin=low, vmax=high)
                ax.set_title(name, fontsize=8)
            bar = fig.colorbar(shown, ax=list(axes[1:]), fraction=0.02, pad=0.01)
            bar.set_label("spikes/s (one scale for the 3 maps)", fontsize=7)
            bar.ax.tick_params(labelsize=7)
            for ax in axes:
                ax.set_xticks([-half_deg, 0, half_deg])
                ax.set_yticks([-half_deg, 0, half_deg])
                ax.tick_params(labelsize=7)
            for ax in axes[1:]:
                ax.set_xlabel("image point on the RF centre, deg", fontsize=7)
            axes[0].set_xlabel("deg from the image centre", fontsize=7)
            axes[0].set_ylabel("deg (down = +)", fontsize=7)
            fig.suptitle(f"{child.identifier} · {result.model_identifier} · layer {result.layer} · "
                         f"median r {result.fit.per_fold[i]:.2f} · Spearman {result.alignment['full'][i]:.2f}"
                         + (f" · floor (image-blind) r {floor:.2f} (all images)" if floor is not None else "")
                         + f"\n{grid}x{grid} grid over the {IMAGE_SIZE_DEG:.0f} deg image",
                         fontsize=9)
            path = out_dir / f"{prefix}{child.identifier}" / f"{sid}.png"
            paths.append(save_figure(fig, path, format="png", dpi=90, bbox_inches="tight"))
    return paths


def maps(model: Any, benchmark_identifier: str, out_dir: str | os.PathLike, *, device: str = "auto",
         batch_size: Optional[int] = None):
    """Run a benchmark of this package on a model and write its per-image map figures; returns (Score, paths)."""
    candidate = resolve_model(model, device=device, batch_size=batch_size) if isinstance(model, str) else model
    try:
        benchmark = bm.load(benchmark_identifier)
    except bm.UnknownBenchmarkError as error:
        raise ScoringError(str(error)) from None
    result = benchmark(candidate)
    return result, write_map_figures(benchmark, out_dir)
