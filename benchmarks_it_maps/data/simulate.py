"""A simulated twin of the Arcaro 2020 archive with known ground truth, written independently of the benchmark.

Layout. The twin imitates the released archive as this package reads it (docs/DATA.md): ``George/
george_060118_data.mat`` with images in ``George/natural_test/``, ``Red/red_062419_data.mat`` with images in
``Red/red_naturalface/``, keys ``imageRF`` ([grid_a, grid_b, time_ms, channel, image], both spatial axes reversed
w.r.t. the image), ``UniqueNames`` (1xN cell of Windows paths, in an order different from the sorted file names) and
``imageRF_trials`` (spike counts per 1-ms sample, extra last axis = repetition); 63 (32 PL + 31 ML) + 32 (ML)
channels; a 0..T-1 ms time axis; grids spanning the 16 deg image edge to edge. Every one of these facts is written
down again *here* (:data:`ANIMALS`, :data:`SITE_CHANNELS`, :func:`to_archive_layout`, :func:`write_mat5`), not taken
from :mod:`benchmarks_it_maps.data.conventions`, the importer or the benchmark's readout: this module imports none of
them, so a wrong axis, flip or split in those is caught by the recovery tests instead of cancelling out. A sidecar
``generator.json`` in the archive root describes the generator (the importer recognises the twin by it).

Neurons (geometry in pixel space). Every neuron has a receptive field fixed in visual space at the fixation point, the
grid is centred on it: at grid position (row k, column l) of a G x G grid the image is shown displaced so that its
point at (k / (G - 1), l / (G - 1)) of its height and width lies on the field centre, grey (128) outside the image.
The field has a Gaussian envelope (``rf_sigma_deg`` per neuron). The neuron's drive is the envelope-weighted sum of a
random low-rank projection of the generator layer's feature cells, each cell placed at its centre in pixel space:

- ``protocol='maps'`` (default): the network sees the image once, on a grey canvas ``margin_px`` wider on every
  side, and the field is moved over the canvas to the image point (exact for a translation-equivariant network; one
  forward pass per image). The benchmark's maps protocol, which reads the whole-image feature map, models this.
- ``protocol='shift'``: the network sees each displaced presentation (a canvas of the network's input size spanning
  16 deg) and the field stays at the canvas centre; the benchmark's shift protocol models this.

Rates: ``peak = spont + profile * max(0, baseline - spont + gain * z)``, with ``z`` the standardised drive (image
content inside the field) and ``profile = 1 - depth + depth * coverage`` the known position profile (``coverage``:
the envelope's mass that falls on the image, exact by erf). The time course is ``spont + (peak - spont) *
h(t - latency)`` (exponential rise for ``duration_ms``, exponential decay after); trials are Poisson spike counts per
1-ms sample. The same seed gives a byte-identical archive (fixed MAT headers, zip timestamps and JSON key order).
"""
from __future__ import annotations

import io
import json
import logging
import math
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import scipy.io
import skimage.data
import timm
import torch
from PIL import Image
from scipy.special import erf
from tqdm.auto import tqdm

from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.home import atomic_dir, atomic_file, data_home

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "Arcaro2020sim"
SIDECAR_VERSION = 2
#: The twin's own statement of the archive layout it imitates (kept apart from data/conventions.py on purpose).
SIDECAR_NAME = "generator.json"
TOP_FOLDER = "Arcaro2020"
KEY_RF, KEY_TRIALS, KEY_NAMES = "imageRF", "imageRF_trials", "UniqueNames"
IMAGE_DEG = 16.0
COUNTS_TO_HZ = 1000.0  # spike counts per 1-ms sample -> spikes/s
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY = (128, 128, 128)


@dataclass(frozen=True)
class Animal:
    """One monkey as the twin writes it: archive paths, channel count, response window (for generator_maps)."""
    key: str
    name: str
    folder: str
    mat_file: str
    image_folder: str
    n_channels: int
    window: tuple[int, int]


ANIMALS = {"M1": Animal("M1", "George", "George", "george_060118_data.mat", "natural_test", 63, (100, 250)),
           "M2": Animal("M2", "Red", "Red", "red_062419_data.mat", "red_naturalface", 32, (150, 300))}
#: site -> (monkey, first channel, end channel) (0-based, end exclusive): George 32 PL + 31 ML, Red 32 ML.
SITE_CHANNELS = {"M1PL": ("M1", 0, 32), "M1ML": ("M1", 32, 63), "M2ML": ("M2", 0, 32)}
#: The 8 symmetries of the square on a map's [row, col] axes (transpose first, then the flip); the twin's own copy.
SYMMETRIES = ("identity", "flip_ud", "flip_lr", "rot180", "transpose", "transpose_flip_ud", "transpose_flip_lr",
              "transpose_rot180")


def _channels(site: str) -> range:
    return range(SITE_CHANNELS[site][1], SITE_CHANNELS[site][2])


#: scikit-image sample photographs used as stimuli (name -> loader name in ``skimage.data``); all bundled offline.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry",
          "retina", "camera", "coins", "moon", "grass", "gravel", "brick")

#: Default generator: network, layer, readout rank, geometry.
DEFAULT_GENERATOR = {
    "network": "resnet18",
    "network_kwargs": {"zero_init_last": False},
    "layer": "layer3",
    "image_size": 224,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "interpolation": "bilinear",
    "crop_pct": 1.0,  # the benchmark's model of the twin: the whole image fills the model input
    "protocol": "maps",
    "readout": "benchmarks_it_maps.data.simulate (own pixel-space geometry: Gaussian field envelope over the "
               "layer's cells, grey canvas)",
    "margin_px": 64,  # grey border of the maps-protocol canvas (a multiple of the layers' strides)
    "n_latents": 8,
}
DEFAULT_RATES = {"spont_hz": [2.0, 8.0], "baseline_hz": [50.0, 80.0], "gain_hz": [15.0, 25.0],
                 "rf_sigma_deg": [0.35, 0.6], "profile_depth": [0.2, 0.5]}
DEFAULT_TIME_COURSE = {"latency_ms": {"M1": 80.0, "M2": 120.0}, "latency_jitter_ms": 10.0, "rise_ms": 8.0,
                       "duration_ms": 200.0, "decay_ms": 30.0}


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------

def _photo(name: str) -> np.ndarray:
    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(image.astype(np.float64) / max(float(image.max()), 1e-9) * 255, 0, 255).astype(np.uint8)
    return image


def make_images(seed: int, n_per_monkey: int, size: int = 224) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Distinct natural-looking images (random square crops of the bundled photos), ``n_per_monkey`` per monkey.

    Returns {'M1': [(file_name, uint8 [size, size, 3]), ...], 'M2': [...]}; deterministic in ``seed``.
    """
    rng = np.random.default_rng([seed, 7])
    photos = {name: _photo(name) for name in PHOTOS}
    out: dict[str, list] = {}
    seen: list[np.ndarray] = []
    for animal in ANIMALS.values():
        order = rng.permutation(len(PHOTOS))
        items = []
        for j in range(n_per_monkey):
            name = PHOTOS[order[j % len(PHOTOS)]]
            photo = photos[name]
            for _ in range(100):
                side = int(min(photo.shape[:2]) * rng.uniform(0.45, 0.9))
                top = int(rng.integers(0, photo.shape[0] - side + 1))
                left = int(rng.integers(0, photo.shape[1] - side + 1))
                crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.LANCZOS)
                array = np.asarray(crop, dtype=np.uint8)
                if all(np.abs(array.astype(np.int16) - s).mean() > 2.0 for s in seen):
                    break
            seen.append(array.astype(np.int16))
            prefix = "nat" if animal.key == "M1" else "face"
            items.append((f"{prefix}{j + 1:02d}_{name}.png", array))
        out[animal.key] = items
    return out


def load_image(image: str | Path | np.ndarray, size: int | None = None) -> np.ndarray:
    """uint8 RGB array [H, W, 3] from a path or an array, resized (bicubic) to ``size`` x ``size`` if given."""
    if isinstance(image, np.ndarray):
        array = image
    else:
        with Image.open(image) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if size is not None and array.shape[:2] != (size, size):
        array = np.asarray(Image.fromarray(array).resize((size, size), Image.BICUBIC), dtype=np.uint8)
    return array


# ---------------------------------------------------------------------------------------------------------------------
# Generator network
# ---------------------------------------------------------------------------------------------------------------------

def build_generator_network(sidecar: dict):
    """The generating network of ``sidecar`` (timm, random init under ``torch.manual_seed(weights_seed)``), eval mode.

    The global torch RNG state is left as it was.
    """
    gen = sidecar["generator"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(gen["weights_seed"]))
        network = timm.create_model(gen["network"], pretrained=False, **gen.get("network_kwargs", {}))
    return network.eval()


def _normalise(canvases: Sequence[np.ndarray], gen: dict) -> torch.Tensor:
    x = torch.as_tensor(np.stack(canvases)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.as_tensor(gen["mean"]).view(1, 3, 1, 1)
    std = torch.as_tensor(gen["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def layer_cells(network, layer: str, canvases: Sequence[np.ndarray], gen: dict, batch_size: int = 64) -> np.ndarray:
    """The generator layer's output ``[N, h, w, C]`` (float64) for uint8 canvases ``[S, S, 3]`` (row 0 = top)."""
    module = network.get_submodule(layer)
    captured = {}
    handle = module.register_forward_hook(lambda m, inputs, output: captured.__setitem__("x", output))
    out = []
    try:
        for start in range(0, len(canvases), batch_size):
            with torch.inference_mode():
                network(_normalise(canvases[start:start + batch_size], gen))
            out.append(captured["x"].permute(0, 2, 3, 1).double().numpy())
    finally:
        handle.remove()
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------------------------------
# Geometry in pixel space
# ---------------------------------------------------------------------------------------------------------------------

def image_points_px(grid_size: int, image_px: int) -> np.ndarray:
    """Pixel offset (from the image's top/left edge) of the image point that grid index 0..G-1 puts on the field
    centre: the grid spans the image edge to edge, so index k is k / (G - 1) of the image's extent."""
    return np.array([image_px * k / (grid_size - 1) for k in range(grid_size)], dtype=np.float64)


def cell_centres_px(n_cells: int, canvas_px: int) -> np.ndarray:
    """Pixel coordinate of the centres of ``n_cells`` equal cells tiling ``canvas_px`` pixels along one axis."""
    return (np.arange(n_cells, dtype=np.float64) + 0.5) * canvas_px / n_cells


def envelope_weights(centres: np.ndarray, cells_y: np.ndarray, cells_x: np.ndarray,
                     sigma_px: np.ndarray) -> np.ndarray:
    """Normalised Gaussian field weights ``[K, P, h * w]`` of K neurons (``sigma_px`` [K]) at P field centres
    (``centres`` [P, 2] = (y, x) pixels) over the cells at (``cells_y``[h], ``cells_x``[w]) pixels."""
    dy = centres[:, 0][:, None] - cells_y[None, :]            # [P, h]
    dx = centres[:, 1][:, None] - cells_x[None, :]            # [P, w]
    s2 = 2.0 * np.asarray(sigma_px, dtype=np.float64)[:, None, None] ** 2
    wy = np.exp(-dy[None] ** 2 / s2)                          # [K, P, h]
    wx = np.exp(-dx[None] ** 2 / s2)                          # [K, P, w]
    w = (wy[:, :, :, None] * wx[:, :, None, :]).reshape(len(sigma_px), len(centres), -1)
    return w / w.sum(axis=-1, keepdims=True)


def coverage(centres: np.ndarray, box: tuple[float, float, float, float], sigma_px: np.ndarray) -> np.ndarray:
    """Fraction ``[K, P]`` of each neuron's Gaussian envelope mass on the image ``box`` = (top, bottom, left,
    right) pixels, for field centres ``centres`` [P, 2] (y, x); exact (product of two erf differences)."""
    s = np.asarray(sigma_px, dtype=np.float64)[:, None] * math.sqrt(2.0)
    top, bottom, left, right = box

    def mass(c, lo, hi):
        return 0.5 * (erf((hi - c[None, :]) / s) - erf((lo - c[None, :]) / s))
    return mass(centres[:, 0], top, bottom) * mass(centres[:, 1], left, right)


def _maps_canvases(images: Sequence, gen: dict) -> list[np.ndarray]:
    size, margin = int(gen["image_size"]), int(gen["margin_px"])
    canvases = []
    for image in images:
        canvas = np.full((size + 2 * margin, size + 2 * margin, 3), GREY, dtype=np.uint8)
        canvas[margin:margin + size, margin:margin + size] = load_image(image, size)
        canvases.append(canvas)
    return canvases


def _site_params(sidecar: dict, site: str) -> dict:
    p = sidecar["sites"][site]
    return {key: np.asarray(value, dtype=np.float64) for key, value in p.items()}


def readout_weights(sidecar: dict, site: str, n_features: int) -> np.ndarray:
    """Low-rank readout [C, K] of ``site``: (C x L channel-to-latent) @ (L x K latent-to-neuron), from the seed.

    Latent 0 is the site's common drive: every neuron of the site weighs it positively (0.7 + |noise| / 2), like
    neighbouring channels of one array sharing tuning, so the channels of one site co-vary (the PL/ML split check).
    """
    gen = sidecar["generator"]
    rng = np.random.default_rng([int(gen["readout_seed"]), list(SITE_CHANNELS).index(site)])
    n_latents = int(gen["n_latents"])
    to_latent = rng.standard_normal((n_features, n_latents)) / np.sqrt(n_features)
    to_neuron = rng.standard_normal((n_latents, len(_channels(site)))) / np.sqrt(n_latents)
    to_neuron[0] = 0.7 + 0.5 * np.abs(to_neuron[0])
    return to_latent @ to_neuron


def site_drive(sidecar: dict, site: str, images: Sequence, grid_size: int, network=None,
               cells: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw drive ``[N, G, G, K]`` of ``site``'s neurons to ``images`` (image coordinates: row 0 = the field on the
    image top) and envelope coverage ``[N or 1, G, G, K]``; see the module docstring for the geometry.
    ``cells``: the layer's output for these images' canvases (maps protocol), to share between sites."""
    gen = sidecar["generator"]
    params = _site_params(sidecar, site)
    image_px = int(gen["image_size"])
    sigma_px = params["rf_sigma_deg"] * image_px / IMAGE_DEG
    points = image_points_px(grid_size, image_px)
    if gen.get("protocol", "maps") == "shift":
        return _shift_drive(sidecar, site, images, points, sigma_px, network)
    margin = int(gen["margin_px"])
    if cells is None:
        network = network if network is not None else build_generator_network(sidecar)
        cells = layer_cells(network, gen["layer"], _maps_canvases(images, gen), gen)
    n, h, w, c = cells.shape
    canvas_px = image_px + 2 * margin
    centres = np.stack(np.meshgrid(margin + points, margin + points, indexing="ij"), axis=-1).reshape(-1, 2)
    weights = envelope_weights(centres, cell_centres_px(h, canvas_px), cell_centres_px(w, canvas_px), sigma_px)
    projected = cells.reshape(n, h * w, c) @ readout_weights(sidecar, site, c)      # [N, h*w, K]
    drive = np.einsum("kpc,nck->npk", weights, projected)
    cover = coverage(centres, (margin, margin + image_px, margin, margin + image_px), sigma_px).T   # [P, K]
    g = grid_size
    return drive.reshape(n, g, g, -1), cover.reshape(1, g, g, -1)


def _shift_drive(sidecar: dict, site: str, images: Sequence, points: np.ndarray, sigma_px: np.ndarray,
                 network=None) -> tuple[np.ndarray, np.ndarray]:
    """Shift protocol: one canvas (the network's input, 16 deg) per image and grid position, the image displaced so
    that its grid point lies on the canvas centre, where the field stays."""
    gen = sidecar["generator"]
    network = network if network is not None else build_generator_network(sidecar)
    size = int(gen["image_size"])
    centre = size / 2.0
    g = len(points)
    offsets = [(int(round(centre - pr)), int(round(centre - pc))) for pr in points for pc in points]
    weights = readout = None
    drives, covers = [], []
    for image in images:
        picture = load_image(image, size)
        canvases = []
        for top, left in offsets:
            canvas = np.full((size, size, 3), GREY, dtype=np.uint8)
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + size, size), min(left + size, size)
            if y1 > y0 and x1 > x0:
                canvas[y0:y1, x0:x1] = picture[y0 - top:y1 - top, x0 - left:x1 - left]
            canvases.append(canvas)
        cells = layer_cells(network, gen["layer"], canvases, gen)              # [P, h, w, C]
        p, h, w, c = cells.shape
        if weights is None:
            weights = envelope_weights(np.array([[centre, centre]]), cell_centres_px(h, size),
                                       cell_centres_px(w, size), sigma_px)[:, 0]     # [K, h*w]
            readout = readout_weights(sidecar, site, c)
        drives.append(np.einsum("kc,pck->pk", weights, cells.reshape(p, h * w, c) @ readout))
        boxes = [(top, top + size, left, left + size) for top, left in offsets]
        covers.append(np.stack([coverage(np.array([[centre, centre]]), box, sigma_px)[:, 0] for box in boxes]))
    drive = np.stack(drives).reshape(len(images), g, g, -1)
    return drive, np.stack(covers).reshape(len(images), g, g, -1)


def _time_course(params: dict, tc: dict, n_samples: int) -> np.ndarray:
    """h[t, k] in [0, 1] for t = 0..n_samples-1 ms, per neuron (latency per neuron)."""
    t = np.arange(n_samples)[:, None] - np.asarray(params["latency_ms"])[None, :]
    rise = np.where(t >= 0, 1 - np.exp(-np.clip(t, 0, None) / tc["rise_ms"]), 0.0)
    peak_end = 1 - np.exp(-tc["duration_ms"] / tc["rise_ms"])
    decay = peak_end * np.exp(-np.clip(t - tc["duration_ms"], 0, None) / tc["decay_ms"])
    return np.where(t < tc["duration_ms"], rise, decay)


def peak_rates(params: dict, drive: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """Sustained rate ``spont + profile * max(0, baseline - spont + gain * z)`` (spikes/s), ``z`` the drive
    standardised with the site's stored mean and std, ``profile = 1 - depth + depth * coverage``."""
    z = (drive - params["drive_mean"]) / params["drive_std"]
    selectivity = np.clip(params["baseline_hz"] - params["spont_hz"] + params["gain_hz"] * z, 0.0, None)
    profile = 1.0 - params["profile_depth"] + params["profile_depth"] * cover
    return params["spont_hz"] + profile * selectivity


def generator_maps(sidecar: dict, images: Sequence, site: str, window: tuple[int, int] | None = None,
                   network=None) -> np.ndarray:
    """Noiseless expected response maps [N, G, G, K] (spikes/s) of ``site`` to ``images``, image coordinates.

    The value is the expected mean rate over the time samples in ``window`` (default: the site's eLife window), so
    it equals the expectation of ``data.response_maps(assembly, window)`` for the imported twin.
    """
    monkey = SITE_CHANNELS[site][0]
    grid = int(sidecar["monkeys"][monkey]["grid_size"])
    window = window or ANIMALS[monkey].window
    params = _site_params(sidecar, site)
    drive, cover = site_drive(sidecar, site, images, grid, network)
    peak = peak_rates(params, drive, cover)
    h = _time_course(params, sidecar["time_course"], int(window[1]))[int(window[0]):int(window[1])].mean(axis=0)
    return params["spont_hz"] + (peak - params["spont_hz"]) * h


def position_profile(sidecar: dict, site: str) -> np.ndarray:
    """The known position profile ``[G, G, K]`` (``1 - depth + depth * coverage``) of ``site`` (maps protocol)."""
    gen = sidecar["generator"]
    params = _site_params(sidecar, site)
    grid = int(sidecar["monkeys"][SITE_CHANNELS[site][0]]["grid_size"])
    image_px, margin = int(gen["image_size"]), int(gen.get("margin_px", 0))
    points = margin + image_points_px(grid, image_px)
    centres = np.stack(np.meshgrid(points, points, indexing="ij"), axis=-1).reshape(-1, 2)
    cover = coverage(centres, (margin, margin + image_px, margin, margin + image_px),
                     params["rf_sigma_deg"] * image_px / IMAGE_DEG).T.reshape(grid, grid, -1)
    return 1.0 - params["profile_depth"] + params["profile_depth"] * cover


# ---------------------------------------------------------------------------------------------------------------------
# Writing the archive
# ---------------------------------------------------------------------------------------------------------------------

def apply_symmetry(maps: np.ndarray, name: str) -> np.ndarray:
    """``maps`` [N, row, col, ...] under one of :data:`SYMMETRIES` (the twin's own implementation)."""
    if name not in SYMMETRIES:
        raise ValueError(f"unknown symmetry {name!r}; choose one of {', '.join(SYMMETRIES)}")
    out = np.swapaxes(maps, 1, 2) if name.startswith("transpose") else maps
    flip = name.replace("transpose", "").strip("_") or "identity"
    if flip in ("flip_ud", "rot180"):
        out = out[:, ::-1]
    if flip in ("flip_lr", "rot180"):
        out = out[:, :, ::-1]
    return out


def to_archive_layout(maps: np.ndarray) -> np.ndarray:
    """Image-coordinate maps ``[N, row, col, T, K(, R)]`` -> the archive's ``imageRF`` layout ``[a, b, T, K, N(,
    R)]``: a = G - 1 - row, b = G - 1 - col (the release's maps are upside down and mirrored)."""
    flipped = maps[:, ::-1, ::-1]
    order = (1, 2, 3, 4, 0) + ((5,) if maps.ndim == 6 else ())
    return flipped.transpose(order)


_MAT5_TEXT = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created by: benchmarks_it_maps simulated twin"
_MAT73_TEXT = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: benchmarks_it_maps simulated twin "
               b"HDF5 schema 1.00 .")


def write_mat5(path: Path, variables: dict, level: int = 1) -> None:
    """MATLAB v5 file, every variable a zlib-compressed element (``miCOMPRESSED``, level 1), fixed header text (no
    date, so the same content gives the same bytes). Lists of strings become 1xN cell arrays."""
    with open(path, "wb") as f:
        f.write(_MAT5_TEXT.ljust(116) + b"\x00" * 8 + struct.pack("<H", 0x0100) + b"IM")
        for key, value in variables.items():
            if isinstance(value, list):
                cell = np.empty((1, len(value)), dtype=object)
                for j, text in enumerate(value):
                    cell[0, j] = text
                value = cell
            buffer = io.BytesIO()
            scipy.io.savemat(buffer, {key: value}, do_compression=False, oned_as="row")
            packed = zlib.compress(buffer.getbuffer()[128:], level)
            buffer.close()
            f.write(struct.pack("<II", 15, len(packed)))
            f.write(packed)


def write_mat73(path: Path, variables: dict) -> None:
    """MATLAB v7.3 file: HDF5 with a 512-byte user block holding the MAT header, arrays with reversed axes
    (column-major), cells of strings as references to uint16 char arrays in ``#refs#``."""
    with h5py.File(path, "w", userblock_size=512, track_order=False) as f:
        refs = f.create_group("#refs#")
        for key, value in variables.items():
            if isinstance(value, list):
                references = []
                for i, text in enumerate(value):
                    chars = np.array([ord(c) for c in text], dtype=np.uint16).reshape(len(text), 1)
                    ds = refs.create_dataset(f"s{key}_{i}", data=chars, track_times=False)
                    ds.attrs["MATLAB_class"] = np.bytes_("char")
                    ds.attrs["MATLAB_int_decode"] = np.int32(2)
                    references.append(ds.ref)
                cell = f.create_dataset(key, data=np.array(references, dtype=h5py.ref_dtype).reshape(len(value), 1),
                                        dtype=h5py.ref_dtype, track_times=False)
                cell.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                array = np.asarray(value)
                ds = f.create_dataset(key, data=array.T, compression="gzip", compression_opts=1, track_times=False)
                ds.attrs["MATLAB_class"] = np.bytes_({"f4": "single", "f8": "double", "u1": "uint8"}[
                    array.dtype.str[1:]])
    with open(path, "r+b") as f:
        f.write(_MAT73_TEXT.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM")


# ---------------------------------------------------------------------------------------------------------------------
# The archive
# ---------------------------------------------------------------------------------------------------------------------

def _site_parameters(rng: np.random.Generator, site: str, time_course: dict, rates: dict) -> dict:
    monkey = SITE_CHANNELS[site][0]
    k = len(_channels(site))
    latency = time_course["latency_ms"][monkey]
    jitter = time_course["latency_jitter_ms"]
    return {"spont_hz": rng.uniform(*rates["spont_hz"], k).tolist(),
            "baseline_hz": rng.uniform(*rates["baseline_hz"], k).tolist(),
            "gain_hz": rng.uniform(*rates["gain_hz"], k).tolist(),
            "latency_ms": np.round(rng.uniform(latency - jitter, latency + jitter, k)).tolist(),
            "rf_sigma_deg": rng.uniform(*rates["rf_sigma_deg"], k).tolist(),
            "profile_depth": rng.uniform(*rates["profile_depth"], k).tolist()}


def poisson_counts(rng: np.random.Generator, lam: np.ndarray, repetitions: int, max_count: int = 5) -> np.ndarray:
    """Poisson spike counts uint8 [repetitions, *lam.shape] by inverse CDF, truncated at ``max_count``.

    Faster than ``rng.poisson`` for the twin's ~3e8 samples; for the rates used (< 0.3 spikes per 1-ms
    sample) the truncated tail has probability < 2e-6.
    """
    lam = np.asarray(lam, dtype=np.float32)
    counts = np.zeros((repetitions,) + lam.shape, dtype=np.uint8)
    term = np.exp(-lam)            # P(count = 0)
    cdf = term.copy()
    u = rng.random(counts.shape, dtype=np.float32)
    for k in range(1, max_count + 1):
        counts += u > cdf
        term = term * lam / k
        cdf = cdf + term
    return counts


def make_sidecar(seed: int, images: int, grids: tuple[int, int], repetitions: int, time_ms: int) -> dict:
    """The sidecar without the data-dependent drive normalisation (filled in by :func:`simulate_archive`)."""
    rng = np.random.default_rng([seed, 11])
    return {
        "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "seed": seed,
        "generator": {**DEFAULT_GENERATOR, "weights_seed": seed, "readout_seed": seed + 1000},
        "noise": {"kind": "poisson", "max_count_per_sample": 5, "sample_ms": 1, "repetitions": repetitions,
                  "trial_key": KEY_TRIALS, "trial_unit": "spike count per sample",
                  "average_key": KEY_RF, "average_unit": "spikes/s (trial mean)"},
        "rates": DEFAULT_RATES, "time_course": DEFAULT_TIME_COURSE, "time_ms": time_ms,
        "written_symmetry": "identity",
        "monkeys": {a.key: {"name": a.name, "grid_size": int(g), "images": images}
                    for a, g in zip(ANIMALS.values(), grids)},
        "sites": {site: _site_parameters(rng, site, DEFAULT_TIME_COURSE, DEFAULT_RATES) for site in SITE_CHANNELS},
    }


def _check_arguments(images: int, grids: tuple[int, int], repetitions: int, time_ms: int, protocol: str,
                     symmetry: str) -> None:
    if images < 2 or images > 4 * len(PHOTOS):
        raise ValueError(f"images must be in 2..{4 * len(PHOTOS)}, got {images}")
    if len(grids) != 2 or any(g < 2 for g in grids):
        raise ValueError(f"grids must be two sizes >= 2 (M1, M2), got {grids}")
    if time_ms < max(a.window[1] for a in ANIMALS.values()):
        raise ValueError(f"time_ms must cover the response windows (>= 300), got {time_ms}")
    if repetitions < 1 or repetitions > 255:
        raise ValueError(f"repetitions must be in 1..255, got {repetitions}")
    if protocol not in ("maps", "shift"):
        raise ValueError(f"protocol must be 'maps' or 'shift', got {protocol!r}")
    if symmetry not in SYMMETRIES:
        raise ValueError(f"symmetry must be one of {', '.join(SYMMETRIES)}, got {symmetry!r}")


def simulate_archive(out: str | Path, seed: int = 0, images: int = 14, grids: tuple[int, int] = (17, 9),
                     repetitions: int = 4, time_ms: int = 300, mat_version: str = "5", *, protocol: str = "maps",
                     image_size: int | None = None, symmetry: str = "identity") -> Path:
    """Write the simulated twin to ``out`` (a ``.zip`` file, or a folder otherwise); returns ``out``.

    The zip holds everything under ``Arcaro2020/`` like the released archive. Byte-identical for the same arguments.
    ``protocol='shift'``: neurons see each displaced presentation (see the module docstring); ``image_size``
    overrides the generator's input size (default 224). ``symmetry`` (one of :data:`SYMMETRIES`, default
    ``identity``) writes every ``imageRF`` map under that symmetry of its [row, col] axes: a twin whose file differs
    from the assumed orientation, for testing the orientation diagnostic.
    """
    out = Path(out).expanduser()
    grids = tuple(int(g) for g in grids)
    _check_arguments(images, grids, repetitions, time_ms, protocol, symmetry)
    _check_out(out)
    sidecar = make_sidecar(seed, images, grids, repetitions, time_ms)
    sidecar["written_symmetry"] = symmetry
    gen = sidecar["generator"]
    if image_size is not None:
        gen["image_size"] = int(image_size)
    if protocol == "shift":
        gen.update(protocol="shift", margin_px=0, readout="benchmarks_it_maps.data.simulate (own pixel-space "
                   "geometry: each displaced presentation rendered on a 16 deg canvas, field at its centre)",
                   shift=dict(visual_degrees=IMAGE_DEG, image_size_deg=IMAGE_DEG, canvas_px=int(gen["image_size"]),
                              background=list(GREY)))
    pictures = make_images(seed, images)
    network = build_generator_network(sidecar)
    rng = np.random.default_rng([seed, 13])
    mats = {}
    for animal in tqdm(list(ANIMALS.values()), desc="simulating Arcaro2020 twin", unit="monkey"):
        mats[animal.key] = _simulate_animal(sidecar, animal, pictures[animal.key], network, rng)
    if out.suffix == ".zip":
        with atomic_file(out) as tmp_zip:
            staging = tmp_zip.parent / (tmp_zip.name + ".d")
            try:
                _write_tree(staging / TOP_FOLDER, mats, pictures, sidecar, mat_version)
                _zip_tree(staging, tmp_zip)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    else:
        with atomic_dir(out) as tmp:
            _write_tree(tmp, mats, pictures, sidecar, mat_version)
    logger.info("simulated twin (seed %d, %d images/monkey, grids %s) written to %s", seed, images, grids, out)
    return out


def _simulate_animal(sidecar: dict, animal: Animal, pictures: list, network, rng: np.random.Generator) -> dict:
    """One monkey's ``imageRF``, ``imageRF_trials`` and ``UniqueNames``; fills the sites' drive normalisation and
    the image order into ``sidecar``."""
    gen = sidecar["generator"]
    grid = sidecar["monkeys"][animal.key]["grid_size"]
    time_ms, repetitions = sidecar["time_ms"], sidecar["noise"]["repetitions"]
    n_images = len(pictures)
    names = [name for name, _ in pictures]
    order = rng.permutation(n_images)  # the .mat's image axis is not in sorted file-name order
    shown = [pictures[i][1] for i in order]
    cells = None
    if gen.get("protocol", "maps") == "maps":
        cells = layer_cells(network, gen["layer"], _maps_canvases(shown, gen), gen)
    peak = np.zeros((n_images, grid, grid, animal.n_channels))
    h = np.zeros((time_ms, animal.n_channels))
    spont = np.zeros(animal.n_channels)
    for site, (monkey, first, end) in SITE_CHANNELS.items():
        if monkey != animal.key:
            continue
        drive, cover = site_drive(sidecar, site, shown, grid, network, cells)
        sidecar["sites"][site]["drive_mean"] = drive.mean(axis=(0, 1, 2)).tolist()
        sidecar["sites"][site]["drive_std"] = drive.std(axis=(0, 1, 2)).tolist()
        params = _site_params(sidecar, site)
        peak[..., first:end] = peak_rates(params, drive, cover)
        h[:, first:end] = _time_course(params, sidecar["time_course"], time_ms)
        spont[first:end] = params["spont_hz"]
    peak = apply_symmetry(peak, sidecar["written_symmetry"])
    # rate[n, row, col, t, k] in spikes per 1-ms sample, one image at a time (memory)
    trials = np.empty((n_images, grid, grid, time_ms, animal.n_channels, repetitions), dtype=np.uint8)
    mean = np.empty((n_images, grid, grid, time_ms, animal.n_channels), dtype=np.float32)
    for n in range(n_images):
        rate = spont + (peak[n, :, :, None, :] - spont) * h[None, None]
        counts = poisson_counts(rng, (rate / COUNTS_TO_HZ).astype(np.float32), repetitions)  # [R, G, G, T, K]
        trials[n] = np.moveaxis(counts, 0, -1)
        mean[n] = counts.mean(axis=0, dtype=np.float32) * COUNTS_TO_HZ
    sidecar["monkeys"][animal.key]["image_order"] = [names[i] for i in order]
    unique_names = [f"C:\\Users\\arcaro\\Stimuli\\{animal.image_folder}\\{names[i]}" for i in order]
    return {KEY_RF: to_archive_layout(mean), KEY_NAMES: unique_names, KEY_TRIALS: to_archive_layout(trials)}


def _check_out(out: Path) -> None:
    """Refuse an ``out`` whose replacement would destroy something other than an earlier twin: writing a folder
    swaps out the whole existing folder, so it must be absent, empty, or a twin (holding ``generator.json``)."""
    file_above = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if file_above is not None:
        raise ValueError(f"--out {out}: {file_above} is a file, not a folder; choose an output path in a folder")
    if out.suffix == ".zip":
        if out.is_dir():
            raise ValueError(f"{out} is a folder; give a new .zip file name (or a folder path without .zip)")
        return
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / SIDECAR_NAME).is_file())):
        raise ValueError(f"{out} exists and is not a simulated twin (no {SIDECAR_NAME}); it would be "
                         "replaced: choose a new or empty folder, or a .zip file name")


def _write_tree(root: Path, mats: dict, pictures: dict, sidecar: dict, mat_version: str) -> None:
    writers = {"5": write_mat5, "7.3": write_mat73}
    if mat_version not in writers:
        raise ValueError(f"MATLAB version must be '5' or '7.3', got {mat_version!r}")
    for animal in ANIMALS.values():
        folder = root / animal.folder / animal.image_folder
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in pictures[animal.key]:
            Image.fromarray(array).save(folder / name)
        writers[mat_version](root / animal.folder / animal.mat_file, mats[animal.key])
    (root / SIDECAR_NAME).write_text(json.dumps(sidecar, indent=1, sort_keys=True))


def _zip_tree(staging: Path, archive_path: Path) -> None:
    """Zip ``staging``'s files (sorted, stored, fixed 1980-01-01 timestamps): the same files give the same bytes."""
    with zipfile.ZipFile(archive_path, "w", compression=zipfile.ZIP_STORED) as archive:
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(file.relative_to(staging).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with open(file, "rb") as source, archive.open(info, "w", force_zip64=True) as target:
                shutil.copyfileobj(source, target, 1 << 20)


def ensure_simulated_twin(seed: int = 0, *, images: int = 14, grids: tuple[int, int] = (17, 9),
                          repetitions: int = 4, home: str | Path | None = None) -> dict:
    """Simulate the twin into the data home (if that archive is missing) and import it; returns the import summary.

    The archive is kept as ``<home>/simulated/Arcaro2020sim-seed<seed>-...zip``; importing identical content again
    is a no-op (and a twin from ``brainscore data simulate`` with the same seed is the same content).
    """
    home = Path(home) if home else data_home()
    name = f"Arcaro2020sim-seed{seed}-{images}img-grid{grids[0]}x{grids[1]}-{repetitions}rep.zip"
    archive = home / "simulated" / name
    if not archive.is_file():
        simulate_archive(archive, seed=seed, images=images, grids=grids, repetitions=repetitions)
    return data.import_arcaro2020(archive, home=home)
