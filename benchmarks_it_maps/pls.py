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
        """Fit on ``X`` [n, p] and ``Y`` [n, q] (or [n])."""
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        self.x_mean_, self.y_mean_ = X.mean(axis=0), Y.mean(axis=0)
        Xk, Yk = X - self.x_mean_, Y - self.y_mean_
        weights, x_loadings, y_loadings = [], [], []
        for _ in range(self.n_components):
            u, _ = self._first_singular_vectors(Xk.T @ Yk)
            scores = Xk @ u
            ss = scores @ scores
            if ss <= np.finfo(np.float64).eps * max(1.0, np.abs(Xk).max()) ** 2:
                break  # X is exhausted: no further component exists
            p = Xk.T @ scores / ss
            q = Yk.T @ scores / ss
            Xk -= np.outer(scores, p)
            Yk -= np.outer(scores, q)
            weights.append(u), x_loadings.append(p), y_loadings.append(q)
        W = np.array(weights).T.reshape(X.shape[1], -1)
        P = np.array(x_loadings).T.reshape(X.shape[1], -1)
        Q = np.array(y_loadings).T.reshape(Y.shape[1], -1)
        self.n_components_ = W.shape[1]
        rotations = W @ np.linalg.pinv(P.T @ W) if W.size else W
        self.coef_ = rotations @ Q.T  # [p, q]
        self.intercept_ = self.y_mean_ - self.x_mean_ @ self.coef_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions [n, q] for ``X`` [n, p]: centred with the training mean, plus intercept."""
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_
