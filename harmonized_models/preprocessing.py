"""How a model wants its images: size, normalisation and interpolation, and the loader that applies it.

Brain-Score shows a model the *whole* stimulus (it spans the model's visual degrees), so images are resized to
``image_size`` x ``image_size`` without cropping, exactly like brainscore-vision's ``load_preprocess_images``
(``Resize((s, s))`` -> ``ToTensor`` -> ``Normalize``). ``crop_pct`` is recorded only as provenance of the ImageNet
top-1 figure (timm evaluates with a centre crop); it is deliberately not applied, because cropping would move every
image position the spatial IT benchmarks compare against.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class Preprocessing:
    """Image preprocessing of one model: RGB in [0, 1], resized to a square, then ``(x - mean) / std``."""

    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 1.0  # provenance only (see module docstring)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if int(self.image_size) != self.image_size or self.image_size < 8:
            raise ValueError(f"preprocessing.image_size must be an integer >= 8, got {self.image_size!r}")
        object.__setattr__(self, "image_size", int(self.image_size))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"preprocessing.mean/std must be 3 values (std > 0), got {self.mean}, {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"preprocessing.interpolation must be one of {INTERPOLATIONS}, "
                             f"got {self.interpolation!r}")

    @classmethod
    def coerce(cls, value: "Preprocessing | Mapping[str, Any] | int | None") -> "Preprocessing":
        """Accept a Preprocessing, a dict of its fields (unknown keys are an error), an image size, or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, (int, np.integer)):
            return cls(image_size=int(value))
        if isinstance(value, Mapping):
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = set(value) - fields
            if unknown:
                raise ValueError(f"unknown preprocessing field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
            return cls(**dict(value))
        raise TypeError(f"preprocessing must be a Preprocessing, a dict or an image size, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "crop_pct": self.crop_pct}

    def transform(self):
        """The torchvision transform PIL image -> normalised float tensor [3, S, S] (as brainscore-vision's)."""
        from torchvision import transforms
        from torchvision.transforms import InterpolationMode
        mode = InterpolationMode(self.interpolation)
        return transforms.Compose([
            transforms.Resize((self.image_size, self.image_size), interpolation=mode),
            transforms.ToTensor(),
            transforms.Normalize(mean=self.mean, std=self.std),
        ])

    def resize(self):
        """The resize step alone (PIL image -> PIL image), exactly as in :meth:`transform`."""
        from torchvision import transforms
        from torchvision.transforms import InterpolationMode
        return transforms.Resize((self.image_size, self.image_size), interpolation=InterpolationMode(self.interpolation))

    def load_uint8(self, path: str):
        """Decode and resize one image; returns a uint8 tensor [S, S, 3] (normalisation is left to the device)."""
        import torch
        return torch.from_numpy(np.asarray(self.resize()(load_rgb(path)), dtype=np.uint8).copy())

    def normalize(self, batch):
        """uint8 [N, S, S, 3] -> normalised float32 [N, 3, S, S] (channels-last memory), on ``batch``'s device.

        The same arithmetic as ``ToTensor`` + ``Normalize`` (x / 255, then (x - mean) / std, in float32).
        """
        import torch
        x = batch.permute(0, 3, 1, 2).to(torch.float32).div(255)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def load(self, path: str):
        """Decode one image file and preprocess it; returns a float32 tensor [3, S, S]."""
        return self.transform()(load_rgb(path))

    def __call__(self, paths: Sequence[str]) -> np.ndarray:
        """brainscore-vision style: list of paths -> array [N, 3, S, S] (used by the microsaccade fallback)."""
        transform = self.transform()
        return np.stack([transform(load_rgb(p)).numpy() for p in paths])


def load_rgb(path: str):
    """Open an image as RGB, with brainscore-vision's handling of grey, alpha and palette images."""
    from brainscore_vision.model_helpers.activations.pytorch import load_image
    image = load_image(str(path))
    return image if image.mode == "RGB" else image.convert("RGB")
