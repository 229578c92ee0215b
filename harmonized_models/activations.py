"""Fast activations extraction for PyTorch networks: a drop-in replacement for brainscore-vision's PytorchWrapper.

:class:`TorchActivationsModel` behaves like ``PytorchWrapper`` inside a ``ModelCommitment`` (same ``_extractor``
interface, hooks, stimulus-set metadata and NeuroidAssembly coordinates: conv layers -> ``channel``, ``channel_x`` =
row, ``channel_y`` = column; token layers -> ``channel`` = token, ``embedding``; FC layers -> ``channel`` with NaN
``channel_x``/``channel_y``; ``neuroid_id`` = ``model.layer.num``), but runs much faster:

* every image is decoded and preprocessed once, by a pool of threads that reads ahead of the GPU;
* batches are not padded (brainscore-vision pads every batch to 64 images);
* ``torch.inference_mode``, channels-last memory format and autocast (bf16 on CUDA by default, off on CPU);
* only the requested layers are hooked, and the forward pass stops once they have all fired (only when a full first
  batch showed that each of them runs exactly once per forward pass, so results are identical);
* the batch size is chosen automatically and halved on out-of-memory errors;
* activations are never cached on disk (a cache keyed on stimulus-set identifiers served wrong results for subsets).
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .preprocessing import Preprocessing

logger = logging.getLogger(__name__)

SUBMODULE_SEPARATOR = "."
DEFAULT_BATCH_SIZE = {"cuda": 256, "cpu": 32}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                   "float16": torch.float16, "half": torch.float16}


class _StopForward(Exception):
    """Raised from a forward hook once every requested layer has produced its output."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None) -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_autocast(autocast: Any, device: torch.device) -> torch.dtype | None:
    """None -> bf16 on CUDA, off elsewhere; False/'off' -> off; True -> bf16; 'bf16'/'fp16' or a torch dtype."""
    if autocast is None:
        return torch.bfloat16 if device.type == "cuda" else None
    if autocast is False or (isinstance(autocast, str) and autocast.lower() in ("off", "none", "false", "fp32")):
        return None
    if autocast is True:
        return torch.bfloat16
    if isinstance(autocast, torch.dtype):
        if autocast not in (torch.bfloat16, torch.float16):
            raise ValueError(f"autocast dtype must be bfloat16 or float16, got {autocast}")
        return autocast
    if isinstance(autocast, str) and autocast.lower() in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[autocast.lower()]
    raise ValueError(f"autocast must be None, True, False, 'bf16', 'fp16' or a torch dtype, got {autocast!r}")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception is an accelerator out-of-memory error."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class _ImageLoader:
    """Decodes and resizes images (uint8) with a thread pool, ``lookahead`` images ahead of the consumer, each once.

    Normalisation happens on the device, on the stacked batch (4x less data to transfer than float32).
    """

    def __init__(self, paths: Sequence[str], preprocessing: Preprocessing, workers: int, lookahead: int):
        self._paths = list(paths)
        self._preprocessing = preprocessing
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="image-loader")
        self._futures: dict[int, Future] = {}
        self._submitted = 0
        self._lookahead = lookahead

    def _load(self, index: int) -> torch.Tensor:
        return self._preprocessing.load_uint8(self._paths[index])

    def _submit_until(self, end: int) -> None:
        end = min(end, len(self._paths))
        while self._submitted < end:
            self._futures[self._submitted] = self._pool.submit(self._load, self._submitted)
            self._submitted += 1

    def batch(self, start: int, end: int, lookahead: int | None = None) -> torch.Tensor:
        """Images ``start:end`` stacked into one uint8 tensor [N, S, S, 3]; schedules the next ones."""
        self._submit_until(end + (self._lookahead if lookahead is None else lookahead))
        return torch.stack([self._futures[i].result() for i in range(start, end)])

    def release(self, end: int) -> None:
        """Forget decoded images before ``end`` (they have been consumed)."""
        for index in [i for i in self._futures if i < end]:
            del self._futures[index]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._futures.clear()


def _make_extractor_class():
    """Build the extractor class lazily so importing this module does not import brainscore_vision."""
    from brainscore_vision.model_helpers.activations.core import ActivationsExtractorHelper
    from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly

    class FastActivationsExtractor(ActivationsExtractorHelper):
        """brainscore-vision's extractor with a fast, uncached, unpadded batch loop (see module docstring)."""

        def __init__(self, wrapper: "TorchActivationsModel", identifier: str, preprocessing: Preprocessing):
            super().__init__(get_activations=wrapper.get_activations, preprocessing=preprocessing,
                             identifier=identifier, batch_size=wrapper.batch_size or 64)
            self._wrapper = wrapper

        def from_paths(self, stimuli_paths, layers, stimuli_identifier=None, require_variance=None):
            """Like the parent's, but never reads or writes the activations cache."""
            if layers is None:
                layers = ["logits"]
            stimuli_paths = [str(p) for p in stimuli_paths]
            if require_variance:
                return self._from_paths(layers=layers, stimuli_paths=stimuli_paths, require_variance=True)
            reduced = self._reduce_paths(stimuli_paths)
            activations = self._from_paths(layers=layers, stimuli_paths=reduced, require_variance=False)
            if len(reduced) != len(stimuli_paths):
                activations = self._expand_paths(activations, original_paths=stimuli_paths)
            return activations

        def _get_activations_batched(self, paths, layers, batch_size, require_variance):
            if require_variance or self._microsaccade_helper.number_of_trials != 1:
                # microsaccades translate preprocessed arrays one trial at a time: keep the stock loop for them
                self._batch_size = self._wrapper.batch_size or 64
                return super()._get_activations_batched(paths, layers=layers, batch_size=self._batch_size,
                                                        require_variance=require_variance)
            for path in paths:  # what the stock loop records for unshifted images (coords of _package)
                self._microsaccade_helper.microsaccades["pixels"][path] = [(0., 0.)]
                self._microsaccade_helper.microsaccades["degrees"][path] = [(0., 0.)]
            return self._wrapper.run(paths, layers, batch_hooks=self._batch_activations_hooks)

        def _package_layer(self, layer_activations: np.ndarray, layer: str, stimuli_paths,
                           require_variance: bool = False):
            """Vectorised version of the parent's method; produces identical coordinates."""
            runs_per_image = self._microsaccade_helper.number_of_trials if require_variance else 1
            assert layer_activations.shape[0] == len(stimuli_paths) * runs_per_image
            stimuli_paths = np.repeat(stimuli_paths, runs_per_image)
            feature_shape = layer_activations.shape[1:]
            activations = layer_activations.reshape(layer_activations.shape[0], -1)
            n = activations.shape[1]
            names = {1: ["channel", "channel_x", "channel_y"], 2: ["channel", "embedding"],
                     3: ["channel", "channel_x", "channel_y"],
                     4: ["channel_temporal", "channel_x", "channel_y", "channel"]}.get(len(feature_shape))
            coords = {"stimulus_path": ("presentation", stimuli_paths),
                      **self._microsaccade_helper.build_microsaccade_coords(stimuli_paths),
                      "neuroid_num": ("neuroid", np.arange(n)),
                      "model": ("neuroid", np.full(n, self.identifier, dtype=object).astype(str)),
                      "layer": ("neuroid", np.full(n, layer, dtype=object).astype(str))}
            if names:
                index = np.unravel_index(np.arange(n), feature_shape)
                for i, name in enumerate(names):
                    coords[name] = ("neuroid", index[i] if i < len(index) else np.full(n, np.nan))
            prefix = f"{self.identifier}.{layer}."
            coords["neuroid_id"] = ("neuroid", np.char.add(prefix, np.arange(n).astype(str)).astype(str))
            return NeuroidAssembly(activations, coords=coords, dims=["presentation", "neuroid"])

    return FastActivationsExtractor


_EXTRACTOR_CLASS = None


def _extractor_class():
    global _EXTRACTOR_CLASS
    if _EXTRACTOR_CLASS is None:
        _EXTRACTOR_CLASS = _make_extractor_class()
    return _EXTRACTOR_CLASS


class TorchActivationsModel:
    """Drop-in replacement for brainscore-vision's ``PytorchWrapper`` (see the module docstring).

    ``batch_size=None`` chooses it automatically (256 on CUDA, 32 on CPU, never more than ``max_batch_size`` or the
    number of images) and halves it on out-of-memory errors. ``simulated_memory_limit`` (images per batch) makes any
    larger batch fail like an out-of-memory error, to exercise that back-off without a GPU.
    """

    def __init__(self, model: torch.nn.Module, identifier: str, preprocessing: Preprocessing | Mapping | int | None,
                 *, device: str | torch.device = "auto", batch_size: int | None = None, autocast: Any = None,
                 channels_last: bool = True, max_batch_size: int | None = None, num_workers: int | None = None,
                 early_exit: bool = True, simulated_memory_limit: int | None = None):
        if not identifier:
            raise ValueError("TorchActivationsModel needs a non-empty identifier")
        for name, value in (("batch_size", batch_size), ("max_batch_size", max_batch_size),
                            ("simulated_memory_limit", simulated_memory_limit)):
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.preprocessing = Preprocessing.coerce(preprocessing)
        self.image_size = self.preprocessing.image_size
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_autocast(autocast, self.device)
        self.channels_last = channels_last
        self.batch_size = batch_size
        self.max_batch_size = max_batch_size
        self.num_workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
        self.early_exit = early_exit
        self.simulated_memory_limit = simulated_memory_limit
        self.last_batch_size: int | None = None  # the batch size the last run ended with (after any back-off)
        self.run_log: list[dict[str, Any]] = []   # per run: images, seconds, final batch size (throughput reports)
        self._single_call_layers: dict[tuple[str, ...], bool] = {}
        model = model.eval().to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._model = model
        self._extractor = _extractor_class()(self, identifier, self.preprocessing)
        self._extractor.insert_attrs(self)

    # --- the PytorchWrapper interface -------------------------------------------------------------------------
    @property
    def identifier(self) -> str:
        return self._extractor.identifier

    @identifier.setter
    def identifier(self, value: str) -> None:
        self._extractor.identifier = value

    def __call__(self, *args, **kwargs):
        return self._extractor(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self._model)

    def get_layer(self, layer_name: str) -> torch.nn.Module:
        """The module for a dotted layer name; 'logits' is the last registered leaf module (as PytorchWrapper)."""
        if layer_name == "logits":
            return self._output_layer()
        module = self._model
        for part in layer_name.split(SUBMODULE_SEPARATOR):
            child = module._modules.get(part)
            if child is None:
                close = _close_layer_names(self._model, layer_name)
                raise KeyError(f"model {self.identifier!r} has no layer {layer_name!r} (no submodule {part!r})"
                               + (f"; close names: {close}" if close else ""))
            module = child
        return module

    def _output_layer(self) -> torch.nn.Module:
        module = self._model
        while module._modules:
            module = module._modules[next(reversed(module._modules))]
        return module

    def layers(self) -> Iterable[tuple[str, torch.nn.Module]]:
        for name, module in self._model.named_modules():
            if len(list(module.children())) > 0:
                continue
            yield name, module

    def graph(self):
        import networkx as nx
        g = nx.DiGraph()
        for layer_name, layer in self.layers():
            g.add_node(layer_name, object=layer, type=type(layer))
        return g

    def get_activations(self, images, layer_names: Sequence[str]) -> "OrderedDict[str, np.ndarray]":
        """Activations of a preprocessed batch (array or list of arrays/tensors [3, S, S])."""
        if isinstance(images, np.ndarray):
            batch = torch.from_numpy(images)
        else:
            batch = torch.stack([torch.as_tensor(image) for image in images])
        return self._forward(batch, list(layer_names), allow_early_exit=False)

    # --- the fast path ----------------------------------------------------------------------------------------
    def _initial_batch_size(self, n_images: int) -> int:
        size = self.batch_size or DEFAULT_BATCH_SIZE.get(self.device.type, 32)
        if self.max_batch_size:
            size = min(size, self.max_batch_size)
        return max(1, min(size, n_images))

    def run(self, paths: Sequence[str], layers: Sequence[str],
            batch_hooks: Mapping[int, Any] | None = None) -> "OrderedDict[str, np.ndarray]":
        """Activations of ``layers`` for image files ``paths``: {layer: array [N, ...]} in path order."""
        layers = list(layers)
        if not layers:
            raise ValueError("No layers passed to retrieve activations from")
        for layer in layers:
            self.get_layer(layer)  # fail before decoding anything
        n = len(paths)
        started = time.perf_counter()
        batch_size = self._initial_batch_size(n)
        loader = _ImageLoader(paths, self.preprocessing, self.num_workers, lookahead=batch_size)
        results: OrderedDict[str, np.ndarray] | None = None
        start = 0
        progress = tqdm(total=n, desc=f"activations {self.identifier}", unit="img", leave=False,
                        disable=None)
        try:
            while start < n:
                end = min(start + batch_size, n)
                batch = loader.batch(start, end, lookahead=batch_size)
                try:
                    pixels = batch.pin_memory() if self.device.type == "cuda" else batch
                    inputs = self.preprocessing.normalize(pixels.to(self.device, non_blocking=True))
                    outputs = self._forward(inputs, layers, allow_early_exit=True)
                except Exception as error:  # noqa: BLE001 - only out-of-memory errors are handled
                    if not is_out_of_memory(error) or batch_size == 1:
                        raise
                    del error
                    new_size = max(1, batch_size // 2)
                    logger.warning("out of memory at batch size %d; retrying with %d", batch_size, new_size)
                    batch_size = new_size
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                for hook in list((batch_hooks or {}).values()):
                    outputs = hook(outputs)
                if results is None:
                    results = OrderedDict((name, np.empty((n,) + value.shape[1:], dtype=value.dtype))
                                          for name, value in outputs.items())
                for name, value in outputs.items():
                    results[name][start:end] = value
                progress.update(end - start)
                loader.release(end)
                start = end
        finally:
            progress.close()
            loader.close()
        self.last_batch_size = batch_size
        self.run_log.append({"images": n, "seconds": time.perf_counter() - started, "batch_size": batch_size,
                             "layers": layers})
        logger.debug("%s: %d images in %.2f s (batch size %d)", self.identifier, n, self.run_log[-1]["seconds"],
                     batch_size)
        return results if results is not None else OrderedDict()

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _forward(self, batch: torch.Tensor, layers: list[str], allow_early_exit: bool) -> "OrderedDict[str, np.ndarray]":
        """One forward pass; returns the requested layers' outputs as float32 numpy arrays."""
        if self.simulated_memory_limit is not None and batch.shape[0] > self.simulated_memory_limit:
            raise torch.OutOfMemoryError(
                f"simulated out of memory: batch of {batch.shape[0]} > limit {self.simulated_memory_limit}")
        key = tuple(layers)
        early = allow_early_exit and self.early_exit and self._single_call_layers.get(key, False)
        captured: dict[str, torch.Tensor] = {}
        calls: collections.Counter = collections.Counter()
        targets = {name: self.get_layer(name) for name in layers}

        def make_hook(name: str):
            def hook(_module, _inputs, output):
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"layer {name!r} of {self.identifier!r} returns {type(output).__name__}, "
                                    f"not a tensor; choose a module that outputs a single tensor")
                # a copy, so later in-place ops (ReLU(inplace=True)) cannot change it; last call wins, as in
                # PytorchWrapper
                output = output.detach()
                captured[name] = output.clone() if output.dtype == torch.float32 else output.float()
                calls[name] += 1
                if early and len(captured) == len(targets):
                    raise _StopForward
            return hook

        handles = [module.register_forward_hook(make_hook(name)) for name, module in targets.items()]
        x = batch.to(self.device, non_blocking=True)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        try:
            with torch.inference_mode(), self._autocast():
                self._model(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if not early and key not in self._single_call_layers:
            self._single_call_layers[key] = all(calls[name] == 1 for name in layers)
        missing = [name for name in layers if name not in captured]
        if missing:
            raise RuntimeError(f"layers {missing} of {self.identifier!r} did not run in the forward pass")
        return OrderedDict((name, captured[name].cpu().numpy()) for name in layers)


def _close_layer_names(model: torch.nn.Module, name: str, n: int = 5) -> list[str]:
    import difflib
    return difflib.get_close_matches(name, [m for m, _ in model.named_modules() if m], n=n, cutoff=0.6)
