"""Tests of the Arcaro2020 benchmark plugin."""
import importlib

import pytest

import brainscore_vision

IDENTIFIERS = ['Arcaro2020.IT-map_alignment', 'Arcaro2020.IT-pls', 'Arcaro2020.IT-residual_pls', 'Arcaro2020.IT-residual_shift_pls', 'Arcaro2020.IT-shift_pls', 'Arcaro2020.M1ML-map_alignment', 'Arcaro2020.M1ML-pls', 'Arcaro2020.M1ML-residual_pls', 'Arcaro2020.M1ML-residual_shift_pls', 'Arcaro2020.M1ML-shift_pls', 'Arcaro2020.M1PL-map_alignment', 'Arcaro2020.M1PL-pls', 'Arcaro2020.M1PL-residual_pls', 'Arcaro2020.M1PL-residual_shift_pls', 'Arcaro2020.M1PL-shift_pls', 'Arcaro2020.M2ML-map_alignment', 'Arcaro2020.M2ML-pls', 'Arcaro2020.M2ML-residual_pls', 'Arcaro2020.M2ML-residual_shift_pls', 'Arcaro2020.M2ML-shift_pls']
PLUGIN = 'brainscore_vision.benchmarks.arcaro2020'


def test_registrations():
    importlib.import_module(PLUGIN)
    assert set(IDENTIFIERS) <= set(brainscore_vision.benchmark_registry)


def test_package_knows_every_identifier():
    from benchmarks_it_maps import list_benchmarks
    assert set(IDENTIFIERS) <= set(list_benchmarks())


@pytest.mark.parametrize('identifier', IDENTIFIERS)
def test_benchmark_metadata(identifier):
    from benchmarks_it_maps import load_benchmark
    benchmark = load_benchmark(identifier)  # lazy: the recordings load on first use
    assert benchmark.identifier == identifier
    assert isinstance(benchmark.version, int)
    assert 'arcaro2020' in benchmark.bibtex


def test_bibtex_is_one_reference():
    """One entry that brainscore-core's own reference parser accepts (into a real, in-memory SQLite)."""
    from peewee import SqliteDatabase
    from brainscore_core.submission.database import reference_from_bibtex
    from brainscore_core.submission.database_models import Reference, database_proxy
    from benchmarks_it_maps import load_benchmark
    database = SqliteDatabase(':memory:')
    database_proxy.initialize(database)
    database.create_tables([Reference])
    reference = reference_from_bibtex(load_benchmark(IDENTIFIERS[0]).bibtex)
    assert reference is not None and (reference.author, int(reference.year)) == ('Arcaro', 2020)


@pytest.mark.private_access
@pytest.mark.parametrize('identifier', IDENTIFIERS)
def test_ceiling(identifier):
    ceiling = brainscore_vision.load_benchmark(identifier).ceiling
    assert 0 < float(ceiling) <= 1
