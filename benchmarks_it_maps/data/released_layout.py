"""The simulated twin exported in the *released* layout: trial-summed spike counts per 1-ms bin, no repetition axis.

The public Arcaro2020.zip holds ``imageRF`` only (no ``imageRF_trials``), so a noise ceiling for it cannot split
repetitions. To judge ceiling estimators for such data against a known truth, :func:`export_released_layout`
rewrites an archive written by :mod:`benchmarks_it_maps.data.simulate` (zip or folder) as the released file would
look: ``imageRF`` = the sum over repetitions of ``imageRF_trials`` (spike counts per 1-ms sample, still Poisson), the
trial axis dropped, images and sidecar copied (the sidecar gains ``"layout": "released"`` so the export still
imports as ``Arcaro2020sim`` and keeps its ground truth). ``smooth_ms`` > 0 also smooths every time course with a
Gaussian kernel of that standard deviation (ms), as a file that was smoothed before release would be: its adjacent
time bins are then correlated, which the time-split ceiling must detect.

This module only transforms a written archive; it does not simulate anything itself.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.data.matfile import read_mat, write_mat
from benchmarks_it_maps.home import atomic_dir

#: Sidecar key marking an export in the released layout.
LAYOUT_KEY = "layout"


def released_responses(trials: np.ndarray, smooth_ms: float = 0.0) -> np.ndarray:
    """``imageRF`` of the released layout from ``imageRF_trials`` ``[a, b, time, channel, image, repetition]``:
    counts summed over repetitions (float32), optionally Gaussian-smoothed along time (axis 2) by ``smooth_ms``."""
    trials = np.asarray(trials)
    if trials.ndim != cv.RESPONSE_NDIM + 1:
        raise ValueError(f"imageRF_trials must have {cv.RESPONSE_NDIM + 1} axes "
                         f"[{', '.join(cv.RESPONSE_AXES)}, repetition]; got shape {trials.shape}")
    summed = trials.sum(axis=-1, dtype=np.float32)
    if smooth_ms > 0:
        summed = gaussian_filter1d(summed, sigma=float(smooth_ms) / cv.SAMPLE_MS, axis=2, mode="nearest")
    return summed


def export_released_layout(archive: str | Path, out: str | Path, *, smooth_ms: float = 0.0) -> Path:
    """Write ``archive`` (a simulated twin, zip or folder) to the folder ``out`` in the released layout; returns
    ``out``. Atomic: ``out`` appears complete or not at all; it must not exist yet."""
    out = Path(out).expanduser()
    if out.exists():
        raise ValueError(f"{out} exists; give a new folder for the released-layout export")
    with data.open_archive(archive) as (root, label):
        sidecar_path = root / cv.SIDECAR_NAME
        if not sidecar_path.is_file():
            raise ValueError(f"{archive}: no {cv.SIDECAR_NAME}; only a simulated twin can be exported (the real "
                             "file is already in the released layout)")
        sidecar = json.loads(sidecar_path.read_text())
        with atomic_dir(out) as tmp:
            for monkey in cv.MONKEYS.values():
                mat = read_mat(root / monkey.mat_path, [cv.KEY_RESPONSES, cv.KEY_NAMES, cv.KEY_TRIALS],
                               f"{label}{monkey.mat_path}")
                if cv.KEY_TRIALS not in mat:
                    raise ValueError(f"{label}{monkey.mat_path}: no {cv.KEY_TRIALS}; the twin must be written "
                                     "with its repetitions")
                responses = released_responses(mat[cv.KEY_TRIALS], smooth_ms)
                (tmp / monkey.mat_path).parent.mkdir(parents=True, exist_ok=True)
                write_mat(tmp / monkey.mat_path, {cv.KEY_RESPONSES: responses, cv.KEY_NAMES: mat[cv.KEY_NAMES]})
                shutil.copytree(root / monkey.image_path, tmp / monkey.image_path)
            sidecar[LAYOUT_KEY] = "released"
            sidecar["released_layout"] = {"responses": "spike counts per 1-ms sample summed over repetitions",
                                          "repetitions_summed": int(sidecar.get("noise", {}).get("repetitions", 0)),
                                          "smooth_ms": float(smooth_ms)}
            (tmp / cv.SIDECAR_NAME).write_text(json.dumps(sidecar, indent=1))
    return out
