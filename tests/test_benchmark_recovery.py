"""Known-truth tests on the simulated twin: the generating network must win, wrong models must lose.

The twin makes its neurons with its own pixel-space geometry (data/simulate.py imports no benchmark code), so these
tests fail when the benchmark's readout or the importer's orientation is wrong: flipping the rows of
``readout.sample_feature_maps``' output drops the generator from 0.87 to 0.44, swapping ``imageRF``'s spatial axes
at import to 0.45 (raw / sqrt(reliability), measured before the raw^2 convention: about 0.2 now, far below the
thresholds; mutations made once by hand, see issue 12's report).

Maps protocol: the full-size twin's M2ML site (14 images, 9x9 grid, Poisson noise, 4 repetitions). The generator at
its generating layer reaches a ceiled score >= 0.7 (raw^2 / split-half reliability; not 1: the twin's neurons see the
image in a grey surround through a Gaussian field, which the maps protocol does not model); the same architecture
with another seed and the generator at layer1 score clearly lower.

Shift protocol: a twin whose neurons see each displaced presentation (``simulate_archive(protocol='shift')``),
imported and scored like any twin.
"""
import json

import numpy as np
import pytest

from benchmarks_it_maps.benchmarks import arcaro2020 as bm
from benchmarks_it_maps import load_benchmark
from benchmarks_it_maps.data import simulate


def _commit(sidecar, identifier, layer, network=None, visual_degrees=8.0, image_size=None):
    from harmonized_models import model_from_network
    gen = sidecar["generator"]
    preprocessing = dict(image_size=image_size or gen["image_size"], mean=gen["mean"], std=gen["std"],
                         interpolation=gen["interpolation"])
    network = network if network is not None else simulate.build_generator_network(sidecar)
    return model_from_network(network, identifier, preprocessing, layer, visual_degrees=visual_degrees)


def _other_seed(sidecar, seed=123):
    other = json.loads(json.dumps(sidecar))
    other["generator"]["weights_seed"] = seed
    return other


def test_maps_protocol_recovers_generator(use_sim_full):
    sidecar = use_sim_full["sidecar"]
    layer = sidecar["generator"]["layer"]
    network = simulate.build_generator_network(sidecar)
    scores = {}
    for name, model in (("generator", _commit(sidecar, "gen", layer, network)),
                        ("other_seed", _commit(_other_seed(sidecar), "seed123", layer)),
                        ("early_layer", _commit(sidecar, "gen-layer1", "layer1", network))):
        benchmark = load_benchmark("Arcaro2020sim.M2ML-pls")
        scores[name] = benchmark(model)
    generator = float(scores["generator"])
    assert scores["generator"].attrs["ceiling"].attrs["method"].startswith("split_half")
    # measured: generator 0.754, other seed 0.558, layer1 0.346 (the twin's neurons see the image in a grey surround
    # through a Gaussian field, which the maps protocol does not model, so the generator stays below 1)
    measured = {name: round(float(score), 3) for name, score in scores.items()}
    assert generator >= 0.7, measured
    assert float(scores["other_seed"]) < generator - 0.12, measured
    assert float(scores["early_layer"]) < generator - 0.3, measured
    # map alignment ranks them the same way (measured 0.862, 0.739, 0.574)
    alignment = {name: score.attrs["alignment"] for name, score in scores.items()}
    assert alignment["generator"] > max(alignment["other_seed"], alignment["early_layer"]) + 0.05


def test_maps_protocol_is_deterministic_and_composite_averages(sim_small):
    sidecar = sim_small["sidecar"]
    layer = sidecar["generator"]["layer"]
    first = load_benchmark("Arcaro2020sim.IT-pls")(_commit(sidecar, "gen-a", layer))
    second = load_benchmark("Arcaro2020sim.IT-pls")(_commit(sidecar, "gen-b", layer))  # fresh objects
    assert abs(float(first) - float(second)) < 1e-10
    assert abs(float(first.attrs["raw"]) - float(second.attrs["raw"])) < 1e-10
    sites = first.attrs["site_scores"]
    assert list(sites) == ["Arcaro2020sim.M1PL-pls", "Arcaro2020sim.M1ML-pls", "Arcaro2020sim.M2ML-pls"]
    # one vote per monkey: M1PL and M1ML share monkey 1's half
    assert float(first) == pytest.approx(0.25 * sites["Arcaro2020sim.M1PL-pls"] + 0.25 * sites["Arcaro2020sim.M1ML-pls"]
                                         + 0.5 * sites["Arcaro2020sim.M2ML-pls"])
    assert float(first.attrs["error"]) == float(second.attrs["error"]) > 0  # seeded bootstrap
    for key in ("raw", "ceiling", "error", "layer", "protocol", "model_identifier", "benchmark_identifier",
                "per_fold", "per_channel", "alignment", "alignment_coarse"):
        assert key in first.attrs, key
    assert first.attrs["benchmark_identifier"] == "Arcaro2020sim.IT-pls" and first.attrs["protocol"] == "maps"


@pytest.mark.parametrize("background", [False, True], ids=["in-turn", "background-thread"])
def test_composite_fits_sites_together_as_each_site_alone(sim_small, monkeypatch, background):
    """The composite fits monkey 1's two arrays and every floor in one stacked solve per monkey (in turn on a CPU
    model; on a background thread beside the next monkey's forward pass for a model on an accelerator, forced here);
    each site's score, raw value, folds and floors equal the site benchmark scored alone with every fold refitted on
    its own rows."""
    from benchmarks_it_maps.benchmarks.pls import LeaveOneGroupOutPLS
    sidecar = sim_small["sidecar"]
    model = _commit(sidecar, f"gen-together-{background}", sidecar["generator"]["layer"])
    assert not bm.computes_off_cpu(model)
    monkeypatch.setattr(bm, "computes_off_cpu", lambda candidate: background)
    composite = load_benchmark("Arcaro2020sim.IT-residual_pls")(model)
    monkeypatch.undo()
    monkeypatch.setattr(LeaveOneGroupOutPLS, "cheaper_than_refitting", staticmethod(lambda *args: False))
    weights = bm.site_weights()
    floors = {"shuffled_image": 0.0, "position_only": 0.0}
    for site in bm.SITES:
        alone = load_benchmark(f"Arcaro2020sim.{site}-residual_pls")(model)
        identifier = f"Arcaro2020sim.{site}-residual_pls"
        assert composite.attrs["site_scores"][identifier] == pytest.approx(float(alone), abs=1e-8)
        assert composite.attrs["site_raw"][identifier] == pytest.approx(float(alone.attrs["raw"]), abs=1e-8)
        np.testing.assert_allclose(composite.attrs["per_fold"][identifier], alone.attrs["per_fold"], atol=1e-8)
        for key in floors:
            floors[key] += weights[site] * alone.attrs[key]
    for key, value in floors.items():
        assert composite.attrs[key] == pytest.approx(value, abs=1e-8)
    assert composite.attrs["shuffled_image"] != 0.0


def test_non_spatial_model_points_to_shift_protocol(sim_small):
    model = _commit(sim_small["sidecar"], "gen-pooled", "global_pool")
    with pytest.raises(bm.NoSpatialStructureError, match="Arcaro2020sim.M2ML-shift_pls"):
        load_benchmark("Arcaro2020sim.M2ML-pls")(model)


#: A twin whose neurons follow the shift protocol (simulate_archive(protocol='shift')). A 16 px generator input keeps
#: it fast: layer3 is then a single 1 x 1 cell, i.e. the IT response has no spatial map at all, the case the shift
#: protocol exists for. M1's grid is minimal (only M2ML is scored here).
SIM_SHIFT = dict(seed=0, images=14, grids=(3, 9), repetitions=8, protocol="shift", image_size=16)


@pytest.fixture(scope="module")
def sim_shift_home(tmp_path_factory):
    """The shift twin, simulated and imported into its own data home (never replacing ``sim_small``)."""
    from benchmarks_it_maps.data import assemblies as data
    folder = tmp_path_factory.mktemp("sim_shift")
    archive = simulate.simulate_archive(folder / "Arcaro2020sim.zip", **SIM_SHIFT)
    data.import_arcaro2020(archive, home=folder / "home")
    return folder / "home"


def test_shift_protocol_recovers_generator_of_a_shift_twin(sim_shift_home, monkeypatch):
    """Scored through ``load_benchmark('Arcaro2020sim.M2ML-shift_pls')`` like any twin (14 images, 9x9 grid, Poisson
    noise, 8 repetitions, split-half ceiling). Measured: generator 0.668, other seed 0.206, layer1 0.515."""
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(sim_shift_home))
    sidecar = json.loads((sim_shift_home / "Arcaro2020sim" / "generator.json").read_text())
    gen = sidecar["generator"]
    assert gen["protocol"] == "shift" and gen["shift"]["visual_degrees"] == 16.0
    network = simulate.build_generator_network(sidecar)
    degrees, canvas = gen["shift"]["visual_degrees"], gen["shift"]["canvas_px"]
    scores = {}
    for name, model in (("generator", _commit(sidecar, "shift-gen", gen["layer"], network, visual_degrees=degrees)),
                        ("other_seed", _commit(_other_seed(sidecar), "shift-seed123", gen["layer"],
                                               visual_degrees=degrees)),
                        ("early_layer", _commit(sidecar, "shift-gen-layer1", "layer1", network,
                                                visual_degrees=degrees))):
        benchmark = load_benchmark("Arcaro2020sim.M2ML-shift_pls", shift_canvas_px=canvas)
        scores[name] = benchmark(model)
    assert scores["generator"].attrs["ceiling"].attrs["method"].startswith("split_half")
    assert scores["generator"].attrs["protocol"] == "shift"
    measured = {name: round(float(score), 3) for name, score in scores.items()}
    assert measured["generator"] >= 0.6, measured
    assert measured["other_seed"] < measured["generator"] - 0.3, measured
    assert measured["early_layer"] < measured["generator"] - 0.1, measured


def test_ceiling_options(sim_small):
    """Split-half (default with repetitions), time split (default without), and, as named options, cross-channel and
    the paper's pairwise ceiling (squared onto the reliability scale)."""
    ceilings = {}
    for method in ("auto", "split_half", "time_split", "cross_channel", "pairwise"):
        benchmark = load_benchmark("Arcaro2020sim.M2ML-pls", ceiling_method=method)
        ceilings[method] = benchmark.ceiling
        assert 0 < float(benchmark.ceiling) <= 1 and float(benchmark.ceiling.attrs["error"]) >= 0
    assert float(ceilings["auto"]) == float(ceilings["split_half"])
    assert ceilings["cross_channel"].attrs["method"] == "cross_channel_pls"
    assert ceilings["pairwise"].attrs["method"] == "pairwise_channel_max"
    no_trials = load_benchmark("Arcaro2020sim.M2ML-pls", ceiling_method="split_half")
    no_trials.data.trials = None  # as in the released data (trial averages only)
    with pytest.raises(ValueError, match="needs repeated trials.*cross_channel"):
        no_trials.ceiling
    assert load_benchmark("Arcaro2020sim.M2ML-pls", data=no_trials.data).ceiling.attrs["method"] == \
        "time_split_spearman_brown"
    alignment = load_benchmark("Arcaro2020sim.M2ML-map_alignment")
    assert alignment.ceiling.attrs["method"] == "split_half_spearman_brown_spearman_channel_mean"
    no_trials_alignment = load_benchmark("Arcaro2020sim.M2ML-map_alignment", data=no_trials.data)
    assert no_trials_alignment.ceiling.attrs["method"] == "time_split_spearman_brown_spearman_channel_mean"
    # the former default (random halves of the channels) stays a named option; on the twin, whose channels are
    # random mixtures of latents, the halves' mean maps do not agree, and the benchmark says so in one line
    halves = load_benchmark("Arcaro2020sim.M2ML-map_alignment", data=no_trials.data, ceiling_method="cross_channel")
    try:
        assert halves.ceiling.attrs["method"] == "channel_split_half_channel_mean"
    except ValueError as error:
        assert "M2ML" in str(error) and "no ceiling can be estimated" in str(error) and "\n" not in str(error)


def test_shared_cache_reuses_features_and_fit(sim_small):
    sidecar = sim_small["sidecar"]
    model = _commit(sidecar, "gen-cache", sidecar["generator"]["layer"])
    cache: dict = {}
    pls = load_benchmark("Arcaro2020sim.M2ML-pls")
    alignment = load_benchmark("Arcaro2020sim.M2ML-map_alignment")
    pls.feature_cache = alignment.feature_cache = cache
    first = pls(model)
    entries = len(cache)
    second = alignment(model)
    assert len(cache) == entries == 3  # features, fit and the shuffled-image floor fit, each computed once
    assert float(second.attrs["raw"]) == first.attrs["alignment"]
    assert float(load_benchmark("Arcaro2020sim.M2ML-map_alignment")(model)) == float(second)  # same as uncached


def test_shift_twin_centre_presentation_is_the_whole_image():
    """For the central grid point the shift twin shows the undisplaced image on its canvas: its drive there equals
    the maps twin's drive (without grey margin) at the image centre; off-centre the grey surround changes it."""
    sidecar = simulate.make_sidecar(0, 1, (3, 3), 1, 300)
    sidecar["generator"].update(image_size=32, margin_px=0)
    image = simulate.make_images(0, 1, size=32)["M1"][0][1]
    network = simulate.build_generator_network(sidecar)
    whole, whole_cover = simulate.site_drive(sidecar, "M2ML", [image], 3, network)
    sidecar["generator"]["protocol"] = "shift"
    shifted, shifted_cover = simulate.site_drive(sidecar, "M2ML", [image], 3, network)
    assert shifted.shape == whole.shape == (1, 3, 3, 32)
    np.testing.assert_allclose(shifted[0, 1, 1], whole[0, 1, 1], rtol=1e-5, atol=1e-5)  # float32 batches
    np.testing.assert_allclose(shifted_cover[0, 1, 1], whole_cover[0, 1, 1])
    assert not np.allclose(shifted[0, 0, 0], whole[0, 0, 0], atol=1e-3)  # corners: grey surround, other cells
