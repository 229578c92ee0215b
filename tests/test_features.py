"""Feature export (``harmonized_models.extract_features``, ``brainscore features``): files in three formats read back
bit-identical, and scored back through the benchmark they give the same numbers as scoring the model; grid
coordinates and orientation against the raw feature map; hostile files refused in one line. On ``sim_small``."""
import json
import pickle

import numpy as np
import pytest
from PIL import Image

import harmonized_models
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.runs import features as F
from benchmarks_it_maps.runs import scoring

MODEL = "efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0(sim_small):
    return harmonized_models.load_model(MODEL, device="cpu")


@pytest.fixture(scope="module")
def exported(lite0):
    return F.benchmark_features(lite0, "Arcaro2020sim")


BENCHMARKS = ("Arcaro2020sim.IT-pls", "Arcaro2020sim.M2ML-map_alignment")


@pytest.fixture(scope="module")
def direct_scores(lite0):
    return {benchmark: scoring.score(lite0, benchmark, record=False) for benchmark in BENCHMARKS}


@pytest.mark.parametrize("suffix", [".h5", ".npz", ".nc"])
def test_round_trip_is_exact_and_scores_like_the_model(exported, direct_scores, tmp_path, suffix):
    blocks, attrs = exported
    assert set(blocks) == {"M1", "M2"}  # one block per monkey: its own images and grid
    path = F.write_features(blocks, attrs, tmp_path / f"features{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing temporary left beside it
    back, back_attrs = F.read_features(path)
    for name, block in blocks.items():
        assert back[name].dtype == np.float32 and np.array_equal(back[name].values, block.values)
        for coord in ("stimulus_id", "image_u", "image_v", "layer", "channel"):
            assert np.array_equal(back[name][coord].values, block[coord].values), coord
    assert back_attrs["protocol"] == "maps" and back_attrs["model"] == MODEL and back_attrs["layers"] == "_blocks.10"
    for benchmark, direct in direct_scores.items():
        from_file = F.score_features(path, benchmark)
        assert float(from_file) == float(direct)
        assert float(from_file.attrs["raw"]) == float(direct.attrs["raw"])
        assert float(from_file.attrs["ceiling"]) == float(direct.attrs["ceiling"])


def test_features_of_another_model_score_differently(exported, tmp_path):
    """The file's features really are what is scored (not the model recomputed): permuting images changes it."""
    blocks, attrs = exported
    path = F.write_features(blocks, attrs, tmp_path / "f.npz")
    swapped = {name: block.copy(data=block.values[::-1].copy()) for name, block in blocks.items()}
    other = F.write_features(swapped, attrs, tmp_path / "swapped.npz")
    assert float(F.score_features(other, "Arcaro2020sim.M2ML-pls")) != float(F.score_features(path, "Arcaro2020sim"
                                                                                                      ".M2ML-pls"))


def test_shift_protocol_round_trip(lite0, tmp_path):
    blocks, attrs = F.benchmark_features(lite0, "Arcaro2020sim.M2ML", protocol="shift")
    assert list(blocks) == ["M2ML"] and blocks["M2ML"].shape[:3] == (4, 5, 5)
    path = F.write_features(blocks, attrs, tmp_path / "shift.h5")
    direct = scoring.score(lite0, "Arcaro2020sim.M2ML-shift_pls", record=False)
    assert float(F.score_features(path, "Arcaro2020sim.M2ML-shift_pls")) == float(direct)
    with pytest.raises(F.FeatureFileError, match="--protocol maps"):
        F.score_features(path, "Arcaro2020sim.M2ML-pls")


def test_transformer_tokens_score_like_the_model(sim_small, tmp_path):
    """A distilled ViT (class + distillation tokens before the 14 x 14 patches): the export arranges tokens as the
    benchmark does."""
    model = harmonized_models.load_model("deit_tiny_distilled_patch16_224.fb_in1k", pretrained=False, device="cpu")
    blocks, attrs = F.benchmark_features(model, "Arcaro2020sim.M1ML")
    assert blocks["M1ML"].sizes["feature"] == 192
    path = F.write_features(blocks, attrs, tmp_path / "deit.nc")
    assert float(F.score_features(path, "Arcaro2020sim.M1ML-pls")) == \
        float(scoring.score(model, "Arcaro2020sim.M1ML-pls", record=False))


def test_folder_grid_orientation_against_the_raw_feature_map(lite0, tmp_path):
    """Grid point (0, 0) is the image's top-left feature cell and (G-1, G-1) its bottom-right one; ids are file
    stems; image_u/image_v run 0 -> 1 edge to edge."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("b_cat", "a_dog", "c_car"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("ignored")
    blocks, _ = F.benchmark_features(lite0, str(folder), grid_size=3)
    block = blocks[F.FOLDER_BLOCK]
    assert list(block["stimulus_id"].values) == ["a_dog", "b_cat", "c_car"]
    assert np.allclose(block["image_u"].values, [0, 0.5, 1]) and np.allclose(block["image_v"].values, [0, 0.5, 1])
    raw = harmonized_models.extract_features(lite0, folder)["_blocks.10"]
    assert raw.dims == ("stimulus_id", "channel", "row", "col")
    assert np.allclose(block.values[:, 0, 0, :], raw.values[:, :, 0, 0], atol=1e-6)
    assert np.allclose(block.values[:, 2, 2, :], raw.values[:, :, -1, -1], atol=1e-6)
    assert np.allclose(block.values[:, 0, 2, :], raw.values[:, :, 0, -1], atol=1e-6)  # top-right: row 0, last col
    assert not np.allclose(block.values[:, 0, 2, :], raw.values[:, :, -1, 0], atol=1e-6)


def test_cli_features_and_score_features(sim_small, tmp_path, capsys):
    out = tmp_path / "lite0.nc"
    assert main(["features", "--model_identifier", MODEL, "--stimuli", "Arcaro2020sim", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out and out.exists()
    assert main(["score-features", str(out), "--benchmark", "Arcaro2020sim.M1PL-pls", "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["score", "--model", MODEL, "--benchmark", "Arcaro2020sim.M1PL-pls", "--json", "--no-record",
                 "--device", "cpu"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert from_file["score"] == direct["score"] and from_file["raw"] == direct["raw"]


def _expect_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_hostile_inputs_one_line_nothing_written(sim_small, tmp_path, capsys):
    out = tmp_path / "x.h5"
    _expect_error(capsys, ["features", "--model", MODEL, "--stimuli", "Arcaro2020sim", "--out", str(tmp_path / "x.csv")],
                  ".csv", ".h5, .npz or .nc")
    _expect_error(capsys, ["features", "--model", MODEL, "--stimuli", "Arcaro2020sim", "--layers", "nope",
                           "--out", str(out), "--device", "cpu"], "nope")
    _expect_error(capsys, ["features", "--model", MODEL, "--stimuli", str(tmp_path / "missing"), "--out", str(out)],
                  "missing", "folder of images")
    assert list(tmp_path.iterdir()) == []
    # a pickle inside an .npz is never loaded
    evil = tmp_path / "evil.npz"
    with open(evil, "wb") as f:
        np.savez(f, __attrs__=np.array(json.dumps({"protocol": "maps"})),
                 **{"M1/features": np.array([object()], dtype=object)})
    _expect_error(capsys, ["score-features", str(evil), "--benchmark", "Arcaro2020sim.M1PL-pls"], str(evil))
    # missing field, wrong shapes, NaN
    good = {"features": np.zeros((2, 3, 3, 4), np.float32), "stimulus_id": np.array(["a", "b"]),
            "image_v": np.linspace(0, 1, 3), "image_u": np.linspace(0, 1, 3), "layer": np.array(["l"] * 4),
            "channel": np.arange(4)}
    for broken, needle in ((dict(good, channel=np.arange(3)), "M1/channel"), ({k: v for k, v in good.items()
                                                                                if k != "image_u"}, "image_u"),
                           (dict(good, features=np.full((2, 3, 3, 4), np.nan, np.float32)), "finite")):
        path = tmp_path / "broken.npz"
        with open(path, "wb") as f:
            np.savez(f, __attrs__=np.array(json.dumps({"protocol": "maps"})),
                     **{f"M1/{k}": v for k, v in broken.items()})
        _expect_error(capsys, ["score-features", str(path), "--benchmark", "Arcaro2020sim.M1PL-pls"], str(path),
                      needle)
    not_h5 = tmp_path / "text.h5"
    not_h5.write_bytes(pickle.dumps({"a": 1}))
    _expect_error(capsys, ["score-features", str(not_h5), "--benchmark", "Arcaro2020sim.M1PL-pls"], str(not_h5),
                  "not a readable .h5")


def test_a_surround_benchmark_refuses_bare_image_features(exported, tmp_path):
    """Feature files hold the features of the bare images: scoring them on a benchmark shown with a grey surround
    would sample the wrong part of the canvas, so it is refused in one line."""
    blocks, attrs = exported
    path = F.write_features(blocks, attrs, tmp_path / "f.npz")
    with pytest.raises(F.FeatureFileError, match="surround option"):
        F.score_features(path, "Arcaro2020sim.M2ML-residual_pls", surround=0.25)
