"""Accuracy / IT trade-off: frontier fit, bootstrap, per-model scores, metric object, plots and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks_it_maps.analysis import leaderboard as lb
from benchmarks_it_maps.analysis import tradeoff as tr
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
