"""Accuracy / IT trade-off: frontier fit, bootstrap, per-model scores, metric object, plots and bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks_it_maps.analysis import families as fam
from benchmarks_it_maps.analysis import leaderboard as lb
from benchmarks_it_maps.analysis import tradeoff as tr
from benchmarks_it_maps.analysis import twolines as tl
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.runs.results import ResultsDB

_NAME = Path("shared") / "reference" / "brainscore-vision-leaderboard-2024-01-01.json.gz"
#: The pinned snapshot next to the checkout (main: ../shared; a worktree /work/wt/NN: ../../shared).
SNAPSHOT = next((parent / _NAME for parent in Path(__file__).resolve().parents if (parent / _NAME).is_file()),
                Path(__file__).resolve().parents[2] / _NAME)

TRUE_PEAK, TRUE_LEVEL, TRUE_BELOW, TRUE_ABOVE, NOISE = 0.72, 0.55, 0.8, -1.2, 0.015


def hinge(x, c=TRUE_PEAK, level=TRUE_LEVEL, below=TRUE_BELOW, above=TRUE_ABOVE):
    d = np.asarray(x) - c
    return level + below * np.minimum(d, 0) + above * np.maximum(d, 0)


def population(n=100, seed=3, noise=NOISE):
    """Non-harmonized models scattered around a known hinge, plus one harmonized model planted 0.1 above the
    frontier and one harmonized model exactly on it."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.40, 0.90, n)
    table = pd.DataFrame({"model": [f"net{i}" for i in range(n)], "accuracy": x,
                          "score": hinge(x) + rng.normal(0, noise, n), "category": "CNN", "harmonized": False})
    planted = pd.DataFrame({"model": ["planted-above", "planted-on"], "accuracy": [0.80, 0.82],
                            "score": [hinge(0.80) + 0.10, hinge(0.82)], "category": "Harmonized",
                            "harmonized": True})
    return pd.concat([table, planted], ignore_index=True)


@pytest.fixture(scope="module")
def synthetic():
    return tr.analyze_tradeoff(population(), benchmark="Synthetic.IT", n_bootstrap=400, seed=0)


# ---------------------------------------------------------------------------------------------------------------------
# hand-computable cases
# ---------------------------------------------------------------------------------------------------------------------
def test_exact_v_shape_is_recovered():
    x = np.arange(7.0)                      # 0..6
    y = np.array([0, 1, 2, 3, 2, 1, 0.0])   # rises by 1, peaks at x=3 (y=3), falls by 1
    fit = tr.fit_hinge(x, y, min_per_side=2)
    assert fit.breakpoint == pytest.approx(3.0, abs=1e-6)
    assert (fit.level, fit.slope_below, fit.slope_above) == pytest.approx((3.0, 1.0, -1.0), abs=1e-6)
    np.testing.assert_allclose(fit(x), y, atol=1e-6)


def test_profile_equals_least_squares_at_each_candidate():
    x = np.array([0.0, 1, 2, 3, 4, 5])
    y = np.array([0.0, 2, 1, 3, 1, 0])
    # at c = 2 the design is [1, min(x-2,0), max(x-2,0)]: hand-solved least squares
    design = np.stack([np.ones(6), np.minimum(x - 2, 0), np.maximum(x - 2, 0)], 1)
    beta = np.linalg.solve(design.T @ design, design.T @ y)
    sse = float(((y - design @ beta) ** 2).sum())
    got_sse, got_beta = tr._profile(x, y, np.ones((1, 6)), np.array([2.0]), 2)
    assert got_sse[0, 0] == pytest.approx(sse)
    np.testing.assert_allclose(got_beta[0, 0], beta)
    # bootstrap weights act as repeated rows
    weights = np.array([[2, 1, 0, 1, 1, 1]])
    repeated = np.repeat(np.arange(6), weights[0])
    d2 = design[repeated]
    beta2 = np.linalg.lstsq(d2, y[repeated], rcond=None)[0]
    got_sse, got_beta = tr._profile(x, y, weights, np.array([2.0]), 2)
    np.testing.assert_allclose(got_beta[0, 0], beta2)
    # fewer than min_per_side models on a side: not identified
    assert np.isinf(tr._profile(x, y, np.ones((1, 6)), np.array([0.5]), 2)[0][0, 0])


def test_quadratic_on_a_parabola():
    x = np.linspace(0.4, 0.9, 11)
    quadratic = tr.fit_quadratic(x, 0.5 - 2 * (x - 0.7) ** 2)
    assert quadratic["vertex"] == pytest.approx(0.7) and quadratic["concave"]
    assert quadratic["r2"] == pytest.approx(1.0)
    assert quadratic["coefficients"] == pytest.approx([-2.0, 2.8, 0.5 - 0.98])


# ---------------------------------------------------------------------------------------------------------------------
# synthetic populations with known ground truth
# ---------------------------------------------------------------------------------------------------------------------
def test_known_breakpoint_and_slopes_are_recovered(synthetic):
    r = synthetic
    assert r.n_models == 102 and r.n_fit == 100
    assert r.peak_ci[0] <= TRUE_PEAK <= r.peak_ci[1] and r.peak_ci[1] - r.peak_ci[0] < 0.05
    assert r.slope_below_ci[0] <= TRUE_BELOW <= r.slope_below_ci[1]
    assert r.slope_above_ci[0] <= TRUE_ABOVE <= r.slope_above_ci[1]
    assert r.peak_score_ci[0] <= TRUE_LEVEL <= r.peak_score_ci[1]
    assert r.slope_above_ci[1] < 0 < r.slope_below_ci[0]
    assert r.spearman_below > 0.8 and r.spearman_above < -0.8
    assert not r.peak_at_edge and r.shape == "peak" and r.summary()["shape"] == "peak"
    # the right model wins: the hinge beats the quadratic on hinge data
    assert r.quadratic["aic_hinge"] < r.quadratic["aic"] and r.r2 > r.quadratic["r2"]
    # the bootstrap band covers the true frontier at the peak
    low, high = r.band([TRUE_PEAK])
    assert low[0] <= TRUE_LEVEL <= high[0]


def test_bootstrap_intervals_cover_the_truth_at_about_the_nominal_rate():
    """Calibration over 30 independent populations: each 95 % interval should miss the truth rarely."""
    hits = np.zeros(4)
    for replicate in range(30):
        r = tr.analyze_tradeoff(population(n=60, seed=1000 + replicate), n_bootstrap=120, seed=replicate,
                                    bootstrap="models", compare=False)
        hits += [r.peak_ci[0] <= TRUE_PEAK <= r.peak_ci[1],
                 r.slope_below_ci[0] <= TRUE_BELOW <= r.slope_below_ci[1],
                 r.slope_above_ci[0] <= TRUE_ABOVE <= r.slope_above_ci[1],
                 r.peak_score_ci[0] <= TRUE_LEVEL <= r.peak_score_ci[1]]
    assert (hits / 30 >= 0.85).all(), hits / 30


def test_planted_model_breaks_the_tradeoff_and_one_on_the_frontier_does_not(synthetic):
    models = synthetic.models.set_index("model")
    assert models.loc["planted-above", "breaks_tradeoff"]
    assert models.loc["planted-above", "tradeoff"] == pytest.approx(0.10, abs=0.02)
    assert not models.loc["planted-on", "breaks_tradeoff"]
    assert models.loc["planted-on", "ci_low"] < 0 < models.loc["planted-on", "ci_high"]
    assert not models.loc["planted-above", "in_fit"]
    # ordinary models rarely clear the population's scatter band (prediction intervals)
    assert models.loc[models["in_fit"], "breaks_tradeoff"].mean() < 0.06
    assert "planted-above" in synthetic.breakers()


def test_confidence_intervals_flag_the_planted_model_too():
    r = tr.analyze_tradeoff(population(), n_bootstrap=200, seed=0, interval="confidence")
    models = r.models.set_index("model")
    assert models.loc["planted-above", "breaks_tradeoff"] and not models.loc["planted-on", "breaks_tradeoff"]
    # frontier-only intervals are narrower than prediction intervals
    p = tr.analyze_tradeoff(population(), n_bootstrap=200, seed=0).models.set_index("model")
    width = lambda m: (m["ci_high"] - m["ci_low"]).median()  # noqa: E731
    assert width(models) < width(p)
    # the literal reading flags many ordinary models (about half lie above a mean curve); the default does not
    assert models.loc[models["in_fit"], "breaks_tradeoff"].mean() > 0.2
    assert p.loc[p["in_fit"], "breaks_tradeoff"].mean() < 0.06
    assert r.to_json()["interval"] == "confidence" and r.summary()["interval"] == "confidence"
    # with a known score error the model's own uncertainty enters: a very noisy planted model is not flagged
    noisy = population()
    noisy["error"] = np.where(noisy["model"] == "planted-above", 0.2, 0.0)
    n = tr.analyze_tradeoff(noisy, n_bootstrap=200, seed=0, interval="confidence").models.set_index("model")
    assert not n.loc["planted-above", "breaks_tradeoff"] and n.loc["planted-above", "ci_low"] < 0


def test_monotone_population_puts_the_peak_interval_at_the_edge():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.4, 0.9, 80)
    table = pd.DataFrame({"model": [f"m{i}" for i in range(80)], "accuracy": x,
                          "score": 0.3 + 0.4 * x + rng.normal(0, NOISE, 80)})
    r = tr.analyze_tradeoff(table, n_bootstrap=300, seed=0)
    assert r.peak_at_edge
    assert r.peak_ci[0] <= r.peak_range[0] + 0.01 or r.peak_ci[1] >= r.peak_range[1] - 0.01
    # the slope on the side holding most models is positive, with its interval above 0
    near_top = (r.peak_accuracy - x.min()) > (x.max() - r.peak_accuracy)
    slope = r.slope_below if near_top else r.slope_above
    assert abs(slope - 0.4) < 0.15
    assert r.linear_slope_ci[0] <= 0.4 <= r.linear_slope_ci[1] and r.linear_slope_ci[0] > 0
    assert (r.spearman_below if near_top else r.spearman_above) > 0.8


def test_seeded_bootstrap_is_deterministic():
    a = tr.analyze_tradeoff(population(), n_bootstrap=100, seed=7)
    b = tr.analyze_tradeoff(population(), n_bootstrap=100, seed=7)
    c = tr.analyze_tradeoff(population(), n_bootstrap=100, seed=8)
    assert json.dumps(a.to_json()) == json.dumps(b.to_json())
    assert a.peak_ci != c.peak_ci or a.slope_above_ci != c.slope_above_ci


def test_default_bootstrap_path():
    r = tr.analyze_tradeoff(population(n=40, seed=5))
    assert r.n_bootstrap == tr.DEFAULT_BOOTSTRAP == 1000 and r.n_bootstrap_valid == 1000
    assert r.bootstrap.shape == (1000, 4)
    assert r.peak_ci[0] <= TRUE_PEAK <= r.peak_ci[1]


# ---------------------------------------------------------------------------------------------------------------------
# outputs: JSON, table, metric object, plots
# ---------------------------------------------------------------------------------------------------------------------
def test_json_keys_and_table(synthetic):
    data = synthetic.to_json()
    assert tuple(data) == tr.JSON_KEYS
    assert data["n_models"] == 102 and data["benchmark"] == "Synthetic.IT"
    assert data["interval"] == "prediction" and data["ci"] == 0.95 and data["n_bootstrap"] == 400
    assert len(data["peak_ci"]) == 2 and len(data["slope_above_ci"]) == 2
    assert len(data["models"]) == 102
    entry = next(m for m in data["models"] if m["model"] == "planted-above")
    assert entry["breaks_tradeoff"] and entry["harmonized"] and entry["tradeoff_ci"][0] > 0
    json.dumps(data, allow_nan=False)  # no NaN anywhere
    text = synthetic.format_table(max_models=5)
    assert "peak accuracy" in text and "planted-above *" in text and "97 more models" in text


def test_metric_returns_a_score_with_attrs():
    from brainscore_core.metrics import Score
    from brainscore_core.supported_data_standards.brainio.assemblies import DataAssembly

    table = population()
    metric = tr.TradeoffMetric(n_bootstrap=100, seed=0, benchmark="Synthetic.IT")
    score = metric(table)
    assert isinstance(score, Score)
    assert float(score) == pytest.approx(score.attrs["slope_above"]) and float(score) < 0
    for key in ("peak_accuracy", "peak_ci", "slope_below", "slope_below_ci", "slope_above_ci", "spearman_below",
                "spearman_above", "error", "raw", "n_models", "models"):
        assert key in score.attrs
    assert score.attrs["error"] > 0
    models = score.attrs["models"]
    assert models.sizes["model"] == 102
    assert bool(models.sel(model_identifier="planted-above")["breaks_tradeoff"])
    # Brain-Score style call with two assemblies over 'model'
    coords = {"model_identifier": ("model", table["model"].to_numpy()),
              "harmonized": ("model", table["harmonized"].to_numpy()),
              "category": ("model", table["category"].to_numpy())}
    accuracies = DataAssembly(table["accuracy"].to_numpy(), coords=coords, dims=["model"])
    scores = DataAssembly(table["score"].to_numpy(), coords=coords, dims=["model"])
    again = metric(accuracies, scores)
    assert float(again) == pytest.approx(float(score))
    assert again.attrs["n_fit"] == 100
    with pytest.raises(tr.TradeoffInputError, match="no accuracy"):
        metric(accuracies.isel(model=slice(0, 50)), scores)


def test_prediction_band_is_wider_than_the_frontier_band_and_holds_most_models(synthetic):
    x = synthetic.models["accuracy"].to_numpy()
    low, high = synthetic.band(x)
    p_low, p_high = synthetic.prediction_band(x)
    assert (p_high > high).all() and (p_low < low).all()
    fit = synthetic.models["in_fit"].to_numpy()
    inside = (synthetic.models["score"].to_numpy() >= p_low) & (synthetic.models["score"].to_numpy() <= p_high)
    assert inside[fit].mean() > 0.9
    # the planted model lies above the band, the one on the frontier inside it
    planted = synthetic.models["model"].to_numpy() == "planted-above"
    assert (synthetic.models["score"].to_numpy()[planted] > p_high[planted]).all()


def test_plots_are_written(synthetic, tmp_path):
    png = tr.plot_tradeoff(synthetic, tmp_path / "tradeoff.png", highlight=["planted-above"])
    svg = tr.plot_tradeoff(synthetic, tmp_path / "tradeoff.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert b"<svg" in svg.read_bytes()[:2000]
    with pytest.raises(tr.TradeoffInputError, match="use .png or .svg"):
        tr.plot_tradeoff(synthetic, tmp_path / "tradeoff.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tradeoff.png", "tradeoff.svg"]


# ---------------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------------
def test_too_few_models():
    with pytest.raises(tr.TradeoffInputError, match="at least 8 non-harmonized models.*got 5"):
        tr.analyze_tradeoff(population().head(5), n_bootstrap=20)


def test_missing_accuracy_is_named():
    table = population()
    table.loc[3, "accuracy"] = np.nan
    with pytest.raises(tr.TradeoffInputError, match=r"'accuracy'.*net3"):
        tr.analyze_tradeoff(table, n_bootstrap=20)


def test_percent_accuracy_is_refused():
    table = population()
    table["accuracy"] *= 100
    with pytest.raises(tr.TradeoffInputError, match="divide them by 100"):
        tr.analyze_tradeoff(table, n_bootstrap=20)


def test_duplicate_model_names():
    table = population()
    table.loc[5, "model"] = "net4"
    with pytest.raises(tr.TradeoffInputError, match="duplicate model name.*net4"):
        tr.analyze_tradeoff(table, n_bootstrap=20)


@pytest.mark.parametrize("bad", [np.inf, np.nan, "n/a"])
def test_non_finite_scores(bad):
    table = population()
    table["score"] = table["score"].astype(object)
    table.loc[7, "score"] = bad
    with pytest.raises(tr.TradeoffInputError, match=r"'score' is not a finite number for net7"):
        tr.analyze_tradeoff(table, n_bootstrap=20)


def test_other_bad_arguments():
    with pytest.raises(tr.TradeoffInputError, match="missing column"):
        tr.analyze_tradeoff(population().drop(columns="accuracy"))
    with pytest.raises(tr.TradeoffInputError, match="interval must be"):
        tr.analyze_tradeoff(population(), interval="credible")
    with pytest.raises(tr.TradeoffInputError, match="n_bootstrap"):
        tr.analyze_tradeoff(population(), n_bootstrap=2)
    constant = population()
    constant["accuracy"] = np.repeat([0.5, 0.6, 0.7], 34)
    with pytest.raises(tr.TradeoffInputError, match="distinct accuracies"):
        tr.analyze_tradeoff(constant)


def test_unknown_benchmark_lists_close_names(tmp_path):
    board = lb.load_leaderboard(SNAPSHOT)
    with pytest.raises(lb.LeaderboardError, match="did you mean.*Sanghavi2020.IT-pls"):
        tr.population_from_leaderboard(board, "Sanghavi2020.IT-pl")
    db = ResultsDB(tmp_path / "r.sqlite")
    db.record("a", "Arcaro2020.M1ML-pls", 0.5, benchmark_version=1, weights_hash="w")
    with pytest.raises(tr.TradeoffInputError, match="did you mean Arcaro2020.M1ML-pls"):
        tr.population_from_results(db, "Arcaro2020.M1PL-pls")


# ---------------------------------------------------------------------------------------------------------------------
# populations from the results database and the leaderboard
# ---------------------------------------------------------------------------------------------------------------------
def _results_db(tmp_path, table: pd.DataFrame) -> ResultsDB:
    db = ResultsDB(tmp_path / "results.sqlite")
    for row in table.itertuples(index=False):
        if row.harmonized:
            continue
        db.record(row.model, "Synthetic.IT", row.score, benchmark_version=1, weights_hash="w", error=0.01)
        db.record(row.model, "ImageNet-top1", row.accuracy, benchmark_version=1, weights_hash="w")
    return db


def test_population_from_results_database(tmp_path):
    table = population(n=20)
    db = _results_db(tmp_path, table)
    # a harmonizer checkpoint folder: its model.json carries the top-1
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"architecture": "resnet18", "top1": 0.80}))
    model = f"harmonized:{folder}"
    db.record(model, "Synthetic.IT", 0.4, benchmark_version=1, weights_hash="old")  # superseded by the next row
    db.record(model, "Synthetic.IT", float(hinge(0.80)) + 0.1, benchmark_version=1, weights_hash="new")
    pop = tr.population_from_results(db, "Synthetic.IT").set_index("model")
    assert len(pop) == 21 and pop.loc[model, "harmonized"] and pop.loc[model, "category"] == "Harmonized"
    assert pop.loc[model, "accuracy"] == pytest.approx(0.80)
    assert pop.loc[model, "score"] == pytest.approx(hinge(0.80) + 0.1)
    assert pop.loc["net0", "accuracy"] == pytest.approx(table.loc[0, "accuracy"])
    assert pop.loc["net0", "error"] == pytest.approx(0.01)
    result = tr.analyze_tradeoff(pop.reset_index(), n_bootstrap=100)
    assert result.n_fit == 20 and model in result.breakers()
    # a registry model without a recorded accuracy takes the registry's top-1 and category
    import harmonized_models
    entry = harmonized_models.get_entry("efficientnet_lite0")
    db.record("efficientnet_lite0", "Synthetic.IT", 0.5, benchmark_version=1, weights_hash="w")
    row = tr.population_from_results(db, "Synthetic.IT").set_index("model").loc["efficientnet_lite0"]
    assert row["accuracy"] == pytest.approx(entry.top1) and row["category"] == entry.category
    assert row["harmonized"] == entry.harmonized
    # a model with neither a recorded accuracy nor a registry entry is left out, with a note naming it
    db.record("mystery-net", "Synthetic.IT", 0.5, benchmark_version=1, weights_hash="w")
    pop = tr.population_from_results(db, "Synthetic.IT")
    assert "mystery-net" not in set(pop["model"]) and len(pop) == 22
    assert [model for model, _ in pop.attrs["left_out"]] == ["mystery-net"]
    assert "'mystery-net' has no top-1" in pop.attrs["left_out"][0][1]
    assert "1 model(s) without a top-1 accuracy left out: mystery-net" in tr.left_out_note(pop)


def test_population_from_leaderboard_and_combined():
    board = lb.load_leaderboard(SNAPSHOT)
    public = tr.population_from_leaderboard(board, "MajajHong2015.IT-pls")
    assert len(public) == 429 and public["model"].is_unique
    assert public["accuracy"].between(0, 1).all() and np.isfinite(public["score"]).all()
    assert (public["category"] == "Unknown").sum() > 200  # anonymised submissions
    assert tr.leaderboard_category("resnext101_32x8d_wsl") == "Extra data"
    assert tr.leaderboard_category("resnet50_robust_l2_eps1") == "Robust"
    assert tr.leaderboard_category("Model 1234") == "Unknown"
    filtered = tr.population_from_leaderboard(board, "MajajHong2015.IT-pls", min_accuracy=0.36,
                                              exclude_anonymous=True)
    assert filtered["accuracy"].min() >= 0.36 and not filtered["model"].map(tr.is_anonymous).any()
    assert "bagnet9" in set(public["model"])
    local = pd.DataFrame({"model": ["bagnet9"], "accuracy": [0.5], "score": [0.4], "harmonized": [False]})
    combined = tr.combine_populations(local, public)
    assert combined["model"].is_unique and "bagnet9 (leaderboard)" in set(combined["model"])
    assert len(combined) == 430


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------
def test_cli_tradeoff_on_the_leaderboard(tmp_path, capsys):
    plot = tmp_path / "majaj.svg"
    assert main(["tradeoff", "--leaderboard", str(SNAPSHOT), "--benchmark", "MajajHong2015.IT-pls", "--json",
                 "--resamples", "50", "--plot", str(plot)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert tuple(data) == tr.JSON_KEYS and data["n_models"] == 429
    assert data["benchmark"] == "MajajHong2015.IT-pls" and plot.stat().st_size > 0
    assert main(["tradeoff", "--leaderboard", str(SNAPSHOT), "--benchmark", "MajajHong2015.IT-pl"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_cli_tradeoff_on_the_results_database(tmp_path, capsys):
    db = _results_db(tmp_path, population(n=20))
    assert main(["tradeoff", "--results", str(db.path), "--benchmark", "Synthetic.IT", "--resamples", "50",
                 "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "peak accuracy" in out and "20 non-harmonized" in out
    # --json reports which interval was used; --interval confidence (frontier only) flags more models
    flagged = {}
    for interval in ("prediction", "confidence"):
        extra = [] if interval == "prediction" else ["--interval", interval]
        assert main(["tradeoff", "--results", str(db.path), "--benchmark", "Synthetic.IT", "--resamples", "50",
                     "--json", *extra]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["interval"] == interval
        flagged[interval] = sum(m["breaks_tradeoff"] for m in data["models"])
    assert flagged["confidence"] > flagged["prediction"]
    with pytest.raises(SystemExit):
        main(["tradeoff", "--results", str(db.path), "--benchmark", "Synthetic.IT", "--interval", "credible"])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["tradeoff", "--results", str(db.path)]) == 2
    assert "--benchmark is required" in capsys.readouterr().err
    assert main(["tradeoff", "--results", str(tmp_path / "none.sqlite"), "--benchmark", "X"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_tradeoff_on_results_and_leaderboard(tmp_path, capsys, monkeypatch):
    """Both sources: our registry model joins the public population; --leaderboard without PATH uses the env var."""
    import harmonized_models

    monkeypatch.setenv(lb.LEADERBOARD_ENV, str(SNAPSHOT))
    db = ResultsDB(tmp_path / "results.sqlite")
    db.record("efficientnet_lite0", "MajajHong2015.IT-pls", 0.50, benchmark_version=4, weights_hash="w")
    assert main(["tradeoff", "--results", str(db.path), "--leaderboard", "--benchmark", "MajajHong2015.IT-pls",
                 "--resamples", "30", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_models"] == 430
    ours = next(m for m in data["models"] if m["model"] == "efficientnet_lite0")
    assert ours["source"] == "results" and ours["in_fit"]
    assert ours["accuracy"] == pytest.approx(harmonized_models.get_entry("efficientnet_lite0").top1)


# ---------------------------------------------------------------------------------------------------------------------
# issue 15: families, the upper frontier, the two-lines test, Holm, every choice shown
# ---------------------------------------------------------------------------------------------------------------------

FAMILY_CASES = {
    "mobilenet_v2_1.0_224-tf": "mobilenet", "mobilenet_v1_0.25_128": "mobilenet",
    "resnet-50-robust": "resnet", "resnet50 (#1369)": "resnet", "imagenet_l2_3_0": "resnet",
    "AdvProp_efficientnet-b4": "efficientnet", "effnetb1_272x240": "efficientnet",
    "resnext101_32x8d_wsl": "resnext", "SWSL_resnext101_32x8d": "resnext", "antialiased-rnext101_32x8d": "resnext",
    "BiT-S-R50x1": "bit", "inception_resnet_v2": "inception", "xception-keras": "xception", "CORnet-S": "cornet",
    "voneresnet-50-non_stochastic": "vonenet", "Model 123": "anonymous:Model 123",
    "regnety_040.ra3_in1k": "regnet",          # not in the table: timm's own module
    "mystery-net (#12)": "mystery-net",        # unknown: its own family, the leaderboard's (#id) suffix dropped
}


def test_family_assignment_on_a_fixed_name_list(tmp_path):
    assert dict(fam.assign_families(FAMILY_CASES)) == FAMILY_CASES
    # a user's table wins, by exact name or by the name without its (#id)
    table = tmp_path / "families.csv"
    table.write_text("model,family\nmystery-net,resnet\nCORnet-S,cornet-s\n")
    overrides = fam.read_family_overrides(table)
    assert fam.family_of("mystery-net (#12)", overrides) == "resnet" and fam.family_of("CORnet-S", overrides) == \
        "cornet-s"
    # the leaderboard's named models with top-1 >= 0.36: MobileNets are one family, anonymised models their own
    board = lb.load_leaderboard(SNAPSHOT)
    named = tr.population_from_leaderboard(board, "MajajHong2015.IT-pls", min_accuracy=0.36, exclude_anonymous=True)
    counts = named["family"].value_counts()
    assert len(named) == 141 and len(counts) == 22 and counts["mobilenet"] == 38 and counts["resnet"] == 31
    everyone = tr.population_from_leaderboard(board, "MajajHong2015.IT-pls")
    anonymous = everyone["model"].map(tr.is_anonymous)
    assert everyone.loc[anonymous, "family"].is_unique


@pytest.mark.parametrize("text, message", [
    ("name,family\na,b\n", "needs the columns model,family"),
    ("model,family\na,\n", "line 2: fields 'model' and 'family' must both be non-empty"),
    ("model,family\na,b\na,c\n", "line 3: model 'a' is given two families"),
    (b"model,family\n\xff\xfe,b\n", "is not UTF-8"),
])
def test_family_table_errors_are_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "families.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(fam.FamilyTableError, match=message):
        fam.read_family_overrides(path)
    assert main(["tradeoff", "--leaderboard", str(SNAPSHOT), "--families", str(path), "--resamples", "10"]) == 2
    err = capsys.readouterr().err
    assert message.split(":")[0].split("(")[0] in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _clustered_hinge(seed: int, n_families: int = 24, size: int = 6):
    """Models in families: a family shares its accuracy (within 0.015) and a score offset (sd 0.03, 6x the model
    noise), as architecture variants do. Truth: the hinge (0.70, 0.50, +0.8, -1.0)."""
    rng = np.random.default_rng(seed)
    family = np.repeat(np.arange(n_families), size)
    x = rng.uniform(0.45, 0.90, n_families)[family] + rng.normal(0, 0.015, n_families * size)
    y = (hinge(x, 0.70, 0.50, 0.8, -1.0) + rng.normal(0, 0.03, n_families)[family]
         + rng.normal(0, 0.005, n_families * size))
    return x, y, family.astype(str)


def test_family_bootstrap_covers_the_truth_under_clustered_errors_and_the_model_bootstrap_does_not():
    truth = np.array([0.70, 0.50, 0.8, -1.0])      # breakpoint, level, slope below, slope above
    cover = {"families": np.zeros(4), "models": np.zeros(4)}
    replicates = 40
    for replicate in range(replicates):
        x, y, family = _clustered_hinge(replicate)
        grid = tr.breakpoint_grid(x, 3, 101)
        for unit in cover:
            weights = tr.bootstrap_weights(family, 200, np.random.default_rng(replicate), unit)
            params = tr._bootstrap_hinge(x, y, grid, weights, 3)
            low, high = np.nanquantile(params, [0.025, 0.975], axis=0)
            cover[unit] += (low <= truth) & (truth <= high)
    families, models = cover["families"] / replicates, cover["models"] / replicates
    assert (families >= 0.85).all(), families     # measured 0.95 0.875 0.90 0.90
    assert (models <= 0.75).all(), models         # measured 0.625 0.55 0.50 0.55: far too narrow
    # a family draw brings all its members: weights are constant within a family and sum to whole families
    weights = tr.bootstrap_weights(np.array(["a", "a", "b", "c", "c", "c"]), 50, np.random.default_rng(0),
                                   "families")
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
    np.testing.assert_array_equal(weights[:, [0, 2, 3]].sum(1), np.full(50, 3))


def test_analysis_reports_both_bootstrap_units_side_by_side():
    x, y, family = _clustered_hinge(7)
    table = pd.DataFrame({"model": [f"m{i}" for i in range(len(x))], "accuracy": x, "score": y, "family": family})
    result = tr.analyze_tradeoff(table, n_bootstrap=200, seed=0)
    data = result.to_json()
    assert tuple(data) == tr.JSON_KEYS
    assert data["bootstrap"] == "families" and data["n_models"] == 144 and data["n_families"] == 24
    assert set(data["intervals"]) == {"families", "models"}
    width = {unit: np.diff(data["intervals"][unit]["slope_above_ci"])[0] for unit in ("families", "models")}
    assert width["families"] > 1.3 * width["models"]
    assert data["peak_ci"] == data["intervals"]["families"]["peak_ci"]
    assert data["two_lines"]["se"] == "CR1" and data["two_lines"]["df"] == 23
    by_models = tr.analyze_tradeoff(table, n_bootstrap=200, seed=0, bootstrap="models").to_json()
    assert by_models["peak_ci"] == by_models["intervals"]["models"]["peak_ci"]
    assert by_models["two_lines"]["se"] == "HC3"
    with pytest.raises(tr.TradeoffInputError, match="only 1 families.*--bootstrap models"):
        tr.analyze_tradeoff(table.assign(family="one"), n_bootstrap=20)
    with pytest.raises(tr.TradeoffInputError, match="bootstrap must be one of"):
        tr.analyze_tradeoff(table, bootstrap="clusters")


def _envelope_population(seed: int, n: int = 160):
    """A planted upper envelope: flat after 0.72 (the best models do not get worse), while the typical shortfall
    below it grows with accuracy (exponential, scale 0.02 + 0.1 (x - 0.4)). The 90 % quantile curve is then the
    hinge (0.72, 0.55 - 0.0105 * s(0.72), +0.8 - 0.0105, -0.0105); the mean curve declines above 0.72 (-0.1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.40, 0.90, n)
    scale = 0.02 + 0.1 * (x - 0.4)
    y = hinge(x, 0.72, 0.55, 0.8, 0.0) - rng.exponential(scale)
    return pd.DataFrame({"model": [f"m{i}" for i in range(n)], "accuracy": x, "score": y})


UPPER_Q = -math.log(0.9) * 0.1          # 0.9 quantile of the shortfall: scale * ln(1/0.9); its slope in x


def test_quantile_hinge_recovers_a_planted_upper_envelope():
    table = _envelope_population(0)
    x, y = table["accuracy"].to_numpy(), table["score"].to_numpy()
    upper = tr.fit_quantile_hinge(x, y, tau=0.9)
    assert upper.breakpoint == pytest.approx(0.72, abs=0.03)
    assert upper.slope_above == pytest.approx(-UPPER_Q, abs=0.1) and upper.slope_below == pytest.approx(0.8, abs=0.15)
    mean = tr.fit_hinge(x, y)
    assert mean.slope_above < upper.slope_above - 0.05     # the mean curve declines, the envelope does not
    # the vectorised (majorise-minimise) profile agrees with the exact linear programme at every candidate
    grid = tr.breakpoint_grid(x, 3, 21)
    loss, _ = tr._profile_quantile(x, y, np.ones((1, len(x))), grid, 0.9, 3)
    exact = np.array([tr._quantile_at(x, y, c, 0.9)[0] for c in grid])
    np.testing.assert_allclose(loss[0], exact, rtol=3e-3)
    # about 90 % of the models lie below the fitted upper frontier
    assert (y <= upper(x)).mean() == pytest.approx(0.9, abs=0.02)
    # through the analysis: the upper frontier's bootstrap interval holds the envelope's slope, not the mean's
    result = tr.analyze_tradeoff(table, n_bootstrap=100, seed=0, frontier="upper", bootstrap="models")
    assert result.frontier_kind == "upper" and result.frontier == upper
    assert result.slope_above_ci[0] <= -UPPER_Q <= result.slope_above_ci[1]
    assert result.peak_ci[0] <= 0.72 <= result.peak_ci[1]
    data = result.to_json()
    assert data["frontier"] == "upper" and set(data["curves"]) == {"mean", "upper"}
    assert data["curves"]["upper"]["slope_above"] == pytest.approx(upper.slope_above)


def _two_lines_rate(truth, replicates: int, n: int = 120, noise: float = 0.03, seed: int = 0) -> float:
    hits = 0
    for replicate in range(replicates):
        rng = np.random.default_rng(seed + replicate)
        x = rng.uniform(0.4, 0.9, n)
        hits += tl.two_lines_test(x, truth(x) + rng.normal(0, noise, n)).p < 0.05
    return hits / replicates


def test_two_lines_test_size_on_plateau_and_monotone_truths_and_power_on_an_inverted_u():
    replicates = 150
    slack = 2 * math.sqrt(0.05 * 0.95 / replicates)    # two Monte-Carlo standard errors
    plateau = _two_lines_rate(lambda x: 0.3 + 0.8 * np.minimum(x - 0.65, 0), replicates)
    monotone = _two_lines_rate(lambda x: 0.3 + 0.4 * x, replicates, seed=1000)
    assert plateau <= 0.05 + slack and monotone <= 0.05 + slack, (plateau, monotone)   # measured 0.05, 0.027
    power = _two_lines_rate(lambda x: hinge(x, 0.7, 0.5, 0.4, -0.4), 60, seed=2000)
    assert power >= 0.8, power


def test_two_lines_test_on_a_known_inverted_u_and_clustered_errors():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.4, 0.9, 100)
    test = tl.two_lines_test(x, hinge(x, 0.7, 0.5, 0.8, -1.0) + rng.normal(0, 0.01, 100))
    assert test.inverted_u and test.p < 1e-6 and test.p == max(test.p_below, test.p_above)
    assert 0.6 < test.breakpoint < 0.8 and test.flat_region[0] <= test.breakpoint <= test.flat_region[1]
    # Robin Hood: with a steep rise and a shallow fall, the break moves left of the flat region's median, giving the
    # weaker (falling) line more models
    weak = tl.two_lines_test(x, hinge(x, 0.7, 0.5, 0.8, -0.15) + rng.normal(0, 0.01, 100))
    assert weak.breakpoint < weak.first_breakpoint and weak.flat_region[0] <= weak.breakpoint
    # a rising line: no inverted U (the "falling" side is a few noisy models at the top)
    rising = tl.two_lines_test(x, 0.3 + 0.4 * x + rng.normal(0, 0.01, 100))
    assert rising.p > 0.05 and rising.p_below < 1e-6
    # a falling line: the same, mirrored
    falling = tl.two_lines_test(x, 0.7 - 0.4 * x + rng.normal(0, 0.01, 100))
    assert falling.p > 0.05 and falling.p_above < 1e-6
    # a slope of the wrong sign has p = 1: a U (its maximum at the left end) is no inverted U
    u_shape = tl.two_lines_test(x, hinge(x, 0.7, 0.5, -0.8, 1.0) + rng.normal(0, 0.01, 100))
    assert u_shape.p_below == 1.0 and u_shape.p == 1.0 and not u_shape.inverted_u
    # family-clustered errors: CR1 standard errors are wider than HC3 ones, with families - 1 degrees of freedom
    family, y = np.repeat(np.arange(20), 5), None
    y = hinge(x, 0.7, 0.5, 0.8, -1.0) + rng.normal(0, 0.03, 20)[family] + rng.normal(0, 0.005, 100)
    clustered, plain = tl.two_lines_test(x, y, clusters=family), tl.two_lines_test(x, y)
    assert clustered.df == 19 and clustered.se_kind == "CR1" and plain.se_kind == "HC3"


def test_holm_on_a_hand_case():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04): in input order
    np.testing.assert_allclose(tl.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(tl.holm([0.5, 0.9]), [1.0, 1.0])     # step-down: never below an earlier one
    np.testing.assert_allclose(tl.holm([0.2, 0.01]), [0.2, 0.02])
    np.testing.assert_allclose(tl.holm([0.02]), [0.02])


def test_sensitivity_output_shape_and_plot(tmp_path):
    def make(benchmark, version, minimum, exclude_anonymous):
        x, y, family = _clustered_hinge({"A": 1, "B": 2}[benchmark] + (version or 0))
        table = pd.DataFrame({"model": [f"m{i}" for i in range(len(x))], "accuracy": x, "score": y,
                              "family": family})
        if exclude_anonymous:
            table = table.iloc[::2]
        return table[table["accuracy"] >= minimum] if minimum < 0.8 else table.head(5)

    sweep = tr.sensitivity(make, {"A": [1], "B": [1, 2]}, min_accuracies=(0.30, 0.50, 0.85),
                           anonymous=("in", "out"), n_bootstrap=30, seed=0)
    assert tuple(sweep.columns) == tr.SENSITIVITY_COLUMNS
    assert len(sweep) == 3 * 3 * 2 * 2      # (benchmark, version) x min accuracy x anonymised x bootstrap unit
    failed = sweep[sweep["min_accuracy"] == 0.85]
    assert failed["peak"].isna().all() and failed["note"].str.contains("at least").all()
    ok = sweep[sweep["min_accuracy"] < 0.85]
    assert ok["peak"].notna().all() and (ok["peak_low"] <= ok["peak_high"]).all()
    assert (ok["n_families"] == 24).all() or (ok["n_families"] <= 24).all()
    # Holm across the three (benchmark, version) analyses of the same choice
    for _, group in ok.groupby(["min_accuracy", "anonymous", "bootstrap"]):
        assert len(group) == 3
        np.testing.assert_allclose(group["two_lines_p_holm"], tl.holm(group["two_lines_p"]))
    text = tr.format_sensitivity(sweep)
    assert len(text.splitlines()) == len(sweep) + 2
    png = tr.plot_sensitivity(sweep, tmp_path / "sensitivity.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sensitivity_on_the_leaderboard(capsys, tmp_path):
    assert main(["tradeoff", "--leaderboard", str(SNAPSHOT), "--benchmark", "Sanghavi2020.IT-pls", "--sensitivity",
                 "--min-accuracy-sweep", "0.36,0.6", "--resamples", "20", "--json",
                 "--plot", str(tmp_path / "s.png")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 * 2 * 2 and {row["version"] for row in rows} == {2}
    assert {(row["min_accuracy"], row["anonymous"], row["bootstrap"]) for row in rows} == {
        (m, a, b) for m in (0.36, 0.6) for a in ("in", "out") for b in ("families", "models")}
    named = [row for row in rows if row["anonymous"] == "out" and row["min_accuracy"] == 0.36]
    assert {row["n_models"] for row in named} == {141} and {row["n_families"] for row in named} == {22}
    assert (tmp_path / "s.png").stat().st_size > 10_000
    with pytest.raises(SystemExit):
        main(["tradeoff", "--leaderboard", str(SNAPSHOT), "--sensitivity", "--min-accuracy-sweep", "0.3,x"])
    assert "expected comma-separated fractions" in capsys.readouterr().err


README_DB_MODELS = ("resnet18.tv_in1k", "resnet50.tv_in1k", "resnet50.a1_in1k", "convnext_tiny.fb_in1k",
                    "efficientnet_b0.ra_in1k", "efficientnet_lite0", "vgg16.tv_in1k", "densenet121.tv_in1k",
                    "mobilenetv3_large_100.ra_in1k", "regnety_032.ra_in1k", "deit_small_patch16_224.fb_in1k",
                    "inception_v3.tv_in1k")


def _sweep_db(tmp_path) -> ResultsDB:
    """A results database like a sweep's: registry models (their top-1 from the registry) scored on our two IT
    benchmarks, plus a randomly initialised network, which has no top-1."""
    import harmonized_models

    db = ResultsDB(tmp_path / "results.sqlite")
    rng = np.random.default_rng(0)
    for model in README_DB_MODELS:
        top1 = harmonized_models.get_entry(model).top1
        for benchmark in ("Arcaro2020.IT-residual_pls", "Arcaro2020.IT-pls"):
            db.record(model, benchmark, float(hinge(top1) - 0.2 + rng.normal(0, 0.01)), benchmark_version=2,
                      weights_hash="w", error=0.01)
    db.record("efficientnet_lite0-random_init_seed0", "Arcaro2020.IT-residual_pls", 0.3, benchmark_version=2,
              weights_hash="w")
    return db


def test_readme_tradeoff_example_on_a_sweep_database(tmp_path, capsys):
    """README: brainscore tradeoff --results DB --benchmark Arcaro2020.IT-residual_pls (and -pls)."""
    db = _sweep_db(tmp_path)
    assert main(["tradeoff", "--results", str(db.path), "--benchmark", "Arcaro2020.IT-residual_pls",
                 "--bootstrap", "models", "--resamples", "50"]) == 0
    captured = capsys.readouterr()
    assert "12 non-harmonized in the fit" in captured.out and "two-lines test" in captured.out
    assert "efficientnet_lite0-random_init_seed0" in captured.err and "without a top-1 accuracy left out" in \
        captured.err
    assert main(["tradeoff", "--results", str(db.path), "--benchmark",
                 "Arcaro2020.IT-residual_pls,Arcaro2020.IT-pls", "--resamples", "30", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["results"]
    assert [d["benchmark"] for d in data] == ["Arcaro2020.IT-residual_pls", "Arcaro2020.IT-pls"]
    assert all(d["n_models"] == 12 and d["n_families"] >= 8 for d in data)
    ps = [d["two_lines"]["p"] for d in data]
    np.testing.assert_allclose([d["two_lines"]["p_holm"] for d in data], tl.holm(ps))
    # the version filter: a version the database does not hold is one clear error
    assert main(["tradeoff", "--results", str(db.path), "--benchmark", "Arcaro2020.IT-pls", "--version", "1"]) == 2
    assert "has version(s) 2" in capsys.readouterr().err


def test_readme_tradeoff_example_on_the_leaderboard_with_both_curves(tmp_path, capsys):
    """README: two benchmarks, named models with top-1 >= 0.36, --frontier upper, --bootstrap, --families."""
    families = tmp_path / "my_families.csv"
    families.write_text("model,family\nCORnet-S,resnet\nCORnet-Z,resnet\n")
    plot = tmp_path / "tradeoff.png"
    assert main(["tradeoff", "--leaderboard", str(SNAPSHOT), "--benchmark",
                 "Sanghavi2020.IT-pls,SanghaviJozwik2020.IT-pls", "--min-accuracy", "0.36", "--exclude-anonymous",
                 "--frontier", "upper", "--bootstrap", "models", "--families", str(families), "--resamples", "20",
                 "--plot", str(plot), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["benchmark"] for r in results] == ["Sanghavi2020.IT-pls", "SanghaviJozwik2020.IT-pls"]
    for r in results:
        assert r["frontier"] == "upper" and r["bootstrap"] == "models" and set(r["curves"]) == {"mean", "upper"}
        assert r["n_families"] == 21          # CORnet moved into the ResNets
        assert r["peak_ci"] == r["intervals"]["models"]["peak_ci"] and "families" in r["intervals"]
        assert next(m for m in r["models"] if m["model"] == "CORnet-S")["family"] == "resnet"
    np.testing.assert_allclose([r["two_lines"]["p_holm"] for r in results],
                               tl.holm([r["two_lines"]["p"] for r in results]))
    assert sorted(p.name for p in tmp_path.glob("tradeoff_*.png")) == [
        "tradeoff_Sanghavi2020.IT-pls.png", "tradeoff_SanghaviJozwik2020.IT-pls.png"]


def test_cli_sensitivity_on_a_sweep_database(tmp_path, capsys):
    """--sensitivity from our own results: no anonymised models, the database's benchmark versions."""
    db = _sweep_db(tmp_path)
    assert main(["tradeoff", "--results", str(db.path), "--benchmark", "Arcaro2020.IT-residual_pls",
                 "--sensitivity", "--min-accuracy-sweep", "0.30,0.76", "--resamples", "20", "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert len(rows) == 2 * 2 and {row["anonymous"] for row in rows} == {"in"} and {row["version"] for row in rows} \
        == {"2"}
    assert {row["n_models"] for row in rows if row["min_accuracy"] == 0.30} == {12}
    short = [row for row in rows if row["min_accuracy"] == 0.76]
    assert all(row["peak"] is None and "at least" in row["note"] for row in short)   # 7 models left: too few
    assert "without a top-1 accuracy left out" in captured.err
