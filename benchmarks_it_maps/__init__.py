"""brainscore-itmaps: Brain-Score benchmarks for the spatial IT activity maps of Arcaro et al. 2020.

``load_benchmark('Arcaro2020.M1ML-pls')`` returns a Brain-Score benchmark; ``list_benchmarks()`` lists them all.
Importing this package stays light: the benchmark module (brainscore-vision, torch) loads on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_benchmark", "list_benchmarks"]


def load_benchmark(identifier: str, **kwargs: Any):
    """The benchmark named ``identifier`` (e.g. ``'Arcaro2020sim.IT-pls'``); unknown names raise a KeyError subclass
    listing close names. ``kwargs`` (``ceiling_method``, ``window``, ...) configure the benchmark."""
    from . import benchmark
    return benchmark.load(identifier, **kwargs)


def list_benchmarks() -> list[str]:
    """Identifiers of all benchmarks of this package, sorted."""
    from . import benchmark
    return benchmark.benchmark_identifiers()
