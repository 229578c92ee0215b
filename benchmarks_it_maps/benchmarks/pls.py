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

import hashlib
from collections import OrderedDict

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


class GroupGramCache:
    """Each group's column sums and ``X_g^T X_g`` by content (sha1 of its rows), kept up to ``max_bytes``.

    Fits on the same features share them: monkey 1's two arrays see the same images, and the floor's features of
    another image are the same groups in another order. A hit returns exactly what a miss computes (one product per
    group, always the same way), so a score does not depend on what was fitted before it.
    """

    def __init__(self, max_bytes: int = 128 << 20):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0

    def get(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(block.sum(axis=0), block.T @ block)`` of a float64 ``[m, p]`` block."""
        block = np.ascontiguousarray(block, dtype=np.float64)
        key = (block.shape, hashlib.sha1(block.tobytes()).hexdigest())
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            return found
        found = (block.sum(axis=0), block.T @ block)
        size = found[1].nbytes + found[0].nbytes
        if size <= self.max_bytes:
            self._items[key] = found
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (total, gram) = self._items.popitem(last=False)
                self._bytes -= total.nbytes + gram.nbytes
        return found


#: The process-wide cache of :class:`LeaveOneGroupOutPLS`.
GROUP_GRAMS = GroupGramCache()


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
        self.sum_y = Yg.sum(axis=1)                                              # [G, q]
        grams = [GROUP_GRAMS.get(block) for block in Xg]
        self.sum_x = np.stack([total for total, _ in grams])                     # [G, p]
        self.xx = np.stack([gram for _, gram in grams])                          # [G, p, p]
        self.xy = np.matmul(np.ascontiguousarray(Xg.transpose(0, 2, 1)), Yg)    # [G, p, q]
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

    #: Largest stack of per-fold ``X^T X`` (bytes) :meth:`all_folds` builds; beyond it, fit fold by fold.
    MAX_STACK_BYTES = 1 << 30

    def all_folds(self, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every fold at once (all target columns): ``(coef [G, p, q], intercept [G, q], components used [G])``,
        the same numbers as :meth:`fold` for each held-out group; the folds' components are computed as stacked
        matrices, so the per-component work is a few batched operations instead of one loop per fold."""
        G, n_train = self.groups, (self.groups - 1) * self.m
        x_mean = (self.sum_x.sum(axis=0)[None] - self.sum_x) / n_train                    # [G, p]
        y_mean = (self.sum_y.sum(axis=0)[None] - self.sum_y) / n_train                    # [G, q]
        xx = self.total_xx[None] - self.xx - n_train * x_mean[:, :, None] * x_mean[:, None, :]
        cross = self.total_xy[None] - self.xy - n_train * x_mean[:, :, None] * y_mean[:, None, :]
        xty = cross.copy()
        q = cross.shape[2]
        R, P = np.zeros((G, self.p, n_components)), np.zeros((G, self.p, n_components))
        Q = np.zeros((G, q, n_components))
        tolerance = np.finfo(np.float64).eps * self.p * np.maximum(1.0, np.trace(xx, axis1=1, axis2=2))
        active = np.ones(G, dtype=bool)
        used = np.zeros(G, dtype=int)
        rows = np.arange(G)
        for k in range(n_components):
            _, eigvec = np.linalg.eigh(np.matmul(cross.transpose(0, 2, 1), cross))
            v = eigvec[:, :, -1]
            u = np.matmul(cross, v[:, :, None])[:, :, 0]
            norm = np.linalg.norm(u, axis=1)
            u = np.divide(u, norm[:, None], out=np.zeros_like(u), where=norm[:, None] != 0)
            sign = np.sign(u[rows, np.argmax(np.abs(u), axis=1)])
            w = u * np.where(sign == 0, 1.0, sign)[:, None]
            r = w - np.matmul(R[:, :, :k], np.matmul(P[:, :, :k].transpose(0, 2, 1), w[:, :, None]))[:, :, 0]
            xx_r = np.matmul(xx, r[:, :, None])[:, :, 0]
            ss = np.einsum("gp,gp->g", r, xx_r)
            active &= ss > tolerance  # a fold whose X is exhausted stops for good, as fold() breaks
            if not active.any():
                break
            ss = np.where(active, ss, 1.0)
            p_k = np.where(active[:, None], xx_r / ss[:, None], 0.0)
            q_k = np.where(active[:, None], np.matmul(xty.transpose(0, 2, 1), r[:, :, None])[:, :, 0] / ss[:, None],
                           0.0)
            cross -= (ss * active)[:, None, None] * p_k[:, :, None] * q_k[:, None, :]
            R[:, :, k], P[:, :, k], Q[:, :, k] = np.where(active[:, None], r, 0.0), p_k, q_k
            used += active
        coef = np.matmul(R, Q.transpose(0, 2, 1))
        return coef, y_mean - np.einsum("gp,gpq->gq", x_mean, coef), used

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
