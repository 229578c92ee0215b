"""A simulated twin of the Arcaro 2020 archive with known ground truth.

The twin has exactly the real layout (conventions items 1-5): ``George/george_060118_data.mat`` with images in
``George/natural_test/``, ``Red/red_062419_data.mat`` with images in ``Red/red_naturalface/``, keys ``imageRF``
([grid_a, grid_b, time_ms, channel, image], spatial axes flipped w.r.t. the image), ``UniqueNames`` (1xN cell of
Windows paths, in an order different from the sorted file names) and ``imageRF_trials`` (spike counts per 1-ms
sample, extra last axis = repetition); 63 + 32 channels; a 0..T-1 ms time axis. A sidecar ``generator.json`` in the
archive root describes the generator, so the same import code reads it (as ``Arcaro2020sim``) and tests can check
that a benchmark recovers the generating network.

Generator. Images are natural photographs bundled with scikit-image, cropped and resized (offline). Each neuron is a
noisy readout of a fixed-seed, randomly initialised timm CNN at a known layer, read at the grid positions with
:func:`benchmarks_it_maps.benchmarks.readout.sample_feature_maps` (the whole image filling the model input). Readout weights
are low rank: each site has ``n_latents`` latent features (random combinations of the layer's channels); each neuron
is a random mix of its site's latents, standardised, then an affine map to a firing rate ``m = baseline + gain *
drive`` (clipped at 0). The time course is ``spont + (m - spont) * h(t - latency)`` with a rising exponential for
``duration_ms`` and an exponential decay after; trials are Poisson spike counts per 1-ms sample.
"""
from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import skimage.data
import timm
import torch
from PIL import Image
from tqdm.auto import tqdm

from benchmarks_it_maps.benchmarks.readout import grid_coordinates, sample_feature_maps
from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.data.matfile import write_mat
from benchmarks_it_maps.home import atomic_dir, atomic_file, data_home

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "Arcaro2020sim"
SIDECAR_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: scikit-image sample photographs used as stimuli (name -> loader name in ``skimage.data``); all bundled offline.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry",
          "retina", "camera", "coins", "moon", "grass", "gravel", "brick")

#: Default generator: network, layer, readout rank, firing-rate and time-course parameters.
DEFAULT_GENERATOR = {
    "network": "resnet18",
    "network_kwargs": {"zero_init_last": False},
    "layer": "layer3",
    "image_size": 224,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "interpolation": "bilinear",
    "crop_pct": 1.0,  # the whole image fills the model input (no centre crop)
    "protocol": "maps",
    "readout": "benchmarks_it_maps.benchmarks.readout.sample_feature_maps (PAPER_NOTES 8.6: bilinear at k/(G-1), border)",
    "n_latents": 8,
}
DEFAULT_RATES = {"spont_hz": [2.0, 8.0], "baseline_hz": [50.0, 80.0], "gain_hz": [15.0, 25.0]}
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
    for m, monkey in enumerate(cv.MONKEYS.values()):
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
            prefix = "nat" if monkey.key == "M1" else "face"
            items.append((f"{prefix}{j + 1:02d}_{name}.png", array))
        out[monkey.key] = items
    return out


def load_image(image: str | Path | np.ndarray) -> np.ndarray:
    """uint8 RGB array [H, W, 3] from a path or an array."""
    if isinstance(image, np.ndarray):
        return image
    with Image.open(image) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------------------
# Generator network and readout
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


def preprocess(images: Sequence, sidecar: dict):
    """Model input tensor [N, 3, S, S]: RGB resized to ``image_size`` (whole image), /255, ImageNet-normalised."""
    gen = sidecar["generator"]
    size = int(gen["image_size"])
    arrays = []
    for image in images:
        array = load_image(image)
        if array.shape[:2] != (size, size):
            array = np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR))
        arrays.append(array)
    x = torch.as_tensor(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.as_tensor(gen["mean"]).view(1, 3, 1, 1)
    std = torch.as_tensor(gen["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def generator_features(sidecar: dict, images: Sequence, grid_size: int, network=None) -> np.ndarray:
    """The generator layer's features at the grid positions: [N, G, G, C] float64 (PAPER_NOTES 8.6 readout)."""
    network = network if network is not None else build_generator_network(sidecar)
    layer = network.get_submodule(sidecar["generator"]["layer"])
    captured = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.__setitem__("x", output))
    try:
        with torch.inference_mode():
            network(preprocess(images, sidecar))
    finally:
        handle.remove()
    return sample_feature_maps(captured["x"], grid_size).astype(np.float64)


#: Shift-protocol twins (``simulate_archive(protocol='shift')``): the generator's visual field spans the 16 deg image
#: (the canvas is its input size), grey outside the image, like ``benchmark.shift_stimulus_set``.
SHIFT_VISUAL_DEGREES = 16.0
SHIFT_BACKGROUND = (128, 128, 128)


def shifted_generator_features(sidecar: dict, images: Sequence, grid_size: int, network=None,
                               batch_size: int = 256) -> np.ndarray:
    """The shift protocol's model of the experiment (PAPER_NOTES 8.7): for each grid point (row k, column l) the image
    is shifted so that image point (k/(G-1), l/(G-1)) sits at the centre of the generator's visual field, and the
    neuron reads the generator layer at the field centre (bilinear, :func:`sample_feature_maps` at u = 0.5).
    Returns [N, G, G, C] float64."""
    gen = sidecar["generator"]
    shift = gen["shift"]
    canvas_px = int(shift["canvas_px"])
    image_px = int(round(canvas_px * float(shift["image_size_deg"]) / float(shift["visual_degrees"])))
    network = network if network is not None else build_generator_network(sidecar)
    layer = network.get_submodule(gen["layer"])
    captured = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.__setitem__("x", output))
    positions = grid_coordinates(grid_size)
    canvases, out = [], []

    def flush():
        with torch.inference_mode():
            network(preprocess(canvases, sidecar))
        out.append(sample_feature_maps(captured["x"], 3)[:, 1, 1, :].astype(np.float64))  # field centre
        canvases.clear()
    try:
        for image in images:
            picture = Image.fromarray(load_image(image)).convert("RGB").resize((image_px, image_px), Image.BICUBIC)
            for u_row in positions:
                for u_col in positions:
                    canvas = Image.new("RGB", (canvas_px, canvas_px), tuple(shift["background"]))
                    canvas.paste(picture, (int(round(canvas_px / 2 - u_col * image_px)),
                                           int(round(canvas_px / 2 - u_row * image_px))))
                    canvases.append(np.asarray(canvas, dtype=np.uint8))
                    if len(canvases) == batch_size:
                        flush()
        if canvases:
            flush()
    finally:
        handle.remove()
    return np.concatenate(out).reshape(len(images), grid_size, grid_size, -1)


def _features(sidecar: dict, images: Sequence, grid_size: int, network=None) -> np.ndarray:
    """The generator's features under the twin's protocol ('maps': whole image; 'shift': field centre)."""
    if sidecar["generator"].get("protocol", "maps") == "shift":
        return shifted_generator_features(sidecar, images, grid_size, network)
    return generator_features(sidecar, images, grid_size, network)


def readout_weights(sidecar: dict, site: str, n_features: int) -> np.ndarray:
    """Low-rank readout [C, K] of ``site``: (C x L channel-to-latent) @ (L x K latent-to-neuron), from the seed."""
    gen = sidecar["generator"]
    index = list(cv.SITES).index(site)
    rng = np.random.default_rng([int(gen["readout_seed"]), index])
    k = len(cv.SITES[site].channels)
    n_latents = int(gen["n_latents"])
    to_latent = rng.standard_normal((n_features, n_latents)) / np.sqrt(n_features)
    to_neuron = rng.standard_normal((n_latents, k)) / np.sqrt(n_latents)
    return to_latent @ to_neuron


def _drive(sidecar: dict, site: str, features: np.ndarray) -> np.ndarray:
    """Raw (unstandardised) drive [N, G, G, K] of ``site``'s neurons."""
    return features @ readout_weights(sidecar, site, features.shape[-1])


def _time_course(params: dict, n_samples: int) -> np.ndarray:
    """h[t, k] in [0, 1] for t = 0..n_samples-1 ms, per neuron (latency per neuron)."""
    tc = params["time_course"]
    t = np.arange(n_samples)[:, None] - np.asarray(params["latency_ms"])[None, :]
    rise = np.where(t >= 0, 1 - np.exp(-np.clip(t, 0, None) / tc["rise_ms"]), 0.0)
    peak_end = 1 - np.exp(-tc["duration_ms"] / tc["rise_ms"])
    decay = peak_end * np.exp(-np.clip(t - tc["duration_ms"], 0, None) / tc["decay_ms"])
    return np.where(t < tc["duration_ms"], rise, decay)


def _neuron_params(sidecar: dict, site: str) -> dict:
    p = sidecar["sites"][site]
    return {"spont": np.asarray(p["spont_hz"]), "baseline": np.asarray(p["baseline_hz"]),
            "gain": np.asarray(p["gain_hz"]), "latency_ms": np.asarray(p["latency_ms"]),
            "drive_mean": np.asarray(p["drive_mean"]), "drive_std": np.asarray(p["drive_std"]),
            "time_course": sidecar["time_course"]}


def _peak_rates(params: dict, drive_raw: np.ndarray) -> np.ndarray:
    drive = (drive_raw - params["drive_mean"]) / params["drive_std"]
    return np.clip(params["baseline"] + params["gain"] * drive, 0.0, None)


def _site_rates(sidecar: dict, site: str, features: np.ndarray) -> np.ndarray:
    """Peak (sustained) firing-rate maps [N, G, G, K] in spikes/s, image coordinates."""
    return _peak_rates(_neuron_params(sidecar, site), _drive(sidecar, site, features))


def generator_maps(sidecar: dict, images: Sequence, site: str, window: tuple[int, int] | None = None,
                   network=None) -> np.ndarray:
    """Noiseless expected response maps [N, G, G, K] (spikes/s) of ``site`` to ``images``, image coordinates.

    The value is the expected mean rate over the time samples in ``window`` (default: the site's default window), so
    it equals the expectation of ``data.response_maps(assembly, window)`` for the simulated archive.
    """
    monkey = cv.SITES[site].monkey
    grid = int(sidecar["monkeys"][monkey]["grid_size"])
    window = window or cv.MONKEYS[monkey].default_window
    params = _neuron_params(sidecar, site)
    peak = _site_rates(sidecar, site, _features(sidecar, images, grid, network))
    h = _time_course(params, int(window[1]))[int(window[0]):int(window[1])].mean(axis=0)  # [K]
    return params["spont"] + (peak - params["spont"]) * h


# ---------------------------------------------------------------------------------------------------------------------
# The archive
# ---------------------------------------------------------------------------------------------------------------------

def _site_parameters(rng: np.random.Generator, site: cv.Site, time_course: dict, rates: dict) -> dict:
    k = len(site.channels)
    latency = time_course["latency_ms"][site.monkey]
    jitter = time_course["latency_jitter_ms"]
    return {"spont_hz": rng.uniform(*rates["spont_hz"], k).tolist(),
            "baseline_hz": rng.uniform(*rates["baseline_hz"], k).tolist(),
            "gain_hz": rng.uniform(*rates["gain_hz"], k).tolist(),
            "latency_ms": np.round(rng.uniform(latency - jitter, latency + jitter, k)).tolist()}


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
    sidecar = {
        "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "seed": seed,
        "conventions_version": cv.CONVENTIONS_VERSION,
        "generator": {**DEFAULT_GENERATOR, "weights_seed": seed, "readout_seed": seed + 1000},
        "noise": {"kind": "poisson", "max_count_per_sample": 5, "sample_ms": cv.SAMPLE_MS, "repetitions": repetitions,
                  "trial_key": cv.KEY_TRIALS, "trial_unit": "spike count per sample",
                  "average_key": cv.KEY_RESPONSES, "average_unit": "spikes/s (trial mean)"},
        "rates": DEFAULT_RATES, "time_course": DEFAULT_TIME_COURSE, "time_ms": time_ms,
        "monkeys": {m.key: {"name": m.name, "grid_size": int(g), "images": images}
                    for m, g in zip(cv.MONKEYS.values(), grids)},
        "sites": {key: _site_parameters(rng, site, DEFAULT_TIME_COURSE, DEFAULT_RATES)
                  for key, site in cv.SITES.items()},
    }
    return sidecar


def simulate_archive(out: str | Path, seed: int = 0, images: int = 14, grids: tuple[int, int] = (17, 9),
                     repetitions: int = 4, time_ms: int = 300, mat_version: str = "5", *, protocol: str = "maps",
                     image_size: int | None = None) -> Path:
    """Write the simulated twin to ``out`` (a ``.zip`` file, or a folder otherwise); returns ``out``.

    The zip holds everything under ``Arcaro2020/`` like the released archive. Deterministic in ``seed``.
    ``protocol='shift'`` makes neurons follow the shift protocol instead (:func:`shifted_generator_features`: a
    16 deg field, canvas = generator input); ``image_size`` overrides the generator's input size (default 224).
    """
    out = Path(out).expanduser()
    if images < 2 or images > 4 * len(PHOTOS):
        raise ValueError(f"images must be in 2..{4 * len(PHOTOS)}, got {images}")
    if any(g < 2 for g in grids) or len(grids) != 2:
        raise ValueError(f"grids must be two sizes >= 2 (M1, M2), got {grids}")
    if time_ms < max(m.default_window[1] for m in cv.MONKEYS.values()):
        raise ValueError(f"time_ms must cover the default windows (>= 300), got {time_ms}")
    if repetitions < 1 or repetitions > 255:
        raise ValueError(f"repetitions must be in 1..255, got {repetitions}")
    _check_out(out)
    if protocol not in ("maps", "shift"):
        raise ValueError(f"protocol must be 'maps' or 'shift', got {protocol!r}")
    sidecar = make_sidecar(seed, images, tuple(grids), repetitions, time_ms)
    if image_size is not None:
        sidecar["generator"]["image_size"] = int(image_size)
    if protocol == "shift":
        size = int(sidecar["generator"]["image_size"])
        sidecar["generator"].update(
            protocol="shift", readout="benchmarks_it_maps.data.simulate.shifted_generator_features (PAPER_NOTES 8.7: "
                                      "field centre of the shifted presentation)",
            shift=dict(visual_degrees=SHIFT_VISUAL_DEGREES, image_size_deg=float(cv.IMAGE_SIZE_DEG), canvas_px=size,
                       background=list(SHIFT_BACKGROUND)))
    pictures = make_images(seed, images)
    network = build_generator_network(sidecar)
    rng = np.random.default_rng([seed, 13])
    mats, files = {}, {}
    for monkey in tqdm(list(cv.MONKEYS.values()), desc="simulating Arcaro2020 twin", unit="monkey"):
        grid = sidecar["monkeys"][monkey.key]["grid_size"]
        names = [name for name, _ in pictures[monkey.key]]
        arrays = [array for _, array in pictures[monkey.key]]
        order = rng.permutation(images)  # image-axis order of the .mat differs from the sorted file names
        features = _features(sidecar, [arrays[i] for i in order], grid, network)
        peak = np.zeros(features.shape[:3] + (monkey.n_channels,))
        h = np.zeros((time_ms, monkey.n_channels))
        spont = np.zeros(monkey.n_channels)
        for key, site in cv.SITES.items():
            if site.monkey != monkey.key:
                continue
            raw = _drive(sidecar, key, features)
            sidecar["sites"][key]["drive_mean"] = raw.mean(axis=(0, 1, 2)).tolist()
            sidecar["sites"][key]["drive_std"] = raw.std(axis=(0, 1, 2)).tolist()
            params = _neuron_params(sidecar, key)
            peak[..., list(site.channels)] = _peak_rates(params, raw)
            h[:, list(site.channels)] = _time_course(params, time_ms)
            spont[list(site.channels)] = params["spont"]
        # MATLAB layout, built as the C-ordered reverse so the .T view is Fortran-ordered for the writer
        trials_c = np.empty((repetitions, images, monkey.n_channels, time_ms, grid, grid), dtype=np.uint8)
        mean_c = np.empty((images, monkey.n_channels, time_ms, grid, grid), dtype=np.float32)
        for n in range(images):
            # image coordinates -> imageRF orientation (flip both spatial axes), then rate[a, b, t, k] in spikes/ms
            rate = spont + (peak[n, ::-1, ::-1, None, :] - spont) * h[None, None]
            counts = poisson_counts(rng, (rate / cv.TRIAL_COUNTS_TO_RATE).astype(np.float32), repetitions)
            trials_c[:, n] = counts.transpose(0, 4, 3, 2, 1)
            mean_c[n] = (counts.mean(axis=0, dtype=np.float32) * cv.TRIAL_COUNTS_TO_RATE).T
        unique_names = [f"C:\\Users\\arcaro\\Stimuli\\{monkey.image_folder}\\{names[i]}" for i in order]
        mats[monkey.key] = {cv.KEY_RESPONSES: mean_c.T, cv.KEY_NAMES: unique_names, cv.KEY_TRIALS: trials_c.T}
        files[monkey.key] = pictures[monkey.key]
        sidecar["monkeys"][monkey.key]["image_order"] = [names[i] for i in order]
    if out.suffix == ".zip":
        with atomic_file(out) as tmp_zip:
            staging = tmp_zip.parent / (tmp_zip.name + ".d")
            try:
                _write_tree(staging / cv.ARCHIVE_TOP_FOLDER, mats, files, sidecar, mat_version)
                with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_STORED) as archive:
                    for file in sorted(staging.rglob("*")):
                        archive.write(file, file.relative_to(staging).as_posix())
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    else:
        with atomic_dir(out) as tmp:
            _write_tree(tmp, mats, files, sidecar, mat_version)
    logger.info("simulated twin (seed %d, %d images/monkey, grids %s) written to %s", seed, images, grids, out)
    return out


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
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / cv.SIDECAR_NAME).is_file())):
        raise ValueError(f"{out} exists and is not a simulated twin (no {cv.SIDECAR_NAME}); it would be "
                         "replaced: choose a new or empty folder, or a .zip file name")


def _write_tree(root: Path, mats: dict, files: dict, sidecar: dict, mat_version: str) -> None:
    for monkey in cv.MONKEYS.values():
        (root / monkey.image_path).mkdir(parents=True, exist_ok=True)
        for name, array in files[monkey.key]:
            Image.fromarray(array).save(root / monkey.image_path / name)
        write_mat(root / monkey.mat_path, mats[monkey.key], mat_version)
    (root / cv.SIDECAR_NAME).write_text(json.dumps(sidecar, indent=1))


def ensure_simulated_twin(seed: int = 0, *, images: int = 14, grids: tuple[int, int] = (17, 9),
                          repetitions: int = 4, home: str | Path | None = None) -> dict:
    """Simulate the twin into the data home (if that archive is missing) and import it; returns the import summary.

    The archive is kept as ``<home>/simulated/Arcaro2020sim-seed<seed>-...zip``; importing identical content again
    is a no-op.
    """
    home = Path(home) if home else data_home()
    name = f"Arcaro2020sim-seed{seed}-{images}img-grid{grids[0]}x{grids[1]}-{repetitions}rep.zip"
    archive = home / "simulated" / name
    if not archive.is_file():
        simulate_archive(archive, seed=seed, images=images, grids=grids, repetitions=repetitions)
    return data.import_arcaro2020(archive, home=home)
