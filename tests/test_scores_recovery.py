"""Known-truth checks of what the scores mean, on the full-size simulated twin (issue 11).

``-residual_pls`` must single out the generating network: the generator at its layer reaches a high ceiled score,
while another seed, the generator at layer1, a left-right flipped feature map and another image's features score
clearly lower, and the image-blind predictor scores exactly 0. Written against the twin's public API
(``simulate.build_generator_network``, the sidecar) with margins, not exact numbers.
"""
import json

import numpy as np
import pytest

from benchmarks_it_maps import load_benchmark
from benchmarks_it_maps.benchmarks import arcaro2020 as bm
from benchmarks_it_maps.benchmarks import metric
from benchmarks_it_maps.data import simulate


def _commit(sidecar, identifier, layer, network=None):
    from harmonized_models import model_from_network
    gen = sidecar["generator"]
    preprocessing = dict(image_size=gen["image_size"], mean=gen["mean"], std=gen["std"],
                         interpolation=gen["interpolation"])
    network = network if network is not None else simulate.build_generator_network(sidecar)
    return model_from_network(network, identifier, preprocessing, layer, visual_degrees=8.0)


def _other_seed(sidecar, seed=123):
    other = json.loads(json.dumps(sidecar))
    other["generator"]["weights_seed"] = seed
    return other


@pytest.fixture(scope="module")
def m2ml_controls(sim_full):
    """Ceiled -residual_pls and -pls scores of the generator and its controls on the full twin's M2ML site (the data
    home points at the full twin only while they are computed, so no other test sees it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BRAINSCORE_ITMAPS_HOME", str(sim_full["home"]))
        return _controls(sim_full)


def _controls(sim_full) -> dict:
    sidecar = sim_full["sidecar"]
    layer = sidecar["generator"]["layer"]
    network = simulate.build_generator_network(sidecar)
    models = {"generator": _commit(sidecar, "gen", layer, network),
              "other_seed": _commit(_other_seed(sidecar), "seed123", layer),
              "layer1": _commit(sidecar, "gen-layer1", "layer1", network)}
    out = {}
    for suffix in ("residual_pls", "pls"):
        benchmark = load_benchmark(f"Arcaro2020sim.M2ML-{suffix}")
        benchmark.feature_cache = {}
        scores = {name: benchmark(model) for name, model in models.items()}
        n_img, grid, _, n_chan = benchmark.data.targets.shape
        targets = benchmark.data.targets.reshape(n_img, grid * grid, n_chan)
        features, _ = benchmark.model_features(models["generator"], benchmark.feature_cache)
        flipped = features.reshape(n_img, grid, grid, -1)[:, :, ::-1].reshape(features.shape)
        derived = {"flipped_map": flipped, "other_image": np.roll(features, 1, axis=0)}
        raw = {name: float(s.attrs["raw"]) for name, s in scores.items()}
        for name, feats in derived.items():
            raw[name] = metric.maps_fit(metric.loio_pls(feats, targets).predictions, targets,
                                        residual=benchmark.residual).score
        raw["position_only"] = metric.maps_fit(metric.training_mean_maps(targets), targets,
                                               residual=benchmark.residual).score
        # the benchmark's own floor attrs are these controls
        assert scores["generator"].attrs["shuffled_image"] == pytest.approx(raw["other_image"], abs=1e-9)
        assert scores["generator"].attrs["position_only"] == pytest.approx(raw["position_only"], abs=1e-12)
        out[suffix] = dict(scores=scores, raw=raw, ceiling=benchmark.ceiling)
    return out


def _ceiled(raw: float, ceiling) -> float:
    return bm.ceiled_value(raw, float(ceiling))[0]


def test_residual_pls_singles_out_the_generator(m2ml_controls):
    result = m2ml_controls["residual_pls"]
    ceiled = {name: round(_ceiled(raw, result["ceiling"]), 3) for name, raw in result["raw"].items()}
    # measured on the seed-0 twin (issue 12's twin: grey surround, Gaussian fields), residual ceiling with the full
    # data's base: generator .687, other seed .413, layer1 .237, flipped .088, other image .006
    assert ceiled["generator"] >= 0.65, ceiled
    assert float(result["scores"]["generator"]) == pytest.approx(ceiled["generator"], abs=1e-3)
    assert result["raw"]["position_only"] == 0.0
    assert ceiled["other_seed"] < ceiled["generator"] - 0.2, ceiled
    for control in ("layer1", "flipped_map", "other_image"):
        assert ceiled[control] < ceiled["generator"] - 0.4, ceiled
    assert result["ceiling"].attrs["method"].startswith("split_half") and "residual" in \
        result["ceiling"].attrs["method"]


def test_plain_pls_floor_is_high_and_residual_separates_better(m2ml_controls):
    """The image-blind floor of -pls is far above 0 (the shared position profile), and -residual_pls separates the
    generator from the controls by a wider margin than -pls."""
    plain, residual = m2ml_controls["pls"], m2ml_controls["residual_pls"]
    plain_ceiled = {n: _ceiled(r, plain["ceiling"]) for n, r in plain["raw"].items()}
    residual_ceiled = {n: _ceiled(r, residual["ceiling"]) for n, r in residual["raw"].items()}
    assert plain_ceiled["position_only"] > 0.3, plain_ceiled
    for control in ("other_seed", "layer1", "flipped_map", "other_image"):
        assert residual_ceiled["generator"] - residual_ceiled[control] > \
            plain_ceiled["generator"] - plain_ceiled[control], (control, plain_ceiled, residual_ceiled)


@pytest.fixture(scope="module")
def on_the_twins_screen(sim_full):
    """IT-residual_pls with the twin's own screen: the image shown inside the grey border the twin's neurons saw
    (``surround`` = margin / image size from the sidecar), the network at the resolution the twin ran it (image
    size + 2 margins, so the image keeps its pixels and the layer's cell lattice)."""
    sidecar = sim_full["sidecar"]
    gen = sidecar["generator"]
    fraction = gen["margin_px"] / gen["image_size"]
    preprocessing = dict(image_size=gen["image_size"] + 2 * gen["margin_px"], mean=gen["mean"], std=gen["std"],
                         interpolation=gen["interpolation"])
    from harmonized_models import model_from_network
    models = {"generator": model_from_network(simulate.build_generator_network(sidecar), "gen-screen",
                                              preprocessing, gen["layer"], visual_degrees=8.0),
              "other_seed": model_from_network(simulate.build_generator_network(_other_seed(sidecar)),
                                               "seed123-screen", preprocessing, gen["layer"], visual_degrees=8.0)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BRAINSCORE_ITMAPS_HOME", str(sim_full["home"]))
        benchmark = load_benchmark("Arcaro2020sim.IT-residual_pls", surround=fraction)
        return {name: benchmark(model) for name, model in models.items()}


def test_generator_shown_the_twins_screen_reaches_the_target(on_the_twins_screen):
    """The default maps protocol shows the image without a surround, so at the grid's edge positions (where half of
    each field lies on the grey screen) the generator's features see zero padding: it reaches .69-.75 (above).
    Shown the twin's screen it reaches the issue's >= 0.8 on the composite. Measured (seed 0): IT .831; M1PL .868,
    M1ML .865, M2ML .796 (9 x 9 grid: 32 of its 81 positions are on the image edge); other seed IT about .46."""
    generator, other = on_the_twins_screen["generator"], on_the_twins_screen["other_seed"]
    assert float(generator) >= 0.8, generator.attrs["site_scores"]
    sites = generator.attrs["site_scores"]
    assert sites["Arcaro2020sim.M1PL-residual_pls"] >= 0.85 and sites["Arcaro2020sim.M1ML-residual_pls"] >= 0.85
    assert sites["Arcaro2020sim.M2ML-residual_pls"] >= 0.78, sites
    assert float(other) < float(generator) - 0.2, (float(other), float(generator))
    assert generator.attrs["surround"] == pytest.approx(64 / 224)
    assert 0.0 <= float(generator) <= 1.0


# ---------------------------------------------------------------- the no-repetition ceiling against the truth
@pytest.fixture(scope="module")
def released_full(sim_full, tmp_path_factory):
    """The full twin exported in the released layout (trial-summed counts per 1-ms bin, no repetition axis) and
    imported into its own data home."""
    from benchmarks_it_maps.data import assemblies as data
    from benchmarks_it_maps.data import released_layout
    folder = tmp_path_factory.mktemp("released_full")
    export = released_layout.export_released_layout(sim_full["archive"], folder / "Arcaro2020")
    data.import_arcaro2020(export, home=folder / "home")
    return folder / "home"


def _oracle(sidecar, site_data, site):
    """Reliability on the benchmark's scale from the truth: per image, median over channels of r^2 between the
    noiseless maps and the data, mean over images."""
    images = [site_data.stimulus_set.get_stimulus(sid) for sid in site_data.stimulus_ids]
    truth = simulate.generator_maps(sidecar, images, site)
    n_img, grid, _, n_chan = site_data.targets.shape
    r = metric.pearson_maps(truth.reshape(n_img, grid * grid, n_chan),
                            site_data.targets.reshape(n_img, grid * grid, n_chan))
    return float(np.mean(np.median(np.sign(r) * r ** 2, axis=1)))


@pytest.mark.parametrize("site", ["M1PL", "M1ML", "M2ML"])
def test_time_split_ceiling_of_the_released_layout_matches_the_truth(site, released_full, sim_full, monkeypatch):
    """Without repetitions the default ceiling (interleaved time bins) lies within 5 % of the with-repetitions
    split-half ceiling and of the oracle, on -pls and on -residual_pls. Measured (seed 0): M1PL .684 vs .683 / .680,
    M1ML .624 vs .627 / .621, M2ML .664 vs .663 / .670; the cross-channel option is 15-19 % low."""
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(sim_full["home"]))
    with_reps = {suffix: load_benchmark(f"Arcaro2020sim.{site}-{suffix}") for suffix in ("pls", "residual_pls")}
    oracle = _oracle(sim_full["sidecar"], with_reps["pls"].data, site)
    split_half = {suffix: float(b.ceiling) for suffix, b in with_reps.items()}
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(released_full))
    released = {suffix: load_benchmark(f"Arcaro2020sim.{site}-{suffix}") for suffix in ("pls", "residual_pls")}
    assert released["pls"].data.trials is None
    ceiling = released["pls"].ceiling
    assert ceiling.attrs["method"] == "time_split_spearman_brown" and ceiling.attrs["block_bins"] == 1
    assert float(ceiling) == pytest.approx(split_half["pls"], rel=0.05)
    assert float(ceiling) == pytest.approx(oracle, rel=0.05)
    assert float(released["residual_pls"].ceiling) == pytest.approx(split_half["residual_pls"], rel=0.05)
    cross = float(load_benchmark(f"Arcaro2020sim.{site}-pls", ceiling_method="cross_channel").ceiling)
    assert cross < 0.9 * oracle  # the former default: far too low (scores above 1 "of ceiling")


def test_smoothed_release_is_detected(sim_small, tmp_path, monkeypatch, capsys):
    """A file smoothed along time before release (Gaussian, 10 ms) has correlated adjacent bins: the time-split
    ceiling refuses in one line naming the site instead of reporting an inflated reliability; unsmoothed, the same
    export interleaves single bins."""
    from benchmarks_it_maps.data import assemblies as data
    from benchmarks_it_maps.data import released_layout
    from benchmarks_it_maps.benchmarks.ceiling import SmoothedTimeCourseError
    for smooth, home in ((10.0, tmp_path / "smoothed"), (0.0, tmp_path / "plain")):
        export = released_layout.export_released_layout(sim_small["archive"], tmp_path / f"export-{smooth:g}",
                                                        smooth_ms=smooth)
        data.import_arcaro2020(export, home=home)
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "plain"))
    assert load_benchmark("Arcaro2020sim.M1ML-pls").ceiling.attrs["block_bins"] == 1
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "smoothed"))
    with pytest.raises(SmoothedTimeCourseError, match=r"^Arcaro2020sim\.M1ML: adjacent time bins are correlated") \
            as error:
        load_benchmark("Arcaro2020sim.M1ML-pls").ceiling
    assert "\n" not in str(error.value) and "cross_channel" in str(error.value)
    # the CLI: one line on stderr, exit code 2, no traceback, nothing recorded
    from benchmarks_it_maps.cli import main
    capsys.readouterr()
    assert main(["score", "--model", "efficientnet_lite0", "--benchmark", "Arcaro2020sim.M1ML-pls", "--no-record",
                 "--device", "cpu", "--results", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "adjacent time bins are correlated" in err[-1] and not any("Traceback" in line for line in err)
    assert not (tmp_path / "none.sqlite").exists()
    with pytest.raises(ValueError, match="exists"):
        released_layout.export_released_layout(sim_small["archive"], tmp_path / "export-0")
