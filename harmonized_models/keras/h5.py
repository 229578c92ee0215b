"""Read a Keras ``.h5`` file (legacy HDF5 format) with h5py only: no TensorFlow at run time.

Public API (used by ``convert.py`` and ``kecam.py``)::

    from harmonized_models.keras.h5 import read_h5, H5Model, KerasLayer, KerasFormatError, UnmappedTensorsError

    m = read_h5("vgg16_harmonized.h5")       # H5Model; KerasFormatError (names the file) if not a Keras h5
    m.model_config                           # dict parsed from the root attr (None for weights-only files)
    m.name, m.keras_version                  # 'vgg16', '2.15.0'
    m.layers                                 # [KerasLayer] in model_config order (else the file's layer_names)
    m.layer("block1_conv1")                  # KerasLayer by exact name (KeyError with close names)
    m.by_class("Conv2D")                     # layers whose class_name is Conv2D (prefix 'Custom>' etc. ignored)
    lay.name, lay.class_name, lay.config     # layer name, Keras class ('Conv2D', 'Custom>ClassToken'), its config
    lay.inbound                              # names of the layers feeding its first call node
    lay.weights                              # {short name: ndarray}; short name = weight name without ':0'
                                             # and without the leading layer-name prefix, e.g. 'kernel',
                                             # 'MultiHeadDotProductAttention_1/query/kernel'
    m.take("block1_conv1", "kernel", shape=(3, 3, 3, 64))   # -> ndarray, marks the tensor as mapped
    m.unused()                               # ['layer/weight', ...] tensors never taken (the converter refuses
                                             # a file while this is not empty)
    m.layer_weights()                        # {layer: {short name: ndarray}} (for mappers working on dicts;
    m.mark_taken(layer, short_name)          #  they then mark what they used)
    m.n_tensors                              # total number of weight tensors in the file

    d = read_h5("vgg16_harmonized.h5", declared_only=True)   # reads no tensor: each weight is a zero-memory
    d.declared_only                          # stand-in of its declared shape (see ``is_probe``); converters map
                                             # it first, so every dataset is checked against the architecture
                                             # before any data is read (``convert.check_declared_shapes``)

Weights are matched by **layer group + name suffix + shape**, never by the full HDF5 path: the names of weights
inside custom layers differ across TF/Keras versions (``Transformer/encoderblock_0/Dense_0/kernel:0`` vs Keras 3's
``Transformer_encoderblock_0/MlpBlock_3/Transformer_encoderblock_0_Dense_0/kernel``).  A suffix matches whole
trailing path components, or (Keras 3 scopes) the same last component with the scope before it ending in the
suffix's scope at a ``_`` boundary; ``kernel`` never matches ``depthwise_kernel``.  Attributes may be ``str``
(h5py 3) or fixed-length ``bytes`` (old Keras / h5py 2); both are decoded.  ``optimizer_weights`` and ``training_config`` are
ignored.
"""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np


class KerasFormatError(ValueError):
    """The file is not a Keras h5 model, or a tensor the converter needs is missing / ambiguous."""


class UnmappedTensorsError(KerasFormatError):
    """The file's tensors and the torch architecture do not correspond one to one (names the tensors)."""


def _decode(value: Any) -> Any:
    """Decode an HDF5 attribute: bytes -> str, arrays of bytes/str -> list[str], scalars unchanged."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in ("S", "O", "U"):
            return [_decode(v) for v in value.tolist()]
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _strip_tensor_suffix(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def _norm(name: str) -> str:
    return name.replace("/", "_")


def _inbound_names(layer_cfg: dict) -> list[str]:
    """Names of the layers feeding the first call node (Keras 2 list format and Keras 3 dict format)."""
    nodes = layer_cfg.get("inbound_nodes") or []
    if not nodes:
        return []
    node = nodes[0]
    names: list[str] = []

    def visit(obj: Any) -> None:
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                names.append(obj["config"]["keras_history"][0])
                return
            for v in obj.values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                names.append(obj[0])  # Keras 2 entry [layer_name, node_index, tensor_index, kwargs]
                return
            for v in obj:
                visit(v)

    visit(node)
    return names


@dataclass
class KerasLayer:
    """One Keras layer: its class, config, inputs and weight tensors (short names)."""

    name: str
    class_name: str | None
    config: dict
    inbound: list[str] = field(default_factory=list)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def base_class(self) -> str | None:
        """Class name without a registered-package prefix ('Custom>ClassToken' -> 'ClassToken')."""
        return None if self.class_name is None else self.class_name.split(">")[-1]

    def find(self, suffix: str, shape: Iterable[int] | None = None) -> list[str]:
        """Short names of this layer's weights matching ``suffix`` (at a name boundary) and ``shape``."""
        suffix = _strip_tensor_suffix(suffix)
        parts = suffix.split("/")

        def shape_ok(key: str) -> bool:
            return shape is None or tuple(self.weights[key].shape) == tuple(shape)

        # 1. whole path components ('query/kernel' matches 'MultiHeadDotProductAttention_1/query/kernel' but
        #    'kernel' does not match 'depthwise_kernel')
        hits = [k for k in self.weights if k.split("/")[-len(parts):] == parts and shape_ok(k)]
        if hits:
            return hits
        # 2. Keras 3 style flattened scopes ('Transformer_encoderblock_0_Dense_0/kernel' for 'Dense_0/kernel'):
        #    the last component must be equal, the scopes before it may be joined with '_'
        if len(parts) == 1:
            return []
        scope = _norm("/".join(parts[:-1]))
        hits = []
        for k in self.weights:
            kparts = k.split("/")
            if kparts[-1] != parts[-1] or len(kparts) < 2 or not shape_ok(k):
                continue
            kscope = _norm("/".join(kparts[:-1]))
            if kscope == scope or (kscope.endswith(scope) and kscope[-len(scope) - 1] == "_"):
                hits.append(k)
        return hits


def probe(shape: Iterable[int]) -> np.ndarray:
    """A read-only zero-memory array of ``shape`` (every element is the same 0.0): the stand-in of a dataset that
    has not been read. Transposes, reshapes and slices of it stay zero-memory views."""
    return np.broadcast_to(np.zeros((), np.float32), tuple(int(s) for s in shape))


def is_probe(array: np.ndarray) -> bool:
    """True for a :func:`probe` (or a view of one): several elements, all at one address. A weight tensor read
    from a file never is."""
    return isinstance(array, np.ndarray) and array.size > 1 and not any(array.strides)


def contiguous(array: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray`` except for probes, which stay zero-memory views (so a dry-run mapping of a file
    that declares a huge dataset allocates nothing)."""
    return array if is_probe(array) else np.ascontiguousarray(array)


class H5Model:
    """A Keras h5 file read into memory: config, ordered layers, weights, and a record of mapped tensors.

    ``declared_only``: the weights are :func:`probe` stand-ins of the declared shapes (nothing was read)."""

    def __init__(self, path: Path, model_config: dict | None, layers: list[KerasLayer], attrs: dict,
                 declared_only: bool = False):
        self.path = path
        self.model_config = model_config
        self.layers = layers
        self.attrs = attrs
        self.declared_only = declared_only
        self._by_name = {layer.name: layer for layer in layers}
        self._taken: set[tuple[str, str]] = set()
        self.last_taken: str | None = None  # 'layer/weight' of the latest take() (names a dataset in errors)

    # -- metadata
    @property
    def name(self) -> str | None:
        if not self.model_config:
            return None
        cfg = self.model_config.get("config", {})
        return cfg.get("name") if isinstance(cfg, dict) else None

    @property
    def keras_version(self) -> str | None:
        return self.attrs.get("keras_version")

    @property
    def n_tensors(self) -> int:
        return sum(len(layer.weights) for layer in self.layers)

    # -- lookup
    def layer(self, name: str) -> KerasLayer:
        try:
            return self._by_name[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._by_name), n=3)
            raise KerasFormatError(f"{self.path}: no layer named {name!r}"
                                   + (f" (close: {', '.join(close)})" if close else "")) from None

    def has_layer(self, name: str) -> bool:
        return name in self._by_name

    def by_class(self, class_name: str) -> list[KerasLayer]:
        return [layer for layer in self.layers if layer.base_class == class_name.split(">")[-1]]

    def weighted_layers(self) -> list[KerasLayer]:
        return [layer for layer in self.layers if layer.weights]

    def take(self, layer: str | KerasLayer, suffix: str, shape: Iterable[int] | None = None) -> np.ndarray:
        """The unique tensor of ``layer`` matching ``suffix`` and ``shape``; it is recorded as mapped."""
        lay = layer if isinstance(layer, KerasLayer) else self.layer(layer)
        shape = None if shape is None else tuple(int(s) for s in shape)
        hits = lay.find(suffix, shape)
        if len(hits) != 1:
            named = lay.find(suffix)
            if not hits and len(named) == 1 and shape is not None:  # the dataset exists with another shape
                declared = tuple(lay.weights[named[0]].shape)
                raise KerasFormatError(f"{self.path}: dataset '{lay.name}/{named[0]}' declares shape {declared} but "
                                       f"the architecture expects {shape}; the file does not hold this "
                                       "architecture's weights (use the original .h5, or the right --arch)")
            have = {k: tuple(v.shape) for k, v in lay.weights.items()}
            what = "no" if not hits else f"{len(hits)} ambiguous ({hits})"
            raise KerasFormatError(f"{self.path}: layer {lay.name!r} has {what} weight matching {suffix!r}"
                                   f"{'' if shape is None else f' with shape {shape}'}; its weights: {have} (use "
                                   "the original .h5, or the right --arch)")
        self._taken.add((lay.name, hits[0]))
        self.last_taken = f"{lay.name}/{hits[0]}"
        return lay.weights[hits[0]]

    def declared_shape(self, dataset: str) -> tuple[int, ...] | None:
        """The shape of ``'layer/weight'`` (as the file declares it), or None."""
        layer, _, key = dataset.partition("/")
        tensor = self._by_name[layer].weights.get(key) if layer in self._by_name else None
        return None if tensor is None else tuple(tensor.shape)

    def layer_weights(self) -> dict[str, dict[str, np.ndarray]]:
        """{layer name: {short weight name: ndarray}} for every layer that has weights."""
        return {layer.name: dict(layer.weights) for layer in self.layers if layer.weights}

    def mark_taken(self, layer: str, key: str) -> None:
        """Record one tensor (layer name, short name) as mapped, for mappers that read ``layer_weights()``."""
        if key not in self.layer(layer).weights:
            raise KerasFormatError(f"{self.path}: layer {layer!r} has no weight {key!r}")
        self._taken.add((layer, key))

    def unused(self) -> list[str]:
        """'layer/weight' for every tensor not yet taken (what a converter failed to map)."""
        return [f"{layer.name}/{key}" for layer in self.layers for key in layer.weights
                if (layer.name, key) not in self._taken]

    def __repr__(self) -> str:
        return (f"H5Model({str(self.path)!r}, name={self.name!r}, layers={len(self.layers)}, "
                f"tensors={self.n_tensors}, keras={self.keras_version!r})")


#: Memory-bomb guards: the most bytes all weight tensors of one file may declare, and the largest ratio of declared
#: to stored bytes one tensor may have once it declares more than ``_RATIO_FREE_BYTES`` (Keras writes weights
#: uncompressed; a crafted file declares a huge dataset it never stores).
MAX_DECLARED_BYTES = 8 << 30
MAX_STORAGE_RATIO = 64
_RATIO_FREE_BYTES = 1 << 20


def _layer_datasets(group, layer_name: str) -> dict[str, Any]:
    """The weight datasets of one layer group (not read yet), in the order of its ``weight_names`` attr, keyed by
    short name."""
    import h5py

    names = _decode(group.attrs.get("weight_names", np.array([], dtype=object)))
    if isinstance(names, str):
        names = [names]
    out: dict[str, Any] = {}
    if len(names):
        for full in names:
            if full not in group:
                raise KerasFormatError(f"{group.file.filename}: layer {layer_name!r} lists weight {full!r} in "
                                       "'weight_names' but holds no such dataset (a truncated or edited file)")
            out[_short_name(full, layer_name)] = group[full]
        return out
    # No weight_names attr (non-standard writer): every dataset below the group.
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[_short_name(name, layer_name)] = obj

    group.visititems(visit)
    return out


def _check_declared(path: Path, datasets: dict[str, dict[str, Any]], max_bytes: int | None) -> None:
    """Refuse a file whose datasets declare more than they store, or more than ``max_bytes`` in all, before any
    tensor is read (a 5 KB file may declare a 13 GiB dataset). ``max_bytes=None``: only the numeric-type check
    (nothing will be read)."""
    total = 0
    for layer, tensors in datasets.items():
        for key, ds in tensors.items():
            if ds.dtype.kind not in "fiub":
                raise KerasFormatError(f"{path}: dataset '{layer}/{key}' holds {ds.dtype} values, not numbers; "
                                       "a weight must be a numeric array (use the original .h5)")
            if max_bytes is None:
                continue
            declared = int(np.prod(ds.shape, dtype=np.int64)) * ds.dtype.itemsize if ds.shape else ds.dtype.itemsize
            stored = ds.id.get_storage_size()
            if declared > _RATIO_FREE_BYTES and declared > MAX_STORAGE_RATIO * stored:
                raise KerasFormatError(f"{path}: dataset '{layer}/{key}' declares shape {tuple(ds.shape)} "
                                       f"({declared} bytes) but stores {stored} bytes; refused before reading "
                                       "(a crafted or truncated file): use the original .h5")
            total += declared
    if max_bytes is not None and total > max_bytes:
        raise KerasFormatError(f"{path}: weight tensors declare {total} bytes in all, more than the {max_bytes} "
                               "allowed; refused before reading (pass a larger max_bytes for a bigger model)")


def _short_name(full: str, layer_name: str) -> str:
    name = _strip_tensor_suffix(full)
    prefix = layer_name + "/"
    if name.startswith(prefix):
        name = name[len(prefix):]
    return name


def read_h5(path: str | os.PathLike, *, max_bytes: int = MAX_DECLARED_BYTES, declared_only: bool = False) -> H5Model:
    """Read a legacy Keras ``.h5`` (full model from ``model.save`` or weights from ``save_weights``).

    Declared sizes are checked before any tensor is read (see :func:`_check_declared`); ``max_bytes`` caps the
    total size of the weights. ``declared_only=True`` reads no tensor at all: each weight is a :func:`probe` of
    its declared shape, which a converter maps onto the architecture to check every dataset's shape before the
    real read (:func:`harmonized_models.keras.convert.check_declared_shapes`)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise KerasFormatError(f"{path}: not an HDF5 file ({exc}); expected a Keras .h5 saved with model.save") \
            from None
    with f:
        attrs = {k: _decode(v) for k, v in f.attrs.items() if k not in ("model_config", "training_config")}
        raw_cfg = _decode(f.attrs["model_config"]) if "model_config" in f.attrs else None
        model_config = json.loads(raw_cfg) if raw_cfg else None
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise KerasFormatError(f"{path}: no 'layer_names' attribute in {root.name!r}; "
                                   "not a Keras h5 model (save it with model.save(path, save_format='h5'))")
        file_layers = _decode(root.attrs["layer_names"])
        datasets = {name: _layer_datasets(root[name], name) for name in file_layers if name in root}
        _check_declared(path, datasets, None if declared_only else max_bytes)
        weights = {name: {key: probe(ds.shape) if declared_only else np.asarray(ds[()])
                          for key, ds in tensors.items()} for name, tensors in datasets.items()}
        layers: list[KerasLayer] = []
        cfg_layers = _config_layers(model_config)
        if cfg_layers:
            for lc in cfg_layers:
                name = lc.get("name") or lc.get("config", {}).get("name")
                layers.append(KerasLayer(name=name, class_name=lc.get("class_name"), config=lc.get("config", {}),
                                         inbound=_inbound_names(lc), weights=weights.pop(name, {})))
        # Layers with weights that the config does not list (weights-only file, or nested models).
        for name in file_layers:
            if name in weights:
                layers.append(KerasLayer(name=name, class_name=None, config={}, weights=weights.pop(name)))
    return H5Model(path, model_config, layers, attrs, declared_only=declared_only)


def _config_layers(model_config: dict | None) -> list[dict]:
    if not model_config:
        return []
    cfg = model_config.get("config", {})
    if isinstance(cfg, dict) and isinstance(cfg.get("layers"), list):
        return cfg["layers"]
    return []
