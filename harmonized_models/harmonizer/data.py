"""Training batches that mix ImageNet samples (no human map: token 0, zero map) with ClickMe samples (token 1).

Every sample is addressed by a key ``(source, index, seed)``; the seed drives that sample's augmentation, so a batch
is a pure function of (training seed, epoch, step, rank): the same with any number of loader workers and after a
resume from the middle of an epoch (:class:`MixedBatchSampler` starts at any step).

Epoch length: one pass over the ClickMe part (``len(clickme) // (clickme per batch * world size)`` steps); the
ImageNet part is drawn without replacement from fresh permutations each epoch. ``steps_per_epoch`` overrides it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torchvision import transforms
from torchvision.datasets import ImageFolder

from .clickme import ClickMeDataset

IMAGENET, CLICKME = 0, 1


class DataError(ValueError):
    """Training data that cannot be used as given; the message names the path and the fix."""


def imagenet_folder(root: str | os.PathLike, transform=None) -> ImageFolder:
    """ImageNet (or any ImageFolder tree: one sub-folder per class, sorted names = class indices)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; --imagenet/--imagenet-val must be an ImageFolder directory "
                        f"(one sub-folder per class, e.g. n01440764/)")
    try:
        return ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as error:
        raise DataError(f"{root}: not a usable ImageFolder directory ({error})") from error


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float],
                    interpolation: str = "bilinear", augment: bool = True) -> transforms.Compose:
    """RandomResizedCrop + horizontal flip (or a plain resize when ``augment`` is False), then normalisation."""
    mode = transforms.InterpolationMode(interpolation)
    steps = ([transforms.RandomResizedCrop(image_size, interpolation=mode), transforms.RandomHorizontalFlip()]
             if augment else [transforms.Resize((image_size, image_size), interpolation=mode)])
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 0.875,
                   interpolation: str = "bilinear") -> transforms.Compose:
    """Resize the short side to ``image_size / crop_pct``, centre-crop ``image_size``, normalise."""
    mode = transforms.InterpolationMode(interpolation)
    return transforms.Compose([transforms.Resize(int(math.floor(image_size / crop_pct)), interpolation=mode),
                               transforms.CenterCrop(image_size), transforms.ToTensor(),
                               transforms.Normalize(mean, std)])


class MixedDataset(torch.utils.data.Dataset):
    """Indexed by keys ``(source, index, seed)``; returns ``(image, map, label, token)``."""

    def __init__(self, imagenet: ImageFolder | None, clickme: ClickMeDataset | None, image_size: int,
                 augment: bool = True):
        self.imagenet, self.clickme = imagenet, clickme
        self.image_size = image_size
        self.augment = augment

    def __len__(self) -> int:
        return (len(self.imagenet) if self.imagenet else 0) + (len(self.clickme) if self.clickme else 0)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        source, index, seed = key
        if source == CLICKME:
            flip = self.augment and bool(np.random.default_rng(seed).integers(2))
            image, heatmap, label = self.clickme.get(int(index), flip=flip)
            return image, heatmap, label, 1.0
        with torch.random.fork_rng(devices=[]):  # torchvision's random transforms draw from torch's global RNG
            torch.manual_seed(seed)
            image, label = self.imagenet[int(index)]
        return image, torch.zeros(self.image_size, self.image_size), label, 0.0


def _stream(length: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices into ``range(length)``: concatenated random permutations (without replacement per pass)."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    reps = math.ceil(count / length)
    return np.concatenate([rng.permutation(length) for _ in range(reps)])[:count]


class MixedBatchSampler(torch.utils.data.Sampler):
    """Batches of keys with ``round(batch_size * clickme_fraction)`` ClickMe samples and the rest ImageNet, for
    this ``rank`` of ``world_size``; deterministic in (seed, epoch); :meth:`set_start` skips the first steps."""

    def __init__(self, n_imagenet: int, n_clickme: int, batch_size: int, clickme_fraction: float, *,
                 seed: int = 0, world_size: int = 1, rank: int = 0, steps_per_epoch: int | None = None):
        if not 0.0 <= clickme_fraction <= 1.0:
            raise DataError(f"clickme_fraction must be in [0, 1], got {clickme_fraction}")
        self.n_click = int(round(batch_size * clickme_fraction))
        self.n_imnet = batch_size - self.n_click
        if self.n_click and not n_clickme:
            raise DataError("the ClickMe dataset is empty but clickme_fraction > 0")
        if self.n_imnet and not n_imagenet:
            raise DataError("no ImageNet data but clickme_fraction < 1; give --imagenet or --clickme-fraction 1")
        self.sizes = {IMAGENET: n_imagenet, CLICKME: n_clickme}
        self.seed, self.world_size, self.rank = seed, world_size, rank
        if steps_per_epoch is None:
            steps_per_epoch = (n_clickme // (self.n_click * world_size) if self.n_click
                               else n_imagenet // (self.n_imnet * world_size))
        if steps_per_epoch < 1:
            raise DataError(f"an epoch would have no step: {n_clickme} ClickMe / {n_imagenet} ImageNet samples for "
                            f"batches of {batch_size} x {world_size} process(es); use a smaller --batch-size")
        self.steps = int(steps_per_epoch)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, step: int) -> None:
        """Begin the next iteration at ``step`` of the epoch (exact resume)."""
        self.start = int(step)

    def __len__(self) -> int:
        return self.steps - self.start

    def _keys(self, source: int, per_batch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, source])
        count = self.steps * self.world_size * per_batch
        indices = _stream(self.sizes[source], count, rng)
        seeds = rng.integers(0, 2 ** 31 - 1, size=count)
        return indices.reshape(self.steps, self.world_size, per_batch), seeds.reshape(self.steps, self.world_size,
                                                                                      per_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        parts = [(source, *self._keys(source, n)) for source, n in ((IMAGENET, self.n_imnet), (CLICKME, self.n_click))
                 if n]
        for step in range(self.start, self.steps):
            batch = []
            for source, indices, seeds in parts:
                batch += [(source, int(i), int(s)) for i, s in zip(indices[step, self.rank], seeds[step, self.rank])]
            yield batch


def collate(batch: list[tuple]) -> dict[str, torch.Tensor]:
    """Stack ``(image, map, label, token)`` samples into a batch dict."""
    images, maps, labels, tokens = zip(*batch)
    return {"images": torch.stack(images), "maps": torch.stack(maps),
            "labels": torch.as_tensor(labels, dtype=torch.long), "tokens": torch.as_tensor(tokens,
                                                                                          dtype=torch.float32)}
