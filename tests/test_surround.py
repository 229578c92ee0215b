"""The maps protocol's grey screen (option ``surround``): rendering, span, and where it is refused."""
import numpy as np
import pytest
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
from PIL import Image

from benchmarks_it_maps import load_benchmark
from benchmarks_it_maps.benchmarks import surround


def _stimuli(tmp_path, sizes):
    rng = np.random.default_rng(0)
    rows, paths = [], {}
    for i, size in enumerate(sizes):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        rows.append(dict(stimulus_id=f"im/{i}"))
        paths[f"im/{i}"] = path
    stimuli = StimulusSet(rows)
    stimuli.stimulus_paths = paths
    stimuli.identifier = "tiny"
    return stimuli


def test_images_are_centred_on_a_grey_canvas_and_the_span_says_where(tmp_path):
    stimuli = _stimuli(tmp_path, [(20, 20), (20, 20)])
    shown, span = surround.surround_stimulus_set(stimuli, 0.25, cache_dir=tmp_path / "cache")
    assert span == (5 / 30, 25 / 30)
    assert list(shown["stimulus_id"].values) == ["im/0", "im/1"]
    for sid in ("im/0", "im/1"):
        canvas = np.asarray(Image.open(shown.get_stimulus(sid)))
        original = np.asarray(Image.open(stimuli.get_stimulus(sid)))
        assert canvas.shape == (30, 30, 3)
        np.testing.assert_array_equal(canvas[5:25, 5:25], original)
        border = np.ones((30, 30), bool)
        border[5:25, 5:25] = False
        assert (canvas[border] == 128).all()
    again, _ = surround.surround_stimulus_set(stimuli, 0.25, cache_dir=tmp_path / "cache")
    assert again.get_stimulus("im/0") == shown.get_stimulus("im/0")


def test_mixed_or_oblong_images_and_bad_fractions_are_refused(tmp_path):
    with pytest.raises(ValueError, match="square images of one size"):
        surround.surround_stimulus_set(_stimuli(tmp_path, [(20, 20), (24, 24)]), 0.25, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="square images of one size"):
        surround.surround_stimulus_set(_stimuli(tmp_path, [(20, 16)]), 0.25, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="surround must be"):
        surround.surround_stimulus_set(_stimuli(tmp_path, [(20, 20)]), -0.1, cache_dir=tmp_path)


def test_the_shift_protocol_refuses_a_surround():
    with pytest.raises(ValueError, match="maps protocol"):
        load_benchmark("Arcaro2020sim.M2ML-shift_pls", surround=0.25)
    assert load_benchmark("Arcaro2020sim.IT-residual_pls", surround=0.25).children[2].surround == 0.25
