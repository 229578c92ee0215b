"""ClickMe human feature-importance maps: the released TFRecord shards (read without TensorFlow) and a plain folder
format, with the reference preprocessing of images and maps.

Reference (``serre-lab/Harmonization`` ``common/clickme_dataset.py``, PAPER_NOTES section 4): each record is a
``tf.train.Example`` with ``image`` (JPEG, 256x256x3), ``heatmap`` (JPEG, 256x256x1) and ``label`` (int64, ImageNet
class index). Images are resized bilinearly to 224 px. Maps are resized bilinearly to 64 px, blurred with a
Gaussian kernel (sigma 10, zero 'SAME' padding), then resized bilinearly to 224 px. TensorFlow 2's
``tf.image.resize(method='bilinear')`` uses half-pixel centres and no antialiasing, which is exactly
``torch.nn.functional.interpolate(mode='bilinear', align_corners=False, antialias=False)``.

Deliberate difference (PAPER_NOTES 6.12): the reference's kernel is 10x10, i.e. even, so its centre falls between
pixels and the blurred map is shifted by half a pixel (at 64 px; ~1.75 px at 224 px). We use an ODD 11x11 kernel
with the same sigma, centred on a pixel (:data:`BLUR_KERNEL_SIZE`).

JPEG decoding: PIL decodes with libjpeg's accurate integer DCT (identical to ``tf.io.decode_jpeg(...,
dct_method='INTEGER_ACCURATE')``); the reference's ``tf.io.decode_jpeg`` default is the fast DCT, so its decoded
pixels differ from ours by a few grey levels (measured: at most 5/255 on a noise image); resizing and blurring match
TensorFlow to float precision.

Folder format (``labels.csv`` in the root)::

    root/labels.csv      columns: image, label[, map]   (label = ImageNet class index)
    root/images/<image>  any image file PIL reads
    root/maps/<stem>.npy or root/maps/<stem>.png   (or the path in the optional ``map`` column, relative to maps/)

Folder maps are raw click maps by default and get the same map preprocessing as the TFRecords
(``map_preprocessing='none'`` uses them as they are, only resized to the image size).
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .tfrecord import TFRecordError, index_records, parse_example, read_record

#: Intermediate map size of the reference (256 -> 64 -> blur -> image size).
MAP_WORKING_SIZE = 64
#: Odd kernel replacing the reference's even 10x10 one (PAPER_NOTES 6.12); sigma as the reference.
BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 10.0
#: Image size of the reference's training/evaluation inputs.
REFERENCE_IMAGE_SIZE = 224
#: File names the released shards use: ``train-12.tfrecords`` / ``val-3.tfrecords``, or Keras' cached copies
#: ``clickme_train_12`` / ``clickme_val_3``.
_SHARD_PATTERN = re.compile(r"(\.tfrecords?$|\.tfrec$|^clickme_(train|val)_\d+$)")
MAP_PREPROCESSING = ("reference", "none")


class ClickMeError(ValueError):
    """ClickMe data that cannot be read; the message names the file and the fix."""


@dataclass
class RawSample:
    """One ClickMe sample before preprocessing."""
    image: np.ndarray    # uint8 [H, W, 3]
    heatmap: np.ndarray  # float32 [h, w]
    label: int


def gaussian_kernel(size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian ``[size, size]`` centred on the middle pixel (``size`` must be odd)."""
    if size % 2 != 1:
        raise ValueError(f"the blur kernel size must be odd so that it is centred on a pixel, got {size}")
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).float()


def resize_bilinear(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """TF2 ``tf.image.resize(..., 'bilinear')`` of ``[..., H, W]``: half-pixel centres, no antialiasing."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    lead = x.shape[:-2]
    y = F.interpolate(x.reshape(-1, 1, *x.shape[-2:]).float(), size=size, mode="bilinear",
                      align_corners=False, antialias=False)
    return y.reshape(*lead, *size)


def blur(maps: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Convolve maps ``[..., H, W]`` with an odd kernel, zero padding, same output size (TF 'SAME', stride 1)."""
    kernel = gaussian_kernel() if kernel is None else kernel
    k = kernel.shape[-1]
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    y = F.conv2d(F.pad(x, (k // 2,) * 4), kernel.to(x)[None, None])
    return y.reshape(*lead, *maps.shape[-2:])


def preprocess_map(heatmap: np.ndarray | torch.Tensor, size: int = REFERENCE_IMAGE_SIZE,
                   mode: str = "reference") -> torch.Tensor:
    """A raw click map ``[H, W]`` -> ``[size, size]`` float32: resize to 64, blur, resize to ``size`` ('reference');
    or only resize to ``size`` ('none')."""
    x = torch.from_numpy(np.array(heatmap, dtype=np.float32))
    if mode == "reference":
        x = resize_bilinear(blur(resize_bilinear(x, MAP_WORKING_SIZE)), size)
    elif mode == "none":
        x = resize_bilinear(x, size) if tuple(x.shape) != (size, size) else x
    else:
        raise ValueError(f"map_preprocessing must be one of {MAP_PREPROCESSING}, got {mode!r}")
    return x


def preprocess_image(image: np.ndarray, size: int = REFERENCE_IMAGE_SIZE) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, size, size]`` in [0, 1] (bilinear resize as the reference, then /255)."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
    if tuple(x.shape[-2:]) != (size, size):
        x = resize_bilinear(x, size)
    return x / 255.0


def _decode_image(data: bytes, mode: str, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert(mode))
    except Exception as error:  # noqa: BLE001 - PIL raises many types
        raise ClickMeError(f"{where}: cannot decode the image bytes ({error}); the record is damaged") from error


def decode_example(features: dict, where: str) -> RawSample:
    """A parsed ClickMe ``tf.train.Example`` -> :class:`RawSample` (features image, heatmap, label)."""
    for key in ("image", "heatmap", "label"):
        if key not in features or len(features[key]) == 0:
            raise ClickMeError(f"{where}: feature {key!r} is missing (found {sorted(features)}); this is not a "
                               f"ClickMe record (expected image, heatmap, label)")
    image = _decode_image(features["image"][0], "RGB", where)
    heatmap = _decode_image(features["heatmap"][0], "L", where).astype(np.float32)
    return RawSample(image=image, heatmap=heatmap, label=int(features["label"][0]))


def _shard_key(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def find_shards(path: str | os.PathLike) -> list[Path]:
    """The TFRecord shards at ``path`` (a shard file, or a folder of ``*.tfrecords`` / ``clickme_*_N`` files),
    in natural order."""
    path = Path(path)
    if path.is_file():
        return [path]
    shards = sorted((p for p in path.iterdir() if p.is_file() and _SHARD_PATTERN.search(p.name)), key=_shard_key)
    if not shards:
        raise ClickMeError(f"{path}: no TFRecord shards (*.tfrecords, *.tfrecord, clickme_train_N) and no "
                           f"labels.csv; point --clickme to the ClickMe shards or to a folder with labels.csv")
    return shards


class ClickMeTFRecords:
    """Random access to the samples of ClickMe TFRecord shards (record offsets indexed once; CRCs verified)."""

    def __init__(self, shards: Sequence[str | os.PathLike], verify: bool = True):
        self.shards = [Path(s) for s in shards]
        self.verify = verify
        self._index: list[tuple[int, int, int, int]] = []  # (shard, record number, offset, length)
        for s, shard in enumerate(self.shards):
            before = len(self._index)
            for r, (offset, length) in enumerate(index_records(shard, verify)):
                self._index.append((s, r, offset, length))
            if len(self._index) == before:
                raise ClickMeError(f"{shard}: an empty shard (no records); download it again or remove it")

    def __len__(self) -> int:
        return len(self._index)

    def raw(self, i: int) -> RawSample:
        s, r, offset, length = self._index[i]
        data = read_record(self.shards[s], offset, length, index=r, verify=self.verify)
        where = f"{self.shards[s]}: record {r}"
        try:
            features = parse_example(data)
        except TFRecordError as error:
            raise TFRecordError(f"{where}: {error}") from error
        return decode_example(features, where)


class ClickMeFolder:
    """ClickMe-style samples from a folder with ``labels.csv``, ``images/`` and ``maps/`` (see module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        table = self.root / "labels.csv"
        if not table.is_file():
            raise ClickMeError(f"{table}: not found; a ClickMe folder needs labels.csv with columns image,label")
        try:
            with open(table, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = {"image", "label"} - set(reader.fieldnames or ())
                if missing:
                    raise ClickMeError(f"{table}: missing column(s) {sorted(missing)}; the header must be "
                                       f"image,label[,map]")
                rows = list(reader)
        except UnicodeDecodeError as error:
            raise ClickMeError(f"{table}: not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8 "
                               "CSV with columns image,label") from None
        if not rows:
            raise ClickMeError(f"{table}: no samples (only a header); add one line per image: image,label")
        self.items: list[tuple[Path, Path, int]] = []
        for line, row in enumerate(rows, start=2):
            image = self.root / "images" / row["image"]
            if not image.is_file():
                raise ClickMeError(f"{table} line {line}: image file {image} not found; fix the 'image' field")
            try:
                label = int(row["label"])
            except (TypeError, ValueError):
                raise ClickMeError(f"{table} line {line}: label {row['label']!r} is not an integer class index")
            self.items.append((image, self._map_path(row, image, table, line), label))

    def _map_path(self, row: dict, image: Path, table: Path, line: int) -> Path:
        if row.get("map"):
            candidates = [self.root / "maps" / row["map"]]
        else:
            stem = Path(row["image"]).with_suffix("")
            candidates = [self.root / "maps" / f"{stem}{ext}" for ext in (".npy", ".png")]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise ClickMeError(f"{table} line {line}: no map for {image.name} (looked for "
                           f"{', '.join(str(c) for c in candidates)}); add it or fix the 'map' field")

    def __len__(self) -> int:
        return len(self.items)

    def raw(self, i: int) -> RawSample:
        image_path, map_path, label = self.items[i]
        with Image.open(image_path) as img:
            image = np.asarray(img.convert("RGB"))
        if map_path.suffix == ".npy":
            heatmap = np.load(map_path, allow_pickle=False).astype(np.float32)
            if heatmap.ndim == 3 and heatmap.shape[-1] == 1:
                heatmap = heatmap[..., 0]
            if heatmap.ndim != 2:
                raise ClickMeError(f"{map_path}: a map must be 2-D [H, W], got shape {heatmap.shape}")
        else:
            with Image.open(map_path) as img:
                heatmap = np.asarray(img.convert("L"), dtype=np.float32)
        return RawSample(image=image, heatmap=heatmap, label=label)


def open_clickme(path: str | os.PathLike, verify: bool = True) -> ClickMeTFRecords | ClickMeFolder:
    """A folder with ``labels.csv`` -> :class:`ClickMeFolder`; TFRecord shard(s) -> :class:`ClickMeTFRecords`."""
    path = Path(path)
    if not path.exists():
        raise ClickMeError(f"{path}: does not exist; point --clickme to the ClickMe shards or a ClickMe folder")
    if path.is_dir() and (path / "labels.csv").is_file():
        return ClickMeFolder(path)
    return ClickMeTFRecords(find_shards(path), verify=verify)


class ClickMeDataset(torch.utils.data.Dataset):
    """Preprocessed ClickMe samples: ``(image [3, S, S] normalised, map [S, S], label)``.

    ``flip=True`` in :meth:`get` mirrors image and map together (training augmentation)."""

    def __init__(self, source: ClickMeTFRecords | ClickMeFolder, image_size: int = REFERENCE_IMAGE_SIZE,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 map_preprocessing: str = "reference"):
        if map_preprocessing not in MAP_PREPROCESSING:
            raise ValueError(f"map_preprocessing must be one of {MAP_PREPROCESSING}, got {map_preprocessing!r}")
        self.source = source
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.map_preprocessing = map_preprocessing

    def __len__(self) -> int:
        return len(self.source)

    def get(self, i: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
        raw = self.source.raw(i)
        image = (preprocess_image(raw.image, self.image_size) - self.mean) / self.std
        heatmap = preprocess_map(raw.heatmap, self.image_size, self.map_preprocessing)
        if flip:
            image, heatmap = image.flip(-1), heatmap.flip(-1)
        return image.contiguous(), heatmap.contiguous(), raw.label

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.get(i)
