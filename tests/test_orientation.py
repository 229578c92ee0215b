"""Data checks against the data: the orientation diagnostic and the PL/ML channel split, on twins whose truth is
known (an ``imageRF`` written as assumed, and written transposed or flipped)."""
import json

import numpy as np
import pytest

from benchmarks_it_maps.benchmarks import arcaro2020 as bm
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import channels
from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.data import simulate
from benchmarks_it_maps.runs import orientation

#: Small twins that still have image-specific spatial content: 6 images, 7x7 grids.
TWIN = dict(seed=0, images=6, grids=(7, 7), repetitions=4)


def _generator(sidecar):
    from harmonized_models import model_from_network
    gen = sidecar["generator"]
    preprocessing = dict(image_size=gen["image_size"], mean=gen["mean"], std=gen["std"],
                         interpolation=gen["interpolation"])
    return model_from_network(simulate.build_generator_network(sidecar), "orientation-generator", preprocessing,
                              gen["layer"])


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """{written symmetry: data home} for a twin written as assumed and two written otherwise."""
    homes = {}
    for written in ("identity", "transpose_flip_ud", "flip_lr"):
        folder = tmp_path_factory.mktemp(f"twin-{written}")
        archive = simulate.simulate_archive(folder / "twin.zip", symmetry=written, **TWIN)
        data.import_arcaro2020(archive, home=folder / "home")
        homes[written] = folder / "home"
    return homes


@pytest.mark.parametrize("written", ["identity", "transpose_flip_ud", "flip_lr"])
def test_diagnostic_finds_the_symmetry_that_undoes_the_file(twins, written, monkeypatch):
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(twins[written]))
    sidecar = data.load_sidecar()
    rows = orientation.orientation_diagnostic("Arcaro2020sim", _generator(sidecar), n_boot=200)
    assert [r["site"] for r in rows] == ["Arcaro2020sim.M1PL", "Arcaro2020sim.M1ML", "Arcaro2020sim.M2ML"]
    expected = cv.inverse_symmetry(written)  # transpose_flip_ud is undone by transpose_flip_lr
    for row in rows:
        assert list(row["scores"]) == list(cv.SYMMETRIES)
        assert row["best"] == expected, row
        assert row["margin"] > 0.05 and row["sure"] > 0.9 and row["decisive"], row
        assert row["margin"] == pytest.approx(row["scores"][expected] - sorted(row["scores"].values())[-2])


def test_apply_reimports_with_the_symmetry_and_scores_record_it(twins, monkeypatch, capsys):
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(twins["flip_lr"]))
    assert main(["data", "orientation", "Arcaro2020sim", "--apply", "flip_lr"]) == 0
    assert "re-imported" in capsys.readouterr().out
    assert data.summary("Arcaro2020sim")["Arcaro2020sim"]["orientation"] == "flip_lr"
    sidecar = data.load_sidecar()
    model = _generator(sidecar)
    rows = orientation.orientation_diagnostic("Arcaro2020sim", model, sites=["M2ML"], n_boot=100)
    assert rows[0]["best"] == "identity" and rows[0]["orientation"] == "flip_lr"
    score = bm.load("Arcaro2020sim.M2ML-pls")(model)
    assert score.attrs["data_orientation"] == "flip_lr"
    assert main(["data", "orientation", "Arcaro2020sim", "--apply", "identity"]) == 0
    assert data.summary("Arcaro2020sim")["Arcaro2020sim"]["orientation"] == "identity"
    assert main(["data", "orientation", "Arcaro2020sim", "--apply", "rot90"]) == 2
    assert "expected one of identity" in capsys.readouterr().err


def test_orientation_cli_json_with_the_default_reference_model(twins, monkeypatch, capsys):
    """The default reference model (ImageNet efficientnet_lite0), JSON output: one object per site."""
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(twins["transpose_flip_ud"]))
    assert main(["data", "orientation", "Arcaro2020sim", "--sites", "M2ML", "--bootstrap", "100", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and set(rows[0]) >= {"site", "scores", "best", "margin"}
    assert rows[0]["site"] == "Arcaro2020sim.M2ML" and len(rows[0]["scores"]) == 8
    assert rows[0]["best"] == "transpose_flip_lr", rows[0]
    assert main(["data", "orientation", "Arcaro2020sim", "--sites", "M3XX"]) == 2


def test_bootstrap_summary_is_exact_on_a_known_table():
    per_image = {"a": np.array([1.0, 1.0, 1.0]), "b": np.array([0.5, 0.4, 0.6]), "c": np.zeros(3)}
    out = orientation.summarise(per_image, n_boot=50)
    assert out["best"] == "a" and out["runner_up"] == "b" and out["margin"] == pytest.approx(0.5)
    assert out["sure"] == 1.0 and 0.39 < out["margin_ci"][0] <= out["margin_ci"][1] < 0.61
    assert orientation.decisive(out)
    # a winner that changes with the images is not a verdict: the table says undecided, not "re-import"
    close = orientation.summarise({"a": np.array([1.0, 0.0, 0.6]), "b": np.array([0.0, 1.0, 0.5])}, n_boot=200)
    assert not orientation.decisive(close)
    text = orientation.format_table([{**close, "site": "X.M2ML", "orientation": "identity", "model": "m"}])
    assert "undecided" in text and "--apply" not in text


def test_channel_split_is_found_where_the_twin_put_it(sim_small, tmp_path, capsys):
    """The twin's PL and ML neurons read different latents: the correlation forms two blocks, split at 32."""
    result = channels.split_check("Arcaro2020sim")
    assert result["assumed_boundary"] == 32 and result["data_boundary"] == 32, result["data_boundary"]
    assert result["data_contrast"] > 0.03
    # a boundary moved by one channel mixes the blocks: lower contrast
    assert result["contrast"][31] < result["contrast"][32] and result["contrast"][33] < result["contrast"][32]
    out = tmp_path / "channels.png"
    assert main(["data", "channels", "Arcaro2020sim", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "best boundary in the data: channel 32" in text and "agree with the assumed split" in text
    assert result["support"].get(32, 0) > 0.5
    assert out.stat().st_size > 10_000
    assert main(["data", "channels", "Arcaro2020", "--json"]) == 2  # the real data is not imported here
    assert "not imported" in capsys.readouterr().err
