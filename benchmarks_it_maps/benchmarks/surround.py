"""The grey screen around the image for the maps protocol (option ``surround`` of the Arcaro benchmarks).

In the experiment each 16 deg image was flashed on a grey screen, and the recording grid spans the image edge to
edge: at the grid's outermost positions (64 of 289 on monkey 1's 17 x 17 grid, 32 of 81 on monkey 2's 9 x 9) half
of a neuron's field lies on the grey screen. With the default maps protocol the image fills the model's input, so
the model's cells there see zero padding instead. With ``surround = f`` the model is shown the image inside a grey
(128) border of ``f`` times the image's width on every side, and the grid is sampled on the image's part of the
canvas (:func:`image_span`; :func:`benchmarks_it_maps.benchmarks.readout.sample_feature_maps`), so the features at
the edge positions see image and grey as the neurons did.

The canvas is resized to the model's input like any stimulus, so a model with a fixed input size sees the image
smaller by ``1 + 2 f``; docs/BENCHMARKS.md gives the measured effect (why it is an option, not the default).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet
from PIL import Image
from tqdm.auto import tqdm

from benchmarks_it_maps.home import atomic_dir, data_home

#: The screen's grey (Brain-Score's ``place_on_screen`` background).
GREY = (128, 128, 128)


def margin_px(image_px: int, surround: float) -> int:
    """Width in pixels of the grey border of an ``image_px`` wide image with surround fraction ``surround``."""
    return int(round(float(surround) * int(image_px)))


def image_span(image_px: int, surround: float) -> tuple[float, float]:
    """Where an ``image_px`` image lies on its surround canvas, as fractions ``(start, end)`` of the canvas."""
    margin = margin_px(image_px, surround)
    canvas = int(image_px) + 2 * margin
    return margin / canvas, (margin + int(image_px)) / canvas


def _signature(path) -> str:
    stat = os.stat(path)
    return f"{Path(path).name}:{stat.st_size}"


def surround_stimulus_set(stimulus_set, surround: float, cache_dir: Optional[Path] = None) \
        -> tuple[StimulusSet, tuple[float, float]]:
    """The images of ``stimulus_set`` each centred on a grey canvas ``1 + 2 surround`` times its size (same
    ``stimulus_id``s, PNG files written once, atomically, under the data home), and the image's span on the canvas.

    The images must all be square and of one size (the span is one for the whole set); otherwise ValueError.
    """
    surround = float(surround)
    if not 0.0 < surround <= 2.0:
        raise ValueError(f"surround must be in (0, 2] (the grey border as a fraction of the image width), "
                         f"got {surround}")
    stimulus_ids = [str(sid) for sid in stimulus_set["stimulus_id"].values]
    paths = {sid: stimulus_set.get_stimulus(sid) for sid in stimulus_ids}
    sizes = set()
    for sid, path in paths.items():
        with Image.open(path) as image:
            sizes.add(image.size)
    if len(sizes) != 1 or len({*next(iter(sizes))}) != 1:
        raise ValueError(f"the surround option needs square images of one size; stimulus set "
                         f"{getattr(stimulus_set, 'identifier', None)!r} has sizes {sorted(sizes)[:4]}")
    image_px = next(iter(sizes))[0]
    key = hashlib.sha1("|".join([getattr(stimulus_set, "identifier", "") or ""] + [
        f"{sid}:{_signature(paths[sid])}" for sid in stimulus_ids]).encode()).hexdigest()[:10]
    identifier = f"{getattr(stimulus_set, 'identifier', None) or 'stimuli'}-surround{surround:g}-{key}"
    folder = Path(cache_dir or data_home() / "stimuli" / "surround") / identifier
    margin = margin_px(image_px, surround)
    if not (folder / "complete").exists():
        with atomic_dir(folder) as tmp:
            for sid in tqdm(stimulus_ids, desc="rendering images on the grey screen", unit="image"):
                with Image.open(paths[sid]) as image:
                    canvas = Image.new("RGB", (image_px + 2 * margin,) * 2, GREY)
                    canvas.paste(image.convert("RGB"), (margin, margin))
                canvas.save(tmp / f"{_file_stem(sid)}.png")
            (tmp / "complete").write_text(identifier + "\n")
    shown = StimulusSet([dict(stimulus_id=sid, filename=f"{_file_stem(sid)}.png") for sid in stimulus_ids])
    shown.stimulus_paths = {sid: folder / f"{_file_stem(sid)}.png" for sid in stimulus_ids}
    shown.identifier = identifier
    return shown, image_span(image_px, surround)


def _file_stem(stimulus_id: str) -> str:
    """A file name for a stimulus id (ids may hold characters that file names cannot)."""
    return hashlib.sha1(stimulus_id.encode()).hexdigest()[:16]
