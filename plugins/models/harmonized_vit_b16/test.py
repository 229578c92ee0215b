"""Tests of the harmonized_vit_b16 model plugin."""
import importlib
import json
from pathlib import Path

import pytest

import brainscore_vision

IDENTIFIER = 'harmonized_vit_b16'
PLUGIN = 'brainscore_vision.models.harmonized_vit_b16'


def test_registration():
    importlib.import_module(PLUGIN)
    assert IDENTIFIER in brainscore_vision.model_registry


def test_region_layer_map():
    stored = json.loads((Path(__file__).parent / 'region_layer_map' / f'{IDENTIFIER}.json').read_text())
    assert set(stored) == {'V1', 'V2', 'V4', 'IT'}
    assert all(isinstance(layer, str) and layer for layer in stored.values())


@pytest.mark.travis_slow
def test_has_identifier():
    model = brainscore_vision.load_model(IDENTIFIER)
    assert model.identifier == IDENTIFIER
