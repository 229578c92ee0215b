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

import numpy as np


class ExactPLSRegression:
    """PLS2 regression with ``n_components`` latent components; ``scale=False`` (centring only), with intercept."""

    def __init__(self, n_components: int = 25):
        if n_components < 1:
            raise ValueError(f"n_components must be positive, got {n_components}")
        self.n_components = int(n_components)

    @staticmethod
    def _first_singular_vectors(cross: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First left/right singular vectors of ``cross`` (p x q), sign-fixed as scikit-learn's ``_svd_flip_1d``."""
        eigval, eigvec = np.linalg.eigh(cross.T @ cross)
        v = eigvec[:, -1]
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
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, groups: int):
        """``X`` [groups * m, p], ``Y`` [groups * m, q], rows grouped consecutively (m rows per group)."""
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        n, self.p = X.shape
        self.m = n // groups
        Xg, Yg = X.reshape(groups, self.m, self.p), Y.reshape(groups, self.m, -1)
        self.sum_x, self.sum_y = Xg.sum(axis=1), Yg.sum(axis=1)                 # [G, p], [G, q]
        Xt = np.ascontiguousarray(Xg.transpose(0, 2, 1))
        self.xx = np.matmul(Xt, Xg)                                            # [G, p, p]
        self.xy = np.matmul(Xt, Yg)                                            # [G, p, q]
        self.total_xx, self.total_xy = self.xx.sum(axis=0), self.xy.sum(axis=0)
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
