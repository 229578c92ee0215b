"""Tests of the Arcaro2020 data plugin."""
import importlib

import pytest

import brainscore_vision

DATASET = 'Arcaro2020'
ASSEMBLIES = ['Arcaro2020.M1PL', 'Arcaro2020.M1ML', 'Arcaro2020.M2ML']
PLUGIN = 'brainscore_vision.data.arcaro2020'


def test_registrations():
    importlib.import_module(PLUGIN)
    assert DATASET in brainscore_vision.stimulus_set_registry
    assert set(ASSEMBLIES) <= set(brainscore_vision.data_registry)


def test_package_knows_the_sites():
    from benchmarks_it_maps.data import conventions
    assert sorted(ASSEMBLIES) == sorted(f"{DATASET}.{site}" for site in conventions.SITES)


@pytest.mark.private_access
@pytest.mark.parametrize('identifier', ASSEMBLIES)
def test_assembly(identifier):
    assembly = brainscore_vision.load_dataset(identifier)
    assert set(assembly['region'].values) == {'IT'}
    assert {'presentation', 'neuroid'} <= set(assembly.dims)
