"""Layer commitment on a benchmark: the generating layer of the simulated twin must win; ``brainscore commit-layers``."""
from __future__ import annotations

import json

import pytest

import harmonized_models
from benchmarks_it_maps.cli import main
from harmonized_models.commitment import load_stored_region_layer_map, model_from_network, region_layer_map_path
from benchmarks_it_maps.runs.layer_selection import select_layer
from harmonized_models.preprocessing import Preprocessing


@pytest.fixture
def generator_model(sim_small):
    """The twin's generating network (right weights) committed with three candidate layers."""
    from benchmarks_it_maps.data.simulate import build_generator_network
    generator = sim_small["sidecar"]["generator"]
    preprocessing = Preprocessing(image_size=generator["image_size"], mean=generator["mean"], std=generator["std"])
    return model_from_network(build_generator_network(sim_small["sidecar"]), "twin-generator", preprocessing,
                              "layer1", layers=["layer1", "layer3", "layer4"], device="cpu")


@pytest.mark.parametrize("method", ["analysis", "rescore"])
def test_generating_layer_wins(generator_model, method):
    assert generator_model.layer_model.region_layer_map["IT"] == "layer1"  # committed to a wrong layer at first
    choice = select_layer("twin-generator", "Arcaro2020sim.M2ML-pls", model=generator_model, method=method)
    try:
        scores = dict(zip(choice.layers, choice.layer_scores))
        assert choice.selected == "layer3", scores  # the simulated neurons read out layer3
        assert scores["layer3"] > scores["layer1"] and scores["layer3"] > scores["layer4"]
        assert choice.region == "IT" and choice.method == method
        assert (choice.nested_score is not None) == (method == "analysis")
        stored = load_stored_region_layer_map("twin-generator")
        assert stored["IT"] == "layer3" and stored["V1"] == "layer1"
        provenance = json.loads(choice.stored_at.read_text())
        assert provenance["benchmark"] == "Arcaro2020sim.M2ML-pls" and provenance["selected"] == "layer3"
    finally:
        region_layer_map_path("twin-generator").unlink(missing_ok=True)


def test_commit_layers_cli_stores_a_map_that_load_model_uses(sim_small, tmp_path, capsys):
    out = tmp_path / "region_layer_map" / "efficientnet_lite0.json"
    code = main(["commit-layers", "--model", "efficientnet_lite0", "--benchmark", "Arcaro2020sim.M2ML-pls",
                 "--layers", "_blocks.4", "_blocks.10", "--device", "cpu", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    try:
        assert printed["selected"] in ("_blocks.4", "_blocks.10")
        assert set(printed["layer_scores"]) == {"_blocks.4", "_blocks.10"}
        plugin = json.loads(out.read_text())
        assert set(plugin) == {"V1", "V2", "V4", "IT"} and plugin["IT"] == printed["selected"]
        model = harmonized_models.load_model("efficientnet_lite0", device="cpu")
        assert model.layer_model.region_layer_map["IT"] == printed["selected"]
    finally:
        region_layer_map_path("efficientnet_lite0").unlink(missing_ok=True)


def test_commit_layers_cli_errors(capsys):
    assert main(["commit-layers", "--model", "efficientnet_lite9", "--benchmark", "Arcaro2020sim.M2ML-pls"]) == 2
    assert "did you mean efficientnet_lite" in capsys.readouterr().err
    assert main(["commit-layers", "--model", "efficientnet_lite0", "--benchmark", "Arcaro2020sim.M2ML-pls",
                 "--layers", "_blocks.99"]) == 2
    assert "no layer '_blocks.99'" in capsys.readouterr().err
    assert not region_layer_map_path("efficientnet_lite0").exists()
