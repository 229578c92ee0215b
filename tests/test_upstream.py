"""Fast local scoring of brainscore-vision's neural benchmarks (runs.upstream): the exact PLS solver swapped into an
upstream ``NeuralBenchmark`` gives upstream's stock score within NIPALS' tolerance, and anything else runs stock.

The benchmark is built from the small twin in brainscore-vision's own format (presentation x neuroid assembly with
repetitions, ``internal_consistency`` ceiling, ``load_metric('pls')``), since upstream data cannot be downloaded."""
import json

import numpy as np
import pytest
import torch
from brainscore_vision import load_metric
from brainscore_vision.benchmark_helpers.neural_common import NeuralBenchmark
from brainscore_vision.metric_helpers.xarray_utils import XarrayRegression
from sklearn.cross_decomposition import PLSRegression

from benchmarks_it_maps.benchmarks.pls import ExactPLSRegression
from benchmarks_it_maps.runs import scoring, upstream

#: |stock - exact| allowed on the ceiled and raw scores (median over neuroids, mean over 10 splits). scikit-learn's
#: NIPALS stops at tolerance 1e-6 per component or at 500 iterations (ConvergenceWarning on this twin), so single
#: neuroids differ by up to ~2e-2 in r; the aggregate by less (see benchmarks/RESULTS.md, upstream-format benchmark).
NIPALS_TOLERANCE = 5e-3


def tiny_network() -> torch.nn.Module:
    """A small seeded CNN (256 features) so the stock NIPALS path stays fast in a unit test."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, kernel_size=8, stride=8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())


@pytest.fixture(scope="module")
def model(sim_small):
    from harmonized_models import model_from_network
    return model_from_network(tiny_network(), "tiny-cnn", 64, "3", layers=["3"])


def svd_reference() -> PLSRegression:
    """scikit-learn's PLS2 with exact singular vectors (its ``svd`` algorithm): the answer NIPALS approximates."""
    reference = PLSRegression(n_components=25, scale=False)
    reference.algorithm = "svd"
    return reference


@pytest.fixture(scope="module")
def stock_and_exact(sim_small, model):
    scores = {}
    for name in ("stock", "exact", "svd"):
        benchmark = upstream.twin_neural_benchmark("Arcaro2020sim.M2ML")
        if name == "svd":
            benchmark._similarity_metric.regression._regression = svd_reference()
        scores[name] = (benchmark, scoring.score(model, benchmark, record=False, stock=name != "exact"))
    return scores


def test_twin_benchmark_is_upstream_format(sim_small):
    benchmark = upstream.twin_neural_benchmark("Arcaro2020sim.M2ML")
    assert isinstance(benchmark, NeuralBenchmark) and benchmark.region == "IT"
    assert benchmark._assembly.dims == ("presentation", "neuroid")
    assert benchmark._assembly.sizes == {"presentation": 4 * 25, "neuroid": 32}  # 4 images x 5x5 grid, 32 channels
    ceiling = float(benchmark.ceiling)
    assert 0.3 < ceiling < 1.0  # split-half reliability of a Poisson twin with 4 repetitions


def test_exact_solver_matches_stock_within_nipals_tolerance(stock_and_exact):
    (stock_bench, stock), (exact_bench, exact) = stock_and_exact["stock"], stock_and_exact["exact"]
    assert stock.attrs["regression_solver"] == upstream.STOCK and exact.attrs["regression_solver"] == upstream.EXACT
    assert type(stock_bench._similarity_metric.regression._regression) is PLSRegression
    assert type(exact_bench._similarity_metric.regression._regression) is ExactPLSRegression
    per_neuroid_svd, per_neuroid_exact = stock_and_exact["svd"][1].raw.raw.values, exact.raw.raw.values
    assert per_neuroid_svd.shape == per_neuroid_exact.shape == stock.raw.raw.shape == (10, 32)  # splits x neuroids
    np.testing.assert_allclose(per_neuroid_exact, per_neuroid_svd, rtol=0, atol=1e-6)  # = svd PLS (float32 features)
    assert float(exact) == pytest.approx(float(stock), abs=NIPALS_TOLERANCE)
    assert float(exact.raw) == pytest.approx(float(stock.raw), abs=NIPALS_TOLERANCE)
    assert 0 < float(exact.raw) < 1


def test_accelerate_leaves_other_metrics_stock(sim_small):
    benchmark = upstream.twin_neural_benchmark("Arcaro2020sim.M2ML")
    benchmark._similarity_metric = load_metric("ridge", crossvalidation_kwargs=dict(stratification_coord=None))
    assert upstream.accelerate(benchmark) == upstream.STOCK
    scaled = upstream.twin_neural_benchmark("Arcaro2020sim.M2ML")
    scaled._similarity_metric.regression = XarrayRegression(PLSRegression(n_components=25, scale=True))
    assert upstream.accelerate(scaled) == upstream.STOCK  # the exact solver centres only
    assert type(scaled._similarity_metric.regression._regression) is PLSRegression
    plain = upstream.twin_neural_benchmark("Arcaro2020sim.M2ML")
    assert upstream.accelerate(plain) == upstream.EXACT
    assert upstream.accelerate(plain) == upstream.EXACT  # idempotent
    assert plain._similarity_metric.regression._regression.n_components == 25
    assert upstream.accelerate(object()) == upstream.STOCK


def test_cli_scores_a_registered_upstream_benchmark(sim_small, model, monkeypatch, tmp_path, capsys, request):
    """`brainscore score` with ids that only brainscore-vision's registries know runs the benchmark accelerated, and
    `--stock-pls` keeps upstream's solver; both are stored with their solver in the results DB's attrs. The package's
    brainscore-vision integration makes brainscore-vision's loaders honour registry entries without a plugin folder."""
    import brainscore_vision
    from benchmarks_it_maps import enable_brainscore_integration
    from benchmarks_it_maps.cli import main
    from benchmarks_it_maps.runs.results import ResultsDB
    from benchmarks_it_maps.submission.integration import disable_brainscore_integration
    enable_brainscore_integration()
    request.addfinalizer(disable_brainscore_integration)
    identifier = "Arcaro2020simUpstream.M2ML-pls"
    monkeypatch.setitem(brainscore_vision.benchmark_registry, identifier,
                        lambda: upstream.twin_neural_benchmark("Arcaro2020sim.M2ML", identifier=identifier))
    monkeypatch.setitem(brainscore_vision.model_registry, "tiny-cnn", lambda: model)
    db = tmp_path / "results.sqlite"
    values = {}
    for flags in ([], ["--stock-pls"]):
        assert main(["score", "--model", "tiny-cnn", "--benchmark", identifier, "--json",
                     "--results", str(db)] + flags) == 0
        values[bool(flags)] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["score"]
    assert values[False] == pytest.approx(values[True], abs=NIPALS_TOLERANCE)
    solvers = sorted(row["attrs"]["regression_solver"] for row in ResultsDB(db).rows(benchmark=identifier))
    assert solvers == [upstream.EXACT, upstream.STOCK]
