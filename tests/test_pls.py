"""Exact PLS2: equal to scikit-learn's PLSRegression (exact singular vectors) and to a hand-computed 1-component fit."""
import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression

from benchmarks_it_maps.benchmarks.pls import ExactPLSRegression


@pytest.mark.parametrize("n_components", [1, 3, 8])
def test_equals_sklearn_svd_algorithm(n_components):
    rng = np.random.RandomState(n_components)
    X = rng.randn(60, 10) * rng.uniform(0.5, 3, 10) + 4.0
    Y = X[:, :3] @ rng.randn(3, 4) + 0.5 * rng.randn(60, 4) - 2.0
    reference = PLSRegression(n_components=n_components, scale=False)
    reference.algorithm = "svd"
    reference.fit(X, Y)
    ours = ExactPLSRegression(n_components).fit(X, Y)
    X_test = rng.randn(7, 10)
    np.testing.assert_allclose(ours.predict(X_test), reference.predict(X_test), atol=1e-10)


def test_one_component_single_target_by_hand():
    """With one target, the first PLS weight is X^T y (normalised) and the fit is regression on t = X w."""
    X = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 3.0]])
    y = np.array([1.0, 2.0, 0.0, 5.0])
    Xc, yc = X - X.mean(0), y - y.mean()
    w = Xc.T @ yc / np.linalg.norm(Xc.T @ yc)
    t = Xc @ w
    expected = y.mean() + t * (t @ yc) / (t @ t)
    np.testing.assert_allclose(ExactPLSRegression(1).fit(X, y).predict(X)[:, 0], expected, atol=1e-12)


def test_stops_when_x_is_exhausted_and_recovers_exact_linear_maps():
    rng = np.random.RandomState(0)
    X = rng.randn(30, 3)
    Y = X @ rng.randn(3, 2) + 1.5
    model = ExactPLSRegression(25).fit(X, Y)
    assert model.n_components_ == 3
    np.testing.assert_allclose(model.predict(X), Y, atol=1e-9)
    with pytest.raises(ValueError):
        ExactPLSRegression(0)
