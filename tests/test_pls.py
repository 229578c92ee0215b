"""Exact PLS2: equal to scikit-learn's PLSRegression (exact singular vectors) and to a hand-computed 1-component fit."""
import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression

from benchmarks_it_maps.benchmarks.pls import (ExactPLSRegression, GramProducts, LeaveOneGroupOutPLS, TopEigenvectors,
                                              group_products, stacked_products, top_eigenvector)


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


def _relu_case(seed: int, images: int, positions: int, features: int, channels: int, rank: int | None = None):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((images, positions, rank or features))
    X = np.maximum(Z @ rng.standard_normal((rank or features, features)), 0) * 0.3 + 0.1
    Y = X[..., :4] @ rng.standard_normal((4, channels)) + 2 * rng.standard_normal((images, positions, channels)) + 5
    return X, Y


def _refit_every_fold(monkeypatch, X, Y):
    """metric.loio_pls with each fold refitted on its own rows (the path before shared cross-products)."""
    from benchmarks_it_maps.benchmarks import metric
    monkeypatch.setattr(LeaveOneGroupOutPLS, "cheaper_than_refitting", staticmethod(lambda *args: False))
    return metric.loio_pls(X, Y)


@pytest.mark.parametrize("case", [
    dict(seed=0, images=14, positions=81, features=96, channels=32),          # full rank
    dict(seed=1, images=5, positions=25, features=40, channels=7, rank=6),    # rank 6 < 25 components
    dict(seed=2, images=4, positions=9, features=12, channels=3),             # p < 25 components
])
def test_shared_cross_products_equal_refitting_each_fold(monkeypatch, case):
    from benchmarks_it_maps.benchmarks import metric
    X, Y = _relu_case(**case)
    X[..., 3] = 0.7            # a constant feature
    Y[:-1, :, 0] = 2.0         # a channel constant in every fold but the last image's
    assert LeaveOneGroupOutPLS.cheaper_than_refitting(case["images"], case["positions"], case["features"],
                                                      case["channels"], 25)
    shared = metric.loio_pls(X, Y)
    refit = _refit_every_fold(monkeypatch, X, Y)
    np.testing.assert_allclose(shared.predictions, refit.predictions, rtol=0, atol=1e-8 * Y.std())
    np.testing.assert_allclose(shared.per_channel, refit.per_channel, rtol=0, atol=1e-8)
    assert shared.score == pytest.approx(refit.score, abs=1e-8) and shared.n_components == refit.n_components


def test_shared_folds_match_a_direct_fit():
    """One fold of LeaveOneGroupOutPLS = ExactPLSRegression fitted on that fold's rows (coefficients too)."""
    X, Y = _relu_case(3, images=6, positions=16, features=20, channels=5)
    shared = LeaveOneGroupOutPLS(X.reshape(96, 20), Y.reshape(96, 5), groups=6)
    coef, intercept, used = shared.fold(2, 8)
    direct = ExactPLSRegression(8).fit(np.delete(X, 2, axis=0).reshape(80, 20), np.delete(Y, 2, axis=0).reshape(80, 5))
    assert used == direct.n_components_ == 8
    np.testing.assert_allclose(coef, direct.coef_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(intercept, direct.intercept_, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", [
    dict(seed=0, images=14, positions=81, features=96, channels=32),          # full rank
    dict(seed=1, images=5, positions=25, features=40, channels=7, rank=6),    # linear rank 6: X exhausted
    dict(seed=2, images=4, positions=9, features=12, channels=3),             # p < 25 components
])
def test_all_folds_at_once_equal_each_fold_and_refitting(monkeypatch, case):
    """The stacked fit of every fold (all_folds) gives each fold's coefficients, intercept and component count
    (fold()), and through loio_pls the predictions of refitting each fold on its own rows."""
    from benchmarks_it_maps.benchmarks import metric
    X, Y = _relu_case(**case)
    if case.get("rank"):  # no ReLU: X of rank 6 (plus its mean), so every fold stops after 6 components
        rng = np.random.default_rng(case["seed"])
        X = rng.standard_normal((case["images"], case["positions"], 6)) @ rng.standard_normal((6, case["features"]))
    n = case["images"] * case["positions"]
    shared = LeaveOneGroupOutPLS(X.reshape(n, -1), Y.reshape(n, -1), groups=case["images"])
    n_comp = min(25, case["features"])
    (coef, intercept, used), = shared.all_folds(n_comp)
    for g in range(case["images"]):
        c, i, k = shared.fold(g, n_comp)
        assert used[g] == k
        np.testing.assert_allclose(coef[g], c, rtol=0, atol=1e-9 * np.abs(c).max())
        np.testing.assert_allclose(intercept[g], i, rtol=0, atol=1e-9 * np.abs(i).max())
    if case.get("rank"):
        assert (used == case["rank"]).all()
    fast = metric.loio_pls(X, Y)
    refit = _refit_every_fold(monkeypatch, X, Y)
    np.testing.assert_allclose(fast.predictions, refit.predictions, rtol=0, atol=1e-8 * Y.std())
    assert fast.score == pytest.approx(refit.score, abs=1e-8)


def _refit_predictions(X, Y, n_components=25):
    """Each held-out image's predictions from ExactPLSRegression fitted on the other images' rows (n-row form)."""
    out = np.zeros_like(Y)
    for g in range(len(X)):
        train_X, train_Y = np.delete(X, g, axis=0), np.delete(Y, g, axis=0)
        model = ExactPLSRegression(n_components).fit(train_X.reshape(-1, X.shape[2]), train_Y.reshape(-1, Y.shape[2]))
        out[g] = model.predict(X[g])
    return out


@pytest.mark.parametrize("features", [60, 20])  # 60: in the (q + k)-dimensional basis; 20 < q + 25: feature space
def test_several_target_sets_at_once_equal_refitting_each(features):
    """all_folds on a list of target sets of different widths (zero-padded to one stack, X's work shared) gives,
    for every set and fold, the predictions of ExactPLSRegression refitted on that fold's rows."""
    X, _ = _relu_case(4, images=6, positions=30, features=features, channels=8)
    rng = np.random.default_rng(5)
    sets = [X[..., :4] @ rng.standard_normal((4, width)) + rng.standard_normal((6, 30, width)) + 3.0
            for width in (8, 7, 3)]
    n_comp = min(25, features)
    fits = LeaveOneGroupOutPLS(X.reshape(180, -1), [Y.reshape(180, -1) for Y in sets], groups=6).all_folds(n_comp)
    assert len(fits) == 3
    for Y, (coef, intercept, used) in zip(sets, fits):
        assert coef.shape == (6, features, Y.shape[2]) and (used == n_comp).all()
        predictions = np.matmul(X, coef) + intercept[:, None, :]
        np.testing.assert_allclose(predictions, _refit_predictions(X, Y, n_comp), rtol=0, atol=1e-8 * Y.std())


def test_floors_in_one_solve_equal_the_separate_refits(monkeypatch):
    """loio_pls_with_floors: each set's fit and its shuffled-image floor (features of the previous image) equal
    loio_pls on the features and on np.roll(features, 1) with every fold refitted on its own rows (two sites of
    different widths, 6 and 4 channels, in one solve); a set with a
    channel constant in a training set takes the separate path and still agrees."""
    from benchmarks_it_maps.benchmarks import metric
    X, first = _relu_case(6, images=7, positions=25, features=48, channels=6)
    second = first[..., :1:-1] * 0.5 + np.random.default_rng(1).standard_normal(first[..., 2:].shape)  # 4 channels
    constant = first.copy()
    constant[:-1, :, 2] = 1.5   # constant in every training set but the one without the last image
    with monkeypatch.context() as patch:
        patch.setattr(LeaveOneGroupOutPLS, "cheaper_than_refitting", staticmethod(lambda *args: False))
        expected = [(metric.loio_pls(X, Y), metric.loio_pls(np.roll(X, 1, axis=0), Y))
                    for Y in (first, second, constant)]
    results = {}
    for targets in ([first, second], [constant]):
        results[len(targets)] = got = metric.loio_pls_with_floors(X, targets)
        want = expected[:2] if len(targets) == 2 else expected[2:]
        for Y, (fit, floor), (fit_ref, floor_ref) in zip(targets, got, want):
            for ours, ref in ((fit, fit_ref), (floor, floor_ref)):
                np.testing.assert_allclose(ours.predictions, ref.predictions, rtol=0, atol=1e-8 * Y.std())
                np.testing.assert_allclose(ours.per_channel, ref.per_channel, rtol=0, atol=1e-8)
                assert ours.score == pytest.approx(ref.score, abs=1e-8) and ours.n_components == ref.n_components
    fit, floor = results[2][0]
    assert abs(fit.score - floor.score) > 0.05  # the floor is another fit, not a copy


def test_direct_lapack_eigenvectors_equal_scipys_wrapper():
    """TopEigenvectors calls the same dsyevr as top_eigenvector (scipy's wrapper), through ctypes: on exactly
    symmetric matrices, leading blocks of several sizes, the same vectors to the last bit; zeros past each size."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((7, 40, 12))
    matrices = np.matmul(A.transpose(0, 2, 1), A)
    matrices = (matrices + matrices.transpose(0, 2, 1)) / 2
    sizes = [12, 11, 3, 1, 12, 7, 2]
    out = np.zeros((7, 12, 1))
    TopEigenvectors(12)(matrices.copy(), sizes, out)
    for n, size in enumerate(sizes):
        np.testing.assert_array_equal(out[n, :size, 0], top_eigenvector(matrices[n, :size, :size]))
        assert not out[n, size:].any()
        vector = np.linalg.eigh(matrices[n, :size, :size])[1][:, -1]
        assert abs(vector @ out[n, :size, 0]) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="C-contiguous"):
        TopEigenvectors(12)(np.asfortranarray(matrices[0])[None], [12], out[:1])
    with pytest.raises(ValueError, match="q <= 4"):
        TopEigenvectors(4)(matrices.copy(), sizes, out)


def test_direct_blas_products_equal_numpy():
    """GramProducts (one dgemm per fold, transposes as strides) and group_products (dsyrk and dgemm) compute what
    numpy computes, on a non-symmetric matrix so that a transposed operand would show."""
    rng = np.random.default_rng(6)
    xx, r = rng.standard_normal((5, 9, 9)), rng.standard_normal((3, 5, 9))
    out = np.zeros_like(r)
    GramProducts(xx, 3)(r, out)
    np.testing.assert_allclose(out, np.einsum("gij,sgj->sgi", xx, r), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        GramProducts(xx, 2)(r, out)
    Xg, Yg = rng.standard_normal((4, 6, 9)), rng.standard_normal((4, 6, 2))
    grams, cross = group_products(Xg, Yg)
    np.testing.assert_allclose(grams, np.matmul(Xg.transpose(0, 2, 1), Xg), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cross, np.matmul(Xg.transpose(0, 2, 1), Yg), rtol=0, atol=1e-12)
    a, b = rng.standard_normal((4, 5, 7)), rng.standard_normal((4, 7, 3))
    for left in (a, np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)):     # C- and F-ordered blocks
        for right in (b, np.ascontiguousarray(b.transpose(0, 2, 1)).transpose(0, 2, 1)):
            np.testing.assert_allclose(stacked_products(left, right), np.matmul(a, b), rtol=0, atol=1e-12)


def test_stacked_fits_run_blas_single_threaded_and_restore_it(monkeypatch):
    """The stacked fits' products (the group Grams, X^T X r in the fold blocks, the held-out predictions) run with
    every BLAS library at one thread (pls.single_threaded_blas: OpenBLAS's idle threads spin, busy, after a
    multi-threaded call), and the process' thread counts are as before once the fit returns."""
    from threadpoolctl import threadpool_info, threadpool_limits
    from benchmarks_it_maps.benchmarks import metric, pls
    seen = []

    def spy(function):
        def recorded(*args, **kwargs):
            seen.append((function.__name__, {info["num_threads"] for info in threadpool_info()
                                             if info["user_api"] == "blas"}))
            return function(*args, **kwargs)
        return recorded

    monkeypatch.setattr(pls, "group_products", spy(pls.group_products))
    monkeypatch.setattr(pls, "stacked_components", spy(pls.stacked_components))
    monkeypatch.setattr(metric, "stacked_products", spy(metric.stacked_products))
    X, Y = _relu_case(7, images=5, positions=16, features=24, channels=4)
    with threadpool_limits(limits=2, user_api="blas"):
        before = [info["num_threads"] for info in threadpool_info()]
        metric.loio_pls_with_floors(X, [Y])
        after = [info["num_threads"] for info in threadpool_info()]
    assert {name for name, _ in seen} == {"group_products", "stacked_components", "stacked_products"}
    assert all(threads == {1} for _, threads in seen), seen
    assert after == before and 2 in before


def test_folds_exhausted_at_different_components_stay_exact():
    """A fold whose X is exhausted while the others go on (image 0 alone carries a 7th direction, so the fold
    without it has rank 6): its loading is zero from then on and adds no basis row (no 0 / 0 in the stacked
    basis), and every fold still equals fold() on its own, components used included."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((5, 20, 6)) @ rng.standard_normal((6, 40))
    X[0] += rng.standard_normal((20, 1)) * rng.standard_normal(40)
    Y = X[..., :3] @ rng.standard_normal((3, 4)) + rng.standard_normal((5, 20, 4))
    shared = LeaveOneGroupOutPLS(X.reshape(100, 40), Y.reshape(100, 4), groups=5)
    (coef, intercept, used), = shared.all_folds(10)
    assert used.tolist() == [6, 7, 7, 7, 7] and np.isfinite(coef).all()
    for g in range(5):
        c, i, k = shared.fold(g, 10)
        assert used[g] == k
        np.testing.assert_allclose(coef[g], c, rtol=0, atol=1e-9 * np.abs(c).max())
        np.testing.assert_allclose(intercept[g], i, rtol=0, atol=1e-9 * np.abs(i).max())
