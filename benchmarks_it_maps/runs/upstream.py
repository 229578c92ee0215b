"""Fast local scoring of brainscore-vision's own neural benchmarks (``MajajHong2015public.IT-pls`` and the like).

A brainscore-vision ``NeuralBenchmark`` with the ``pls`` metric spends most of its time in scikit-learn's
``PLSRegression``: NIPALS power iterations for each of 25 components, in each of 10 cross-validation splits, often
stopping at the 500-iteration cap. :func:`accelerate` swaps that regression, inside the benchmark's own metric object,
for :class:`~benchmarks_it_maps.benchmarks.pls.ExactPLSRegression` (the same PLS2 algorithm with exact singular
vectors; equal to scikit-learn's ``algorithm='svd'``). Everything else stays upstream's: the stimuli, ``place_on_screen``,
``look_at``, the cross-validation splits, the Pearson correlation, the median over neuroids, the
``internal_consistency`` ceiling and ``explained_variance``. Our models already extract activations with this
package's extractor (``harmonized_models.activations``), whichever benchmark calls ``look_at``.

Anything that is not exactly that (another metric, a scaled PLS, a temporal ``spantime_pls`` wrapper, an RSA
benchmark) is left untouched and runs the stock path. :func:`twin_neural_benchmark` builds such a benchmark from
the simulated twin in brainscore-vision's own format, since upstream's data cannot be downloaded here.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly
from brainscore_vision import load_ceiling, load_metric
from brainscore_vision.benchmark_helpers.neural_common import (NeuralBenchmark, TrainTestNeuralBenchmark,
                                                               average_repetition)
from brainscore_vision.metric_helpers.xarray_utils import XarrayRegression
from sklearn.cross_decomposition import PLSRegression

from benchmarks_it_maps.benchmarks import arcaro2020
from benchmarks_it_maps.benchmarks.pls import ExactPLSRegression
from benchmarks_it_maps.data import assemblies as data

logger = logging.getLogger(__name__)

#: The Score attr that says which PLS solver a brainscore-vision benchmark ran with.
SOLVER_ATTR = "regression_solver"
EXACT = "exact_pls"
STOCK = "stock"
#: The twin benchmark's canvas spans the 16 deg image (as the shift-protocol twin's generator sees it).
TWIN_VISUAL_DEGREES = 16.0


def _pls_regression(benchmark: Any) -> Optional[XarrayRegression]:
    """The benchmark's PLS regression wrapper if it is a plain, unscaled scikit-learn PLS inside an upstream
    neural benchmark (the case :func:`accelerate` handles), else None."""
    if not isinstance(benchmark, (NeuralBenchmark, TrainTestNeuralBenchmark)):
        return None
    regression = getattr(getattr(benchmark, "_similarity_metric", None), "regression", None)
    if type(regression) is not XarrayRegression:  # e.g. SpanTimeRegression wraps one: leave temporal metrics alone
        return None
    inner = getattr(regression, "_regression", None)
    if type(inner) is not PLSRegression or inner.scale:
        return None
    return regression


def _is_accelerated(benchmark: Any) -> bool:
    regression = getattr(getattr(benchmark, "_similarity_metric", None), "regression", None)
    return isinstance(getattr(regression, "_regression", None), ExactPLSRegression)


def planned_solver(benchmark: Any, *, stock: bool = False) -> str:
    """The PLS solver ``benchmark`` runs with under :func:`accelerate` (``stock=True``: left as upstream's)."""
    if _is_accelerated(benchmark):
        return EXACT
    if stock or _pls_regression(benchmark) is None:
        return STOCK
    return EXACT


def accelerate(benchmark: Any) -> str:
    """Swap ``benchmark``'s NIPALS PLS for the exact solver, in place, when it is an upstream neural benchmark with a
    plain PLS metric. Returns :data:`EXACT` when swapped (or already swapped), :data:`STOCK` when left as it was."""
    if _is_accelerated(benchmark):
        return EXACT
    regression = _pls_regression(benchmark)
    if regression is None:
        return STOCK
    n_components = int(regression._regression.n_components)
    regression._regression = ExactPLSRegression(n_components=n_components)
    logger.info("%s: exact PLS solver (%d components) instead of scikit-learn's NIPALS",
                getattr(benchmark, "identifier", benchmark), n_components)
    return EXACT


def _twin_trials(site: str, window: Optional[tuple]) -> tuple[np.ndarray, list, Any]:
    """The twin's single-trial maps of ``site`` [image, row, col, channel, repetition], image ids, assembly."""
    assembly = data.load_assembly(site)
    raw = data.response_maps(assembly, window=window, average_repetitions=False)
    if "repetition" not in raw.dims or raw.sizes["repetition"] < 2:
        raise ValueError(f"{site} has no repetitions: an internal-consistency ceiling needs at least two")
    raw = raw.transpose("stimulus_id", "row", "col", "channel", "repetition")
    return np.asarray(raw.values, dtype=np.float64), list(raw["stimulus_id"].values), assembly


def twin_neural_benchmark(site: str = "Arcaro2020sim.M2ML", *, window: Optional[tuple] = None,
                          visual_degrees: float = TWIN_VISUAL_DEGREES, splits: int = 10,
                          identifier: Optional[str] = None) -> NeuralBenchmark:
    """A brainscore-vision ``NeuralBenchmark`` made of the twin's data in upstream's format.

    Presentations are the shift protocol's stimuli (each image shown with one grid point at the centre of gaze; the
    presentation's response is the site's channels at that grid point), neuroids are the site's channels
    (``region='IT'``), every trial is a presentation row with a ``repetition`` coordinate; the ceiling is upstream's
    ``internal_consistency`` on the trials, the metric ``load_metric('pls')`` with 10 random 90/10 splits
    (no stratification coordinate: the twin has no object labels).
    """
    trials, image_ids, assembly = _twin_trials(site, window)
    n_img, grid, _, n_chan, n_rep = trials.shape
    stimuli = arcaro2020.shift_stimulus_set(assembly.attrs["stimulus_set"], grid, visual_degrees,
                                            float(assembly.attrs.get("image_size_deg", 16)))
    order = {sid: i for i, sid in enumerate(image_ids)}
    rows = stimuli.sort_values(["source_stimulus_id", "grid_row", "grid_col"], key=lambda c: c.map(order)
                               if c.name == "source_stimulus_id" else c)
    values = trials[[order[s] for s in rows["source_stimulus_id"]], rows["grid_row"].values,
                    rows["grid_col"].values]  # [presentation, channel, repetition]
    n_pres = values.shape[0]
    window = tuple(window or assembly.attrs.get("default_window", (0, 0)))
    flat = values.transpose(2, 0, 1).reshape(n_rep * n_pres, n_chan)  # repetition-major rows
    channels = [f"{site}.{c}" for c in range(n_chan)]
    repetitions = NeuroidAssembly(
        flat[:, :, None], dims=["presentation", "neuroid", "time_bin"],
        coords={"stimulus_id": ("presentation", np.tile(rows["stimulus_id"].values, n_rep)),
                **{name: ("presentation", np.tile(rows[name].values, n_rep))
                   for name in ("source_stimulus_id", "grid_row", "grid_col")},
                "repetition": ("presentation", np.repeat(np.arange(n_rep), n_pres)),
                "neuroid_id": ("neuroid", channels), "region": ("neuroid", ["IT"] * n_chan),
                "time_bin_start": ("time_bin", [int(window[0])]), "time_bin_end": ("time_bin", [int(window[1])])})
    repetitions = repetitions.squeeze("time_bin")
    repetitions.attrs["stimulus_set"] = stimuli
    averaged = average_repetition(repetitions)
    averaged.attrs["stimulus_set"] = stimuli
    ceiler = load_ceiling("internal_consistency")
    metric = load_metric("pls", crossvalidation_kwargs=dict(stratification_coord=None, splits=splits))
    return NeuralBenchmark(identifier=identifier or f"{site}-upstream_format_pls", version=1, assembly=averaged,
                           similarity_metric=metric, visual_degrees=visual_degrees, number_of_trials=1,
                           ceiling_func=lambda: ceiler(repetitions), parent="IT", bibtex=None)
