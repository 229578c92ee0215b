"""Exact PLS2 regression (scikit-learn's ``PLSRegression`` algorithm, with exact singular vectors).

scikit-learn's ``PLSRegression`` (what Brain-Score's ``pls`` metric uses) finds each component's weight vector by
NIPALS power iteration, up to 500 iterations with tolerance 1e-6; on IT-map regressions it often stops at that limit
(``ConvergenceWarning``), so it is both slow and approximate. The weight vector NIPALS converges to is the first
singular vector pair of the deflated cross-covariance ``X_k^T Y_k``; here it is computed exactly from the small
``q x q`` matrix ``C^T C`` (q = number of targets). Everything else (centring, ``scale=False``, regression-mode
deflation, rotations, coefficients, intercept) follows scikit-learn, so predictions equal
``PLSRegression(scale=False)`` with ``algorithm='svd'`` and, where NIPALS converges, its default.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits


def top_eigenvector(matrix: np.ndarray) -> np.ndarray:
    """The unit eigenvector of the largest eigenvalue of a symmetric ``matrix`` (its lower triangle is read).

    LAPACK's ``dsyevr`` asked for that one pair only: the same vector as ``numpy.linalg.eigh(matrix)[1][:, -1]``
    (up to sign and rounding) at under half the cost, since no other eigenvector is computed.
    """
    size = matrix.shape[0]
    _, vectors, found, _, info = lapack.dsyevr(matrix, compute_v=1, range="I", il=size, iu=size, lower=1)
    if info != 0 or found != 1:
        raise np.linalg.LinAlgError(f"dsyevr did not converge on a {size} x {size} matrix (info {info})")
    return vectors[:, 0]


class ExactPLSRegression:
    """PLS2 regression with ``n_components`` latent components; ``scale=False`` (centring only), with intercept."""

    def __init__(self, n_components: int = 25):
        if n_components < 1:
            raise ValueError(f"n_components must be positive, got {n_components}")
        self.n_components = int(n_components)

    @staticmethod
    def _first_singular_vectors(cross: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First left/right singular vectors of ``cross`` (p x q), sign-fixed as scikit-learn's ``_svd_flip_1d``."""
        v = top_eigenvector(cross.T @ cross)
        u = cross @ v
        norm = np.linalg.norm(u)
        if norm == 0:
            return np.zeros(cross.shape[0]), v
        u /= norm
        sign = np.sign(u[np.argmax(np.abs(u))]) or 1.0
        return u * sign, v * sign

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "ExactPLSRegression":
        """Fit on ``X`` [n, p] and ``Y`` [n, q] (or [n]).

        Deflation is done implicitly: with ``t_k = X_k u_k``, ``p_k = X_k^T t_k / |t_k|^2`` and
        ``q_k = Y_k^T t_k / |t_k|^2``, the deflated matrices satisfy ``X_k u = X u - T_{<k} P_{<k}^T u``,
        ``X_k^T t = X^T t - P_{<k} T_{<k}^T t`` (likewise for Y), and the cross-covariance updates as
        ``C_{k+1} = C_k - |t_k|^2 p_k q_k^T``. This avoids rewriting the n x p matrix for every component
        (about 2 n p operations per component instead of n p q).
        """
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        self.x_mean_, self.y_mean_ = X.mean(axis=0), Y.mean(axis=0)
        Xc, Yc = X - self.x_mean_, Y - self.y_mean_
        n_samples, n_features = Xc.shape
        cross = Xc.T @ Yc
        W = np.zeros((n_features, self.n_components))
        P = np.zeros((n_features, self.n_components))
        Q = np.zeros((Yc.shape[1], self.n_components))
        T = np.zeros((n_samples, self.n_components))
        tolerance = np.finfo(np.float64).eps * max(1.0, float(np.abs(Xc).max())) ** 2 * n_samples
        k = 0
        while k < self.n_components:
            u, _ = self._first_singular_vectors(cross)
            t = Xc @ u - T[:, :k] @ (P[:, :k].T @ u)
            ss = t @ t
            if ss <= tolerance:
                break  # X is exhausted: no further component exists
            overlap = T[:, :k].T @ t
            p = (Xc.T @ t - P[:, :k] @ overlap) / ss
            q = (Yc.T @ t - Q[:, :k] @ overlap) / ss
            cross -= ss * np.outer(p, q)
            W[:, k], P[:, k], Q[:, k], T[:, k] = u, p, q, t
            k += 1
        W, P, Q = W[:, :k], P[:, :k], Q[:, :k]
        self.n_components_ = k
        rotations = W @ np.linalg.pinv(P.T @ W) if k else W
        self.coef_ = rotations @ Q.T  # [p, q]
        self.intercept_ = self.y_mean_ - self.x_mean_ @ self.coef_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions [n, q] for ``X`` [n, p]: centred with the training mean, plus intercept."""
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_


def _usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the platform has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _basis_coordinates(basis: np.ndarray, size: int, vectors: np.ndarray) -> np.ndarray:
    """Coordinates ``[N, size + 1]`` of ``vectors`` [N, p] in the orthonormal rows ``basis[:, :size]``, after
    appending to it (as row ``size``) each vector's normalised part outside them; the last coordinate is that
    part's norm. Classical Gram-Schmidt, repeated where the part outside is under half the vector (where one pass
    can leave it measurably non-orthogonal), so the rows stay orthonormal to working precision."""
    span = basis[:, :size]
    out = np.zeros((len(vectors), size + 1))
    residual = vectors.copy()
    length = np.linalg.norm(vectors, axis=1)
    for attempt in range(2):
        step = np.matmul(span, residual[:, :, None])
        residual -= np.matmul(step.transpose(0, 2, 1), span)[:, 0]
        out[:, :size] += step[:, :, 0]
        out[:, size] = np.linalg.norm(residual, axis=1)
        if attempt == 0 and not (out[:, size] < 0.5 * length).any():
            break
    np.divide(residual, out[:, size, None], out=basis[:, size], where=out[:, size, None] > 0)
    return out


def stacked_components(xx: np.ndarray, cross: np.ndarray, tolerance: np.ndarray, widths: Sequence[int],
                       n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """The PLS coefficients of many folds and target sets at once, in the kernel form of
    :class:`LeaveOneGroupOutPLS` (the steps of :meth:`LeaveOneGroupOutPLS.fold`, as stacked matrices).

    ``xx`` [G, p, p]: each fold's centred ``X^T X``; ``cross`` [S, G, p, q]: each target set's centred ``X^T Y``
    per fold, set s using its first ``widths[s]`` columns (the rest zero); ``tolerance`` [G]: the
    ``|t|^2`` below which a fold's X is exhausted. Returns the coefficients [S, G, p, q] and the components used
    [S, G].

    The savings change the arithmetic by rounding only. ``X^T X r`` is one product per fold for all S sets.
    Everything else lives in an orthonormal basis of the span of ``C_0``'s q columns and the loadings ``p_j``
    (q + k vectors at component k, one more per component): the deflated cross-covariance
    ``C_k = C_0 - sum_j p_j (|t_j|^2 q_j)^T``, the weights ``w_k`` (from ``C_k``), the rotations ``r_k``
    (combinations of the weights) and the loadings. A component then costs (q + k) q for ``C_k^T C_k`` instead of
    p q, and the only feature-space work is ``r_k`` itself, its product with ``X^T X`` and the one new basis
    vector. Where that span is the whole feature space (q + K >= p), the standard basis is kept. Predictions do
    not depend on the sign of a weight vector (every sign change cancels exactly in ``r q^T``), so none is fixed.
    """
    S, G, p, q = cross.shape
    N, K = S * G, n_components
    reduced = q + K < p
    width = q + K if reduced else p
    sizes = np.repeat(np.asarray(widths), G)
    limit = np.tile(tolerance, S)
    first = cross.reshape(N, p, q)
    coords = np.zeros((N, width, q))      # C_k = basis^T @ coords
    if reduced:
        basis = np.zeros((N, width, p))   # orthonormal rows; a row is zero where a loading added nothing new
        orthonormal, coords[:, :q] = np.linalg.qr(first)
        basis[:, :q] = orthonormal.transpose(0, 2, 1)
        start = coords[:, :q].copy()      # C_0 = basis[:, :q]^T @ start
    else:
        coords[:] = first
        start = first
    Rc, Pc = np.zeros((N, K, width)), np.zeros((N, K, width))   # rotations and loadings, in coordinates
    Q = np.zeros((N, K, q))
    active = np.ones(N, dtype=bool)
    used = np.zeros(N, dtype=int)
    for k in range(K):
        dim = q + k if reduced else p
        C = coords[:, :dim]
        gram = np.matmul(C.transpose(0, 2, 1), C)
        v = np.zeros((N, q, 1))
        for n in range(N):
            v[n, :sizes[n], 0] = top_eigenvector(gram[n, :sizes[n], :sizes[n]])
        w = np.matmul(C, v)[:, :, 0]                                             # C_k v, in coordinates
        norm = np.linalg.norm(w, axis=1)
        w = np.divide(w, norm[:, None], out=np.zeros_like(w), where=norm[:, None] != 0)
        c_r = w - np.matmul(np.matmul(Pc[:, :k, :dim], w[:, :, None]).transpose(0, 2, 1), Rc[:, :k, :dim])[:, 0]
        r = np.matmul(c_r[:, None, :], basis[:, :dim])[:, 0] if reduced else c_r
        xx_r = np.matmul(r.reshape(S, G, p).transpose(1, 0, 2), xx).transpose(1, 0, 2).reshape(N, p)
        ss = np.einsum("np,np->n", r, xx_r)
        active &= ss > limit  # a fold whose X is exhausted stops for good, as fold() breaks
        if not active.any():
            break
        ss = np.where(active, ss, 1.0)
        p_k = np.where(active[:, None], xx_r / ss[:, None], 0.0)
        q_k = np.where(active[:, None], np.matmul(c_r[:, None, :start.shape[1]], start)[:, 0] / ss[:, None], 0.0)
        c_p = _basis_coordinates(basis, dim, p_k) if reduced else p_k
        coords[:, :c_p.shape[1]] -= c_p[:, :, None] * ((ss * active)[:, None] * q_k)[:, None, :]
        Rc[:, k, :dim] = np.where(active[:, None], c_r, 0.0)
        Pc[:, k, :c_p.shape[1]], Q[:, k] = c_p, q_k
        used += active
    coef = np.matmul(Rc.transpose(0, 2, 1), Q)                                     # [N, width, q]
    if reduced:
        coef = np.matmul(basis.transpose(0, 2, 1), coef)
    return coef.reshape(S, G, p, q), used.reshape(S, G)


class LeaveOneGroupOutPLS:
    """Every leave-one-group-out fold of :class:`ExactPLSRegression`, from cross-products shared by all folds.

    The folds' training sets differ by one group (one image: its P grid positions), so each fold's centred
    ``X^T X`` and ``X^T Y`` are the totals minus the held-out group's, corrected for the fold's mean. The kernel
    form of PLS (Dayal & MacGregor 1997) needs nothing else: with rotations ``r_k`` (``t_k = X r_k``),
    ``|t_k|^2 = r_k^T X^T X r_k``, ``p_k = X^T X r_k / |t_k|^2``, ``q_k = (X^T Y)^T r_k / |t_k|^2`` and the same
    deflation of the cross-covariance as :meth:`ExactPLSRegression.fit`. A fold then costs O(p^2) per component
    instead of O(n p): cheaper whenever the features are fewer than the training rows times a small factor
    (:meth:`cheaper_than_refitting`). Same components, coefficients and predictions as refitting each fold, up to
    floating-point rounding (tests: 1e-8 on scores).

    ``Y`` may also be a list of target sets on the same ``X`` (a site's maps and the floor's, two arrays on one
    monkey's images): :meth:`all_folds` fits each set's folds, and everything that depends on ``X`` alone is done
    once for all of them (:meth:`fold` fits the first set).
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray | Sequence[np.ndarray], groups: int):
        """``X`` [groups * m, p], ``Y`` [groups * m, q] (or a list of such), rows grouped consecutively (m rows
        per group)."""
        X = np.asarray(X, dtype=np.float64)
        target_sets = [np.asarray(y, dtype=np.float64) for y in (Y if isinstance(Y, (list, tuple)) else [Y])]
        n, self.p = X.shape
        self.m = n // groups
        self.Xg = X.reshape(groups, self.m, self.p)
        self.sum_x = self.Xg.sum(axis=1)                                         # [G, p]
        self.xx = np.matmul(self.Xg.transpose(0, 2, 1), self.Xg)                  # [G, p, p]
        self.total_xx = self.xx.sum(axis=0)
        self.widths = [y.reshape(n, -1).shape[1] for y in target_sets]
        Yg = np.concatenate([y.reshape(groups, self.m, -1) for y in target_sets], axis=2)
        sum_y = Yg.sum(axis=1)                                                   # [G, sum of q]
        xy = np.matmul(self.Xg.transpose(0, 2, 1), Yg)                           # [G, p, sum of q]
        bounds = np.cumsum([0] + self.widths)
        self.sum_ys = [sum_y[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        self.xys = [xy[:, :, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        self.sum_y, self.xy = self.sum_ys[0], self.xys[0]                        # the first set (fold())
        self.total_xy = self.xy.sum(axis=0)
        self.groups = groups

    @staticmethod
    def cheaper_than_refitting(groups: int, rows_per_group: int, n_features: int, n_targets: int,
                               n_components: int) -> bool:
        """Whether shared cross-products take fewer operations than refitting each fold: G m p^2 once plus
        2 a p^2 per fold, against 4 a n p + 2 n p q per fold (n = (G - 1) m training rows)."""
        n_train = (groups - 1) * rows_per_group
        shared = groups * rows_per_group * n_features ** 2 + groups * 2 * n_components * n_features ** 2
        refit = groups * (4 * n_components * n_train * n_features + 2 * n_train * n_features * n_targets)
        return shared < refit

    #: Largest working memory (bytes, :meth:`stack_bytes`) :meth:`all_folds` uses; beyond it, fit fold by fold.
    MAX_STACK_BYTES = 1 << 30

    @staticmethod
    def stack_bytes(groups: int, n_sets: int, n_features: int, n_targets: int, n_components: int) -> int:
        """The working memory of :meth:`all_folds`: per fold and target set, the cross-covariance, its basis and
        the rotations and loadings in it (:func:`stacked_components`), plus each group's and fold's ``X^T X``."""
        width = min(n_targets + n_components, n_features)
        per_problem = n_features * (2 * n_targets + width) + 2 * n_components * width
        return 8 * (groups * n_sets * per_problem + 2 * groups * n_features ** 2)

    #: The folds are solved in this many fixed blocks of consecutive folds, each on its own thread when the
    #: machine has the cores (the blocks do not depend on the thread count, so neither do the numbers).
    FOLD_BLOCKS = 2

    def all_folds(self, n_components: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every fold at once, one ``(coef [G, p, q], intercept [G, q], components used [G])`` per target set (all
        its columns), the same numbers as :meth:`fold` for each held-out group up to rounding. The folds'
        components are computed as stacked matrices (:func:`stacked_components`), so the per-component work is a
        few batched operations, not a loop per fold."""
        G, n_train = self.groups, (self.groups - 1) * self.m
        x_mean = (self.sum_x.sum(axis=0)[None] - self.sum_x) / n_train                    # [G, p]
        xx = self.total_xx[None] - self.xx - n_train * x_mean[:, :, None] * x_mean[:, None, :]
        tolerance = np.finfo(np.float64).eps * self.p * np.maximum(1.0, np.trace(xx, axis1=1, axis2=2))
        q_max = max(self.widths)
        y_means, cross = [], np.zeros((len(self.widths), G, self.p, q_max))
        for s, (sum_y, xy) in enumerate(zip(self.sum_ys, self.xys)):
            y_mean = (sum_y.sum(axis=0)[None] - sum_y) / n_train                         # [G, q]
            cross[s, :, :, :sum_y.shape[1]] = (xy.sum(axis=0)[None] - xy
                                               - n_train * x_mean[:, :, None] * y_mean[:, None, :])
            y_means.append(y_mean)
        blocks = np.array_split(np.arange(G), min(self.FOLD_BLOCKS, G))
        workers = max(1, min(len(blocks), _usable_cores()))
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda b: stacked_components(xx[b], cross[:, b], tolerance[b], self.widths,
                                                               n_components), blocks))
        coef, used = (np.concatenate([part[i] for part in parts], axis=1) for i in range(2))
        results = []
        for s, (width, y_mean) in enumerate(zip(self.widths, y_means)):
            coef_s = np.ascontiguousarray(coef[s, :, :, :width])
            results.append((coef_s, y_mean - np.einsum("gp,gpq->gq", x_mean, coef_s), used[s]))
        return results

    def fold(self, held_out: int, n_components: int, columns: np.ndarray | None = None) -> tuple[np.ndarray,
                                                                                                  np.ndarray, int]:
        """Fit the fold without group ``held_out`` on the target ``columns`` (default all); returns
        (coef [p, q'], intercept [q'], components used), as :meth:`ExactPLSRegression.fit` on the training rows."""
        n_train = (self.groups - 1) * self.m
        sx = self.sum_x.sum(axis=0) - self.sum_x[held_out]
        sy = self.sum_y.sum(axis=0) - self.sum_y[held_out]
        xx = self.total_xx - self.xx[held_out]
        xy = self.total_xy - self.xy[held_out]
        if columns is not None:
            sy, xy = sy[columns], xy[:, columns]
        x_mean, y_mean = sx / n_train, sy / n_train
        xx = xx - n_train * np.outer(x_mean, x_mean)   # centred X^T X of the training rows
        cross = xy - n_train * np.outer(x_mean, y_mean)  # centred X^T Y
        xty = cross.copy()
        R = np.zeros((self.p, n_components))
        P = np.zeros((self.p, n_components))
        Q = np.zeros((cross.shape[1], n_components))
        # X is exhausted when |t|^2 is at the rounding level of r^T (X^T X) r, about eps * p * trace(X^T X) for a
        # unit r (ExactPLSRegression's own test, eps * max|Xc|^2 * n, needs the rows this form never sees).
        tolerance = np.finfo(np.float64).eps * self.p * max(1.0, float(np.trace(xx)))
        k = 0
        while k < n_components:
            w, _ = ExactPLSRegression._first_singular_vectors(cross)
            r = w - R[:, :k] @ (P[:, :k].T @ w)
            xx_r = xx @ r
            ss = float(r @ xx_r)
            if ss <= tolerance:
                break
            p, q = xx_r / ss, (xty.T @ r) / ss
            cross -= ss * np.outer(p, q)
            R[:, k], P[:, k], Q[:, k] = r, p, q
            k += 1
        coef = R[:, :k] @ Q[:, :k].T
        return coef, y_mean - x_mean @ coef, k
