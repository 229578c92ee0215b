"""Opt-in: make brainscore-vision's own loaders find this package's identifiers in the current process.

Why: brainscore-vision's ``load_benchmark/load_model/load_dataset/load_stimulus_set/load_metric`` (and therefore
``brainscore_vision.score``) first call ``brainscore_vision.import_plugin``, which scans the *installed* plugin
folders and asserts that the identifier is registered there; only then do they read the registry dict. Filling the
registry dicts alone therefore does not work (BRAINSCORE_NOTES 1). This module uses the registry-first shim
(mechanism (b)): ``brainscore_vision.import_plugin`` is replaced by a wrapper that returns early when the identifier
is already in the matching registry and otherwise calls the original, and the registries are filled with lazy
factories for our identifiers. Nothing is written into the installed brainscore-vision files. Limits: this process
only, and brainscore-vision's conda ``newenv`` mode is not supported.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

import brainscore_vision

from benchmarks_it_maps import list_benchmarks, load_benchmark
from benchmarks_it_maps.benchmarks import arcaro2020 as bm
from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import conventions
from benchmarks_it_maps.data.assemblies import load_assembly, load_stimulus_set
from benchmarks_it_maps.data.fetch import fetch_arcaro2020
from harmonized_models import list_models, load_model

logger = logging.getLogger(__name__)

#: Model identifiers with this prefix name a harmonizer checkpoint folder (``harmonized:PATH``); always ours.
CHECKPOINT_PREFIX = "harmonized:"

#: plugin type -> registry attribute of ``brainscore_vision`` (``data`` with prefix ``stimulus_set``: stimulus sets)
_REGISTRIES = {"models": "model_registry", "benchmarks": "benchmark_registry", "metrics": "metric_registry",
               "data": "data_registry"}


def registry_name(plugin_type: str, registry_prefix: str | None = None) -> str:
    """The registry ``import_plugin(root, plugin_type, id, registry_prefix)`` would read afterwards."""
    if registry_prefix:
        return f"{registry_prefix}_registry"
    return _REGISTRIES.get(plugin_type, f"{plugin_type.strip('s')}_registry")


# --------------------------------------------------------------------------------------- loaders for the plugins
def ensure_data(identifier: str) -> None:
    """Fetch and import the released recordings on first use of an ``Arcaro2020.*`` identifier.

    Brain-Score's scoring machines start with an empty data home, like for any S3-backed data plugin; the simulated
    twin (``Arcaro2020sim``) is never fetched. ``BRAINSCORE_ITMAPS_ARCARO2020_URL`` overrides the archive URL.
    """
    if not (identifier == conventions.IDENTIFIER or identifier.startswith(conventions.IDENTIFIER + ".")):
        return
    try:
        data.load_stimulus_set(conventions.IDENTIFIER)
        return
    except FileNotFoundError:
        pass
    url = os.environ.get("BRAINSCORE_ITMAPS_ARCARO2020_URL") or conventions.ARCHIVE_URL
    logger.info("%s is not imported yet: fetching %s", conventions.IDENTIFIER, url)
    fetch_arcaro2020(url)


def plugin_benchmark(identifier: str):
    """``benchmark_registry`` factory of the plugin folder: our benchmark, its data fetched on first use."""
    ensure_data(identifier)
    return load_benchmark(identifier)


def benchmark_on_brainscore_data(identifier: str):
    """``benchmark_registry`` factory of a benchmark plugin written by ``brainscore submission --data-from``: the
    benchmark with each site's recordings from brainscore-vision's own ``load_dataset`` (the data plugin of the
    BrainIO packages, loaded from S3 with their pinned sha1s), as upstream benchmarks get theirs, instead of this
    package's data home."""
    benchmark = load_benchmark(identifier)
    for site in getattr(benchmark, "children", [benchmark]):
        assembly = brainscore_vision.load_dataset(site.assembly_identifier)
        site.data = bm.load_site_data(site.assembly_identifier, site.window, assembly=assembly)
    return benchmark


def plugin_assembly(identifier: str):
    """``data_registry`` factory of the plugin folder (data fetched on first use)."""
    ensure_data(identifier)
    return load_assembly(identifier)


def plugin_stimulus_set(identifier: str):
    """``stimulus_set_registry`` factory of the plugin folder (data fetched on first use)."""
    ensure_data(identifier)
    return load_stimulus_set(identifier)


def our_identifiers() -> dict[str, dict[str, Callable[..., Any]]]:
    """Registry name -> {identifier: factory} for everything this package provides (factories load lazily)."""

    registries: dict[str, dict[str, Callable[..., Any]]] = {
        "benchmark_registry": {identifier: functools.partial(plugin_benchmark, identifier)
                               for identifier in list_benchmarks()},
        "model_registry": {entry.identifier: functools.partial(_load_our_model, entry.identifier) for entry in list_models()},
        "data_registry": {f"{dataset}.{site}": functools.partial(plugin_assembly, f"{dataset}.{site}")
                          for dataset in (conventions.IDENTIFIER, conventions.SIM_IDENTIFIER)
                          for site in conventions.SITES},
        "stimulus_set_registry": {dataset: functools.partial(plugin_stimulus_set, dataset)
                                  for dataset in (conventions.IDENTIFIER, conventions.SIM_IDENTIFIER)},
    }
    return registries  # no metric: the accuracy/IT trade-off compares models with each other (an analysis)


def enable_brainscore_integration(*, overwrite: bool = False) -> dict[str, list[str]]:
    """Register our identifiers with brainscore-vision in this process (idempotent); returns what was added.

    Afterwards ``brainscore_vision.load_benchmark('Arcaro2020.M1ML-pls')``, ``load_model('harmonized_vgg16')`` (and
    ``load_model('harmonized:PATH')`` for a harmonizer checkpoint),
    ``load_dataset('Arcaro2020.M1ML')`` and ``brainscore_vision.score(model, benchmark)`` work, also mixed with
    brainscore-vision's own identifiers. ``overwrite=True`` replaces registry entries that already exist.
    ``brainscore_vision.score`` pickles its result to a file named after the model identifier, so it fails for
    ``harmonized:PATH`` (a path has slashes): register such a checkpoint under a plain name first
    (``harmonized_models.register_model(dataclasses.replace(checkpoint_entry(PATH), identifier=NAME))``), or score
    it with ``benchmarks_it_maps.runs.scoring.score``.
    """

    added: dict[str, list[str]] = {}
    for name, entries in our_identifiers().items():
        registry = getattr(brainscore_vision, name)
        added[name] = []
        for identifier, factory in entries.items():
            if overwrite or identifier not in registry:
                registry[identifier] = factory
                added[name].append(identifier)
    _install_shim(brainscore_vision)
    logger.info("brainscore-vision integration enabled: %s",
                ", ".join(f"{len(ids)} {name.replace('_registry', '')}" for name, ids in added.items()))
    return added


def _load_our_model(identifier: str):
    return load_model(identifier)


def _install_shim(brainscore_vision: Any) -> None:
    current = brainscore_vision.import_plugin
    if getattr(current, "_brainscore_itmaps_shim", False):
        return
    original = current

    @functools.wraps(original)
    def import_plugin(library_root: str, plugin_type: str, identifier: str, registry_prefix: str | None = None):
        registry = getattr(brainscore_vision, registry_name(plugin_type, registry_prefix), None)
        if registry is not None and plugin_type == "models" and identifier not in registry \
                and str(identifier).startswith(CHECKPOINT_PREFIX):  # a harmonizer checkpoint folder
            registry[identifier] = functools.partial(_load_our_model, identifier)
        if registry is not None and identifier in registry:
            return None  # already registered (ours, or an in-tree plugin imported before): no folder scan, no pip
        return original(library_root, plugin_type, identifier, registry_prefix=registry_prefix)

    import_plugin._brainscore_itmaps_shim = True  # type: ignore[attr-defined]
    import_plugin._original = original  # type: ignore[attr-defined]
    brainscore_vision.import_plugin = import_plugin


def disable_brainscore_integration() -> None:
    """Restore brainscore-vision's own ``import_plugin`` (registry entries stay)."""
    current = brainscore_vision.import_plugin
    if getattr(current, "_brainscore_itmaps_shim", False):
        brainscore_vision.import_plugin = current._original
