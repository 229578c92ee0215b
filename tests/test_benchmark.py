"""Arcaro2020 benchmarks: identifiers, neuroid -> feature-map reshaping, shifted stimuli, clear errors, and the
end-to-end benchmark on the small simulated twin (determinism, score attrs, composite)."""
import numpy as np
import pytest
from PIL import Image

import benchmarks_it_maps
from benchmarks_it_maps.benchmarks import arcaro2020 as bm


# ---------------------------------------------------------------------------------------------------------------
# identifiers
# ---------------------------------------------------------------------------------------------------------------
def test_identifiers_and_attributes():
    ids = benchmarks_it_maps.list_benchmarks()
    assert len(ids) == 2 * 4 * 5 and len(set(ids)) == len(ids)
    for dataset in ("Arcaro2020", "Arcaro2020sim"):
        for site in ("M1PL", "M1ML", "M2ML", "IT"):
            for suffix in ("pls", "shift_pls", "map_alignment", "residual_pls", "residual_shift_pls"):
                assert f"{dataset}.{site}-{suffix}" in ids
    site = benchmarks_it_maps.load_benchmark("Arcaro2020.M1ML-shift_pls")
    assert site.identifier == "Arcaro2020.M1ML-shift_pls" and site.protocol == "shift"
    assert isinstance(site.version, int) and site.parent == "Arcaro2020.IT-shift_pls"
    assert "Arcaro" in site.bibtex and "eLife" in site.bibtex and site.bibtex.count("@") == 1  # one entry (issue 14)
    composite = benchmarks_it_maps.load_benchmark("Arcaro2020sim.IT-map_alignment")
    assert composite.protocol == "map_alignment" and composite.parent is None  # not on the leaderboard
    for dataset in ("Arcaro2020", "Arcaro2020sim"):  # one leaderboard benchmark per dataset: the residual composite
        parents = {i: benchmarks_it_maps.load_benchmark(i).parent for i in ids if i.startswith(dataset + ".IT-")}
        assert [i for i, parent in parents.items() if parent == "IT"] == [f"{dataset}.IT-residual_pls"], parents
    assert [c.identifier for c in composite.children] == [
        "Arcaro2020sim.M1PL-map_alignment", "Arcaro2020sim.M1ML-map_alignment", "Arcaro2020sim.M2ML-map_alignment"]
    assert benchmarks_it_maps.load_benchmark("Arcaro2020.M2ML-pls").protocol == "maps"
    residual = benchmarks_it_maps.load_benchmark("Arcaro2020.M2ML-residual_shift_pls")
    assert residual.protocol == "residual_shift" and residual.readout == "shift" and residual.residual


def test_unknown_identifier_lists_close_names():
    with pytest.raises(KeyError) as info:
        benchmarks_it_maps.load_benchmark("Arcaro2020.M1ML-pl")
    message = str(info.value)
    assert "unknown benchmark identifier 'Arcaro2020.M1ML-pl'" in message and "Arcaro2020.M1ML-pls" in message
    with pytest.raises(bm.UnknownBenchmarkError):
        benchmarks_it_maps.load_benchmark("Majaj.IT-pls")


# ---------------------------------------------------------------------------------------------------------------
# neuroids -> feature maps
# ---------------------------------------------------------------------------------------------------------------
def test_conv_neuroids_reshape_exactly_in_any_order():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)  # [N, C, h, w]
    c, x, y = np.meshgrid(np.arange(3), np.arange(4), np.arange(5), indexing="ij")
    order = rng.permutation(60)  # neuroids in a scrambled order: coordinates, not positions, decide
    values = maps.reshape(2, -1)[:, order]
    coords = dict(channel=c.ravel()[order], channel_x=x.ravel()[order], channel_y=y.ravel()[order])
    np.testing.assert_array_equal(bm.neuroids_to_maps(values, coords), maps)


def test_transformer_tokens_drop_prefix_and_form_grid():
    rng = np.random.default_rng(1)
    n, prefix, side, dim = 2, 5, 3, 4  # e.g. 1 class + 4 register tokens before a 3x3 patch grid
    tokens = rng.standard_normal((n, prefix + side * side, dim)).astype(np.float32)
    t, e = np.meshgrid(np.arange(prefix + side * side), np.arange(dim), indexing="ij")
    maps = bm.neuroids_to_maps(tokens.reshape(n, -1), dict(channel=t.ravel(), embedding=e.ravel()))
    assert maps.shape == (n, dim, side, side)
    # patch token k sits at row k // side, column k % side
    np.testing.assert_array_equal(maps[1, :, 1, 2], tokens[1, prefix + 1 * side + 2])


def test_non_spatial_responses_raise_clear_error():
    values = np.zeros((2, 8), dtype=np.float32)
    fc = dict(channel=np.arange(8), channel_x=np.full(8, np.nan), channel_y=np.full(8, np.nan))
    with pytest.raises(bm.NoSpatialStructureError, match="shift protocol.*Arcaro2020.M1ML-shift_pls"):
        bm.neuroids_to_maps(values, fc, shift_identifier="Arcaro2020.M1ML-shift_pls")
    pooled = dict(channel=np.arange(8), channel_x=np.zeros(8), channel_y=np.zeros(8))
    with pytest.raises(bm.NoSpatialStructureError, match="1 x 1"):
        bm.neuroids_to_maps(values, pooled)
    with pytest.raises(bm.NoSpatialStructureError, match="square patch grid"):  # 98 tokens = 9x9 + 17 (too many)
        bm.neuroids_to_maps(np.zeros((1, 98 * 2)), dict(channel=np.repeat(np.arange(98), 2),
                                                       embedding=np.tile(np.arange(2), 98)))


# ---------------------------------------------------------------------------------------------------------------
# shift protocol stimuli
# ---------------------------------------------------------------------------------------------------------------
def _stimulus_set(tmp_path, n=2, size=32):
    from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
    rows = []
    for i in range(n):
        image = np.zeros((size, size, 3), dtype=np.uint8)
        image[..., 0] = 255  # red image ...
        image[0, 0] = (0, 0, 255)  # ... with a blue top-left pixel
        Image.fromarray(image).save(tmp_path / f"im{i}.png")
        rows.append(dict(stimulus_id=f"im{i}", filename=f"im{i}.png"))
    stimuli = StimulusSet(rows)
    stimuli.stimulus_paths = {r["stimulus_id"]: tmp_path / r["filename"] for r in rows}
    stimuli.identifier = f"test-stimuli-{n}"
    return stimuli


def test_shift_stimuli_put_grid_point_at_field_centre(tmp_path):
    stimuli = _stimulus_set(tmp_path)
    shifted = bm.shift_stimulus_set(stimuli, 3, visual_degrees=16, image_size_deg=16, canvas_px=64,
                                    cache_dir=tmp_path / "cache")
    assert len(shifted) == 2 * 9 and shifted.identifier.startswith("test-stimuli-2-shift-g3-deg16")
    assert list(shifted["grid_row"][:3]) == [0, 0, 0] and list(shifted["grid_col"][:3]) == [0, 1, 2]
    corner = np.asarray(Image.open(shifted.get_stimulus("im0--r00c00")))
    # grid point (0, 0) = image top-left corner at the canvas centre: image fills the bottom-right quadrant
    assert tuple(corner[32, 32]) == (0, 0, 255) and tuple(corner[40, 40]) == (255, 0, 0)
    assert tuple(corner[10, 10]) == bm.SHIFT_BACKGROUND and tuple(corner[10, 50]) == bm.SHIFT_BACKGROUND
    centre = np.asarray(Image.open(shifted.get_stimulus("im1--r01c01")))
    assert (centre[..., 0] == 255).mean() > 0.99  # centred: the image covers the whole field
    # a model with an 8 deg field sees the 16 deg image at twice the scale, and a different stimulus set
    narrow = bm.shift_stimulus_set(stimuli, 3, visual_degrees=8, image_size_deg=16, canvas_px=64,
                                   cache_dir=tmp_path / "cache")
    assert narrow.identifier != shifted.identifier
    assert (np.asarray(Image.open(narrow.get_stimulus("im0--r00c00")))[..., 0] == 255).mean() == pytest.approx(
        0.25, abs=0.02)
    # rendered once, atomically: no partial folders left, second call reuses the files
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    bm.shift_stimulus_set(stimuli, 3, visual_degrees=16, image_size_deg=16, canvas_px=64,
                          cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("identifier", ["resnet18.tv_in1k", "deit_tiny_distilled_patch16_224.fb_in1k"])
def test_direct_layer_outputs_give_exactly_the_look_at_features(sim_small, identifier):
    """The maps protocol reads this package's models' committed layer outputs directly (no NeuroidAssembly);
    features, layer name and score equal the look_at path's exactly, for a conv map and for transformer tokens
    (two prefix tokens dropped)."""
    import harmonized_models
    model = harmonized_models.load_model(identifier, pretrained=False, device="cpu")
    direct = benchmarks_it_maps.load_benchmark("Arcaro2020sim.M2ML-residual_pls")
    packaged = benchmarks_it_maps.load_benchmark("Arcaro2020sim.M2ML-residual_pls")
    packaged.direct_outputs = False
    assert bm.committed_layer_outputs(model, direct.data.stimulus_set) is not None
    features, name = direct.model_features(model)
    expected, expected_name = packaged.model_features(model)
    from harmonized_models.features import committed_layers
    assert name == expected_name == ",".join(committed_layers(model))
    assert features.dtype == expected.dtype and np.array_equal(features, expected)
    assert float(direct(model)) == float(packaged(model))
