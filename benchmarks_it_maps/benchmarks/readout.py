"""Sampling a model's spatial feature map at the positions of the recording grid (PAPER_NOTES 8.6).

A layer's output of h x w cells covers the whole image; cell i is centred at normalised coordinate (i + 0.5) / h.
The grid point (row k, column l) of a G x G grid sits at image coordinate (k / (G - 1), l / (G - 1)) (both grids span
the image edge to edge), so the feature vector "at" that point is the bilinear interpolation of the cell centres
there, clamped at the border. This is exactly ``grid_sample(align_corners=False, padding_mode='border')`` with
sampling coordinate ``2u - 1``. When the image was shown inside a grey surround (``span``: where the image lies
on the presented canvas, as fractions of its width), the grid points are mapped onto the image's part of the canvas
and sampled in the canvas' feature map, so cells over the surround enter the interpolation at the image's edge.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def grid_coordinates(grid_size: int) -> np.ndarray:
    """Normalised image coordinates in [0, 1] of the ``grid_size`` grid positions along one axis."""
    if grid_size < 2:
        raise ValueError(f"grid_size must be at least 2, got {grid_size}")
    return np.arange(grid_size, dtype=np.float64) / (grid_size - 1)


def sample_feature_maps(features: np.ndarray | torch.Tensor, grid_size: int,
                        span: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Sample feature maps ``[N, C, h, w]`` at a ``grid_size`` x ``grid_size`` grid; returns ``[N, G, G, C]``.

    Row index = image row (0 = top), column index = image column (0 = left), as in the neural maps. ``span``: the
    image's extent ``(start, end)`` on the presented canvas, as fractions of the canvas (``(0, 1)``: the image
    filled it; see :func:`benchmarks_it_maps.benchmarks.surround.image_span`).
    """
    x = torch.as_tensor(features)
    if x.ndim != 4:
        raise ValueError(f"features must be [N, C, h, w], got shape {tuple(x.shape)}")
    x = x.to(torch.float64) if x.dtype == torch.float64 else x.float()
    start, end = (float(v) for v in span)
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"span must satisfy 0 <= start < end <= 1, got {span}")
    coords = torch.as_tensor((start + grid_coordinates(grid_size) * (end - start)) * 2 - 1, dtype=x.dtype)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    # grid_sample's last dim is (x = column, y = row)
    grid = torch.stack([cols, rows], dim=-1).unsqueeze(0).expand(x.shape[0], -1, -1, -1)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.permute(0, 2, 3, 1).cpu().numpy()
