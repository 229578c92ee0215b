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


class _Placement:
    """Presentations composed from source images on the device: a grey ``canvas_px`` square with source image
    ``sources[n]`` pasted with its top-left pixel at (``tops[n]``, ``lefts[n]``), cut at the canvas edges (PIL's
    ``paste``), then resized to the model's input size as its preprocessing would resize the canvas file."""

    def __init__(self, paths: Sequence[str], images: np.ndarray, sources: Sequence[int], tops: Sequence[int],
                 lefts: Sequence[int], canvas_px: int, background: Sequence[int], device: torch.device):
        images = np.asarray(images)
        n = len(paths)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"placed presentations: images must be uint8 [I, H, W, 3], got {images.dtype} "
                             f"{images.shape}")
        arrays = [np.asarray(a, dtype=np.int64) for a in (sources, tops, lefts)]
        if any(a.shape != (n,) for a in arrays):
            raise ValueError(f"placed presentations: sources, tops and lefts must each have one entry per path ({n})")
        if n and (arrays[0].min() < 0 or arrays[0].max() >= len(images)):
            raise ValueError(f"placed presentations: sources must index the {len(images)} images")
        self.index = {str(path): i for i, path in enumerate(paths)}
        if len(self.index) != n:
            raise ValueError("placed presentations: paths must be unique")
        self.canvas_px = int(canvas_px)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.sources, self.tops, self.lefts = (torch.from_numpy(a).to(device) for a in arrays)
        self.background = torch.tensor(list(background), dtype=torch.uint8, device=device)
        self.served = 0  #: presentations composed so far (how a caller sees that the tensor path ran)

    def lookup(self, paths: Sequence[str]) -> np.ndarray | None:
        """Indices of ``paths`` among the placed presentations; None when none of them is placed."""
        found = [self.index.get(str(path)) for path in paths]
        if all(i is None for i in found):
            return None
        if any(i is None for i in found):
            missing = [str(p) for p, i in zip(paths, found) if i is None]
            raise ValueError(f"placed presentations are active but {len(missing)} of {len(paths)} requested paths are "
                             f"not among them (e.g. {missing[0]}); request only placed presentations or none")
        return np.asarray(found, dtype=np.int64)

    def canvases(self, index: np.ndarray) -> torch.Tensor:
        """uint8 [B, canvas_px, canvas_px, 3] of presentations ``index`` (one gather on the device)."""
        rows_of, cols_of = self.images.shape[1], self.images.shape[2]
        select = torch.from_numpy(np.asarray(index, dtype=np.int64)).to(self.images.device)
        grid = torch.arange(self.canvas_px, device=self.images.device)
        rows = grid[None, :] - self.tops[select][:, None]    # [B, C] source row shown on each canvas row
        cols = grid[None, :] - self.lefts[select][:, None]   # [B, C] source column shown on each canvas column
        inside = (((rows >= 0) & (rows < rows_of))[:, :, None] & ((cols >= 0) & (cols < cols_of))[:, None, :])
        pixels = self.images[self.sources[select][:, None, None], rows.clamp(0, rows_of - 1)[:, :, None],
                             cols.clamp(0, cols_of - 1)[:, None, :]]
        self.served += len(index)
        return torch.where(inside[..., None], pixels, self.background)

    def batch(self, index: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
        """uint8 [B, S, S, 3] at the model's input size S, on the device."""
        canvases = self.canvases(index)
        if preprocessing.image_size == self.canvas_px:  # the file path's resize of a same-size image is a copy
            return canvases
        return resize_uint8(canvases, preprocessing)


#: ``Preprocessing.interpolation`` filters resized as tensor operations (torchvision's antialiased kernels follow
#: PIL's filter support; torch's nearest modes pick other pixels than PIL's, so nearest goes through PIL)
_TENSOR_INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic"}


def resize_uint8(batch: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Resize uint8 images [B, H, W, 3] to the model's ``image_size`` square as its file preprocessing would
    (PIL ``resize`` with the model's filter). Bilinear and bicubic run as tensor operations on the batch's device
    (torchvision, ``antialias=True``); they differ from PIL's uint8 arithmetic by rounding only: at most 2 grey
    levels, in under 6 % of the pixels (measured 64 px -> 37..224 px; tests/test_shift_tensors.py). PIL's other
    filters (nearest, lanczos, box, hamming) go through PIL on the CPU, image by image: exact."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F
    size = [preprocessing.image_size, preprocessing.image_size]
    mode = _TENSOR_INTERPOLATIONS.get(preprocessing.interpolation)
    if mode is None:
        from PIL import Image
        resize = preprocessing.resize()
        return torch.stack([torch.from_numpy(np.asarray(resize(Image.fromarray(image.cpu().numpy())),
                                                        dtype=np.uint8).copy()) for image in batch]).to(batch.device)
    resized = F.resize(batch.permute(0, 3, 1, 2), size, interpolation=InterpolationMode(mode), antialias=True)
    return resized.permute(0, 2, 3, 1)


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
                if self._wrapper._placement is not None and self._wrapper._placement.lookup(paths) is not None:
                    raise ValueError("placed presentations cannot be shown with microsaccades (require_variance); "
                                     "render them to files instead")
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
                      "model": ("neuroid", np.full(n, str(self.identifier))),
                      "layer": ("neuroid", np.full(n, str(layer)))}
            if names:
                index = np.unravel_index(np.arange(n), feature_shape)
                for i, name in enumerate(names):
                    coords[name] = ("neuroid", index[i] if i < len(index) else np.full(n, np.nan))
            prefix = f"{self.identifier}.{layer}."
            coords["neuroid_id"] = ("neuroid", np.array([prefix + str(i) for i in range(n)]))
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
        self._placement: _Placement | None = None
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

    @contextlib.contextmanager
    def placed_presentations(self, paths: Sequence[str], images: np.ndarray, sources: Sequence[int],
                             tops: Sequence[int], lefts: Sequence[int], canvas_px: int,
                             background: Sequence[int] = (128, 128, 128)):
        """While active, image paths ``paths`` are not read from disk: presentation ``n`` is composed on the
        model's device as a ``canvas_px`` square of ``background`` with ``images[sources[n]]`` (uint8
        [I, H, W, 3]) pasted with its top-left pixel at canvas row ``tops[n]``, column ``lefts[n]`` (cut at the
        edges, like PIL's ``paste``), resized to the model's input size like a canvas file would be
        (:func:`resize_uint8`; no resize when ``canvas_px`` is the input size), then normalised as usual.

        Everything else of ``look_at`` (region, time bins, hooks, packaging, batch size, out-of-memory back-off)
        is unchanged, so ``look_at`` of a StimulusSet whose files would hold these canvases returns the same
        responses without the files. This is the tensor hook of the Arcaro benchmarks' shift protocol
        (``benchmarks_it_maps.benchmarks.arcaro2020.look_at_shifted``). Yields the placement (``served`` counts the
        presentations composed)."""
        placement = _Placement(paths, images, sources, tops, lefts, canvas_px, background, self.device)
        previous, self._placement = self._placement, placement
        try:
            yield placement
        finally:
            self._placement = previous

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
        placed = self._placement.lookup(paths) if self._placement is not None else None
        loader = None if placed is not None else _ImageLoader(paths, self.preprocessing, self.num_workers,
                                                              lookahead=batch_size)
        results: OrderedDict[str, np.ndarray] | None = None
        start = 0
        progress = tqdm(total=n, desc=f"activations {self.identifier}", unit="img", leave=False,
                        disable=None)
        try:
            while start < n:
                end = min(start + batch_size, n)
                try:
                    if placed is not None:  # composed on the device
                        batch = self._placement.batch(placed[start:end], self.preprocessing)
                    else:
                        batch = loader.batch(start, end, lookahead=batch_size)
                    on_host = batch.device.type == "cpu"
                    pixels = batch.pin_memory() if self.device.type == "cuda" and on_host else batch
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
                if loader is not None:
                    loader.release(end)
                start = end
        finally:
            progress.close()
            if loader is not None:
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

    #: Images of the probe pass of :meth:`_probe_layer_calls`: two, not one, since some models squeeze a batch of
    #: one away.
    PROBE_IMAGES = 2

    def _probe_layer_calls(self, batch: torch.Tensor, layers: list[str]) -> None:
        """Learn whether each of ``layers`` runs exactly once per forward pass (so that the pass may stop after the
        last of them, :meth:`_forward`'s early exit) from the first :attr:`PROBE_IMAGES` images of the first batch
        through the whole network, outputs discarded, instead of the whole first batch: on a CPU the first batch's
        layers past the last hooked one cost a ResNet-18 a quarter of its forward pass (benchmarks/RESULTS.md).
        Should the probe itself fail (a model that cannot take so small a batch), nothing is learnt and the first
        batch runs whole, as it would without the probe."""
        try:
            self._forward(batch[:self.PROBE_IMAGES], layers, allow_early_exit=False)
        except Exception as error:  # noqa: BLE001 - the first batch's own whole pass decides instead
            logger.debug("%s: probe of %s failed (%s); the first batch runs whole", self.identifier, layers, error)

    def _forward(self, batch: torch.Tensor, layers: list[str], allow_early_exit: bool) -> "OrderedDict[str, np.ndarray]":
        """One forward pass; returns the requested layers' outputs as float32 numpy arrays."""
        if self.simulated_memory_limit is not None and batch.shape[0] > self.simulated_memory_limit:
            raise torch.OutOfMemoryError(
                f"simulated out of memory: batch of {batch.shape[0]} > limit {self.simulated_memory_limit}")
        key = tuple(layers)
        if allow_early_exit and self.early_exit and key not in self._single_call_layers \
                and len(batch) > self.PROBE_IMAGES:
            self._probe_layer_calls(batch, layers)
        early = allow_early_exit and self.early_exit and self._single_call_layers.get(key, False)
        captured: dict[str, torch.Tensor] = {}
        calls: collections.Counter = collections.Counter()
        targets = {name: self.get_layer(name) for name in layers}

        def make_hook(name: str):
            def hook(_module, _inputs, output):
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"layer {name!r} of {self.identifier!r} returns {type(output).__name__}, "
                                    f"not a tensor; choose a module that outputs a single tensor")
                if output.ndim == 0 or output.shape[0] != len(batch):
                    raise ValueError(f"layer {name!r} of {self.identifier!r} returns shape {tuple(output.shape)} "
                                     f"for a batch of {len(batch)} images: its first dimension is not the images "
                                     f"(a module run image by image, or sequence-first); choose a module whose "
                                     f"output is [images, ...]")
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
