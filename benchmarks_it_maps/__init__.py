"""brainscore-itmaps: Brain-Score benchmarks for the spatial IT activity maps of Arcaro et al. 2020.

``load_benchmark('Arcaro2020.M1ML-pls')`` returns a Brain-Score benchmark; ``list_benchmarks()`` lists them all.
Importing this package stays light: the benchmark module (brainscore-vision, torch) loads on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_benchmark", "list_benchmarks", "enable_brainscore_integration"]


def load_benchmark(identifier: str, **kwargs: Any):
    """The benchmark named ``identifier`` (e.g. ``'Arcaro2020sim.IT-pls'``); unknown names raise a KeyError subclass
    listing close names. ``kwargs`` (``ceiling_method``, ``window``, ...) configure the benchmark."""
    from . import benchmark
    return benchmark.load(identifier, **kwargs)


def list_benchmarks() -> list[str]:
    """Identifiers of all benchmarks of this package, sorted."""
    from . import benchmark
    return benchmark.benchmark_identifiers()


def enable_brainscore_integration(**kwargs: Any) -> dict:
    """Opt-in: make ``brainscore_vision.load_benchmark/load_model/score`` find this package's identifiers in this
    process (see :mod:`benchmarks_it_maps.integration`)."""
    from .integration import enable_brainscore_integration as _enable
    return _enable(**kwargs)
