"""The one metric behind every IT-map benchmark: leave-one-image-out PLS prediction of spatial response maps.

Samples are (image, grid position) pairs. For each held-out image, a PLS regression (25 components, ``scale=False``,
centred, with intercept) is fitted on the positions of all other images, predicts the held-out image's map for every
channel, and is scored by the Pearson correlation across the G x G positions (a spatial-map correlation), median over
channels. The headline is the mean over folds with the SEM over folds as its error. :func:`residual_per_channel`
scores the same predictions after subtracting the training images' mean map (``-residual_pls``), and
:func:`training_mean_maps` is the image-blind predictor (the floor).

This fixes the released evaluation code (PAPER_NOTES section 6): predictions come from the fitted estimator (centring
and intercept included, never a raw ``X @ coef_``), every component count is honoured, and constant maps yield r = 0
instead of NaN.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.cross_decomposition import PLSRegression
from tqdm.auto import tqdm

from benchmarks_it_maps.benchmarks.pls import (ExactPLSRegression, LeaveOneGroupOutPLS, single_threaded_blas,
                                               stacked_products)

#: Brain-Score's standard PLS size (``regression_correlation.pls_regression``).
N_COMPONENTS = 25
#: The shift protocol's PCA size cap (issue 3).
MAX_PCA_COMPONENTS = 1000
#: PLS solvers: ``exact`` (default; :class:`benchmarks_it_maps.benchmarks.pls.ExactPLSRegression`, exact singular vectors) or
#: ``sklearn`` (scikit-learn's NIPALS iteration, as Brain-Score's ``pls`` metric; slower and approximate).
PLS_SOLVERS = ("exact", "sklearn")


def _is_constant(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """True where ``x`` does not vary along ``axis`` (up to floating-point noise relative to its magnitude)."""
    return _spread_is_noise(np.min(x, axis=axis), np.max(x, axis=axis))


def pearson_per_channel(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson r across positions (axis 0) for every channel (axis 1); ``[P, K] x [P, K] -> [K]``.

    A map that is constant on either side has no defined correlation; it scores 0 (no spatial agreement), so a
    degenerate channel neither crashes nor propagates NaN into the median.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred and target must both be [positions, channels]; got {pred.shape} and {target.shape}")
    return _pearson_over_positions(pred, target)


def _pearson_over_positions(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """:func:`pearson_per_channel` of every leading index at once: ``[..., P, K] x [..., P, K] -> [..., K]``."""
    pc = pred - pred.mean(axis=-2, keepdims=True)
    tc = target - target.mean(axis=-2, keepdims=True)
    num = (pc * tc).sum(axis=-2)
    den = np.sqrt((pc ** 2).sum(axis=-2) * (tc ** 2).sum(axis=-2))
    constant = _is_constant(pred, axis=-2) | _is_constant(target, axis=-2) | (den == 0)
    r = np.where(constant, 0.0, num / np.where(constant, 1.0, den))
    return np.clip(r, -1.0, 1.0)


def sem(values: np.ndarray) -> float:
    """Standard error of the mean (ddof=1); 0 for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return 0.0
    return float(values.std(ddof=1) / np.sqrt(values.size))


class KernelPCAReducer:
    """Per-fold PCA (at most ``max_components``) fitted on the training images only, via one shared Gram matrix.

    The shift protocol regresses on whole-layer responses (tens of thousands of features). Refitting a PCA on each
    fold's training rows is exact but slow; since a fold only removes one image's rows, every fold's centred training
    Gram matrix (and the held-out rows' cross terms) is a sub-block of the Gram matrix of all rows, computed once.
    Each fold's PCA is then an eigendecomposition of its training Gram block: mathematically the same subspace as
    ``sklearn.decomposition.PCA`` fitted on the training rows (PLS is invariant to the rotation within it).
    """

    def __init__(self, max_components: int = MAX_PCA_COMPONENTS):
        if max_components < 1:
            raise ValueError(f"max_components must be positive, got {max_components}")
        self.max_components = int(max_components)
        self._gram: Optional[np.ndarray] = None

    def fit_all(self, X: np.ndarray) -> None:
        """Compute the Gram matrix of all rows (``X`` is ``[n_rows, n_features]``)."""
        Xt = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float64)
        self._gram = (Xt @ Xt.T).numpy()
        self._n_features = X.shape[1]

    def fold(self, train_rows: np.ndarray, test_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """PCA scores of the training and held-out rows, PCA fitted on the training rows only."""
        if self._gram is None:
            raise RuntimeError("call fit_all() before fold()")
        K = self._gram
        k_tt = K[np.ix_(train_rows, train_rows)]
        k_st = K[np.ix_(test_rows, train_rows)]
        row_mean = k_tt.mean(axis=0)
        total_mean = row_mean.mean()
        # centred Gram of the training rows, and centred cross terms of the held-out rows (training mean removed)
        kc = k_tt - row_mean[None, :] - row_mean[:, None] + total_mean
        kc_st = k_st - k_st.mean(axis=1, keepdims=True) - row_mean[None, :] + total_mean
        n_train = len(train_rows)
        n_keep = min(self.max_components, n_train - 1, self._n_features)
        eigval, eigvec = np.linalg.eigh(kc)
        order = np.argsort(eigval)[::-1][:n_keep]
        eigval, eigvec = eigval[order], eigvec[:, order]
        keep = eigval > eigval[0] * 1e-10 if eigval.size and eigval[0] > 0 else np.zeros(0, dtype=bool)
        eigval, eigvec = eigval[keep], eigvec[:, keep]
        if eigval.size == 0:  # no variance at all: a single constant feature
            return np.zeros((n_train, 1)), np.zeros((len(test_rows), 1))
        scale = 1.0 / np.sqrt(eigval)
        train_scores = eigvec * np.sqrt(eigval)[None, :]      # = Xc V
        test_scores = kc_st @ eigvec * scale[None, :]         # = (x - mean) V
        return train_scores, test_scores


def pca_reducer(max_components: int = MAX_PCA_COMPONENTS) -> KernelPCAReducer:
    """The shift protocol's feature reducer: PCA with at most ``max_components``, fitted per fold on training rows."""
    return KernelPCAReducer(max_components)


@dataclass
class MapsFit:
    """Result of :func:`loio_pls`. Folds are images, in input order."""

    per_channel: np.ndarray   #: [I, K] Pearson r of each held-out image's map, per channel
    per_fold: np.ndarray      #: [I] median over channels
    predictions: np.ndarray   #: [I, P, K] predicted held-out maps
    n_components: int         #: PLS components actually used

    @property
    def score(self) -> float:
        """Mean over folds (images)."""
        return float(self.per_fold.mean())

    @property
    def error(self) -> float:
        """SEM over folds."""
        return sem(self.per_fold)


def _check_maps(features: np.ndarray, targets: np.ndarray) -> None:
    if features.ndim != 3 or targets.ndim != 3:
        raise ValueError("features must be [images, positions, features] and targets [images, positions, channels]; "
                         f"got {features.shape} and {targets.shape}")
    if features.shape[:2] != targets.shape[:2]:
        raise ValueError(f"features and targets disagree on images x positions: {features.shape[:2]} vs "
                         f"{targets.shape[:2]}")
    if features.shape[0] < 2:
        raise ValueError(f"leave-one-image-out needs at least 2 images, got {features.shape[0]}")
    for name, array in (("features", features), ("targets", targets)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contain non-finite values (NaN or inf); clean the inputs first")


def _pls_estimator(n_components: int, solver: str):
    if solver == "exact":
        return ExactPLSRegression(n_components=n_components)
    if solver == "sklearn":
        return PLSRegression(n_components=n_components, scale=False)
    raise ValueError(f"unknown PLS solver {solver!r}; choose one of {PLS_SOLVERS}")


def fit_predict_pls(train_X: np.ndarray, train_Y: np.ndarray, test_X: np.ndarray,
                    n_components: int = N_COMPONENTS, solver: str = "exact") -> tuple[np.ndarray, int]:
    """Fit PLS (``scale=False``) on training rows and predict test rows; returns (predictions, components used).

    The component count is capped by the data (rows - 1 and features). Constant training targets are predicted as
    their (constant) training mean, without fitting.
    """
    n_comp = int(max(1, min(n_components, train_X.shape[1], train_X.shape[0] - 1)))
    y_mean = train_Y.mean(axis=0)
    varying = ~_is_constant(train_Y)
    pred = np.repeat(y_mean[None, :], test_X.shape[0], axis=0)
    if varying.any() and not _is_constant(train_X).all():
        pls = _pls_estimator(n_comp, solver)
        with warnings.catch_warnings():
            # sklearn warns when the residual of Y becomes constant before n_components: harmless, fit stops early
            warnings.filterwarnings("ignore", message=".*residual is constant.*")
            pls.fit(train_X, train_Y[:, varying])
        pred[:, varying] = pls.predict(test_X).reshape(test_X.shape[0], -1)
    return pred, n_comp


def _spread_is_noise(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The test of :func:`_is_constant` from a minimum and a maximum: the spread ``high - low`` within 1e-12 of
    the magnitude ``max |x|`` (the larger of ``|low|`` and ``|high|``), or of 1."""
    scale = np.maximum(np.maximum(np.abs(low), np.abs(high)), 1.0)
    return (high - low) <= 1e-12 * scale


def _all_folds_constant(per_group_min: np.ndarray, per_group_max: np.ndarray) -> np.ndarray:
    """:func:`_is_constant` of every fold's training rows (all groups but the held-out one) at once ``[G, ...]``,
    from per-group minima and maxima: a fold's training minimum is the smaller of
    the minima of the groups before and after the held-out one (running minima from both ends), likewise the
    maximum; the same numbers, since a minimum does not depend on the order it is taken in."""
    def others(values: np.ndarray, reduce: np.ufunc, identity: float) -> np.ndarray:
        pad = np.full((1,) + values.shape[1:], identity)
        before = reduce.accumulate(np.concatenate([pad, values[:-1]]), axis=0)
        after = reduce.accumulate(np.concatenate([pad, values[:0:-1]]), axis=0)[::-1]
        return reduce(before, after)
    return _spread_is_noise(others(per_group_min, np.minimum, np.inf), others(per_group_max, np.maximum, -np.inf))


def _shared_fits_apply(Xg: np.ndarray, target_sets: Sequence[np.ndarray], n_components: int) -> bool:
    """Whether every fold of every target set can be fitted by the stacked solver of
    :class:`~.pls.LeaveOneGroupOutPLS` (``[I, P, F]`` features, ``[I, P, K]`` targets): no training set with a
    constant channel or only constant features (those folds take :meth:`~.pls.LeaveOneGroupOutPLS.fold`), and
    working memory within :attr:`~.pls.LeaveOneGroupOutPLS.MAX_STACK_BYTES`."""
    n_images, _, n_feat = Xg.shape
    if LeaveOneGroupOutPLS.stack_bytes(n_images, len(target_sets), n_feat, max(Y.shape[2] for Y in target_sets),
                                       n_components) > LeaveOneGroupOutPLS.MAX_STACK_BYTES:
        return False
    if _all_folds_constant(Xg.min(axis=1), Xg.max(axis=1)).all(axis=1).any():
        return False
    return not any(_all_folds_constant(Yg.min(axis=1), Yg.max(axis=1)).any() for Yg in target_sets)


def _shared_predictions(Xg: np.ndarray, target_sets: Sequence[np.ndarray], n_comp: int) -> list[np.ndarray]:
    """Held-out predictions ``[I, P, K]`` of every target set, all folds and sets in one stacked solve."""
    n_images, n_pos, n_feat = Xg.shape
    X_all = Xg.reshape(n_images * n_pos, n_feat)
    with single_threaded_blas():  # OpenBLAS's own threads would only spin here (see single_threaded_blas)
        fits = LeaveOneGroupOutPLS(X_all, [Y.reshape(n_images * n_pos, -1) for Y in target_sets], n_images) \
            .all_folds(n_comp)
        coef = np.concatenate([coef for coef, _, _ in fits], axis=2)           # every set's columns, one product
        intercept = np.concatenate([intercept for _, intercept, _ in fits], axis=1)
        predictions = stacked_products(Xg, coef) + intercept[:, None]
    return np.split(predictions, np.cumsum([c.shape[2] for c, _, _ in fits])[:-1], axis=2)


def _loio_shared(X_all: np.ndarray, Y_all: np.ndarray, n_images: int, n_components: int):
    """Yield (held-out predictions, components used) per fold, as :func:`fit_predict_pls` with the exact solver on
    each fold's rows, from cross-products shared by all folds (:class:`~.pls.LeaveOneGroupOutPLS`)."""
    n_pos = X_all.shape[0] // n_images
    Xg, Yg = X_all.reshape(n_images, n_pos, -1), Y_all.reshape(n_images, n_pos, -1)
    n_train = (n_images - 1) * n_pos
    n_comp = int(max(1, min(n_components, X_all.shape[1], n_train - 1)))
    if _shared_fits_apply(Xg, [Yg], n_comp):
        yield from ((pred, n_comp) for pred in _shared_predictions(Xg, [Yg], n_comp)[0])
        return
    shared = LeaveOneGroupOutPLS(X_all, Y_all, n_images)
    x_constant = _all_folds_constant(Xg.min(axis=1), Xg.max(axis=1))
    y_constant = _all_folds_constant(Yg.min(axis=1), Yg.max(axis=1))
    for held_out in range(n_images):
        y_mean = (shared.sum_y.sum(axis=0) - shared.sum_y[held_out]) / n_train
        varying = ~y_constant[held_out]
        pred = np.repeat(y_mean[None, :], n_pos, axis=0)
        if varying.any() and not x_constant[held_out].all():
            coef, intercept, _ = shared.fold(held_out, n_comp, columns=np.flatnonzero(varying))
            pred[:, varying] = Xg[held_out] @ coef + intercept
        yield pred, n_comp


def fold_rows(features: np.ndarray, targets: np.ndarray, reduce: Optional[KernelPCAReducer] = None) \
        -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What every cross-validated fit over images starts from: the checked float64 maps as rows ``X_all``
    ``[I * P, F]`` and ``Y_all`` ``[I * P, K]``, and ``rows`` ``[I, P]`` (image i's row indices); ``reduce`` is fitted
    on all rows once (each fold then uses its training rows only)."""
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    _check_maps(features, targets)
    n_images, n_pos, n_feat = features.shape
    X_all = features.reshape(n_images * n_pos, n_feat)
    Y_all = targets.reshape(n_images * n_pos, targets.shape[2])
    if reduce is not None:
        reduce.fit_all(X_all)
    return X_all, Y_all, np.arange(n_images * n_pos).reshape(n_images, n_pos)


def loio_pls(features: np.ndarray, targets: np.ndarray, *, n_components: int = N_COMPONENTS,
             reduce: Optional[KernelPCAReducer] = None, progress: bool = False, solver: str = "exact") -> MapsFit:
    """Leave-one-image-out PLS from per-position features to per-position channel responses.

    ``features`` ``[I, P, F]`` (the model's regressor at each of P grid positions of I images), ``targets``
    ``[I, P, K]`` (window-averaged responses of K channels). ``reduce`` (e.g. :func:`pca_reducer`) transforms the
    features per fold, fitted on the training images only. ``solver``: see :data:`PLS_SOLVERS`. With the exact
    solver and no reducer, all folds are fitted from shared cross-products whenever that costs fewer operations
    (the same fits: :class:`~.pls.LeaveOneGroupOutPLS`, ``cheaper_than_refitting``).
    """
    X_all, Y_all, rows = fold_rows(features, targets, reduce)
    n_images, n_pos = rows.shape
    n_feat, n_chan = X_all.shape[1], Y_all.shape[1]
    per_channel = np.zeros((n_images, n_chan))
    predictions = np.zeros((n_images, n_pos, n_chan))
    used = n_components
    if solver == "exact" and reduce is None and LeaveOneGroupOutPLS.cheaper_than_refitting(
            n_images, n_pos, n_feat, n_chan, n_components):
        fits = _loio_shared(X_all, Y_all, n_images, n_components)
    else:
        fits = (_refit_fold(X_all, Y_all, rows, held_out, reduce, n_components, solver)
                for held_out in range(n_images))
    if progress:
        fits = tqdm(fits, total=n_images, desc="leave-one-image-out PLS", unit="fold")
    for held_out, (pred, used) in enumerate(fits):
        predictions[held_out] = pred
        per_channel[held_out] = pearson_per_channel(pred, Y_all[rows[held_out]])
    return MapsFit(per_channel=per_channel, per_fold=np.median(per_channel, axis=1), predictions=predictions,
                   n_components=used)


def shuffled_image_features(features: np.ndarray) -> np.ndarray:
    """The ``shuffled_image`` floor's regressors: each image's maps paired with the model's features of another
    image (the previous one, cyclically), ``[I, P, F]`` -> ``[I, P, F]``."""
    return np.roll(features, 1, axis=0)


def loio_pls_with_floors(features: np.ndarray, target_sets: Sequence[np.ndarray], *,
                         n_components: int = N_COMPONENTS) -> list[tuple[MapsFit, MapsFit]]:
    """For every targets ``t`` of ``target_sets`` (sites recorded on the same images): ``loio_pls(features, t)``
    and the floor ``loio_pls(shuffled_image_features(features), t)``, with the exact solver, in one stacked solve.

    The floor needs no features of its own: its fold i trains on the pairs (features of image j - 1, maps of
    image j), j != i, which is fold i - 1 of the same features against the maps rolled back by one image. So all
    the fits are on one X, and :class:`~.pls.LeaveOneGroupOutPLS` does X's work once for all of them. The same
    fits as the separate calls up to floating-point rounding (tests: 1e-8); where the stacked solver does not
    apply (:func:`_shared_fits_apply`), the separate calls are made.
    """
    features = np.asarray(features, dtype=np.float64)
    target_sets = [np.asarray(t, dtype=np.float64) for t in target_sets]
    for targets in target_sets:
        _check_maps(features, targets)
    n_images, n_pos, n_feat = features.shape
    n_comp = int(max(1, min(n_components, n_feat, (n_images - 1) * n_pos - 1)))
    sets = [y for t in target_sets for y in (t, np.roll(t, -1, axis=0))]
    if not (_shared_fits_apply(features, sets, n_comp) and LeaveOneGroupOutPLS.cheaper_than_refitting(
            n_images, n_pos, n_feat, max(t.shape[2] for t in target_sets), n_components)):
        shuffled = shuffled_image_features(features)
        return [(loio_pls(features, t, n_components=n_components),
                 loio_pls(shuffled, t, n_components=n_components)) for t in target_sets]
    predictions = _shared_predictions(features, sets, n_comp)
    fits = []
    for s, targets in enumerate(target_sets):
        own, floor = predictions[2 * s], np.roll(predictions[2 * s + 1], 1, axis=0)
        fits.append(tuple(maps_fit(pred, targets, n_components=n_comp) for pred in (own, floor)))
    return fits


def _refit_fold(X_all: np.ndarray, Y_all: np.ndarray, rows: np.ndarray, held_out: int,
                reduce: Optional[KernelPCAReducer], n_components: int, solver: str) -> tuple[np.ndarray, int]:
    """One fold fitted on its own training rows (after the fold's reducer, if any)."""
    train_rows = np.delete(rows, held_out, axis=0).ravel()
    test_rows = rows[held_out]
    if reduce is not None:
        train_X, test_X = reduce.fold(train_rows, test_rows)
    else:
        train_X, test_X = X_all[train_rows], X_all[test_rows]
    return fit_predict_pls(train_X, Y_all[train_rows], test_X, n_components, solver)


def training_mean_maps(targets: np.ndarray) -> np.ndarray:
    """For every image i, the mean neural map of all *other* images (the training images of fold i).

    ``targets`` ``[I, P, K]`` -> ``[I, P, K]``. This is the image-blind predictor: it knows where the site responds
    on average (the position profile every image shares) and nothing about the held-out image.
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 3 or targets.shape[0] < 2:
        raise ValueError(f"targets must be [images >= 2, positions, channels]; got shape {targets.shape}")
    n_images = targets.shape[0]
    return (targets.sum(axis=0, keepdims=True) - targets) / (n_images - 1)


def residual_per_channel(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The ``-residual_pls`` statistic: per image and channel, Pearson r across positions after subtracting the
    training images' mean neural map (per channel, per position) from both the prediction and the held-out map.

    ``predictions``/``targets`` ``[I, P, K]`` (prediction of image i from a fit on the other images) -> ``[I, K]``.
    Subtracting the shared position profile leaves only what is specific to the held-out image, so the image-blind
    predictor (:func:`training_mean_maps`) scores exactly 0 (a constant residual map has r = 0).
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if predictions.shape != targets.shape or predictions.ndim != 3:
        raise ValueError(f"predictions and targets must both be [images, positions, channels]; got "
                         f"{predictions.shape} and {targets.shape}")
    base = training_mean_maps(targets)
    return _pearson_over_positions(predictions - base, targets - base)


def pearson_maps(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The ``-pls`` statistic for given predictions: per image, Pearson r per channel across positions ``[I, K]``."""
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if predictions.shape != targets.shape or predictions.ndim != 3:
        raise ValueError(f"predictions and targets must both be [images, positions, channels]; got "
                         f"{predictions.shape} and {targets.shape}")
    return _pearson_over_positions(predictions, targets)


def maps_fit(predictions: np.ndarray, targets: np.ndarray, *, residual: bool = False,
             n_components: int = 0) -> MapsFit:
    """Score held-out predictions ``[I, P, K]`` as ``-pls`` (``residual=False``) or ``-residual_pls``."""
    per_channel = (residual_per_channel if residual else pearson_maps)(predictions, targets)
    return MapsFit(per_channel=per_channel, per_fold=np.median(per_channel, axis=1),
                   predictions=np.asarray(predictions, dtype=np.float64), n_components=n_components)


def residual_fit(fit: MapsFit, targets: np.ndarray) -> MapsFit:
    """The same leave-one-image-out PLS predictions as ``fit`` (from :func:`loio_pls`), scored by the residual
    statistic (:func:`residual_per_channel`)."""
    return maps_fit(fit.predictions, targets, residual=True, n_components=fit.n_components)


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rho of each pair of maps ``[I, ...]`` (flattened per image) -> ``[I]``; 0 where either is
    constant."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return _pearson_over_positions(rankdata(a, axis=1)[:, :, None], rankdata(b, axis=1)[:, :, None])[:, 0]


def _area_bins(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]``: row i averages input cells floor(i n / m) .. ceil((i + 1) n / m) - 1, the bins of
    ``torch.nn.functional.adaptive_avg_pool2d`` (which overlap when n / m is not an integer)."""
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def area_resample(maps: np.ndarray, size: int) -> np.ndarray:
    """Area-average ``[..., H, W]`` maps down to ``size x size``, with the bins of ``adaptive_avg_pool2d``
    (overlapping when H/size is not an integer): the mean over a bin's rows of the mean over its columns, which is
    the bin's mean."""
    maps = np.asarray(maps, dtype=np.float64)
    return _area_bins(maps.shape[-2], size) @ maps @ _area_bins(maps.shape[-1], size).T


def map_alignment(predictions: np.ndarray, targets: np.ndarray) -> dict:
    """Spearman rho between channel-averaged predicted and neural maps per image, at G x G and int(G/4) x int(G/4).

    ``predictions``/``targets``: ``[I, G, G, K]``. Returns per-image rhos (``full``, ``coarse``), their means
    (``score`` = the headline at G x G, ``score_coarse``), and ``error`` (SEM over images at G x G).
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if predictions.shape != targets.shape or predictions.ndim != 4 or predictions.shape[1] != predictions.shape[2]:
        raise ValueError(f"predictions and targets must both be [images, G, G, channels]; got {predictions.shape} "
                         f"and {targets.shape}")
    grid = predictions.shape[1]
    coarse_size = grid // 4
    if coarse_size < 1:
        raise ValueError(f"grid {grid} is too small for the int(G/4) coarse comparison (needs G >= 4)")
    pred_mean = predictions.mean(axis=-1)
    target_mean = targets.mean(axis=-1)
    full = _spearman(pred_mean, target_mean)
    pred_coarse = area_resample(pred_mean, coarse_size)
    target_coarse = area_resample(target_mean, coarse_size)
    coarse = _spearman(pred_coarse, target_coarse)
    return dict(full=full, coarse=coarse, score=float(full.mean()), score_coarse=float(coarse.mean()),
                error=sem(full), coarse_size=coarse_size)
