"""Conventions for reading the Arcaro, Ponce & Livingstone (2020) spatial IT recordings (PAPER_NOTES 8, items 1-5).

The released archive documents almost nothing about its layout; every decision this package takes about it is a
named constant here, so the importer, the simulated twin and the benchmarks share one definition. Bump
:data:`CONVENTIONS_VERSION` whenever any of these changes: it is stored with every imported assembly, and an import
made under other conventions is redone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Version of these conventions; stored in every imported assembly (attribute ``conventions_version``).
CONVENTIONS_VERSION = 1

# --------------------------------------------------------------------------------------------------------------------
# 1. Archive layout
# --------------------------------------------------------------------------------------------------------------------
#: Public URL of the released archive (neural_harmonizer ``data/dataset.py``).
ARCHIVE_URL = "https://storage.googleapis.com/serrelab-public/neural_recordings/Arcaro2020.zip"
#: sha256 of the public archive, pinned here once known (None: not yet known to the developers; ``brainscore data
#: fetch --sha256 HEX`` verifies a download, and without either the first download's hash is trusted and recorded).
ARCHIVE_SHA256: str | None = None
#: File name of the archive (also used for the download in the data home).
ARCHIVE_NAME = "Arcaro2020.zip"
#: Top folder inside the zip. The released loader extracts the zip and reads ``<zip without .zip>/George/...``, so
#: the members probably sit under ``Arcaro2020/`` [I]; the importer accepts the layout with or without it.
ARCHIVE_TOP_FOLDER = "Arcaro2020"
#: Key of the 5-D trial-averaged response array: [grid_a, grid_b, time_ms, channel, image].
KEY_RESPONSES = "imageRF"
#: Optional trial-resolved key: [grid_a, grid_b, time_ms, channel, image, repetition], spike counts per time sample.
KEY_TRIALS = "imageRF_trials"
#: Key of the 1xN cell array of Windows-style stimulus paths; only the basename identifies the image file.
KEY_NAMES = "UniqueNames"
#: Number of axes of :data:`KEY_RESPONSES` (and of :data:`KEY_TRIALS`, minus the repetition axis).
RESPONSE_NDIM = 5
#: Axis names of :data:`KEY_RESPONSES` in MATLAB order, for messages.
RESPONSE_AXES = ("grid_a", "grid_b", "time_ms", "channel", "image")
#: Sidecar in the root of a simulated archive; its presence marks the archive as the simulated twin.
SIDECAR_NAME = "generator.json"
#: Identifier family of the real data and of the simulated twin (never mixed).
IDENTIFIER = "Arcaro2020"
SIM_IDENTIFIER = "Arcaro2020sim"
#: Image size in degrees of visual angle (both monkeys; images fill the 16 deg square).
IMAGE_SIZE_DEG = 16.0


@dataclass(frozen=True)
class Monkey:
    """One animal's part of the archive.

    ``folder``/``mat_file``/``image_folder`` are paths inside the archive root; ``n_channels`` is the channel count
    of ``imageRF``; ``grid_size``/``grid_spacing_deg`` the stimulus-position grid (item 3); ``default_window`` the
    response window in ms after stimulus onset (item 5).
    """
    key: str
    name: str
    folder: str
    mat_file: str
    image_folder: str
    n_channels: int
    grid_size: int
    grid_spacing_deg: float
    default_window: tuple[int, int]

    @property
    def mat_path(self) -> str:
        return f"{self.folder}/{self.mat_file}"

    @property
    def image_path(self) -> str:
        return f"{self.folder}/{self.image_folder}"


#: Monkey 1 = George: 63 channels (PL + ML), 17 x 17 grid at 1 deg, window 100-250 ms (eLife Fig. 1 legend).
M1 = Monkey(key="M1", name="George", folder="George", mat_file="george_060118_data.mat", image_folder="natural_test",
            n_channels=63, grid_size=17, grid_spacing_deg=1.0, default_window=(100, 250))
#: Monkey 2 = Red: 32 channels (ML only), 9 x 9 grid at 2 deg, window 150-300 ms.
M2 = Monkey(key="M2", name="Red", folder="Red", mat_file="red_062419_data.mat", image_folder="red_naturalface",
            n_channels=32, grid_size=9, grid_spacing_deg=2.0, default_window=(150, 300))
MONKEYS: dict[str, Monkey] = {M1.key: M1, M2.key: M2}

#: Members the archive must contain (relative to its root); the image folders are checked for content separately.
EXPECTED_MEMBERS = (M1.mat_path, M2.mat_path)
#: Extraction caps (zip and disk bombs): the most bytes one member of each kind may unpack to, the most the whole
#: archive may unpack to, and the largest compression ratio a member over ``ZIP_RATIO_FREE_BYTES`` may have (weights
#: and images barely compress; a bomb compresses by 1000x). Members outside the layout are not extracted.
ZIP_MAX_MAT_BYTES = 8 << 30
ZIP_MAX_IMAGE_BYTES = 64 << 20
ZIP_MAX_OTHER_BYTES = 1 << 20   # generator.json, README-like files
ZIP_MAX_TOTAL_BYTES = 16 << 30
ZIP_MAX_RATIO = 100
ZIP_RATIO_FREE_BYTES = 16 << 20

# --------------------------------------------------------------------------------------------------------------------
# 2. Sites: which channels belong to which face patch
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """A recording site: ``channels`` are the 0-based channel indices (``range``) of ``monkey``'s ``imageRF``."""
    key: str
    monkey: str
    subregion: str
    channels: range

    @property
    def identifier_suffix(self) -> str:
        return self.key


#: George channels 0-31 are PL (posterior lateral face patch), 32-62 ML (middle lateral), following the authors'
#: docstring ("1-32 PL, 33-63 ML", 1-based); the released code's ``[:33]`` split is treated as an off-by-one bug.
M1PL = Site(key="M1PL", monkey="M1", subregion="PL", channels=range(0, 32))
M1ML = Site(key="M1ML", monkey="M1", subregion="ML", channels=range(32, 63))
#: Red: all 32 channels are ML.
M2ML = Site(key="M2ML", monkey="M2", subregion="ML", channels=range(0, 32))
SITES: dict[str, Site] = {s.key: s for s in (M1PL, M1ML, M2ML)}
#: Brain region of every site.
REGION = "IT"

# --------------------------------------------------------------------------------------------------------------------
# 3. Grid geometry
# --------------------------------------------------------------------------------------------------------------------
#: Both grids span the 16 deg image edge to edge: grid index k in 0..G-1 means the image point at normalised
#: coordinate k / (G - 1) lay on the receptive-field centre (17 x 1 deg and 9 x 2 deg both cover 16 deg).


def grid_coordinate(index, grid_size: int):
    """Normalised image coordinate in [0, 1] of grid index ``index`` (array or int) of a ``grid_size`` grid."""
    return index / (grid_size - 1)


def grid_offset_deg(index, grid_size: int, image_size_deg: float = IMAGE_SIZE_DEG):
    """Offset in degrees of the image point at ``index`` from the image centre (positive = down / right)."""
    return (grid_coordinate(index, grid_size) - 0.5) * image_size_deg

# --------------------------------------------------------------------------------------------------------------------
# 4. Orientation
# --------------------------------------------------------------------------------------------------------------------
#: The map in image coordinates (row 0 = top of the image, column 0 = left) is ``imageRF`` flipped on both spatial
#: axes, first axis = image rows: ``map[r, c] = imageRF[G-1-r, G-1-c]`` (as the released code does).
FLIP_AXES = (0, 1)


def to_image_index(index, grid_size: int):
    """Image-coordinate index (row or column) of ``imageRF`` spatial index ``index`` (the flip is an involution)."""
    return grid_size - 1 - index


#: The 8 symmetries of the square, applied to a map's [row, col] axes: transpose first (if named), then the flip.
#: ``brainscore data orientation`` scores a model under each; ``import_arcaro2020(orientation=NAME)`` applies one to
#: the image-coordinate maps on top of :data:`FLIP_AXES` (for a file whose orientation differs from the assumed one).
SYMMETRIES = ("identity", "flip_ud", "flip_lr", "rot180", "transpose", "transpose_flip_ud", "transpose_flip_lr",
              "transpose_rot180")
#: The symmetry applied at import unless the user chooses another.
DEFAULT_ORIENTATION = "identity"


def check_symmetry(name: str) -> str:
    """``name`` if it is one of :data:`SYMMETRIES`, else a ValueError listing them."""
    if name not in SYMMETRIES:
        raise ValueError(f"unknown orientation {name!r}: expected one of {', '.join(SYMMETRIES)}")
    return name


def apply_symmetry(maps, name: str, axes: tuple[int, int] = (0, 1)):
    """``maps`` (numpy array) under symmetry ``name`` of its (row, col) ``axes``: transpose first, then the flip
    (``flip_ud`` reverses rows, ``flip_lr`` columns, ``rot180`` both)."""
    check_symmetry(name)
    row, col = axes
    out = np.swapaxes(maps, row, col) if name.startswith("transpose") else maps
    flip = name[len("transpose_"):] if name.startswith("transpose_") else ("identity" if name == "transpose" else name)
    flip_axes = {"identity": (), "flip_ud": (row,), "flip_lr": (col,), "rot180": (row, col)}[flip]
    return np.flip(out, flip_axes) if flip_axes else out


def inverse_symmetry(name: str) -> str:
    """The symmetry that undoes ``name`` (each is its own inverse except the two quarter turns)."""
    check_symmetry(name)
    return {"transpose_flip_ud": "transpose_flip_lr", "transpose_flip_lr": "transpose_flip_ud"}.get(name, name)

# --------------------------------------------------------------------------------------------------------------------
# 5. Time
# --------------------------------------------------------------------------------------------------------------------
#: Index t on the ``time_ms`` axis is t ms after stimulus onset (one sample per ms).
TIME_ORIGIN_MS = 0
SAMPLE_MS = 1
#: Width of the time bins of the imported assemblies (samples are averaged within a bin; a trailing partial bin is
#: dropped).
TIME_BIN_MS = 10
#: ``imageRF`` values are kept in the release's unit (trial-averaged rate, taken as spikes/s). ``imageRF_trials``
#: holds spike counts per 1-ms sample and is converted to spikes/s (count / bin duration).
TRIAL_COUNTS_TO_RATE = 1000.0 / SAMPLE_MS


def default_window(monkey_key: str) -> tuple[int, int]:
    """The eLife response window (ms after onset) of monkey ``'M1'`` or ``'M2'``."""
    return MONKEYS[monkey_key].default_window
