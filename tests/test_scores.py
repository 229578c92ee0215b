"""What the scores mean (issue 11): the residual statistic, the image-blind floor, Brain-Score's ceiling convention,
the no-repetition noise ceiling and the one-vote-per-monkey composite, on hand-computable cases."""
import numpy as np
import pytest

from benchmarks_it_maps.benchmarks import metric


# ---------------------------------------------------------------- the residual statistic (-residual_pls)
def _hand_case():
    """3 images x 3 positions x 1 channel."""
    targets = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 2.0, 5.0]])[:, :, None]
    predictions = targets.copy()
    predictions[0, :, 0] = [2.5, 2.0, 4.0]
    return predictions, targets


def test_training_mean_maps_hand_values():
    _, targets = _hand_case()
    base = metric.training_mean_maps(targets)[:, :, 0]
    np.testing.assert_allclose(base, [[2.5, 2.0, 3.0], [1.5, 2.0, 4.0], [2.0, 2.0, 2.0]])


def test_residual_statistic_hand_values():
    predictions, targets = _hand_case()
    r = metric.residual_per_channel(predictions, targets)[:, 0]
    # image 0: prediction - base = [0, 0, 1], target - base = [-1.5, 0, 0]: centred dot 0.5, norms sqrt(2/3) and
    # sqrt(3/2) -> r = 0.5. Images 1 and 2: prediction = target with a non-constant residual -> r = 1.
    np.testing.assert_allclose(r, [0.5, 1.0, 1.0], atol=1e-12)
    fit = metric.maps_fit(predictions, targets, residual=True)
    assert fit.score == pytest.approx(2.5 / 3, abs=1e-12)
    # the plain statistic of the same predictions: image 0 correlates [2.5, 2, 4] with [1, 2, 3]
    plain = metric.maps_fit(predictions, targets).per_channel[:, 0]
    assert plain[0] == pytest.approx(metric.pearson_per_channel(predictions[0], targets[0])[0])
    assert plain[0] > 0.6 and plain[1] == pytest.approx(1.0)


def test_image_blind_predictor_scores_zero_on_residual_but_high_on_plain():
    """Maps = a shared position profile + a small image-specific part: the image-blind predictor (mean map of the
    other images) reaches a high plain score and exactly 0 on the residual statistic."""
    rng = np.random.RandomState(0)
    profile = rng.randn(1, 25, 4) * 3.0
    targets = profile + rng.randn(8, 25, 4)
    blind = metric.training_mean_maps(targets)
    assert metric.maps_fit(blind, targets).score > 0.8
    assert metric.maps_fit(blind, targets, residual=True).score == 0.0


def test_residual_fit_reuses_the_loio_predictions():
    """``residual_fit`` rescores the PLS predictions; position-only features (one-hot positions) make the PLS
    prediction the training mean map, i.e. the image-blind predictor."""
    rng = np.random.RandomState(1)
    n_img, n_pos = 6, 9
    targets = rng.randn(1, n_pos, 3) * 2 + rng.randn(n_img, n_pos, 3)
    one_hot = np.repeat(np.eye(n_pos)[None], n_img, axis=0)
    fit = metric.loio_pls(one_hot, targets)
    np.testing.assert_allclose(fit.predictions, metric.training_mean_maps(targets), atol=1e-9)
    rescored = metric.residual_fit(fit, targets)
    assert rescored.predictions is not fit.predictions or np.shares_memory(rescored.predictions, fit.predictions)
    np.testing.assert_allclose(rescored.predictions, fit.predictions)
    # a model that knows the image: features = the targets themselves -> residual ~ 1
    exact = metric.residual_fit(metric.loio_pls(targets, targets), targets)
    assert exact.score > 0.99


def test_residual_statistic_shape_errors():
    with pytest.raises(ValueError, match="images, positions, channels"):
        metric.residual_per_channel(np.zeros((3, 4, 2)), np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match="images >= 2"):
        metric.training_mean_maps(np.zeros((1, 4, 2)))


# ---------------------------------------------------------------- Brain-Score's ceiling convention
def test_ceiled_value_is_bounded_raw_squared_over_reliability():
    from benchmarks_it_maps.benchmarks import arcaro2020 as bm
    assert bm.ceiled_value(0.6, 0.72) == pytest.approx((0.5, 0.5))
    assert bm.ceiled_value(0.9, 0.5) == (1.0, pytest.approx(1.62))       # bounded, unbounded kept
    assert bm.ceiled_value(-0.3, 0.5) == (0.0, pytest.approx(-0.18))     # a negative r explains nothing
    assert bm.ceiled_error(0.6, 0.05, 0.72) == pytest.approx(2 * 0.6 * 0.05 / 0.72)


def test_site_scores_follow_the_convention_and_carry_the_floor(sim_small):
    """Every ceiled score in [0, 1] and equal to the bounded raw^2 / ceiling; attrs raw, ceiling, error, r_ceiled,
    unbounded and the floor (position_only, shuffled_image) on every protocol."""
    from benchmarks_it_maps import load_benchmark
    from benchmarks_it_maps.benchmarks import arcaro2020 as bm
    from harmonized_models import model_from_network
    from benchmarks_it_maps.data import simulate
    sidecar = sim_small["sidecar"]
    gen = sidecar["generator"]
    model = model_from_network(simulate.build_generator_network(sidecar), "gen-conv", dict(
        image_size=gen["image_size"], mean=gen["mean"], std=gen["std"], interpolation=gen["interpolation"]),
        gen["layer"], visual_degrees=8.0)
    cache: dict = {}
    for suffix in ("pls", "residual_pls", "map_alignment"):
        benchmark = load_benchmark(f"Arcaro2020sim.M1ML-{suffix}")
        benchmark.feature_cache = cache
        score = benchmark(model)
        raw, ceiling = float(score.attrs["raw"]), float(score.attrs["ceiling"])
        assert 0 <= float(score) <= 1
        assert float(score) == pytest.approx(min(max(np.sign(raw) * raw ** 2 / ceiling, 0), 1), abs=1e-12)
        assert score.attrs["unbounded"] == pytest.approx(np.sign(raw) * raw ** 2 / ceiling)
        assert score.attrs["r_ceiled"] == pytest.approx(raw / np.sqrt(ceiling))
        assert score.attrs["ceiling"].attrs["scale"] == "reliability"
        assert score.attrs["error"] == pytest.approx(2 * abs(raw) * float(score.attrs["raw"].attrs["error"]) / ceiling)
        targets = benchmark.data.targets.reshape(benchmark.data.targets.shape[0], -1,
                                                 benchmark.data.targets.shape[-1])
        blind = metric.training_mean_maps(targets)
        if suffix == "residual_pls":
            assert score.attrs["position_only"] == 0.0
        elif suffix == "pls":
            assert score.attrs["position_only"] == pytest.approx(metric.maps_fit(blind, targets).score)
        assert score.attrs["position_only_ceiled"] == bm.ceiled_value(score.attrs["position_only"], ceiling)[0]
        assert -1 <= score.attrs["shuffled_image"] <= 1 and 0 <= score.attrs["shuffled_image_ceiled"] <= 1
        np.testing.assert_allclose(np.mean(score.attrs["per_image"]), raw)


def test_unreliable_site_is_named_in_one_line(sim_small):
    """A ceiling below MIN_RELIABILITY is refused with a one-line message naming the site (never divide by ~0)."""
    from benchmarks_it_maps import load_benchmark
    benchmark = load_benchmark("Arcaro2020sim.M2ML-pls")
    data = benchmark.data
    rng = np.random.RandomState(0)
    data.trials = rng.poisson(5.0, size=data.trials.shape).astype(float)  # pure noise: reliability ~ 0
    with pytest.raises(ValueError, match=r"Arcaro2020sim\.M2ML-pls: .*no ceiling can be estimated") as error:
        load_benchmark("Arcaro2020sim.M2ML-pls", data=data).ceiling
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- one vote per monkey
def _correlated_sites(n=400, seed=0, same=True):
    rng = np.random.RandomState(seed)
    m1 = 0.6 + 0.2 * rng.randn(n)
    other = m1 if same else 0.6 + 0.2 * rng.randn(n)
    return {"M1PL": m1, "M1ML": other, "M2ML": np.full(n // 2, 0.5)}


def test_site_weights_one_vote_per_monkey():
    from benchmarks_it_maps.benchmarks import arcaro2020 as bm
    assert bm.site_weights() == {"M1PL": 0.25, "M1ML": 0.25, "M2ML": 0.5}


def test_composite_value_and_joint_bootstrap_error_on_correlated_sites():
    """Monkey 1's sites identical per image (perfectly correlated), monkey 2 constant: the composite is
    0.25 c1 + 0.25 c1 + 0.5 c2 and its error is half the error of one monkey-1 site (delta method: 2 r SE / ceiling),
    not the 1/sqrt(2) smaller value that treating the sites as independent would give."""
    from benchmarks_it_maps.benchmarks import arcaro2020 as bm
    per_image = _correlated_sites()
    ceilings = {"M1PL": 0.8, "M1ML": 0.8, "M2ML": 0.5}
    monkeys = {"M1PL": "M1", "M1ML": "M1", "M2ML": "M2"}
    result = bm.composite_score(per_image, ceilings, monkeys)
    c1 = bm.ceiled_value(per_image["M1PL"].mean(), 0.8)[0]
    assert result["value"] == pytest.approx(0.5 * c1 + 0.5 * bm.ceiled_value(0.5, 0.5)[0])
    m1 = per_image["M1PL"]
    site_error = 2 * m1.mean() * m1.std() / np.sqrt(len(m1)) / 0.8
    assert result["error"] == pytest.approx(0.5 * site_error, rel=0.1)
    independent = bm.composite_score(_correlated_sites(same=False), ceilings, monkeys)
    assert result["error"] / independent["error"] == pytest.approx(np.sqrt(2), rel=0.15)
    assert bm.composite_score(per_image, ceilings, monkeys) == result  # seeded
    with pytest.raises(ValueError, match="same images"):
        bm.composite_score({**per_image, "M1ML": per_image["M1ML"][:-1]}, ceilings, monkeys)


def _bootstrap_by_hand(per_image: dict, statistic) -> list[float]:
    """The composite's bootstrap one draw at a time: each monkey's images resampled from the seeded generator
    (monkey 1's sites jointly), each site's resampled mean through ``statistic(site, mean)``, weighted."""
    from benchmarks_it_maps.benchmarks import arcaro2020 as bm
    weights = bm.site_weights()
    rng = np.random.default_rng(bm.BOOTSTRAP_SEED)
    draws = []
    for _ in range(bm.N_BOOTSTRAP):
        total = 0.0
        for members in (["M1PL", "M1ML"], ["M2ML"]):
            idx = rng.integers(0, len(per_image[members[0]]), len(per_image[members[0]]))
            total += sum(weights[s] * statistic(s, float(np.mean(per_image[s][idx]))) for s in members)
        draws.append(total)
    return draws


def test_vectorised_bootstrap_equals_one_bounded_score_per_draw():
    """The composite's bootstrap bounds all draws at once (``ceiled_values``); it must give what bounding each draw
    with brainscore-vision's ``bound_score`` (``ceiled_value``) gives, draw by draw, in the same random order."""
    from benchmarks_it_maps.benchmarks import arcaro2020 as bm
    raws = np.linspace(-1.2, 1.2, 97)
    np.testing.assert_array_equal(bm.ceiled_values(raws, 0.6), [bm.ceiled_value(r, 0.6)[0] for r in raws])
    per_image = _correlated_sites(n=40, same=False)
    per_image["M2ML"] = np.linspace(-0.2, 0.95, 20)  # some draws bound at 0 or 1
    ceilings = {"M1PL": 0.8, "M1ML": 0.7, "M2ML": 0.5}
    monkeys = {"M1PL": "M1", "M1ML": "M1", "M2ML": "M2"}
    draws = _bootstrap_by_hand(per_image, lambda s, mean: bm.ceiled_value(mean, ceilings[s])[0])
    assert bm.composite_score(per_image, ceilings, monkeys)["error"] == pytest.approx(np.std(draws, ddof=1),
                                                                                       abs=1e-12)


def test_raw_bootstrap_error_equals_one_draw_at_a_time():
    """The composite raw value's bootstrap error (draws shared with the score's, drawn once per image count) equals
    resampling each monkey's images draw by draw from the seeded generator, monkey 1's sites jointly."""
    from brainscore_core.metrics import Score
    from benchmarks_it_maps.benchmarks import arcaro2020 as bm
    per_image = _correlated_sites(n=30, same=False)
    per_image["M2ML"] = np.linspace(0.1, 0.7, 13)  # another image count than monkey 1's
    scores = []
    for site in bm.SITES:
        score = Score(0.0)
        score.attrs["per_image"] = per_image[site]
        scores.append(score)
    draws = _bootstrap_by_hand(per_image, lambda s, mean: mean)
    assert bm._raw_bootstrap_error(scores, bm.site_weights()) == pytest.approx(np.std(draws, ddof=1), abs=1e-12)
    assert not bm.bootstrap_draws((30, 13))[0].flags.writeable


# ---------------------------------------------------------------- the no-repetition ceiling
def _binned(counts_1ms, width=10):
    """[..., T ms] -> [..., T / width] bins (sums)."""
    return counts_1ms.reshape(*counts_1ms.shape[:-1], -1, width).sum(-1)


def test_lag1_autocorrelation_of_independent_and_smoothed_bins():
    """Poisson counts: ~0. Gaussian smoothing (sigma 1 ms) of 1-ms counts before 10-ms binning correlates adjacent
    bins by ~0.05 (kernel overlap across the bin edge); the signal's time course (rank <= 3) does not count."""
    from scipy.ndimage import gaussian_filter1d
    from benchmarks_it_maps.benchmarks import ceiling
    rng = np.random.default_rng(0)
    maps = rng.uniform(1.0, 5.0, size=(20, 25, 8, 1))
    course = np.concatenate([np.linspace(0.2, 1.0, 40), np.ones(110)]) * 0.05  # rise then plateau, per ms
    counts = rng.poisson(maps * course).astype(float)                          # [20, 25, 8, 150]
    assert abs(ceiling.lag1_autocorrelation(_binned(counts))) < 0.015  # sampling SE ~ 0.006
    smoothed = gaussian_filter1d(counts, 1.0, axis=-1, mode="nearest")
    assert ceiling.lag1_autocorrelation(_binned(smoothed)) == pytest.approx(0.055, abs=0.015)


def test_time_split_ceiling_recovers_known_reliability_and_refuses_smoothed_bins():
    from scipy.ndimage import gaussian_filter1d
    from benchmarks_it_maps.benchmarks import ceiling
    rng = np.random.default_rng(1)
    # the map changes within the window (an early and a late map, cross-fading): contiguous halves of the window
    # would see different maps, interleaved bins see the same mixture
    early, late = (rng.uniform(0.5, 1.5, size=(8, 100, 5, 1)) * 0.2 for _ in range(2))  # spikes per ms
    fade = np.linspace(0.0, 1.0, 150)
    rate = early * (1 - fade) + late * fade
    counts = rng.poisson(rate).astype(float)
    bins = _binned(counts)
    truth = rate.sum(-1)
    full = counts.sum(-1)
    oracle = np.mean(np.median(metric.pearson_maps(truth, full) ** 2, axis=1))
    result = ceiling.time_split_ceiling(bins, label="hand.site")
    assert result.extra["block_bins"] == 1 and result.method == "time_split_spearman_brown"
    assert result.value == pytest.approx(oracle, rel=0.05)
    # unequal halves (15 bins: 8 odd, 7 even) are corrected for their sizes
    np.testing.assert_allclose(ceiling.spearman_brown_unequal(np.array([0.5]), 1, 1), ceiling.spearman_brown(0.5))
    smoothed = _binned(gaussian_filter1d(counts, 10.0, axis=-1, mode="nearest"))
    with pytest.raises(ceiling.SmoothedTimeCourseError, match=r"^hand\.site: adjacent time bins are correlated"):
        ceiling.time_split_ceiling(smoothed, label="hand.site")


def test_residual_ceiling_is_what_a_perfect_model_scores():
    """The residual reliability (split halves minus the full data's base) equals the residual score of the
    noiseless maps (a perfect model) on the trial-averaged data: the base's noise is shared by both, so a
    half-specific base would put the ceiling too low (ceiled perfect model > 1)."""
    from benchmarks_it_maps.benchmarks import ceiling
    rng = np.random.RandomState(3)
    signal = 2.0 * rng.randn(1, 200, 6) + rng.randn(4, 200, 6)          # shared profile + image-specific part
    trials = signal[..., None] + 1.5 * rng.randn(4, 200, 6, 8)
    r = metric.maps_fit(signal, trials.mean(-1), residual=True).per_channel
    perfect = float(np.mean(np.median(r ** 2, axis=1)))
    reliability = ceiling.split_half_ceiling(trials, residual=True, n_splits=20).value
    assert reliability == pytest.approx(perfect, rel=0.03)
