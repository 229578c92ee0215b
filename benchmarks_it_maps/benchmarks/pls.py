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
