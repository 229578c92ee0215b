"""Known-truth tests on the simulated twin: the generating network must win, wrong models must lose.

Maps protocol: the full-size twin's M2ML site (14 images, 9x9 grid, Poisson noise, 4 repetitions). The generator at
its generating layer reaches >= 0.9 of the split-half ceiling; the same architecture with another seed and the
generator at layer1 score clearly lower.

Shift protocol: a ground truth that follows the shift protocol's own model of the experiment (each neuron reads the
centre of the generator's visual field while the image is shifted), built here from the small twin's images. The
twin's own neurons read the *whole-image* feature map at the grid point; a CNN's response at the centre of a shifted
presentation is not the same thing (strided layers are not shift-equivariant and the surround changes), so on the
twin the shift protocol cannot single out the generator (measured and reported by the issue, not asserted here).
"""
import json

import numpy as np
import pytest

from benchmarks_it_maps import benchmark as bm
from benchmarks_it_maps import load_benchmark, simulate


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
    measured = {name: round(float(score), 3) for name, score in scores.items()}  # generator .959, .842, .667
    assert generator >= 0.9, measured
    assert float(scores["other_seed"]) < generator - 0.05, measured
    assert float(scores["early_layer"]) < generator - 0.15, measured
    # map alignment ranks them the same way
    alignment = {name: score.attrs["alignment"] for name, score in scores.items()}
    assert alignment["generator"] > max(alignment["other_seed"], alignment["early_layer"])


def test_maps_protocol_is_deterministic_and_composite_averages(sim_small):
    sidecar = sim_small["sidecar"]
    layer = sidecar["generator"]["layer"]
    first = load_benchmark("Arcaro2020sim.IT-pls")(_commit(sidecar, "gen-a", layer))
    second = load_benchmark("Arcaro2020sim.IT-pls")(_commit(sidecar, "gen-b", layer))  # fresh objects
    assert abs(float(first) - float(second)) < 1e-10
    assert abs(float(first.attrs["raw"]) - float(second.attrs["raw"])) < 1e-10
    sites = first.attrs["site_scores"]
    assert list(sites) == ["Arcaro2020sim.M1PL-pls", "Arcaro2020sim.M1ML-pls", "Arcaro2020sim.M2ML-pls"]
    assert float(first) == pytest.approx(np.mean(list(sites.values())))
    errors = np.array(list(first.attrs["site_errors"].values()))
    assert float(first.attrs["error"]) == pytest.approx(np.sqrt(np.sum(errors ** 2)) / 3)
    for key in ("raw", "ceiling", "error", "layer", "protocol", "model_identifier", "benchmark_identifier",
                "per_fold", "per_channel", "alignment", "alignment_coarse"):
        assert key in first.attrs, key
    assert first.attrs["benchmark_identifier"] == "Arcaro2020sim.IT-pls" and first.attrs["protocol"] == "maps"


def test_non_spatial_model_points_to_shift_protocol(sim_small):
    model = _commit(sim_small["sidecar"], "gen-pooled", "global_pool")
    with pytest.raises(bm.NoSpatialStructureError, match="Arcaro2020sim.M2ML-shift_pls"):
        load_benchmark("Arcaro2020sim.M2ML-pls")(model)


def test_shift_protocol_recovers_a_shift_generated_truth(use_sim_full):
    """Neurons = noisy low-rank readouts of the generator's IT-layer response at the centre of its visual field, for
    every shifted presentation (8 images of the full twin's M2ML site, 9x9 grid). Small inputs (64 px canvas and
    model input) keep it fast: layer3 is then 4 x 4 cells and the truth reads the 2 x 2 central ones.

    The margins are smaller than under the maps protocol because every network encodes where the grey surround is
    in its field, a spatial signal shared by all models (measured: generator 0.955, other seed 0.883, layer1 0.908).
    """
    sidecar = use_sim_full["sidecar"]
    layer = sidecar["generator"]["layer"]
    full = load_benchmark("Arcaro2020sim.M2ML-shift_pls").data
    stimulus_ids = full.stimulus_ids[:8]
    stimuli = bm.subset_stimulus_set(full.stimulus_set, stimulus_ids, "shift-truth.M2ML", "shift-truth")
    network = simulate.build_generator_network(sidecar)
    generator = _commit(sidecar, "shift-gen", layer, network, visual_degrees=16.0, image_size=64)
    grid, n_img = full.grid_size, len(stimulus_ids)
    shifted = bm.shift_stimulus_set(stimuli, grid, 16.0, full.image_size_deg, canvas_px=64)
    responses = bm.record_responses(generator, full.window, shifted)
    maps = bm.neuroids_to_maps(responses.values, {k: bm.neuroid_coord(responses, k) for k in
                                                  ("channel", "channel_x", "channel_y", "embedding")})
    h, w = maps.shape[-2:]
    centre = maps[:, :, h // 2 - 1:h // 2 + 1, w // 2 - 1:w // 2 + 1].mean(axis=(2, 3))  # 2x2 central cells
    rng = np.random.default_rng(7)
    readout = rng.standard_normal((centre.shape[1], 4)) @ rng.standard_normal((4, 12))
    signal = centre @ readout
    signal = ((signal - signal.mean(0)) / signal.std(0)).reshape(n_img, grid, grid, 12)
    trials = signal[..., None] + 0.3 * rng.standard_normal(signal.shape + (4,))
    truth = bm.SiteData("shift-truth.M2ML", stimulus_ids, trials.mean(-1), trials, np.arange(12), stimuli,
                        full.window, full.image_size_deg, "shift-truth")
    scores = {}
    for name, model in (("generator", generator),
                        ("other_seed", _commit(_other_seed(sidecar), "shift-seed123", layer, visual_degrees=16.0,
                                               image_size=64)),
                        ("early_layer", _commit(sidecar, "shift-gen-layer1", "layer1", network,
                                                visual_degrees=16.0, image_size=64))):
        benchmark = bm.ArcaroSiteBenchmark("Arcaro2020sim", "M2ML", "shift", data=truth, shift_canvas_px=64)
        scores[name] = float(benchmark(model))
    assert scores["generator"] >= 0.9, scores
    assert scores["other_seed"] < scores["generator"] - 0.05, scores
    assert scores["early_layer"] < scores["generator"] - 0.03, scores


def test_ceiling_options(sim_small):
    """Split-half (default with repetitions), cross-channel (default without) and the paper's pairwise ceiling."""
    ceilings = {}
    for method in ("auto", "split_half", "cross_channel", "pairwise"):
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
        "cross_channel_pls"
    alignment = load_benchmark("Arcaro2020sim.M2ML-map_alignment")
    assert alignment.ceiling.attrs["method"] == "split_half_channel_mean"
    # without repetitions: random halves of the channels (on the twin, whose channels are random mixtures of
    # latents, the two halves' mean maps do not agree, so this ceiling is ~0 there and the benchmark says so)
    no_trials_alignment = load_benchmark("Arcaro2020sim.M2ML-map_alignment", data=no_trials.data)
    assert no_trials_alignment._alignment_ceiling("auto").method == "channel_split_half_channel_mean"


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
    assert len(cache) == entries == 2  # features and fit, each computed once
    assert float(second.attrs["raw"]) == first.attrs["alignment"]
    assert float(load_benchmark("Arcaro2020sim.M2ML-map_alignment")(model)) == float(second)  # same as uncached
