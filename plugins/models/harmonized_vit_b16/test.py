"""Tests of the harmonized_vit_b16 model plugin."""
import importlib
import json
from pathlib import Path

import pytest

import brainscore_vision

IDENTIFIER = 'harmonized_vit_b16'
PLUGIN = 'brainscore_vision.models.harmonized_vit_b16'
FOLDER = Path(__file__).parent


def test_registration():
    importlib.import_module(PLUGIN)
    assert IDENTIFIER in brainscore_vision.model_registry


def test_region_layer_map():
    stored = json.loads((FOLDER / 'region_layer_map' / f'{IDENTIFIER}.json').read_text())
    assert set(stored) == {'V1', 'V2', 'V4', 'IT'}
    layers = importlib.import_module(PLUGIN + '.model').get_layers(IDENTIFIER)
    assert set(stored.values()) <= set(layers)


def test_bibtex():
    """One entry that brainscore-core's own reference parser accepts (into a real, in-memory SQLite)."""
    from peewee import SqliteDatabase
    from brainscore_core.submission.database import reference_from_bibtex
    from brainscore_core.submission.database_models import Reference, database_proxy
    database = SqliteDatabase(':memory:')
    database_proxy.initialize(database)
    database.create_tables([Reference])
    reference = reference_from_bibtex(brainscore_vision.load_model_bibtex(IDENTIFIER))
    assert reference is not None and (reference.author, int(reference.year)) == ('Linsley', 2023)


@pytest.mark.travis_slow
def test_has_identifier():
    model = brainscore_vision.load_model(IDENTIFIER)
    assert model.identifier == IDENTIFIER
