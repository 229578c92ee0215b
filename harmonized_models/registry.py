"""The model registry: one :class:`ModelEntry` per Brain-Score model, and ``load_model`` to get a ``ModelCommitment``.

Sources, in order: the timm baselines of ``tables/baselines.csv`` and the offline EfficientNet-Lite models
(:mod:`harmonized_models.baselines`), the harmonized networks and their twins
(``harmonized_models.harmonized.HARMONIZED``, when that module is present), models added with
:func:`register_model`, and local checkpoints given as ``'harmonized:PATH'`` (a folder with ``model.safetensors``
and ``model.json`` as written by the harmonizer).
"""
from __future__ import annotations

import difflib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .commitment import (REGIONS, VISUAL_DEGREES, load_stored_region_layer_map, region_layer_map_path,
                         validate_region_layer_map)
from .layer_rules import behavioral_readout_layer
from .preprocessing import Preprocessing

logger = logging.getLogger(__name__)

CATEGORIES = ("CNN", "Transformer", "Robust", "Self-supervised", "Extra data", "Harmonized")
CHECKPOINT_PREFIX = "harmonized:"


class UnknownModelError(KeyError):
    """An identifier that is not in the registry (the message lists close names)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelEntry:
    """Everything needed to build a model and commit it to Brain-Score.

    ``builder(pretrained: bool, **overrides) -> nn.Module``; the only override used is ``img_size`` (for networks
    with a fixed input size, e.g. ViTs, when the registry test builds them small).
    """

    identifier: str
    builder: Callable[..., Any]
    weights_source: str
    sha256: str | None
    preprocessing: Preprocessing
    top1: float | None
    top1_source: str
    category: str
    harmonized: bool
    region_layer_map: Mapping[str, str]
    candidate_layers: tuple[str, ...]
    visual_degrees: float = VISUAL_DEGREES
    twin: str | None = None
    family: str = ""
    architecture: str = ""
    fixed_input_size: bool = False
    behavioral_readout_layer: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"{self.identifier}: category must be one of {CATEGORIES}, got {self.category!r}")
        if self.top1 is not None and not 0.0 < self.top1 < 1.0:
            raise ValueError(f"{self.identifier}: top1 must be a fraction in (0, 1), got {self.top1!r}")
        object.__setattr__(self, "region_layer_map",
                           validate_region_layer_map(self.region_layer_map, source=f"{self.identifier} entry"))
        object.__setattr__(self, "candidate_layers", tuple(self.candidate_layers))

    def build(self, pretrained: bool = True, image_size: int | None = None):
        """The network in eval mode; ``image_size`` only matters for fixed-input-size networks."""
        overrides = {"img_size": image_size} if (image_size and self.fixed_input_size) else {}
        return self.builder(pretrained, **overrides).eval()

    def metadata(self) -> dict[str, Any]:
        """JSON-friendly description (for ``brainscore list models`` and tables)."""
        return {"identifier": self.identifier, "category": self.category, "top1": self.top1,
                "top1_source": self.top1_source, "harmonized": self.harmonized, "twin": self.twin,
                "family": self.family, "architecture": self.architecture, "weights_source": self.weights_source,
                "sha256": self.sha256, "preprocessing": self.preprocessing.to_dict(),
                "region_layer_map": dict(self.region_layer_map), "candidate_layers": list(self.candidate_layers),
                "behavioral_readout_layer": self.behavioral_readout_layer, "visual_degrees": self.visual_degrees}


_LOCK = threading.Lock()
_ENTRIES: dict[str, ModelEntry] | None = None
_EXTRA: dict[str, ModelEntry] = {}


def _harmonized_entries() -> list[ModelEntry]:
    """Entries of helper D's harmonized networks, if ``harmonized_models.harmonized`` exists."""
    import importlib
    try:
        harmonized = importlib.import_module(f"{__package__}.harmonized")
    except ModuleNotFoundError as error:
        if error.name == f"{__package__}.harmonized":
            return []
        raise
    factory = getattr(harmonized, "registry_entries", None)
    if callable(factory):
        return list(factory())
    specs = getattr(harmonized, "HARMONIZED", {})
    return [_entry_from_spec(name, spec) for name, spec in specs.items()]


def _spec_get(spec: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(spec, Mapping) and name in spec:
            return spec[name]
        if hasattr(spec, name):
            return getattr(spec, name)
    return default


def _entry_from_spec(name: str, spec: Any) -> ModelEntry:
    """Adapt one ``HARMONIZED`` spec (dict or object) to a ModelEntry."""
    from .harmonized import load_harmonized_network
    it_layer = _spec_get(spec, "it_layer", "layer")
    region_layer_map = _spec_get(spec, "region_layer_map") or {r: it_layer for r in REGIONS}
    region_layer_map = {**region_layer_map, "IT": it_layer or region_layer_map["IT"]}
    candidates = tuple(_spec_get(spec, "candidate_layers", default=()) or (region_layer_map["IT"],))

    def builder(pretrained: bool, **overrides):
        if pretrained:
            return load_harmonized_network(name)
        spec_builder = _spec_get(spec, "builder")
        if spec_builder is None:
            raise ValueError(f"{name}: the HARMONIZED spec has no builder for random weights")
        return spec_builder()

    top1 = _spec_get(spec, "top1")
    return ModelEntry(
        identifier=name, builder=builder, weights_source=str(_spec_get(spec, "url", default="")),
        sha256=_spec_get(spec, "sha256"), preprocessing=Preprocessing.coerce(_spec_get(spec, "preprocessing")),
        top1=None if top1 is None else (top1 / 100 if top1 > 1 else top1),
        top1_source=str(_spec_get(spec, "top1_source", default="Fel et al. 2022 (harmonization model zoo)")),
        category="Harmonized", harmonized=True, region_layer_map=region_layer_map, candidate_layers=candidates,
        twin=_spec_get(spec, "twin", "twin_timm_id"), family="harmonized",
        architecture=str(_spec_get(spec, "arch", "architecture", default="")),
        behavioral_readout_layer=_spec_get(spec, "behavioral_readout_layer") or None,
        notes=str(_spec_get(spec, "notes", default="")))


def _entries() -> dict[str, ModelEntry]:
    global _ENTRIES
    with _LOCK:
        if _ENTRIES is None:
            from .baselines import baseline_entries, lite_entries
            entries: dict[str, ModelEntry] = {}
            for entry in [*baseline_entries(), *lite_entries(), *_harmonized_entries()]:
                if entry.identifier in entries:
                    raise ValueError(f"duplicate model identifier {entry.identifier!r} in the registry")
                entries[entry.identifier] = entry
            _ENTRIES = entries
        return {**_ENTRIES, **_EXTRA}


def register_model(entry: ModelEntry, *, replace: bool = False) -> None:
    """Add a model to the registry of this process (e.g. from a plugin)."""
    if not replace and entry.identifier in _entries():
        raise ValueError(f"model {entry.identifier!r} is already registered (pass replace=True to override)")
    _EXTRA[entry.identifier] = entry


def canonical_category(name: str) -> str:
    """The category ``name`` means, in any case and with '-', '_' or ' ' alike (``extra-data`` -> ``Extra data``,
    ``cnn`` -> ``CNN``); ValueError listing the categories otherwise."""
    def key(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())
    for category in CATEGORIES:
        if key(category) == key(name):
            return category
    raise ValueError(f"unknown category {name!r}; choose one of {', '.join(_category_spellings())} (any case)")


def _category_spellings() -> list[str]:
    return [category.lower().replace(" ", "-") for category in CATEGORIES]


def list_models(category: str | None = None) -> list[ModelEntry]:
    """All registered models (optionally of one category, see :func:`canonical_category`), in registry order."""
    if category is not None:
        category = canonical_category(category)
    return [e for e in _entries().values() if category is None or e.category == category]


def _checkpoint_folder(identifier: str) -> Path:
    rest = identifier[len(CHECKPOINT_PREFIX):]
    if not rest.strip():
        raise ValueError(f"{identifier!r}: give the checkpoint folder after '{CHECKPOINT_PREFIX}' (an empty path "
                         "would mean the current folder), e.g. harmonized:runs/x/final")
    return Path(rest).expanduser().resolve()


def canonical_identifier(identifier: str) -> str:
    """The identifier scores are recorded under: ``harmonized:PATH`` with PATH resolved (``ckpt/a``, ``./ckpt/a`` and
    ``ckpt/../ckpt/a`` are one model), anything else unchanged."""
    if isinstance(identifier, str) and identifier.startswith(CHECKPOINT_PREFIX):
        return f"{CHECKPOINT_PREFIX}{_checkpoint_folder(identifier)}"
    return identifier


def get_entry(identifier: str) -> ModelEntry:
    """The registry entry of ``identifier`` (or of a local checkpoint ``'harmonized:PATH'``)."""
    if identifier.startswith(CHECKPOINT_PREFIX):
        folder = _checkpoint_folder(identifier)
        key = (str(folder), *_file_stamps(folder))
        if key not in _CHECKPOINTS:
            _CHECKPOINTS[key] = checkpoint_entry(folder)
        return _CHECKPOINTS[key]
    entries = _entries()
    if identifier in entries:
        return entries[identifier]
    close = difflib.get_close_matches(identifier, list(entries), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `brainscore list models` shows all models"
    raise UnknownModelError(f"unknown model {identifier!r}{hint}")


_CHECKPOINTS: dict[tuple, ModelEntry] = {}


def _file_stamps(folder: Path) -> tuple:
    """(size, mtime) of a checkpoint's files: a changed file gives a new cache key (and a new weights hash)."""
    stamps = []
    for name in ("model.safetensors", "model.json"):
        path = folder / name
        stat = path.stat() if path.exists() else None
        stamps.append((stat.st_size, stat.st_mtime_ns) if stat else None)
    return tuple(stamps)


def checkpoint_entry(path: str | Path) -> ModelEntry:
    """Entry of a local harmonizer checkpoint folder (``model.safetensors`` + ``model.json``, CONTRACTS.md F).

    The identifier is ``'harmonized:<absolute path>'``; the weights hash is the sha256 of ``model.safetensors``.
    The region -> layer map follows the family rule, with ``it_layer`` from ``model.json`` for IT when given.
    """
    import timm
    from benchmarks_it_maps.home import sha256_file
    from .harmonizer.checkpoint import WEIGHTS_FILE, load_final
    from .layer_rules import commit_layers
    folder = Path(path).expanduser().resolve()
    network, meta = load_final(folder)
    preprocessing = Preprocessing(image_size=meta["image_size"], mean=meta["mean"], std=meta["std"],
                                  interpolation=meta.get("interpolation", "bilinear"))
    it_layer = meta.get("it_layer")
    if it_layer is not None and it_layer not in dict(network.named_modules()):
        raise ValueError(f"{folder / 'model.json'}: it_layer {it_layer!r} is not a module of "
                         f"{meta['architecture']}; set it to a module name or null")
    try:
        rule = commit_layers(network, meta["image_size"])
        region_layer_map, candidates = dict(rule.region_layer_map), list(rule.candidate_layers)
    except ValueError:
        if it_layer is None:
            raise ValueError(f"{folder / 'model.json'}: no layer rule for {meta['architecture']}; "
                             f"set \"it_layer\" to the module to record IT from")
        region_layer_map, candidates = {r: it_layer for r in REGIONS}, []
    if it_layer is not None:
        region_layer_map["IT"] = it_layer
        candidates = list(dict.fromkeys([*candidates, it_layer]))
    kwargs = meta.get("model_kwargs", {})

    def builder(pretrained: bool, **overrides: Any):
        if pretrained:
            return load_final(folder)[0]
        return timm.create_model(meta["architecture"], pretrained=False, num_classes=meta["num_classes"],
                                 **{**kwargs, **overrides})

    top1 = meta.get("top1")
    cfg = getattr(network, "pretrained_cfg", {}) or {}
    return ModelEntry(
        identifier=f"{CHECKPOINT_PREFIX}{folder}", builder=builder, weights_source=f"file://{folder / WEIGHTS_FILE}",
        sha256=sha256_file(folder / WEIGHTS_FILE), preprocessing=preprocessing,
        top1=None if top1 is None else float(top1), top1_source=f"{folder / 'model.json'}",
        category="Harmonized", harmonized=True, region_layer_map=region_layer_map, candidate_layers=tuple(candidates),
        twin=meta.get("twin") or meta["architecture"], family="checkpoint", architecture=meta["architecture"],
        fixed_input_size=bool(cfg.get("fixed_input_size", False)),
        behavioral_readout_layer=behavioral_readout_layer(network, meta["image_size"]))


def weights_hash(identifier: str) -> str:
    """A cheap, deterministic identity of a model's weights (sha256 when known, else the weights source)."""
    entry = get_entry(identifier)
    sha256 = entry.sha256 or (_downloaded_harmonized_sha256(identifier) if entry.family == "harmonized" else None)
    if sha256:
        return f"sha256:{sha256}"
    return entry.weights_source or f"unknown:{identifier}"


def _downloaded_harmonized_sha256(identifier: str) -> str | None:
    """The sha256 recorded when a harmonized ``.h5`` was downloaded (its upstream hash is not published)."""
    from .harmonized import get_spec, read_manifest
    return read_manifest()["files"].get(get_spec(identifier).filename, {}).get("sha256")


def committed_region_layer_map(identifier: str) -> dict[str, str]:
    """The region -> layer map :func:`load_model` commits ``identifier`` to: the one stored by ``brainscore
    commit-layers`` if any, else the entry's rule. Part of a score's identity (the results database's key)."""
    return region_layer_map_with_source(identifier)[0]


def load_errors() -> tuple[type[Exception], ...]:
    """The exceptions of :func:`load_model` whose message tells the user what to fix (CLIs print them as one line).

    Besides :class:`UnknownModelError` (a KeyError): bad checkpoint folders, stored maps or weights files
    (``ValueError``, e.g. a sha256 mismatch) and weights that cannot be obtained offline.
    """
    from .baselines import WeightsUnavailableError
    from .harmonized import HarmonizedWeightsError
    return ValueError, WeightsUnavailableError, HarmonizedWeightsError


def region_layer_map_with_source(identifier: str) -> tuple[dict[str, str], str]:
    """The region -> layer map :func:`load_model` commits, and where it comes from.

    A map stored locally by ``brainscore commit-layers`` (``data_home()/region_layer_maps/<id>.json``) is used by
    this package's own loaders (``brainscore score``, sweeps), and announced: the source reads ``committed locally:
    PATH``; otherwise ``registry``. Brain-Score plugin folders never read it (their ``region_layer_map/<id>.json``
    is what brainscore-vision's ``ModelCommitment`` loads).
    """
    entry = get_entry(identifier)
    stored = load_stored_region_layer_map(entry.identifier)
    if stored is None:
        return dict(entry.region_layer_map), "registry"
    return stored, f"committed locally: {region_layer_map_path(entry.identifier)}"


def activations_model(identifier: str, *, device: str = "auto", batch_size: int | None = None,
                      autocast: Any = None, pretrained: bool = True, name: str | None = None,
                      **activations_kwargs: Any):
    """The network of ``identifier`` wrapped for Brain-Score (``TorchActivationsModel``; a plugin's ``get_model``).

    ``name`` is the activations identifier (default: the registry identifier).
    """
    from .activations import TorchActivationsModel
    entry = get_entry(identifier)
    network = entry.build(pretrained=pretrained)
    return TorchActivationsModel(network, name or entry.identifier, entry.preprocessing, device=device,
                                 batch_size=batch_size, autocast=autocast, **activations_kwargs)


def model_layers(identifier: str) -> list[str]:
    """The layers a commitment of ``identifier`` may record: candidates, then the registry's map (a plugin's
    ``get_layers``)."""
    entry = get_entry(identifier)
    return list(dict.fromkeys([*entry.candidate_layers, *entry.region_layer_map.values()]))


def load_model(identifier: str, *, device: str = "auto", batch_size: int | None = None, autocast: Any = None,
               pretrained: bool = True, **activations_kwargs: Any):
    """Build ``identifier`` as a Brain-Score ``ModelCommitment`` with an explicit region -> layer map.

    The map is :func:`region_layer_map_with_source`'s: a map stored by ``brainscore commit-layers`` wins over the
    entry's default rule, with a log line saying so; the commitment carries its source as
    ``region_layer_map_source``. The behavioural tasks read the entry's ``behavioral_readout_layer`` (pre-logits
    features). ``pretrained=False`` gives random weights (tests). Other keyword arguments go to
    :class:`~harmonized_models.activations.TorchActivationsModel`.
    """
    from brainscore_vision.model_helpers.brain_transformation import ModelCommitment
    entry = get_entry(identifier)
    region_layer_map, source = region_layer_map_with_source(identifier)
    if source != "registry":
        logger.warning("%s: region_layer_map %s (brainscore commit-layers), not the registry's", identifier, source)
    activations = activations_model(identifier, device=device, batch_size=batch_size, autocast=autocast,
                                    pretrained=pretrained, **activations_kwargs)
    layers = list(dict.fromkeys([*entry.candidate_layers, *region_layer_map.values()]))
    readout = entry.behavioral_readout_layer or behavioral_readout_layer(activations._model,
                                                                         entry.preprocessing.image_size)
    for layer in [*layers, readout]:
        activations.get_layer(layer)
    model = ModelCommitment(identifier=entry.identifier, activations_model=activations, layers=layers,
                            behavioral_readout_layer=readout, region_layer_map=region_layer_map,
                            visual_degrees=entry.visual_degrees)
    model.region_layer_map_source = source
    return model


def _reset_for_tests() -> None:
    """Forget the assembled registry (tests that add entries call this)."""
    global _ENTRIES
    with _LOCK:
        _ENTRIES = None
    _EXTRA.clear()
    _CHECKPOINTS.clear()
