"""brainscore-itmaps: Brain-Score benchmarks for the spatial IT activity maps of Arcaro et al. 2020.

``load_benchmark('Arcaro2020.M1ML-pls')`` returns a Brain-Score benchmark; ``list_benchmarks()`` lists them all.

The package is cut in wings that follow the data, each importing only the wings below it::

    data        the Arcaro2020 recordings: conventions, MAT files, fetch, import into assemblies, the simulated twin
    benchmarks  readout, regression (PLS), metric, ceilings and the Arcaro2020 benchmarks built on them
    runs        running models on benchmarks: scoring, results database, sweeps, layer selection, the demo
    analysis    analyses across many runs: the public leaderboard and the accuracy / IT trade-off
    submission  what goes to Brain-Score: plugin folders, registration in brainscore-vision's registries
    cli         the ``brainscore`` command, on top of everything

``home`` (data home, atomic writes, hashes) sits at the root and is the only module ``harmonized_models`` uses.
Importing this package stays light (the ``brainscore`` command starts without torch): the functions below import
their wing on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_benchmark", "list_benchmarks", "enable_brainscore_integration"]


def load_benchmark(identifier: str, **kwargs: Any):
    """The benchmark named ``identifier`` (e.g. ``'Arcaro2020sim.IT-pls'``); unknown names raise a KeyError subclass
    listing close names. ``kwargs`` (``ceiling_method``, ``window``, ...) configure the benchmark."""
    from benchmarks_it_maps.benchmarks import arcaro2020 as benchmark
    return benchmark.load(identifier, **kwargs)


def list_benchmarks() -> list[str]:
    """Identifiers of all benchmarks of this package, sorted."""
    from benchmarks_it_maps.benchmarks import arcaro2020 as benchmark
    return benchmark.benchmark_identifiers()


def enable_brainscore_integration(**kwargs: Any) -> dict:
    """Opt-in: make ``brainscore_vision.load_benchmark/load_model/score`` find this package's identifiers in this
    process (see :mod:`benchmarks_it_maps.submission.integration`)."""
    from benchmarks_it_maps.submission.integration import enable_brainscore_integration as _enable
    return _enable(**kwargs)
