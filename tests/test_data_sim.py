"""The simulated twin: real layout, Brain-Score objects, and maps after import equal the generator's up to noise."""
import zipfile

import numpy as np
import pytest
import scipy.io
from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly
from brainscore_vision import StimulusSet

from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import simulate


def test_archive_has_the_real_layout(sim_small, tmp_path):
    with zipfile.ZipFile(sim_small["archive"]) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path)
    root = tmp_path / cv.ARCHIVE_TOP_FOLDER
    for member in cv.EXPECTED_MEMBERS + (cv.SIDECAR_NAME,):
        assert f"{cv.ARCHIVE_TOP_FOLDER}/{member}" in names
    for monkey in cv.MONKEYS.values():
        mat = scipy.io.loadmat(root / monkey.mat_path)
        rf, trials, unique = mat[cv.KEY_RESPONSES], mat[cv.KEY_TRIALS], mat[cv.KEY_NAMES]
        assert rf.shape == (5, 5, 300, monkey.n_channels, 4)
        assert trials.shape == rf.shape + (4,) and trials.dtype == np.uint8
        assert unique.shape == (1, 4)  # a 1xN cell
        paths = [unique[0, i][0] for i in range(4)]
        assert all(p.startswith("C:\\") and f"\\{monkey.image_folder}\\" in p for p in paths)
        files = sorted(p.name for p in (root / monkey.image_path).iterdir())
        basenames = [data.windows_basename(p) for p in paths]
        assert sorted(basenames) == files
        # imageRF is the trial mean in spikes/s
        np.testing.assert_allclose(rf, trials.mean(axis=-1) * 1000, rtol=1e-6)
    assert sim_small["sidecar"]["monkeys"]["M1"]["grid_size"] == 5


def test_images_are_distinct_natural_photos():
    images = simulate.make_images(seed=3, n_per_monkey=14)
    arrays = [a for items in images.values() for _, a in items]
    assert len(arrays) == 28 and all(a.shape == (224, 224, 3) and a.dtype == np.uint8 for a in arrays)
    for i in range(len(arrays)):
        for j in range(i):
            assert np.abs(arrays[i].astype(int) - arrays[j]).mean() > 2
    again = simulate.make_images(seed=3, n_per_monkey=2)
    np.testing.assert_array_equal(again["M1"][0][1], images["M1"][0][1])


def test_import_gives_brainscore_objects(sim_small):
    stimulus_set = data.load_stimulus_set("Arcaro2020sim")
    assert isinstance(stimulus_set, StimulusSet) and stimulus_set.identifier == "Arcaro2020sim"
    assert len(stimulus_set) == 8 and stimulus_set["stimulus_id"].is_unique
    assert set(stimulus_set["monkey"]) == {"M1", "M2"} and (stimulus_set["image_size_deg"] == 16).all()
    assert all(stimulus_set.get_stimulus(s).is_file() for s in stimulus_set["stimulus_id"])
    for identifier in sim_small["identifiers"]:
        assembly = data.load_assembly(identifier)
        assert isinstance(assembly, NeuroidAssembly)
        assert assembly.dims == ("presentation", "neuroid", "time_bin")
        site = cv.SITES[identifier.split(".")[1]]
        assert list(assembly["channel"].values) == list(site.channels)
        assert set(assembly["region"].values) == {"IT"} and set(assembly["subregion"].values) == {site.subregion}
        assert assembly.sizes["presentation"] == 4 * 5 * 5 * 4
        assert assembly.attrs["stimulus_set_identifier"] == "Arcaro2020sim"
        assert assembly.attrs["conventions_version"] == cv.CONVENTIONS_VERSION
        assert assembly.attrs["default_window"] == cv.MONKEYS[site.monkey].default_window
        assert set(assembly.attrs["stimulus_set"]["stimulus_id"]) == set(assembly["stimulus_id"].values)
        assert assembly.attrs["stimulus_set"].identifier == f"Arcaro2020sim.{site.monkey}"
        np.testing.assert_array_equal(assembly["time_bin_start"].values, np.arange(0, 300, 10))
        np.testing.assert_array_equal(assembly["time_bin_end"].values, np.arange(10, 310, 10))
    with pytest.raises(KeyError, match="did you mean 'Arcaro2020sim.M1ML'"):
        data.load_assembly("Arcaro2020sim.M1MLL")
    with pytest.raises(FileNotFoundError, match="brainscore data fetch"):
        data.load_assembly("Arcaro2020.M1ML")  # the real data is never confused with the twin


def test_stimulus_ids_are_stable(sim_small, tmp_path):
    summary = data.import_arcaro2020(sim_small["archive"], home=tmp_path)
    assert summary["status"] == "imported"
    a = data.load_stimulus_set("Arcaro2020sim")
    b = data.load_stimulus_set("Arcaro2020sim", home=tmp_path)
    assert list(a["stimulus_id"]) == list(b["stimulus_id"])
    # ids depend on the image content: a twin with other images (another seed) never reuses them
    other = data.stimulus_id("Arcaro2020sim", cv.M1, a["image_file_name"][0], "0" * 64)
    assert other != a["stimulus_id"][0]
    assert data.import_arcaro2020(sim_small["archive"], home=tmp_path)["status"] == "unchanged"


def test_twin_round_trips_to_the_generator_maps(sim_small):
    """Imported, window-averaged maps equal the generator's expected maps up to Poisson noise, in orientation."""
    sidecar = sim_small["sidecar"]
    network = simulate.build_generator_network(sidecar)
    for identifier in sim_small["identifiers"]:
        site = identifier.split(".")[1]
        assembly = data.load_assembly(identifier)
        maps = data.response_maps(assembly)
        trials = data.response_maps(assembly, average_repetitions=False)
        stimulus_set = assembly.attrs["stimulus_set"]
        paths = [stimulus_set.get_stimulus(s) for s in maps["stimulus_id"].values]
        expected = simulate.generator_maps(sidecar, paths, site, network=network)
        observed = maps.values
        assert observed.shape == expected.shape
        # noise: the standard error of each map value, estimated from the repetitions
        sem = trials.values.std(axis=-1, ddof=1).mean() / np.sqrt(trials.sizes["repetition"])
        residual = observed - expected
        assert abs(residual.mean()) < 0.2 * sem  # unbiased
        assert 0.7 * sem < residual.std() < 1.3 * sem  # differs from the generator by noise only
        r = [np.corrcoef(observed[..., k].ravel(), expected[..., k].ravel())[0, 1]
             for k in range(observed.shape[-1])]
        flipped = [np.corrcoef(observed[..., k].ravel(), expected[:, ::-1, ::-1, k].ravel())[0, 1]
                   for k in range(observed.shape[-1])]
        assert np.median(r) > 0.8 and np.median(r) > np.median(flipped) + 0.2


def test_generator_network_is_reproducible_and_leaves_rng_alone(sim_small):
    import torch
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = simulate.build_generator_network(sim_small["sidecar"])
    assert torch.equal(torch.random.get_rng_state(), state)
    b = simulate.build_generator_network(sim_small["sidecar"])
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert not a.training


def test_poisson_counts_match_the_poisson_law():
    rng = np.random.default_rng(0)
    lam = np.full(200_000, 0.2, dtype=np.float32)
    counts = simulate.poisson_counts(rng, lam, 1)[0]
    freq = np.bincount(counts, minlength=4)[:4] / counts.size
    expected = np.exp(-0.2) * np.array([1, 0.2, 0.2 ** 2 / 2, 0.2 ** 3 / 6])
    np.testing.assert_allclose(freq, expected, atol=3e-3)
    assert abs(counts.var() - 0.2) < 0.01


def test_latency_and_time_course(sim_small):
    """Before the response latency the rate is the spontaneous rate and carries no image information."""
    sidecar = sim_small["sidecar"]
    assembly = data.load_assembly("Arcaro2020sim.M1PL")
    early = data.response_maps(assembly, window=(0, 50)).values
    late = data.response_maps(assembly).values
    spont = np.asarray(sidecar["sites"]["M1PL"]["spont_hz"])
    assert min(sidecar["sites"]["M1PL"]["latency_ms"]) >= 50
    np.testing.assert_allclose(early.mean(axis=(0, 1, 2)).mean(), spont.mean(), rtol=0.1)
    assert late.mean() > 5 * early.mean()
    paths = [assembly.attrs["stimulus_set"].get_stimulus(s) for s in data.response_maps(assembly)["stimulus_id"].values]
    expected = simulate.generator_maps(sidecar, paths, "M1PL")
    r_early = np.median([np.corrcoef(early[..., k].ravel(), expected[..., k].ravel())[0, 1] for k in range(32)])
    assert abs(r_early) < 0.2


def test_full_twin(sim_full):
    """The full-size twin: 14 images per monkey, 17x17 and 9x9 grids, 63 + 32 channels, maps = generator + noise."""
    home = sim_full["home"]
    stimulus_set = data.load_stimulus_set("Arcaro2020sim", home=home)
    assert len(stimulus_set) == 28 and stimulus_set["stimulus_id"].is_unique
    sidecar = sim_full["sidecar"]
    network = simulate.build_generator_network(sidecar)
    for identifier, grid, channels in [("Arcaro2020sim.M1ML", 17, 31), ("Arcaro2020sim.M2ML", 9, 32)]:
        assembly = data.load_assembly(identifier, home=home)
        maps = data.response_maps(assembly)
        assert maps.shape == (14, grid, grid, channels)
        assert data.response_maps(assembly, average_repetitions=False).sizes["repetition"] == 4
        paths = [assembly.attrs["stimulus_set"].get_stimulus(s) for s in maps["stimulus_id"].values]
        expected = simulate.generator_maps(sidecar, paths, identifier.split(".")[1], network=network)
        r = [np.corrcoef(maps.values[..., k].ravel(), expected[..., k].ravel())[0, 1] for k in range(channels)]
        assert np.median(r) > 0.85
