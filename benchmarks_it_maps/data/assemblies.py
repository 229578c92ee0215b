"""The Arcaro, Ponce & Livingstone (2020) spatial IT recordings as Brain-Score data.

``import_arcaro2020(path)`` reads the released archive (zip or extracted folder; MATLAB v5 or v7.3 files), checks
everything against :mod:`benchmarks_it_maps.data.conventions`, and writes into the data home, in one atomic step, a
folder ``<family>/`` holding:

- the StimulusSet ``<family>`` (csv + the image files; one row per image of both monkeys),
- three NeuroidAssemblies ``<family>.M1PL``, ``<family>.M1ML``, ``<family>.M2ML`` (netCDF), each
  ``presentation`` x ``neuroid`` x ``time_bin`` with one presentation per (image, grid position[, repetition]),
- ``import.json`` (what was imported from where, with sha256 of every source file),
- for the simulated twin, its sidecar ``generator.json``.

``<family>`` is ``Arcaro2020`` for the real data and ``Arcaro2020sim`` for the simulated twin (recognised by its
sidecar), so the two can never be mixed. ``load_stimulus_set``, ``load_assembly`` and ``response_maps`` read them
back; ``response_maps`` turns an assembly into image-coordinate maps averaged over a response window.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import shutil
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly, StimulusReferenceAssemblyLoader
from brainscore_vision import StimulusSet
from PIL import Image
from tqdm.auto import tqdm

from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.data.matfile import MatFileError, read_mat
from benchmarks_it_maps.home import atomic_dir, data_home, private_tempdir, save_figure, sha256_file

logger = logging.getLogger(__name__)

IMPORT_MANIFEST = "import.json"


class ArcaroDataError(MatFileError):
    """Bad input: names the file, the field and what was expected, in one line."""


def windows_basename(path: str) -> str:
    """File name of a Windows-style (or POSIX) path: ``'C:\\a\\b\\img.jpg'`` -> ``'img.jpg'``."""
    return PureWindowsPath(str(path).strip()).name


# ---------------------------------------------------------------------------------------------------------------------
# Reading and checking one monkey's part of the archive
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class MonkeyRecording:
    """One monkey's checked data, still in MATLAB layout (spatial axes not yet flipped)."""
    monkey: cv.Monkey
    grid_size: int
    responses: np.ndarray            # [grid_a, grid_b, time, channel, image]
    trials: np.ndarray | None        # [grid_a, grid_b, time, channel, image, repetition] or None
    names: list[str]                 # UniqueNames (full Windows paths), image-axis order
    image_files: list[Path]          # matching files, same order
    mat_sha256: str
    image_sha256: list[str] = field(default_factory=list)


def _describe_keys(keys: Sequence[str], wanted: str) -> str:
    close = difflib.get_close_matches(wanted, keys, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'? rename it to '{wanted}')" if close else ""
    return f"keys {sorted(keys)}{hint}"


def read_monkey(root: Path, monkey: cv.Monkey, grid_size: int, label_prefix: str = "") -> MonkeyRecording:
    """Read and check ``monkey``'s .mat file and images under archive ``root``; raise :class:`ArcaroDataError`."""
    mat_path = root / monkey.mat_path
    label = f"{label_prefix}{monkey.mat_path}"
    if not mat_path.is_file():
        raise ArcaroDataError(label, "file", f"the file {monkey.mat_path} in the archive", "missing")
    try:
        data = read_mat(mat_path, [cv.KEY_RESPONSES, cv.KEY_NAMES, cv.KEY_TRIALS], label)
    except MatFileError as error:
        raise ArcaroDataError(error.file, error.field, error.expected, error.got) from None
    for key in (cv.KEY_RESPONSES, cv.KEY_NAMES):
        if key not in data:
            raise ArcaroDataError(label, key, f"a variable named '{key}'", _describe_keys(data["__keys__"](), key))
    responses = _check_array(data[cv.KEY_RESPONSES], label, cv.KEY_RESPONSES, cv.RESPONSE_NDIM, monkey, grid_size)
    names = data[cv.KEY_NAMES]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArcaroDataError(label, cv.KEY_NAMES, "a 1xN cell array of file paths",
                              f"an array of type {np.asarray(names).dtype}")
    n_images = responses.shape[4]
    if len(names) != n_images:
        raise ArcaroDataError(label, cv.KEY_NAMES, f"{n_images} names (one per image of {cv.KEY_RESPONSES})",
                              f"{len(names)}")
    basenames = [windows_basename(n) for n in names]
    if len(set(basenames)) != len(basenames) or "" in basenames:
        dupes = sorted({b for b in basenames if basenames.count(b) > 1 or not b})
        raise ArcaroDataError(label, cv.KEY_NAMES, "distinct, non-empty file names", f"repeated/empty {dupes}")
    trials = None
    if cv.KEY_TRIALS in data:
        trials = _check_array(data[cv.KEY_TRIALS], label, cv.KEY_TRIALS, cv.RESPONSE_NDIM + 1, monkey, grid_size)
        if trials.shape[:5] != responses.shape:
            raise ArcaroDataError(label, cv.KEY_TRIALS, f"the shape of {cv.KEY_RESPONSES} {responses.shape} plus a "
                                  "repetition axis", f"shape {trials.shape}")
        _check_trial_units(responses, trials, label)
    image_dir = root / monkey.image_path
    if not image_dir.is_dir():
        raise ArcaroDataError(f"{label_prefix}{monkey.image_path}", "folder",
                              f"the image folder {monkey.image_path}/ in the archive", "missing")
    image_files = [_match_image(image_dir, basename, name, label, monkey) for basename, name in zip(basenames, names)]
    _check_images(image_files, label_prefix, monkey)
    return MonkeyRecording(monkey=monkey, grid_size=grid_size, responses=responses, trials=trials, names=names,
                           image_files=image_files, mat_sha256=sha256_file(mat_path),
                           image_sha256=[sha256_file(p) for p in image_files])


def _match_image(image_dir: Path, basename: str, name: str, label: str, monkey: cv.Monkey) -> Path:
    """The file in ``image_dir`` named ``basename``; Windows names are case-insensitive, so a unique
    case-insensitive match is accepted too."""
    exact = image_dir / basename
    if exact.is_file():
        return exact
    folded = [p for p in image_dir.iterdir() if p.is_file() and p.name.casefold() == basename.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise ArcaroDataError(label, cv.KEY_NAMES, f"the image '{basename}' (from '{name}') in {monkey.image_path}/",
                          "missing")


def _check_array(value, label: str, key: str, ndim: int, monkey: cv.Monkey, grid_size: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ArcaroDataError(label, key, "a real numeric array", f"dtype {array.dtype}")
    axes = cv.RESPONSE_AXES + (("repetition",) if ndim > cv.RESPONSE_NDIM else ())
    if array.ndim != ndim:
        raise ArcaroDataError(label, key, f"{ndim} dimensions [{', '.join(axes)}]", f"shape {array.shape}")
    if array.shape[0] != grid_size or array.shape[1] != grid_size:
        raise ArcaroDataError(label, key, f"a {grid_size}x{grid_size} position grid on axes 0-1 for "
                              f"{monkey.name}", f"shape {array.shape}")
    if array.shape[2] < cv.TIME_BIN_MS:
        raise ArcaroDataError(label, key, f"at least {cv.TIME_BIN_MS} time samples (ms) on axis 2",
                              f"shape {array.shape}")
    if array.shape[3] != monkey.n_channels:
        raise ArcaroDataError(label, key, f"{monkey.n_channels} channels on axis 3 for {monkey.name}",
                              f"{array.shape[3]} (shape {array.shape})")
    if array.shape[4] < 2:
        raise ArcaroDataError(label, key, "at least 2 images on axis 4", f"shape {array.shape}")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ArcaroDataError(label, key, "finite values", f"{int(bad.sum())} non-finite values (first at "
                                  f"index {first} of [{', '.join(axes)}])")
    _check_values(array, label, key, axes)
    return array


#: The largest |value| imported: stored as float32 after binning and a counts->rate scale of up to 1000, so larger
#: values would become inf (finite in float64 is not enough).
MAX_ABS_VALUE = float(np.finfo(np.float32).max) / 1e4


def _check_values(array: np.ndarray, label: str, key: str, axes: Sequence[str]) -> None:
    """Refuse values that do not survive the float32 cast and data without any signal; warn about negative rates."""
    if array.size == 0:
        return
    magnitude = np.abs(array.astype(np.float64, copy=False))
    largest = float(magnitude.max())
    if largest > MAX_ABS_VALUE:
        first = tuple(int(i) for i in np.unravel_index(int(magnitude.argmax()), array.shape))
        raise ArcaroDataError(label, key, f"|values| below {MAX_ABS_VALUE:.3g} (stored as float32)",
                              f"{largest:.3g} at index {first} of [{', '.join(axes)}]; the file is corrupt or not "
                              "in spikes/s")
    if largest == 0 and key == cv.KEY_RESPONSES:  # (trial counts are checked against it later)
        raise ArcaroDataError(label, key, "responses (spike rates)", "all values 0: no recorded signal")
    negative = int((array < 0).sum())
    if negative:
        logger.warning("%s: %s holds %d negative values (min %.3g); spike rates are >= 0, so this is taken as "
                       "baseline-subtracted data: check the file", label, key, negative, float(array.min()))


def _check_trial_units(responses: np.ndarray, trials: np.ndarray, label: str) -> None:
    """Warn if ``imageRF`` is not the trial mean of ``imageRF_trials`` in spikes/s (conventions item 5)."""
    mean_rate = float(trials[..., :1, :].mean(dtype=np.float64)) * cv.TRIAL_COUNTS_TO_RATE
    mean_rf = float(responses[..., :1].mean(dtype=np.float64))
    if mean_rf > 0 and not 0.9 < mean_rate / mean_rf < 1.1:
        logger.warning("%s: %s (taken as spike counts per 1-ms sample) averages %.3g spikes/s but %s averages %.3g; "
                       "the trial-resolved assembly uses %s", label, cv.KEY_TRIALS, mean_rate, cv.KEY_RESPONSES,
                       mean_rf, cv.KEY_TRIALS)


def _check_images(files: Sequence[Path], label_prefix: str, monkey: cv.Monkey) -> None:
    for path in files:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:
            raise ArcaroDataError(f"{label_prefix}{monkey.image_path}/{path.name}", "image",
                                  "a readable image file", f"unreadable ({type(error).__name__})") from None


# ---------------------------------------------------------------------------------------------------------------------
# Archive handling
# ---------------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def open_archive(path: str | Path) -> Iterator[tuple[Path, str]]:
    """Yield ``(root, label_prefix)`` of an archive given as a zip or a folder (zips are extracted to a temp dir).

    ``root`` is the folder that holds ``George/`` and ``Red/`` (the archive's top level or one folder below it).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ArcaroDataError(path, "path", "an existing Arcaro2020 zip or its extracted folder", "not found")
    if path.is_dir():
        yield _find_root(path, f"{path}/"), f"{path.name}:"
        return
    if not zipfile.is_zipfile(path):
        raise ArcaroDataError(path, "file", "a zip archive (or its extracted folder)", "not a zip file")
    with private_tempdir("arcaro2020-") as tmp:  # a killed import's folder is removed by the next import
        with zipfile.ZipFile(path) as archive:
            _extract_capped(archive, path, Path(tmp))
        yield _find_root(Path(tmp), f"{path.name}:"), f"{path.name}:"


def _member_cap(name: str) -> int | None:
    """The most bytes a member of the Arcaro2020 layout may unpack to; None for members outside the layout."""
    parts = name.split("/")
    if parts and parts[0] == cv.ARCHIVE_TOP_FOLDER and len(parts) > 1:
        parts = parts[1:]
    inner = "/".join(parts)
    if inner in cv.EXPECTED_MEMBERS:
        return cv.ZIP_MAX_MAT_BYTES
    if any(inner.startswith(f"{m.image_path}/") for m in cv.MONKEYS.values()):
        return cv.ZIP_MAX_IMAGE_BYTES
    if inner == cv.SIDECAR_NAME:
        return cv.ZIP_MAX_OTHER_BYTES
    return None


def _extract_capped(archive: zipfile.ZipFile, path: Path, dest: Path) -> None:
    """Extract the members of the Arcaro2020 layout, refusing bombs before writing anything: each member's declared
    size against its kind's cap and the compression-ratio cap, the total against the total cap and the free disk
    space; while copying, a member that unpacks to more than it declared is refused too. Paths must stay inside."""
    root = dest.resolve()
    members, total = [], 0
    for info in archive.infolist():
        target = Path(dest, info.filename).resolve()
        if not target.is_relative_to(root):
            raise ArcaroDataError(path, info.filename, "member paths inside the archive", "a path outside")
        cap = None if info.is_dir() else _member_cap(info.filename)
        if cap is None:
            continue  # folders are made as needed; members outside the layout are never extracted
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > cap or (info.file_size > cv.ZIP_RATIO_FREE_BYTES and ratio > cv.ZIP_MAX_RATIO):
            raise ArcaroDataError(path, info.filename, f"at most {cap} bytes and a compression ratio under "
                                  f"{cv.ZIP_MAX_RATIO}", f"{info.file_size} bytes from {info.compress_size} "
                                  "(a zip bomb?); use the released archive")
        members.append((info, target))
        total += info.file_size
    free = shutil.disk_usage(dest).free
    if total > cv.ZIP_MAX_TOTAL_BYTES or total > free:
        raise ArcaroDataError(path, "members", f"at most {min(cv.ZIP_MAX_TOTAL_BYTES, free)} bytes in all "
                              f"(free space in {dest.parent})", f"{total} bytes; use the released archive or "
                              "free some disk space")
    for info, target in members:
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            with archive.open(info) as source, open(target, "wb") as out:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    written += len(chunk)
                    if written > info.file_size:
                        raise ArcaroDataError(path, info.filename, f"{info.file_size} bytes as declared",
                                              "more; the archive is corrupt or crafted")
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise ArcaroDataError(path, info.filename, "an intact zip member",
                                  f"a corrupt one ({' '.join(str(error).split())}); download the archive again") \
                from None


def _find_root(folder: Path, label: str) -> Path:
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("__"))
    for candidate in candidates:
        if any((candidate / m.folder).is_dir() for m in cv.MONKEYS.values()):
            return candidate
    raise ArcaroDataError(label.rstrip(":/"), "layout", "folders George/ and Red/ (at the top level or one "
                          f"folder below), holding {', '.join(cv.EXPECTED_MEMBERS)}", "neither found")


def read_sidecar(root: Path, label_prefix: str = "") -> dict | None:
    """The simulated twin's sidecar ``generator.json`` in ``root``, or None for the real data."""
    path = root / cv.SIDECAR_NAME
    if not path.is_file():
        return None
    try:
        sidecar = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArcaroDataError(f"{label_prefix}{cv.SIDECAR_NAME}", "json", "valid JSON", str(error)) from None
    monkeys = sidecar.get("monkeys") if isinstance(sidecar, dict) else None
    if not isinstance(monkeys, dict) or set(monkeys) != set(cv.MONKEYS):
        raise ArcaroDataError(f"{label_prefix}{cv.SIDECAR_NAME}", "monkeys",
                              f"an object with entries {sorted(cv.MONKEYS)} (each with 'grid_size')", repr(monkeys))
    for key, entry in monkeys.items():
        grid = entry.get("grid_size") if isinstance(entry, dict) else None
        if not isinstance(grid, int) or isinstance(grid, bool) or grid < 2:
            raise ArcaroDataError(f"{label_prefix}{cv.SIDECAR_NAME}", f"monkeys.{key}.grid_size",
                                  "an integer grid size >= 2", repr(grid if isinstance(entry, dict) else entry))
    return sidecar


# ---------------------------------------------------------------------------------------------------------------------
# Conversion to Brain-Score data
# ---------------------------------------------------------------------------------------------------------------------

def family_of(identifier: str) -> str:
    """'Arcaro2020' or 'Arcaro2020sim' from an identifier such as 'Arcaro2020sim.M1ML'."""
    family = identifier.split(".")[0]
    if family not in (cv.IDENTIFIER, cv.SIM_IDENTIFIER):
        raise KeyError(f"unknown data identifier '{identifier}': expected '{cv.IDENTIFIER}[.SITE]' or "
                       f"'{cv.SIM_IDENTIFIER}[.SITE]' with SITE in {sorted(cv.SITES)}")
    return family


def stimulus_id(family: str, monkey: cv.Monkey, basename: str, image_sha256: str) -> str:
    """Stable stimulus id: readable prefix plus a hash of (family, monkey, file name, image content).

    The same image file always gets the same id; a different image under the same name (another simulated twin)
    never does, so cached model activations cannot be confused.
    """
    digest = hashlib.sha1(f"{family}/{monkey.name}/{basename}/{image_sha256}".encode()).hexdigest()[:10]
    return f"{monkey.key.lower()}_{Path(basename).stem}_{digest}"


def _stimulus_rows(family: str, recordings: Sequence[MonkeyRecording]) -> pd.DataFrame:
    rows = []
    for rec in recordings:
        for index, (name, path, digest) in enumerate(zip(rec.names, rec.image_files, rec.image_sha256)):
            with Image.open(path) as image:
                width, height = image.size
            rows.append(dict(stimulus_id=stimulus_id(family, rec.monkey, path.name, digest), image_file_name=path.name,
                             monkey=rec.monkey.key, monkey_name=rec.monkey.name, image_index=index,
                             image_size_deg=cv.IMAGE_SIZE_DEG, image_width_px=width, image_height_px=height,
                             unique_name=name, image_sha256=digest,
                             filename=f"{rec.monkey.image_path}/{path.name}"))
    return pd.DataFrame(rows)


def _presentation_coords(stimulus_ids: Sequence[str], file_names: Sequence[str], grid_size: int,
                         repetitions: int | None) -> dict:
    """Coordinates of presentations ordered (image, row, col[, repetition]) in image coordinates."""
    n, g = len(stimulus_ids), grid_size
    shape = (n, g, g) + ((repetitions,) if repetitions else ())
    idx = np.indices(shape).reshape(len(shape), -1)
    rows, cols = idx[1], idx[2]
    u, v = cv.grid_coordinate(rows, g), cv.grid_coordinate(cols, g)
    coords = {
        "stimulus_id": ("presentation", np.asarray(stimulus_ids, dtype=object)[idx[0]].astype(str)),
        "image_file_name": ("presentation", np.asarray(file_names, dtype=object)[idx[0]].astype(str)),
        "grid_row": ("presentation", rows), "grid_col": ("presentation", cols),
        "grid_size": ("presentation", np.full(rows.shape, g)),
        "image_u": ("presentation", u), "image_v": ("presentation", v),
        # offset of the receptive-field centre from the image centre: x right, y up (visual-field convention)
        "position_x_deg": ("presentation", cv.grid_offset_deg(cols, g)),
        "position_y_deg": ("presentation", -cv.grid_offset_deg(rows, g)),
    }
    if repetitions:
        coords["repetition"] = ("presentation", idx[3])
    return coords


def _binned(array: np.ndarray, channels: Sequence[int], scale: float,
            orientation: str = cv.DEFAULT_ORIENTATION) -> np.ndarray:
    """MATLAB-layout [a, b, time, channel, image(, rep)] -> [presentation, neuroid, time_bin] float32 in image coords.

    Spatial axes are flipped (conventions item 4), then ``orientation`` (one of ``cv.SYMMETRIES``) is applied to the
    image-coordinate [row, col]; samples are averaged within 10-ms bins and multiplied by ``scale``.
    """
    n_bins = array.shape[2] // cv.TIME_BIN_MS
    part = np.flip(array[:, :, : n_bins * cv.TIME_BIN_MS], cv.FLIP_AXES)[:, :, :, list(channels)]
    part = cv.apply_symmetry(part, orientation, axes=(0, 1))
    has_reps = part.ndim == 6
    # -> [image, row, col, (rep,) channel, time]
    order = (4, 0, 1, 5, 3, 2) if has_reps else (4, 0, 1, 3, 2)
    part = np.ascontiguousarray(part.transpose(order))
    k = len(channels)
    part = part.reshape(-1, k, n_bins, cv.TIME_BIN_MS)
    out = part.sum(axis=-1, dtype=np.float64 if part.dtype == np.float64 else np.float32)
    out *= scale / cv.TIME_BIN_MS
    return out.astype(np.float32, copy=False)


def build_assembly(family: str, site: cv.Site, rec: MonkeyRecording, stimulus_ids: Sequence[str],
                   source_sha256: str, orientation: str = cv.DEFAULT_ORIENTATION):
    """The NeuroidAssembly of ``site`` from its monkey's recording (trials when present, else ``imageRF``), its maps
    under ``orientation`` (see :func:`_binned`)."""
    channels = list(site.channels)
    if rec.trials is not None:
        values = _binned(rec.trials, channels, cv.TRIAL_COUNTS_TO_RATE, orientation)
        repetitions = rec.trials.shape[5]
    else:
        values = _binned(rec.responses, channels, 1.0, orientation)
        repetitions = None
    n_bins = values.shape[2]
    coords = _presentation_coords(stimulus_ids, [p.name for p in rec.image_files], rec.grid_size, repetitions)
    channels_arr = np.asarray(channels)
    coords.update({
        "neuroid_id": ("neuroid", [f"{rec.monkey.key}.ch{c:02d}" for c in channels]),
        "channel": ("neuroid", channels_arr),
        "site": ("neuroid", [site.key] * len(channels)),
        "monkey": ("neuroid", [rec.monkey.key] * len(channels)),
        "monkey_name": ("neuroid", [rec.monkey.name] * len(channels)),
        "region": ("neuroid", [cv.REGION] * len(channels)),
        "subregion": ("neuroid", [site.subregion] * len(channels)),
        "time_bin_start": ("time_bin", np.arange(n_bins) * cv.TIME_BIN_MS + cv.TIME_ORIGIN_MS),
        "time_bin_end": ("time_bin", (np.arange(n_bins) + 1) * cv.TIME_BIN_MS + cv.TIME_ORIGIN_MS),
    })
    assembly = NeuroidAssembly(values, coords=coords, dims=["presentation", "neuroid", "time_bin"])
    assembly.attrs.update({
        "identifier": f"{family}.{site.key}",
        "stimulus_set_identifier": family,
        "grid_size": rec.grid_size,
        "grid_spacing_deg": cv.IMAGE_SIZE_DEG / (rec.grid_size - 1),
        "image_size_deg": cv.IMAGE_SIZE_DEG,
        "source_sha256": source_sha256,
        "source_file": rec.monkey.mat_path,
        "conventions_version": cv.CONVENTIONS_VERSION,
        "orientation": orientation,
        "default_window": list(rec.monkey.default_window),
        "time_bin_ms": cv.TIME_BIN_MS,
        "units": "spikes/s",
        "trial_resolved": int(repetitions is not None),
    })
    return assembly


def _write_netcdf(assembly, path: Path) -> None:
    """Write without MultiIndexes and without the non-serialisable attributes (zlib level 1: fast, small)."""
    data = assembly.reset_index(list(assembly.indexes))
    data.attrs = {k: v for k, v in data.attrs.items() if isinstance(v, (str, int, float, list, tuple, np.ndarray))}
    dataset = data.to_dataset(name="data", promote_attrs=True)
    dataset.to_netcdf(path, encoding={"data": {"zlib": True, "complevel": 1}})


# ---------------------------------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------------------------------

def family_dir(family: str, home: Path | None = None) -> Path:
    """Folder of an imported family ('Arcaro2020' or 'Arcaro2020sim') in the data home."""
    return Path(home or data_home()) / family


def _content_key(recordings: Sequence[MonkeyRecording], sidecar: dict | None,
                 orientation: str = cv.DEFAULT_ORIENTATION) -> str:
    digest = hashlib.sha256(f"conventions={cv.CONVENTIONS_VERSION}".encode())
    if orientation != cv.DEFAULT_ORIENTATION:  # the default leaves earlier imports' keys as they were
        digest.update(f"orientation={orientation}".encode())
    for rec in recordings:
        digest.update(rec.mat_sha256.encode())
        for name, h in zip(rec.names, rec.image_sha256):
            digest.update(f"{name}={h}".encode())
    if sidecar is not None:
        digest.update(json.dumps(sidecar, sort_keys=True).encode())
    return digest.hexdigest()


def import_arcaro2020(path: str | Path, *, home: str | Path | None = None, force: bool = False,
                      orientation: str = cv.DEFAULT_ORIENTATION) -> dict:
    """Import the archive at ``path`` (zip or folder) into the data home; returns the summary.

    Everything is read and checked before anything is written; the family folder is written atomically, so a bad or
    interrupted import leaves the data home as it was. Importing the same content again does nothing
    (``summary['status'] == 'unchanged'``) unless ``force``. ``orientation`` (one of ``cv.SYMMETRIES``) is applied
    to every map after the conventional flip, for a file whose orientation differs from the assumed one (find it
    with ``brainscore data orientation``); it is recorded in ``import.json`` and in every assembly's attrs.
    """
    cv.check_symmetry(orientation)
    home = Path(home) if home else data_home()
    path = Path(path).expanduser()
    archive_sha = sha256_file(path) if path.is_file() else None
    with open_archive(path) as (root, prefix):
        sidecar = read_sidecar(root, prefix)
        family = cv.SIM_IDENTIFIER if sidecar is not None else cv.IDENTIFIER
        recordings = []
        for monkey in tqdm(list(cv.MONKEYS.values()), desc="reading Arcaro2020", unit="monkey", leave=False):
            grid = int(sidecar["monkeys"][monkey.key].get("grid_size", monkey.grid_size)) if sidecar else \
                monkey.grid_size
            logger.info("reading %s%s", prefix, monkey.mat_path)
            recordings.append(read_monkey(root, monkey, grid, prefix))
        key = _content_key(recordings, sidecar, orientation)
        target = family_dir(family, home)
        existing = _read_manifest(target)
        if existing and existing.get("content_sha256") == key and not force:
            logger.info("%s already imported from identical content; nothing to do", family)
            return {**existing, "status": "unchanged", "folder": str(target)}
        rows = _stimulus_rows(family, recordings)
        with atomic_dir(target) as tmp:
            for rec in recordings:
                (tmp / rec.monkey.image_path).mkdir(parents=True, exist_ok=True)
                for file in rec.image_files:
                    shutil.copyfile(file, tmp / rec.monkey.image_path / file.name)
            rows.to_csv(tmp / f"stimulus_{family}.csv", index=False)
            sites = {}
            for site in tqdm(list(cv.SITES.values()), desc=f"writing {family}", unit="site", leave=False):
                rec = next(r for r in recordings if r.monkey.key == site.monkey)
                ids = rows.loc[rows.monkey == rec.monkey.key].sort_values("image_index").stimulus_id.tolist()
                assembly = build_assembly(family, site, rec, ids, rec.mat_sha256, orientation)
                _write_netcdf(assembly, tmp / _assembly_file(family, site.key))
                sites[site.key] = _site_summary(assembly, rec)
                del assembly
            if sidecar is not None:
                (tmp / cv.SIDECAR_NAME).write_text(json.dumps(sidecar, indent=1, sort_keys=True))
            manifest = {
                "family": family, "source": str(path.resolve()), "archive_sha256": archive_sha,
                "content_sha256": key, "conventions_version": cv.CONVENTIONS_VERSION, "simulated": sidecar is not None,
                "orientation": orientation,
                "images": int(len(rows)),
                "source_files": {rec.monkey.mat_path: rec.mat_sha256 for rec in recordings},
                "sites": sites,
            }
            (tmp / IMPORT_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    log_conventions(manifest, level=logging.INFO if sidecar is None else logging.DEBUG)
    logger.info("imported %s into %s", family, target)
    return {**manifest, "status": "imported", "folder": str(target)}


def conventions_lines(manifest: dict) -> list[str]:
    """The conventions an import applied, one line each (axis order, flips, orientation, channel split, windows,
    time origin, grid spacing and span), and where to check them."""
    sites = manifest.get("sites", {})
    split = "; ".join(f"{s['identifier']} = {s['monkey']} channels {cv.SITES[k].channels.start}-"
                      f"{cv.SITES[k].channels.stop - 1}" for k, s in sites.items() if k in cv.SITES)
    grids = "; ".join(f"{m.name} {sites[k]['grid_size']}x{sites[k]['grid_size']} @ "
                      f"{sites[k]['grid_spacing_deg']:g} deg" for k, m in
                      ((next((k for k in sites if sites[k]['monkey'] == m.key), None), m) for m in cv.MONKEYS.values())
                      if k is not None)
    return [
        f"{manifest.get('family', 'Arcaro2020')}: conventions v{cv.CONVENTIONS_VERSION} applied (inferred, not "
        "documented by the release; see docs/DATA.md):",
        f"  axis order: {cv.KEY_RESPONSES} = [{', '.join(cv.RESPONSE_AXES)}], grid_a = image rows, grid_b = columns",
        "  flips: map[row, col] = imageRF[G-1-row, G-1-col] (both spatial axes reversed; row 0 = image top)",
        f"  extra orientation: {manifest.get('orientation', cv.DEFAULT_ORIENTATION)} (import --orientation)",
        f"  channel split (0-based): {split} (authors' docstring; a published summary says ML 32 / PL 31)",
        f"  windows: M1 {cv.M1.default_window[0]}-{cv.M1.default_window[1]} ms, M2 {cv.M2.default_window[0]}-"
        f"{cv.M2.default_window[1]} ms; time origin: sample t = {cv.TIME_ORIGIN_MS} + t ms after stimulus onset, "
        f"{cv.TIME_BIN_MS}-ms bins",
        f"  grid: {grids}; both span the {cv.IMAGE_SIZE_DEG:g} deg image edge to edge (index k -> k/(G-1))",
        "  check them: brainscore data orientation Arcaro2020; brainscore data channels Arcaro2020 --out FILE.png",
    ]


def log_conventions(manifest: dict, level: int = logging.INFO) -> None:
    """Log :func:`conventions_lines` as one block."""
    logger.log(level, "\n".join(conventions_lines(manifest)))


def _assembly_file(family: str, site: str) -> str:
    return f"assy_{family}_{site}.nc"


def _site_summary(assembly, rec: MonkeyRecording) -> dict:
    reps = rec.trials.shape[5] if rec.trials is not None else None
    return {
        "identifier": assembly.attrs["identifier"], "monkey": rec.monkey.key, "monkey_name": rec.monkey.name,
        "images": len(rec.names), "channels": int(assembly.sizes["neuroid"]), "grid_size": rec.grid_size,
        "grid_spacing_deg": cv.IMAGE_SIZE_DEG / (rec.grid_size - 1), "repetitions": reps,
        "presentations": int(assembly.sizes["presentation"]),
        "time_range_ms": [int(assembly["time_bin_start"].values[0]), int(assembly["time_bin_end"].values[-1])],
        "time_bins": int(assembly.sizes["time_bin"]), "default_window": list(rec.monkey.default_window),
        "source_sha256": rec.mat_sha256,
    }


def _read_manifest(folder: Path) -> dict | None:
    path = folder / IMPORT_MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------

def _require_import(family: str, home: Path | None) -> tuple[Path, dict]:
    folder = family_dir(family, home)
    manifest = _read_manifest(folder)
    if manifest is None:
        how = ("brainscore data simulate --out PATH && brainscore data import arcaro2020 PATH"
               if family == cv.SIM_IDENTIFIER else
               "brainscore data fetch arcaro2020 (or: brainscore data import arcaro2020 PATH/TO/Arcaro2020.zip)")
        raise FileNotFoundError(f"{family} is not imported in {folder.parent}; run: {how}")
    if manifest.get("conventions_version") != cv.CONVENTIONS_VERSION:
        raise FileNotFoundError(f"{folder}: imported under conventions version {manifest.get('conventions_version')}"
                                f", this package uses {cv.CONVENTIONS_VERSION}; import the archive again")
    return folder, manifest


def load_stimulus_set(identifier: str, *, home: str | Path | None = None):
    """The StimulusSet 'Arcaro2020' or 'Arcaro2020sim' (images of both monkeys), with ``.identifier`` set."""
    family = family_of(identifier)
    if identifier != family:
        raise KeyError(f"unknown stimulus set '{identifier}': expected '{family}'")
    folder, _ = _require_import(family, Path(home) if home else None)
    csv = folder / f"stimulus_{family}.csv"
    try:
        missing = [name for name in pd.read_csv(csv)["filename"] if not (folder / name).is_file()]
        if missing:
            raise ArcaroDataError(folder / missing[0], "image", "the image imported into the data home",
                                  f"missing ({len(missing)} in all); import the archive again with --force")
        stimulus_set = StimulusSet.from_files(csv, folder)
    except (OSError, ValueError, KeyError) as error:
        if isinstance(error, ArcaroDataError):
            raise
        raise ArcaroDataError(csv, "file", "the stimulus table written at import", f"unreadable ({type(error).__name__}"
                              f": {' '.join(str(error).split())[:120]}); import the archive again with --force") \
            from None
    _verify_images(stimulus_set, folder)
    stimulus_set.identifier = family
    return stimulus_set


#: Images already checked in this process: path -> (size, mtime_ns) at the time their sha256 matched.
_VERIFIED: dict[str, tuple[int, int]] = {}


def _verify_images(stimulus_set, folder: Path) -> None:
    """Every image must still be the one imported (sha256 recorded in the stimulus table): a changed or swapped file
    would silently change scores. Cheap: the full hash is computed only when size or mtime changed since the last
    check in this process."""
    for stimulus_id, digest in zip(stimulus_set["stimulus_id"], stimulus_set["image_sha256"]):
        path = Path(stimulus_set.stimulus_paths[stimulus_id])
        try:
            stat = path.stat()
        except OSError:
            raise ArcaroDataError(path, "image", "the image imported into the data home",
                                  f"missing; import the archive again with --force ({folder})") from None
        key = (stat.st_size, stat.st_mtime_ns)
        if _VERIFIED.get(str(path)) == key:
            continue
        if sha256_file(path) != digest:
            raise ArcaroDataError(path, "image_sha256", f"the image imported (sha256 {str(digest)[:12]}...)",
                                  "a changed file; import the archive again with --force")
        _VERIFIED[str(path)] = key


def load_assembly(identifier: str, *, home: str | Path | None = None):
    """The NeuroidAssembly 'Arcaro2020.M1PL' | '.M1ML' | '.M2ML' (or 'Arcaro2020sim.*'), fully loaded in memory.

    ``attrs['stimulus_set']`` is the StimulusSet restricted to this monkey's images; ``attrs['default_window']`` the
    monkey's response window in ms.
    """
    family = family_of(identifier)
    site = identifier[len(family) + 1:]
    if site not in cv.SITES:
        close = difflib.get_close_matches(site, list(cv.SITES), n=1)
        hint = f" (did you mean '{family}.{close[0]}'?)" if close else ""
        raise KeyError(f"unknown assembly '{identifier}': expected {family}.SITE with SITE in "
                       f"{sorted(cv.SITES)}{hint}")
    home_path = Path(home) if home else None
    folder, _ = _require_import(family, home_path)
    stimulus_set = load_stimulus_set(family, home=home_path)
    monkey = cv.SITES[site].monkey
    subset = stimulus_set[stimulus_set["monkey"] == monkey].reset_index(drop=True)
    subset.identifier = f"{family}.{monkey}"  # never the parent's identifier: Brain-Score caches by identifier
    subset.stimulus_paths = {sid: stimulus_set.stimulus_paths[sid] for sid in subset["stimulus_id"]}
    nc_file = folder / _assembly_file(family, site)
    try:
        with xr.open_dataarray(nc_file) as raw:
            raw = raw.load()
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ArcaroDataError(nc_file, "file", "the assembly written at import", f"unreadable ({type(error).__name__}"
                              f": {' '.join(str(error).split())[:120]}); import the archive again with --force") \
            from None
    loader = StimulusReferenceAssemblyLoader(NeuroidAssembly, folder / _assembly_file(family, site),
                                             stimulus_set_identifier=family, stimulus_set=subset)
    assembly = NeuroidAssembly(loader.correct_stimulus_id_name(raw))
    assembly.attrs["stimulus_set_identifier"] = family
    assembly.attrs["stimulus_set"] = subset
    assembly.attrs["default_window"] = tuple(int(x) for x in np.atleast_1d(assembly.attrs["default_window"]))
    return assembly


def load_sidecar(identifier: str = cv.SIM_IDENTIFIER, *, home: str | Path | None = None) -> dict:
    """The generator sidecar of the imported simulated twin."""
    family = family_of(identifier)
    if family != cv.SIM_IDENTIFIER:
        raise KeyError(f"'{identifier}' is real data; only '{cv.SIM_IDENTIFIER}' has a generator sidecar")
    folder, _ = _require_import(family, Path(home) if home else None)
    return json.loads((folder / cv.SIDECAR_NAME).read_text())


# ---------------------------------------------------------------------------------------------------------------------
# Maps
# ---------------------------------------------------------------------------------------------------------------------

def has_coord(array: xr.DataArray, name: str) -> bool:
    """True if ``name`` is a coordinate of ``array``, including MultiIndex levels (xarray 2022.3 hides those)."""
    if name in array.coords:
        return True
    try:
        array[name]
        return True
    except KeyError:
        return False


def window_mask(assembly, window: tuple[float, float]) -> np.ndarray:
    """Boolean mask of the time bins lying entirely inside ``window`` = (start, end) ms."""
    start, end = window
    starts, ends = assembly["time_bin_start"].values, assembly["time_bin_end"].values
    mask = (starts >= start) & (ends <= end)
    if not mask.any():
        raise ValueError(f"window {tuple(window)} ms contains no complete {cv.TIME_BIN_MS}-ms bin of "
                         f"{assembly.attrs.get('identifier', 'the assembly')} (recorded "
                         f"{int(starts.min())}-{int(ends.max())} ms)")
    return mask


def response_maps(assembly, window: tuple[float, float] | None = None,
                  average_repetitions: bool = True) -> xr.DataArray:
    """Image-coordinate maps ``(stimulus_id, row, col, channel[, repetition])``: mean rate over ``window`` (ms).

    ``window=None`` uses the site's default window (M1 100-250 ms, M2 150-300 ms). Row 0 is the image top, column 0
    its left. Repetitions are averaged unless ``average_repetitions=False`` (then ``repetition`` is the last dim).
    """
    window = tuple(window) if window is not None else tuple(int(x) for x in
                                                             np.atleast_1d(assembly.attrs["default_window"]))
    data = assembly.transpose("presentation", "neuroid", "time_bin")
    mask = window_mask(data, window)
    values = np.asarray(data.values)[:, :, mask].mean(axis=2)  # [presentation, neuroid]
    stim = data["stimulus_id"].values
    stimulus_set = assembly.attrs.get("stimulus_set")
    if stimulus_set is not None and "stimulus_id" in getattr(stimulus_set, "columns", ()):
        order = [s for s in stimulus_set.sort_values("image_index")["stimulus_id"] if s in set(stim)]
    else:
        order = list(dict.fromkeys(stim))
    index = {s: i for i, s in enumerate(order)}
    s_idx = np.fromiter((index[s] for s in stim), dtype=int, count=len(stim))
    rows, cols = data["grid_row"].values.astype(int), data["grid_col"].values.astype(int)
    g = int(data["grid_size"].values.max())
    has_reps = has_coord(data, "repetition")
    reps = data["repetition"].values.astype(int) if has_reps else np.zeros(len(stim), dtype=int)
    n_reps = int(reps.max()) + 1
    out = np.full((len(order), g, g, values.shape[1], n_reps), np.nan, dtype=np.float64)
    out[s_idx, rows, cols, :, reps] = values
    if np.isnan(out).any():
        raise ValueError(f"{assembly.attrs.get('identifier', 'assembly')}: incomplete grid (some image x position"
                         f"{' x repetition' if has_reps else ''} has no presentation)")
    file_names = dict(zip(stim, data["image_file_name"].values)) if has_coord(data, "image_file_name") else {}
    coords = {
        "stimulus_id": order,
        "row": np.arange(g), "col": np.arange(g),
        "channel": data["channel"].values,
        "image_file_name": ("stimulus_id", [file_names.get(s, "") for s in order]),
        "image_u": ("row", np.arange(g) / (g - 1)), "image_v": ("col", np.arange(g) / (g - 1)),
        "neuroid_id": ("channel", data["neuroid_id"].values),
    }
    dims = ["stimulus_id", "row", "col", "channel"]
    if average_repetitions or not has_reps:
        result = out.mean(axis=-1)
    else:
        result = out
        dims.append("repetition")
        coords["repetition"] = np.arange(n_reps)
    attrs = {"window": window, "identifier": assembly.attrs.get("identifier"), "grid_size": g,
             "units": assembly.attrs.get("units", "")}
    return xr.DataArray(result, dims=dims, coords=coords, attrs=attrs)


def plot_site(identifier: str, path: str | Path, *, window: tuple[float, float] | None = None,
              home: str | Path | None = None, max_images: int = 14) -> Path:
    """Figure of each image above its channel-averaged response map (image coordinates) for one site; PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    assembly = load_assembly(identifier, home=home)
    maps = response_maps(assembly, window=window)
    mean_map = maps.mean("channel")
    stimulus_set = assembly.attrs["stimulus_set"]
    n = min(max_images, maps.sizes["stimulus_id"])
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 1.2, 3.8), squeeze=False, layout="constrained")
    shown_maps = [mean_map.sel(stimulus_id=sid).values for sid in maps["stimulus_id"].values[:n]]
    low, high = float(np.min(shown_maps)), float(np.max(shown_maps))  # one scale: maps compare across images
    for i, sid in enumerate(maps["stimulus_id"].values[:n]):
        with Image.open(stimulus_set.get_stimulus(sid)) as image:
            axes[0, i].imshow(np.asarray(image.convert("RGB")))
        shown = axes[1, i].imshow(shown_maps[i], cmap="magma", vmin=low, vmax=high)
        axes[0, i].set_title(_wrap(str(maps["image_file_name"].values[i]), 16), fontsize=6)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel("mean rate\n(channels)", fontsize=7)
    bar = fig.colorbar(shown, ax=list(axes[1]), fraction=0.03, pad=0.01)
    bar.set_label("spikes/s (channel mean)", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    grid = int(mean_map.sizes["row"])
    fig.suptitle(f"{identifier}: response maps {maps.attrs['window'][0]}-{maps.attrs['window'][1]} ms, "
                 f"{grid}x{grid} positions over the {cv.IMAGE_SIZE_DEG:.0f} deg image (row 0 = image top)",
                 fontsize=9)
    return save_figure(fig, path, format="png", dpi=120, bbox_inches="tight")


def _wrap(text: str, width: int) -> str:
    """``text`` cut into lines of ``width`` characters (file names have no spaces to break at)."""
    return "\n".join(text[i:i + width] for i in range(0, len(text), width)) or text


# ---------------------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------------------

def summary(identifier: str | None = None, *, home: str | Path | None = None) -> dict:
    """Import manifests of the imported families (or of ``identifier``'s family): {family: manifest}."""
    home_path = Path(home) if home else data_home()
    families = [family_of(identifier)] if identifier else [cv.IDENTIFIER, cv.SIM_IDENTIFIER]
    out = {}
    for family in families:
        manifest = _read_manifest(family_dir(family, home_path))
        if manifest is not None:
            out[family] = manifest
    return out


def format_summary(manifest: dict) -> str:
    """Human-readable lines of one family's manifest (images, channels, grid, time range per site)."""
    lines = [f"{manifest['family']}: {manifest['images']} images"
             f"{' (simulated twin)' if manifest.get('simulated') else ''}, conventions v"
             f"{manifest['conventions_version']}, content sha256 {manifest['content_sha256'][:12]}"]
    for site in sorted(manifest["sites"], key=lambda key: list(cv.SITES).index(key) if key in cv.SITES else 99):
        s = manifest["sites"][site]
        reps = f", {s['repetitions']} repetitions" if s.get("repetitions") else ""
        lines.append(f"  {s['identifier']:<22} {s['monkey']} ({s['monkey_name']}): {s['images']} images, "
                     f"{s['channels']} channels, grid {s['grid_size']}x{s['grid_size']} @ {s['grid_spacing_deg']:g} "
                     f"deg, time {s['time_range_ms'][0]}-{s['time_range_ms'][1]} ms in {s['time_bins']} bins"
                     f"{reps}, default window {s['default_window'][0]}-{s['default_window'][1]} ms")
    return "\n".join(lines)
