"""scoring.score (results DB), the nested layer analysis, map figures, and the `brainscore` scoring commands, on the
small simulated twin (``sim_small``: 4 images per monkey, 5x5 grids, 4 repetitions)."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks_it_maps import load_benchmark
from benchmarks_it_maps.runs import scoring
from benchmarks_it_maps.data import simulate
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.runs.results import ResultsDB


@pytest.fixture(scope="module")
def generator(sim_small):
    """The twin's generating network committed at its generating layer (and, lazily, at layer1)."""
    from harmonized_models import model_from_network
    sidecar = sim_small["sidecar"]
    gen = sidecar["generator"]
    network = simulate.build_generator_network(sidecar)
    preprocessing = dict(image_size=gen["image_size"], mean=gen["mean"], std=gen["std"],
                         interpolation=gen["interpolation"])
    return dict(network=network, preprocessing=preprocessing, layer=gen["layer"],
                model=model_from_network(network, "sim-generator", preprocessing, gen["layer"],
                                         layers=["layer1", "layer2", gen["layer"], "layer4"]))


def test_score_records_in_results_db(generator, tmp_path):
    db_path = tmp_path / "results.sqlite"
    result = scoring.score(generator["model"], "Arcaro2020sim.M2ML-pls", results=db_path,
                           weights_hash_value="sim-seed0")
    summary = scoring.score_summary(result)
    assert summary["model"] == "sim-generator" and summary["benchmark"] == "Arcaro2020sim.M2ML-pls"
    assert summary["score"] == pytest.approx(min(summary["raw"] ** 2 / summary["ceiling"], 1.0))
    assert summary["floor"] == pytest.approx(result.attrs["position_only_ceiled"]) and 0 <= summary["floor"] <= 1
    assert summary["layer"] == generator["layer"] and summary["seconds"] > 0
    row = ResultsDB(db_path).get("sim-generator", "Arcaro2020sim.M2ML-pls", weights_hash="sim-seed0")
    assert row is not None and row["score"] == pytest.approx(summary["score"])
    assert row["raw"] == pytest.approx(summary["raw"]) and row["layer"] == generator["layer"]
    assert row["benchmark_version"] == load_benchmark("Arcaro2020sim.M2ML-pls").version
    assert len(row["attrs"]["per_fold"]) == 4  # one value per held-out image


def test_unknown_identifiers_give_clear_errors(generator, tmp_path):
    with pytest.raises(scoring.ScoringError, match="did you mean Arcaro2020sim.M2ML-pls"):
        scoring.score(generator["model"], "Arcaro2020sim.M2ML-plss", results=tmp_path / "r.sqlite")
    with pytest.raises(scoring.ScoringError, match="unknown model 'no-such-model'"):
        scoring.resolve_model("no-such-model")
    assert not (tmp_path / "r.sqlite").exists()


def test_nested_layer_choice_never_sees_held_out_image():
    rng = np.random.default_rng(0)
    n_img, grid, n_chan = 5, 4, 3
    good = rng.standard_normal((n_img, grid * grid, 6))
    bad = rng.standard_normal((n_img, grid * grid, 6))
    targets = good @ rng.standard_normal((6, n_chan)) + 0.1 * rng.standard_normal((n_img, grid * grid, n_chan))
    features = {"early": bad, "late": good}
    base = scoring.nested_layer_selection(features, targets, grid, n_components=3, progress=False)
    assert base["selected"] == ["late"] * n_img and base["layer_scores"][1] > 0.9 > base["layer_scores"][0] + 0.5
    # make image 0 perfectly explained by the 'early' features: its own choice must not change (it is made on the
    # other images), while the other images' choices may (image 0 is in their training set)
    altered = targets.copy()
    altered[0] = bad[0] @ rng.standard_normal((6, n_chan))
    nested = scoring.nested_layer_selection(features, altered, grid, n_components=3, progress=False)
    assert nested["selected"][0] == "late"
    assert nested["per_fold"][0] == pytest.approx(
        scoring._criterion("maps", good, altered, grid, 3)[1][0])



def test_nested_layer_choice_ignores_the_held_out_image_even_when_it_would_change_the_choice():
    """Layer A is clean on images 1-4 but useless on image 0; B is moderately noisy everywhere. Image 0's layer must
    be chosen on images 1-4 (A), although B predicts image 0 better and wins the all-image LOIO mean: a choice that
    looked at image 0 (per image, or by the full mean) would pick B."""
    rng = np.random.default_rng(1)
    n_img, grid = 5, 4
    good = rng.standard_normal((n_img, grid * grid, 6))
    targets = good @ rng.standard_normal((6, 3))
    a = good + 0.05 * rng.standard_normal(good.shape)
    a[0] = rng.standard_normal(a[0].shape)
    b = good + 0.6 * rng.standard_normal(good.shape)
    result = scoring.nested_layer_selection({"A": a, "B": b}, targets, grid, n_components=3, progress=False)
    per_image = dict(zip(result["layers"], result["layer_per_image"]))
    assert per_image["B"][0] > per_image["A"][0] + 0.3 and result["layer_scores"][1] > result["layer_scores"][0]
    assert result["selected"][0] == "A" and result["per_fold"][0] == per_image["A"][0]
    for held_out, chosen in enumerate(result["selected"]):  # every choice = best layer on the other images only
        keep = np.delete(np.arange(n_img), held_out)
        inner = {name: scoring._criterion("maps", f[keep], targets[keep], grid, 3)[0] for name, f in
                 (("A", a), ("B", b))}
        assert chosen == max(inner, key=inner.get)

def test_layer_analysis_and_map_figures(generator, tmp_path):
    analyses = scoring.layer_analysis(generator["model"], "Arcaro2020sim.M2ML-pls",
                                      layers=["layer1", generator["layer"]], out=tmp_path / "layers.png")
    (analysis,) = analyses
    assert analysis.layers == ["layer1", generator["layer"]] and len(analysis.selected) == 4
    assert np.all(np.isfinite(analysis.layer_scores)) and Image.open(tmp_path / "layers.png").size[0] > 300
    result, paths = scoring.maps(generator["model"], "Arcaro2020sim.M2ML-pls", tmp_path / "maps")
    assert len(paths) == 4 and all(p.parent.name == "Arcaro2020sim.M2ML-pls" for p in paths)
    width, height = Image.open(paths[0]).size
    assert width > 2.5 * height  # image, neural map, predicted map side by side


def test_cli_score_json_results_and_lists(sim_small, tmp_path, capsys):
    db = tmp_path / "cli.sqlite"
    code = main(["score", "--model", "efficientnet_lite0", "--benchmark", "Arcaro2020sim.M2ML-map_alignment",
                 "--json", "--device", "cpu", "--batch-size", "4", "--results", str(db)])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"model", "benchmark", "score", "floor", "raw", "ceiling", "error", "layer",
                        "region_layer_map_source"}
    assert out["region_layer_map_source"] == "registry"  # no map committed locally for this model
    assert out["model"] == "efficientnet_lite0" and out["benchmark"] == "Arcaro2020sim.M2ML-map_alignment"
    assert out["score"] == pytest.approx(min(max(np.sign(out["raw"]) * out["raw"] ** 2 / out["ceiling"], 0), 1))
    assert out["layer"] and 0 <= out["floor"] <= 1

    assert main(["results", "list", "--results", str(db)]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["results", "show", "--model", "efficientnet_lite0", "--results", str(db)]) == 0
    shown = capsys.readouterr().out
    assert "Arcaro2020sim.M2ML-map_alignment" in shown
    config = json.loads(shown.split("scoring_config", 1)[1].splitlines()[0])
    assert config["region_layer_map"]["IT"] == out["layer"] and config["precision"] == "float32"
    assert main(["results", "export", "--csv", str(tmp_path / "all.csv"), "--results", str(db)]) == 0
    with open(tmp_path / "all.csv") as f:
        assert [row["model"] for row in csv.DictReader(f)] == ["efficientnet_lite0"]

    assert main(["list", "benchmarks"]) == 0
    assert "Arcaro2020.IT-shift_pls" in capsys.readouterr().out.split()
    assert main(["list", "models"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out

    assert main(["score", "--model", "efficientnet_lite0", "--benchmark", "Arcaro2020sim.M9-pls",
                 "--results", str(db)]) == 2
    assert "unknown benchmark identifier 'Arcaro2020sim.M9-pls'" in capsys.readouterr().err
    assert main(["results", "show", "--model", "nobody", "--results", str(db)]) == 2


def test_cli_demo_on_a_small_twin(tmp_path, monkeypatch, capsys):
    """The demo scores both models at the registry rule's layer, whatever ``commit-layers`` stored locally."""
    from harmonized_models.commitment import store_region_layer_map
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "home"))  # never touch the session's twin
    store_region_layer_map("efficientnet_lite0", {"V1": "_blocks.4", "V2": "_blocks.4", "V4": "_blocks.4",
                                                  "IT": "_blocks.11"})  # a local commitment the demo must ignore
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "3", "--grid", "5", "5", "--device", "cpu",
                 "--results", str(tmp_path / "demo.sqlite")]) == 0
    table = capsys.readouterr().out
    for name in ("efficientnet_lite0", "efficientnet_lite0-random_init_seed0", "Arcaro2020sim.IT-residual_pls",
                 "Arcaro2020sim.IT-pls", "Arcaro2020sim.IT-map_alignment"):
        assert name in table
    rows = ResultsDB(tmp_path / "demo.sqlite").rows()
    assert len(rows) == 6 and len({r["weights_hash"] for r in rows}) == 2
    assert {r["layer"] for r in rows} == {"_blocks.10"}  # the entry's rule, for the pretrained and the random copy
    figures = sorted(out.glob("maps/*/*/*.png"))
    assert len(figures) == 2 * 3 * 3  # 2 models x 3 sites x 3 images


def test_cli_layers(sim_small, tmp_path, capsys):
    """``brainscore layers``: nested layer analysis of a registry model, JSON output and the plot; clear errors."""
    out = tmp_path / "layers.png"
    args = ["layers", "--model", "efficientnet_lite0", "--benchmark", "Arcaro2020sim.M2ML-pls", "--device", "cpu"]
    assert main([*args, "--layers", "_blocks.4", "_blocks.10", "--out", str(out), "--json"]) == 0
    (analysis,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert analysis["benchmark"] == "Arcaro2020sim.M2ML-pls" and analysis["layers"] == ["_blocks.4", "_blocks.10"]
    assert len(analysis["selected"]) == 4 and set(analysis["selected"]) <= set(analysis["layers"])
    assert np.isfinite(analysis["nested_score"]) and Image.open(out).size[0] > 300
    assert main([*args, "--layers", "no_such_layer", "--out", str(out)]) == 2
    assert "no_such_layer" in capsys.readouterr().err
    assert main([*args[:4], "Arcaro2020sim.M2ML-shift_pls", "--out", str(out)]) == 2
    assert "maps protocol" in capsys.readouterr().err


def test_cli_score_falls_back_to_brainscore_vision_models(sim_small, tmp_path, capsys):
    """A brainscore-vision model identifier (its offline ``pixels`` model) is scored through its own registry."""
    db = tmp_path / "fallback.sqlite"
    assert main(["score", "--model", "pixels", "--benchmark", "Arcaro2020sim.M2ML-pls", "--json",
                 "--results", str(db)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["model"] == "pixels" and out["layer"] == "pixels" and np.isfinite(out["score"])
    assert ResultsDB(db).get("pixels", "Arcaro2020sim.M2ML-pls")["weights_hash"] == "brainscore-vision:pixels"
