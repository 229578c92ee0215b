"""Regression choices beside the benchmarks' fixed protocol (PLS, 25 components, leave-one-image-out).

``regression='ridgecv'``: ridge regression with its penalty chosen per target (channel) by cross-validation over
the *training images* (grouped folds: positions of one image never split between fitting and validation), from a
grid of :data:`ALPHA_FACTORS` times the mean eigenvalue of the training features' covariance (so the grid follows
the features' scale). The criterion is the mean over inner folds of each fold's mean squared error (as
scikit-learn's ``GridSearchCV(Ridge(), scoring='neg_mean_squared_error')`` and himalaya's ``RidgeCV`` default); ties
go to the first (smallest) alpha. Backends: ``numpy`` (one eigendecomposition per inner fold and one for the refit; the same
predictions as scikit-learn's ``Ridge``, tests/test_regression.py) and ``himalaya`` (its ``RidgeCV`` on the torch
backend, CUDA when available: same criterion, for large feature counts on a GPU).

``folds='loio'`` (default) or an integer K: the outer cross-validation over images. K folds partition the images
by a seeded permutation (seed 0) into K near-equal groups; every image is still scored once, when its group is held
out, so per-image scores keep their meaning. ``K`` equal to the number of images is leave-one-image-out.

The benchmarks' identifiers keep their protocol: a benchmark configured with another regression or K folds reports
under ``<identifier>+<regression>[+<K>fold]`` (:func:`variant_identifier`), so its scores never mix with the
published ones in the results database.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from benchmarks_it_maps.benchmarks import metric

REGRESSIONS = ("pls", "ridgecv")
RIDGE_BACKENDS = ("numpy", "himalaya")
#: Alphas of the ridge grid, as multiples of the mean eigenvalue of the centred training features' covariance.
ALPHA_FACTORS = tuple(float(a) for a in np.logspace(-4, 4, 17))
#: Inner (alpha-selection) folds over the training images, at most.
INNER_FOLDS = 5
#: Seed of the K-fold image partition.
FOLD_SEED = 0


def parse_folds(folds: str | int) -> str | int:
    """``'loio'`` or an integer >= 2 (also given as text); anything else raises ValueError naming the fix."""
    if isinstance(folds, str) and folds.strip().lower() == "loio":
        return "loio"
    try:
        k = int(folds)
    except (TypeError, ValueError):
        raise ValueError(f"folds must be 'loio' or an integer >= 2, got {folds!r}") from None
    if k < 2:
        raise ValueError(f"folds must be 'loio' or an integer >= 2, got {folds!r}")
    return k


def check_regression(regression: str) -> str:
    if regression not in REGRESSIONS:
        raise ValueError(f"regression must be one of {', '.join(REGRESSIONS)}, got {regression!r}")
    return regression


def variant_identifier(identifier: str, regression: str = "pls", folds: str | int = "loio") -> str:
    """The identifier a benchmark reports under with a non-default regression or folds (else ``identifier``)."""
    suffix = "" if regression == "pls" else f"+{regression}"
    suffix += "" if folds == "loio" else f"+{int(folds)}fold"
    return identifier + suffix


def image_folds(n_images: int, folds: str | int) -> list[np.ndarray]:
    """Held-out image sets of the outer cross-validation (LOIO, or K seeded near-equal groups)."""
    folds = parse_folds(folds)
    if folds == "loio" or folds >= n_images:
        if folds != "loio" and folds > n_images:
            raise ValueError(f"folds={folds} but there are only {n_images} images; use at most {n_images} or 'loio'")
        return [np.array([i]) for i in range(n_images)]
    order = np.random.default_rng(FOLD_SEED).permutation(n_images)
    return [np.sort(group) for group in np.array_split(order, folds)]


# ----------------------------------------------------------------------------------------------------------------
# ridge with a cross-validated alpha per target
# ----------------------------------------------------------------------------------------------------------------
def alpha_grid(train_X: np.ndarray, factors: Sequence[float] = ALPHA_FACTORS) -> np.ndarray:
    """Absolute alphas: ``factors`` times the mean eigenvalue of ``Xc^T Xc`` over its nonzero directions."""
    centred = train_X - train_X.mean(axis=0)
    scale = float((centred ** 2).sum()) / max(1, min(centred.shape[0] - 1, centred.shape[1]))
    return np.asarray(factors, dtype=np.float64) * (scale if scale > 0 else 1.0)


def inner_splits(groups: np.ndarray, n_splits: int = INNER_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, validation rows) of the inner folds: the training images split in ``min(n_splits, images)``
    interleaved groups (image j of the training set in group j mod n)."""
    images = list(dict.fromkeys(groups.tolist()))
    n = min(n_splits, len(images))
    if n < 2:
        raise ValueError("ridgecv needs at least 2 training images to choose its alpha")
    which = {image: j % n for j, image in enumerate(images)}
    fold = np.array([which[g] for g in groups.tolist()])
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n)]


def _ridge_solution(X: np.ndarray, Y: np.ndarray):
    """What every alpha's ridge fit on (X, Y) shares: centring means and one eigendecomposition, of the feature
    covariance ``Xc^T Xc = V diag(lam) V^T`` (primal, features <= rows) or of the Gram matrix ``Xc Xc^T`` (dual)."""
    x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - x_mean, Y - y_mean
    if Xc.shape[1] <= Xc.shape[0]:
        lam, V = np.linalg.eigh(Xc.T @ Xc)
        return "primal", x_mean, y_mean, np.clip(lam, 0, None), V, V.T @ (Xc.T @ Yc), None
    lam, U = np.linalg.eigh(Xc @ Xc.T)
    return "dual", x_mean, y_mean, np.clip(lam, 0, None), U, U.T @ Yc, Xc


def _ridge_predict(solution, X: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge predictions for ``X``: ``[n_alphas, n, k]`` for a grid ``alphas`` [a], or ``[n, k]`` for one alpha per
    target (``alphas`` [1, k]: pass ``per_target``). Primal: ``(x - mu) V diag(1/(lam + a)) V^T Xc^T Yc``; dual:
    ``(x - mu) Xc^T U diag(1/(lam + a)) U^T Yc`` (the same ridge solution)."""
    kind, x_mean, y_mean, lam, basis, projected_Y, Xc = solution
    projected = (X - x_mean) @ basis if kind == "primal" else ((X - x_mean) @ Xc.T) @ basis   # [n, r]
    inverse = 1.0 / (lam[None, :] + alphas[:, None])                                         # [a, r]
    return (projected[None, :, :] * inverse[:, None, :]) @ projected_Y + y_mean


def ridge_cv_numpy(train_X: np.ndarray, train_Y: np.ndarray, test_X: np.ndarray, splits,
                   alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-target alpha by the mean over ``splits`` of the validation MSE, refit on all rows; (predictions,
    chosen alphas [k])."""
    losses = np.zeros((len(alphas), train_Y.shape[1]))
    for fit_rows, val_rows in splits:
        pred = _ridge_predict(_ridge_solution(train_X[fit_rows], train_Y[fit_rows]), train_X[val_rows], alphas)
        losses += ((pred - train_Y[val_rows][None]) ** 2).mean(axis=1)
    best = np.argmin(losses / len(splits), axis=0)                     # first minimum: the smallest alpha
    all_alphas = _ridge_predict(_ridge_solution(train_X, train_Y), test_X, alphas)   # [a, n_test, k]
    return np.take_along_axis(all_alphas, best[None, None, :], axis=0)[0], alphas[best]


def ridge_cv_himalaya(train_X: np.ndarray, train_Y: np.ndarray, test_X: np.ndarray, splits,
                      alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same with himalaya's ``RidgeCV`` (torch backend, on CUDA when available)."""
    import torch
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    set_backend("torch_cuda" if torch.cuda.is_available() else "torch", on_error="raise")
    model = RidgeCV(alphas=alphas, cv=list(splits), fit_intercept=True,
                    solver_params=dict(warn=False, n_targets_batch=None))
    model.fit(train_X.astype(np.float64), train_Y.astype(np.float64))
    pred = model.predict(test_X.astype(np.float64))
    to_numpy = (lambda t: t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t))
    return to_numpy(pred).astype(np.float64), to_numpy(model.best_alphas_).astype(np.float64)


def fit_predict_ridgecv(train_X: np.ndarray, train_Y: np.ndarray, test_X: np.ndarray, groups: np.ndarray, *,
                        backend: str = "numpy", factors: Sequence[float] = ALPHA_FACTORS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with a cross-validated alpha per target (see module docstring); constant targets are predicted as
    their training mean. Returns (predictions [n_test, k], alphas [k], NaN for constant targets)."""
    if backend not in RIDGE_BACKENDS:
        raise ValueError(f"ridge backend must be one of {RIDGE_BACKENDS}, got {backend!r}")
    y_mean = train_Y.mean(axis=0)
    pred = np.repeat(y_mean[None, :], test_X.shape[0], axis=0)
    chosen = np.full(train_Y.shape[1], np.nan)
    varying = ~metric._is_constant(train_Y)
    if varying.any() and not metric._is_constant(train_X).all():
        solve = ridge_cv_numpy if backend == "numpy" else ridge_cv_himalaya
        pred[:, varying], chosen[varying] = solve(train_X, train_Y[:, varying], test_X, inner_splits(groups),
                                                  alpha_grid(train_X, factors))
    return pred, chosen


# ----------------------------------------------------------------------------------------------------------------
# the cross-validated fit with any of the choices
# ----------------------------------------------------------------------------------------------------------------
def cross_validated_fit(features: np.ndarray, targets: np.ndarray, *, regression: str = "pls",
                        folds: str | int = "loio", n_components: int = metric.N_COMPONENTS,
                        reduce: Optional[metric.KernelPCAReducer] = None, solver: str = "exact",
                        backend: str = "numpy", progress: bool = False) -> metric.MapsFit:
    """:func:`metric.loio_pls` generalised to ``regression`` and outer ``folds`` (module docstring). The default
    (``'pls'``, ``'loio'``) *is* ``metric.loio_pls``, bit for bit."""
    check_regression(regression)
    folds = parse_folds(folds)
    if regression == "pls" and folds == "loio":
        return metric.loio_pls(features, targets, n_components=n_components, reduce=reduce, progress=progress,
                               solver=solver)
    X_all, Y_all, rows = metric.fold_rows(features, targets, reduce)
    n_images, n_pos = rows.shape
    n_chan = Y_all.shape[1]
    per_channel = np.zeros((n_images, n_chan))
    predictions = np.zeros((n_images, n_pos, n_chan))
    used = n_components
    held_out_sets = image_folds(n_images, folds)
    if progress:
        from tqdm.auto import tqdm
        held_out_sets = tqdm(held_out_sets, desc=f"{regression} cross-validation", unit="fold")
    for held_out in held_out_sets:
        train_images = np.setdiff1d(np.arange(n_images), held_out)
        train_rows, test_rows = rows[train_images].ravel(), rows[held_out].ravel()
        if reduce is not None:
            train_X, test_X = reduce.fold(train_rows, test_rows)
        else:
            train_X, test_X = X_all[train_rows], X_all[test_rows]
        if regression == "pls":
            pred, used = metric.fit_predict_pls(train_X, Y_all[train_rows], test_X, n_components, solver)
        else:
            pred, _ = fit_predict_ridgecv(train_X, Y_all[train_rows], test_X, np.repeat(train_images, n_pos),
                                          backend=backend)
            used = 0
        pred = pred.reshape(len(held_out), n_pos, n_chan)
        for i, image in enumerate(held_out):
            predictions[image] = pred[i]
            per_channel[image] = metric.pearson_per_channel(pred[i], Y_all[rows[image]])
    return metric.MapsFit(per_channel=per_channel, per_fold=np.median(per_channel, axis=1), predictions=predictions,
                          n_components=used)
