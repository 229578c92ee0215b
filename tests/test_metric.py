"""The IT-map metric and ceilings: hand-computable cases, independent re-computations, and simulated ground truth."""
import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression
from sklearn.decomposition import PCA

from benchmarks_it_maps.benchmarks import ceiling
from benchmarks_it_maps.benchmarks import metric


# ---------------------------------------------------------------- Pearson per channel
def test_pearson_hand_values():
    pred = np.array([[1.0, 1.0, 5.0], [2.0, 2.0, 5.0], [3.0, 3.0, 5.0], [4.0, 4.0, 5.0]])
    target = np.array([[1.0, 4.0, 1.0], [3.0, 3.0, 2.0], [2.0, 2.0, 3.0], [4.0, 1.0, 4.0]])
    r = metric.pearson_per_channel(pred, target)
    # channel 0: x=1..4, y=1,3,2,4 -> cov 4/4... r = 4 / 5 = 0.8 (sum dx*dy = 4, sum dx^2 = sum dy^2 = 5)
    assert r[0] == pytest.approx(0.8, abs=1e-12)
    assert r[1] == pytest.approx(-1.0, abs=1e-12)
    assert r[2] == 0.0  # constant prediction: defined as no agreement, not NaN


def test_pearson_constant_target_and_shape_error():
    r = metric.pearson_per_channel(np.arange(5.0)[:, None], np.full((5, 1), 3.0))
    assert r.tolist() == [0.0]
    with pytest.raises(ValueError, match="positions, channels"):
        metric.pearson_per_channel(np.zeros((5, 2)), np.zeros((5, 3)))


# ---------------------------------------------------------------- leave-one-image-out PLS
def _two_image_case(seed=0):
    """Two images on a 3x3 grid, 2 features per position; 3 channels, exactly linear (with offsets) in the features."""
    rng = np.random.RandomState(seed)
    features = rng.rand(2, 9, 2)
    weights = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]])
    targets = features @ weights + np.array([10.0, -5.0, 2.0])
    return features, targets


def test_exact_linear_targets_score_one_and_predictions_include_intercept():
    features, targets = _two_image_case()
    fit = metric.loio_pls(features, targets)
    assert fit.score == pytest.approx(1.0, abs=1e-9)
    assert fit.per_fold.shape == (2,) and fit.per_channel.shape == (2, 3)
    # the absolute predictions are right too: centring and intercept come from the estimator, not X @ coef_
    np.testing.assert_allclose(fit.predictions, targets, atol=1e-8)


def test_shuffled_targets_score_about_zero():
    rng = np.random.RandomState(1)
    features = rng.rand(6, 9, 2)
    targets = features @ rng.randn(2, 3)
    scores = []
    for seed in range(20):
        perm = np.random.RandomState(seed).permutation(6 * 9)
        shuffled = targets.reshape(-1, 3)[perm].reshape(targets.shape)
        scores.append(metric.loio_pls(features, shuffled).score)
    assert abs(np.mean(scores)) < 0.15
    assert metric.loio_pls(features, targets).score > 0.99


def _sklearn_exact_pls(n_components):
    """scikit-learn's PLSRegression with exact (SVD) weight vectors instead of NIPALS iteration."""
    pls = PLSRegression(n_components=n_components, scale=False)
    pls.algorithm = "svd"
    return pls


def test_folds_match_an_explicit_refit():
    rng = np.random.RandomState(2)
    features, targets = rng.randn(4, 16, 6), rng.randn(4, 16, 3)
    fit = metric.loio_pls(features, targets, n_components=3)
    for held_out in range(4):
        train = [i for i in range(4) if i != held_out]
        pls = _sklearn_exact_pls(3).fit(features[train].reshape(-1, 6), targets[train].reshape(-1, 3))
        pred = pls.predict(features[held_out])
        np.testing.assert_allclose(fit.predictions[held_out], pred, atol=1e-10)
        np.testing.assert_allclose(fit.per_channel[held_out], metric.pearson_per_channel(pred, targets[held_out]))
    assert fit.score == pytest.approx(np.mean(np.median(fit.per_channel, axis=1)))
    assert fit.error == pytest.approx(np.std(fit.per_fold, ddof=1) / 2)


def test_exact_solver_agrees_with_converged_nipals_and_brainscore_default():
    rng = np.random.RandomState(10)
    features = rng.randn(5, 30, 12) + 1.0
    targets = features[..., :4] @ rng.randn(4, 3) + 0.3 * rng.randn(5, 30, 3)
    exact = metric.loio_pls(features, targets, n_components=5)
    nipals = metric.loio_pls(features, targets, n_components=5, solver="sklearn")
    # NIPALS stops at tol 1e-6 / 500 iterations: close to the exact solution, not equal to it
    np.testing.assert_allclose(exact.predictions, nipals.predictions, atol=1e-3 * np.abs(targets).max())
    assert exact.score == pytest.approx(nipals.score, abs=1e-4)
    with pytest.raises(ValueError, match="unknown PLS solver"):
        metric.loio_pls(features, targets, solver="magic")


def test_component_count_capped_by_features():
    features, targets = _two_image_case()
    assert metric.loio_pls(features, targets, n_components=25).n_components == 2


def test_deterministic():
    rng = np.random.RandomState(3)
    features, targets = rng.randn(5, 25, 30), rng.randn(5, 25, 4)
    a = metric.loio_pls(features, targets, reduce=metric.pca_reducer(10)).score
    b = metric.loio_pls(features, targets, reduce=metric.pca_reducer(10)).score
    assert abs(a - b) < 1e-10


def test_constant_target_channel_is_defined():
    features, targets = _two_image_case()
    targets[..., 1] = 7.0
    fit = metric.loio_pls(features, targets)
    assert np.all(np.isfinite(fit.per_channel))
    assert fit.per_channel[:, 1].tolist() == [0.0, 0.0]


def test_bad_inputs_are_named():
    features, targets = _two_image_case()
    bad = targets.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="targets contain non-finite"):
        metric.loio_pls(features, bad)
    with pytest.raises(ValueError, match="disagree"):
        metric.loio_pls(features[:, :4], targets)
    with pytest.raises(ValueError, match="at least 2 images"):
        metric.loio_pls(features[:1], targets[:1])


# ---------------------------------------------------------------- per-fold PCA (shift protocol)
def test_kernel_pca_equals_sklearn_pca_per_fold():
    rng = np.random.RandomState(4)
    features = rng.randn(5, 12, 40) + 3.0   # more features than training rows, non-zero mean
    targets = features[..., :3] @ rng.randn(3, 2) + 0.1 * rng.randn(5, 12, 2)
    n_pcs = 8
    fit = metric.loio_pls(features, targets, n_components=4, reduce=metric.pca_reducer(n_pcs))
    for held_out in range(5):
        train = [i for i in range(5) if i != held_out]
        pca = PCA(n_components=n_pcs, svd_solver="full").fit(features[train].reshape(-1, 40))
        pls = _sklearn_exact_pls(4).fit(pca.transform(features[train].reshape(-1, 40)),
                                        targets[train].reshape(-1, 2))
        expected = pls.predict(pca.transform(features[held_out]))
        np.testing.assert_allclose(fit.predictions[held_out], expected, atol=1e-8)


# ---------------------------------------------------------------- map alignment
def test_map_alignment_hand_cases():
    rng = np.random.RandomState(5)
    targets = rng.rand(3, 9, 9, 4)
    same = metric.map_alignment(targets, targets)
    assert same["score"] == pytest.approx(1.0) and same["score_coarse"] == pytest.approx(1.0)
    assert same["coarse_size"] == 2
    flipped = metric.map_alignment(-targets, targets)
    assert flipped["score"] == pytest.approx(-1.0)
    # a monotone transform of the channel mean keeps Spearman at 1
    monotone = metric.map_alignment(np.exp(targets.mean(-1, keepdims=True)).repeat(4, -1), targets)
    assert monotone["score"] == pytest.approx(1.0)


def test_all_folds_constant_equals_each_fold():
    """The stacked solver's applicability test: a channel constant in some fold's training images, found for all
    folds at once (running minima and maxima), equals _is_constant of each fold's training rows, at the folds where it
    holds."""
    values = np.random.default_rng(3).standard_normal((6, 4, 5))
    values[:, :, 0] = 2.0                       # constant in every fold
    values[:, :, 1] = 1.0
    values[4, :, 1] = 3.0                       # constant only without image 4
    values[:, :, 2] = -1.0
    values[0, 0, 2] = 0.0                       # constant only without image 0
    every = metric._all_folds_constant(values.min(axis=1), values.max(axis=1))
    each = [metric._is_constant(np.delete(values, g, axis=0).reshape(-1, 5)) for g in range(6)]
    np.testing.assert_array_equal(every, each)
    assert every[:, 0].all() and not every[:, 3:].any()
    assert every[:, 1].tolist() == [g == 4 for g in range(6)] and every[:, 2].tolist() == [g == 0 for g in range(6)]


def test_area_resample_hand_values():
    maps = np.arange(16, dtype=float).reshape(1, 4, 4)
    np.testing.assert_allclose(metric.area_resample(maps, 2)[0], [[2.5, 4.5], [10.5, 12.5]])
    # 3 -> 2 cells: the bins overlap (cells 0-1 and 1-2), as adaptive average pooling's do
    np.testing.assert_allclose(metric.area_resample(np.arange(9, dtype=float).reshape(3, 3), 2),
                               [[2.0, 3.0], [5.0, 6.0]])


@pytest.mark.parametrize("grid, size", [(17, 4), (9, 2), (16, 4), (17, 5), (10, 3)])
def test_area_resample_equals_adaptive_average_pooling(grid, size):
    """The alignment's coarse maps have the bins of torch's adaptive_avg_pool2d (overlapping where grid/size is not
    an integer), computed by numpy (two small matrix products)."""
    import torch
    maps = np.random.default_rng(grid * size).standard_normal((3, grid, grid))
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.as_tensor(maps)[:, None], size)[:, 0].numpy()
    np.testing.assert_allclose(metric.area_resample(maps, size), pooled, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- ceilings
def test_split_half_ceiling_hand_case_and_shape_errors():
    rng = np.random.RandomState(6)
    signal = rng.randn(2, 9, 3, 1)
    identical = np.repeat(signal, 4, axis=-1)
    assert ceiling.split_half_ceiling(identical).value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 repetitions"):
        ceiling.split_half_ceiling(signal)
    with pytest.raises(ValueError, match="images, positions, channels, repetitions"):
        ceiling.split_half_ceiling(signal[0])


def test_spearman_brown_hand_values():
    np.testing.assert_allclose(ceiling.spearman_brown(np.array([0.5, 0.0, 1.0])), [2 / 3, 0.0, 1.0])


def test_split_half_ceiling_recovers_known_reliability():
    """Signal variance 1, noise variance 4 per trial, 8 trials: reliability of the mean = 1 / (1 + 4/8) = 2/3."""
    rng = np.random.RandomState(7)
    signal = rng.randn(6, 400, 10, 1)
    trials = signal + 2.0 * rng.randn(6, 400, 10, 8)
    result = ceiling.split_half_ceiling(trials, n_splits=10, seed=0)
    # Brain-Score's convention: the ceiling value is the reliability itself
    assert result.value == result.reliability == pytest.approx(2 / 3, abs=0.03)
    # a perfect model correlates sqrt(reliability) with the trial-averaged data, so raw^2 / ceiling is ~1
    perfect = metric.loio_pls(signal[..., 0][:, :, :3], trials.mean(-1)[:, :, :3]).score
    assert perfect ** 2 / result.value == pytest.approx(1.0, abs=0.05)
    assert result.per_channel.shape == (10,)
    again = ceiling.split_half_ceiling(trials, n_splits=10, seed=0)
    assert again.value == result.value


def test_cross_channel_ceiling_shared_vs_independent():
    rng = np.random.RandomState(8)
    shared_map = rng.randn(4, 25, 1)
    shared = shared_map * rng.uniform(0.5, 2, size=(1, 1, 5)) + 0.05 * rng.randn(4, 25, 5)
    independent = rng.randn(4, 25, 5)
    assert ceiling.cross_channel_ceiling(shared, n_components=2).value > 0.95
    assert abs(ceiling.cross_channel_ceiling(independent, n_components=2).value) < 0.3


def test_pairwise_channel_ceiling_hand_case():
    base = np.arange(9, dtype=float)
    other = np.array([0, 2, 1, 3, 4, 5, 6, 8, 7], dtype=float)
    maps = np.stack([base, 2 * base + 1, other], axis=-1).reshape(1, 3, 3, 3)
    result = ceiling.pairwise_channel_ceiling(np.concatenate([maps, maps[..., [2, 0, 1]]]))
    assert result.value == pytest.approx(1.0)  # channels 0 and 1 are the same map up to scale and offset
    lone = np.stack([base, other], axis=-1).reshape(1, 9, 2)
    expected = np.corrcoef(base, other)[0, 1]
    assert ceiling.pairwise_channel_ceiling(lone).value == pytest.approx(expected)


# ---------------------------------------------------------------- simulated ground truth
def test_right_features_win_and_reach_the_ceiling():
    """Neurons are noisy low-rank readouts of known features: the true features reach the noise ceiling,
    unrelated features and a spatially scrambled copy of the true ones do not."""
    rng = np.random.RandomState(9)
    n_img, grid, n_feat, n_chan, n_rep = 8, 9, 20, 12, 6
    true_features = rng.randn(n_img, grid * grid, n_feat)
    readout = rng.randn(n_feat, 4) @ rng.randn(4, n_chan)          # rank-4 population
    signal = true_features @ readout
    noise_sd = signal.std() * 1.0
    trials = signal[..., None] + noise_sd * rng.randn(n_img, grid * grid, n_chan, n_rep)
    targets = trials.mean(-1)
    ceil = ceiling.split_half_ceiling(trials).value
    right = metric.loio_pls(true_features, targets).score
    wrong = metric.loio_pls(rng.randn(*true_features.shape), targets).score
    scrambled = metric.loio_pls(true_features[:, rng.permutation(grid * grid)], targets).score
    assert 0.3 < ceil < 0.9
    assert 0.9 < right ** 2 / ceil < 1.1
    assert wrong < 0.2 and scrambled < 0.2


def test_map_alignment_is_spearman_per_image():
    """map_alignment's rank correlation of channel-averaged maps, all images at once, equals scipy's spearmanr
    image by image (ties included), and a constant map scores 0."""
    from scipy.stats import spearmanr
    rng = np.random.default_rng(3)
    predictions = rng.standard_normal((5, 8, 8, 3))
    targets = predictions + rng.standard_normal((5, 8, 8, 3))
    predictions[1] = np.round(predictions[1])          # ties
    predictions[2] = 0.4                               # a constant map
    result = metric.map_alignment(predictions, targets)
    for i in (0, 1, 3, 4):
        rho = spearmanr(predictions[i].mean(-1).ravel(), targets[i].mean(-1).ravel())[0]
        assert result["full"][i] == pytest.approx(rho, abs=1e-12)
    assert result["full"][2] == 0.0


def test_pearson_maps_of_all_images_equal_corrcoef():
    rng = np.random.default_rng(4)
    predictions, targets = rng.standard_normal((2, 4, 30, 5))
    expected = [[np.corrcoef(predictions[i, :, k], targets[i, :, k])[0, 1] for k in range(5)] for i in range(4)]
    np.testing.assert_allclose(metric.pearson_maps(predictions, targets), expected, atol=1e-12)
