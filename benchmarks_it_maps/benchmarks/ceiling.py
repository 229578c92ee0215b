"""Noise ceilings for spatial IT maps: how well could a perfect model predict these maps, given the data's noise?

Three estimators, all on the same scale as :func:`benchmarks_it_maps.benchmarks.metric.loio_pls` (per-image Pearson r across grid
positions, median over channels, mean over images):

- :func:`split_half_ceiling` (default when trials are available, e.g. the simulated twin): split the repetitions in
  halves, correlate the two half-average maps, Spearman-Brown correct to the full number of trials. This is the
  reliability Brain-Score uses (``internal_consistency``), applied to maps. Brain-Score ceils with r^2 / reliability;
  our benchmarks report raw / ceiling on the r scale, so the ceiling *value* is sqrt(reliability) (Spearman's
  correction for attenuation; a perfect noiseless model then scores 1). The reliability itself is kept as
  ``CeilingResult.reliability``.
- :func:`cross_channel_ceiling` (default for the real data, which only has trial averages): each channel's map is
  predicted from the *other* channels of the same array by the same leave-one-image-out PLS. It measures how much of
  a channel's map is shared, predictable structure, i.e. what a model as good as the rest of the array would reach.
- :func:`pairwise_channel_ceiling`: the paper's ceiling (best-correlated pair of channel maps per image, averaged over
  images) with the released code's bugs fixed (PAPER_NOTES 6.8): full-map correlation instead of row-wise, every
  channel included, no normalisation precedence bug, orientation untouched. Only for comparing with published numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmarks_it_maps.benchmarks.metric import N_COMPONENTS, fit_predict_pls, pearson_per_channel, sem


@dataclass
class CeilingResult:
    """A ceiling estimate: ``value`` with ``error`` (SEM over images), per-channel values and the method's name."""

    value: float
    error: float
    per_channel: np.ndarray
    method: str
    per_image: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: split-half reliability (r^2 scale) where the estimator has one; ``value`` is then its square root
    reliability: float | None = None


def spearman_brown(r: np.ndarray, factor: float = 2.0) -> np.ndarray:
    """Spearman-Brown prediction of reliability at ``factor`` times the data; r <= -1 maps to -1 (no blow-up)."""
    r = np.asarray(r, dtype=np.float64)
    denom = 1.0 + (factor - 1.0) * r
    return np.where(denom > 0, factor * r / np.where(denom > 0, denom, 1.0), -1.0)


def split_half_ceiling(trials: np.ndarray, *, n_splits: int = 10, seed: int = 0) -> CeilingResult:
    """Ceiling from the split-half reliability of the maps (Spearman-Brown corrected); value = sqrt(reliability).

    ``trials``: ``[I, P, K, R]`` responses of K channels at P positions of I images, R repetitions (R >= 2). Each
    split permutes the repetitions (seeded) and averages each half; per image and channel, r = Pearson across
    positions between the half maps, corrected with Spearman-Brown; median over channels per image, mean over images,
    mean over splits.
    """
    trials = np.asarray(trials, dtype=np.float64)
    if trials.ndim != 4:
        raise ValueError(f"trials must be [images, positions, channels, repetitions]; got shape {trials.shape}")
    n_rep = trials.shape[-1]
    if n_rep < 2:
        raise ValueError(f"split-half reliability needs at least 2 repetitions, got {n_rep}")
    if not np.all(np.isfinite(trials)):
        raise ValueError("trials contain non-finite values (NaN or inf)")
    rng = np.random.RandomState(seed)
    n_img, _, n_chan, _ = trials.shape
    corrected = np.zeros((n_splits, n_img, n_chan))
    for s in range(n_splits):
        order = rng.permutation(n_rep)
        half_a, half_b = order[: n_rep // 2], order[n_rep // 2:]
        maps_a = trials[..., half_a].mean(axis=-1)
        maps_b = trials[..., half_b].mean(axis=-1)
        for i in range(n_img):
            corrected[s, i] = spearman_brown(pearson_per_channel(maps_a[i], maps_b[i]))
    reliability_per_image = np.median(corrected, axis=2).mean(axis=0)
    reliability = float(reliability_per_image.mean())
    per_image = np.sqrt(np.clip(reliability_per_image, 0, None))
    return CeilingResult(value=float(np.sqrt(max(reliability, 0.0))), error=sem(per_image),
                         per_channel=np.sqrt(np.clip(corrected.mean(axis=(0, 1)), 0, None)),
                         method="split_half_spearman_brown_sqrt", per_image=per_image, reliability=reliability)


def cross_channel_ceiling(targets: np.ndarray, *, n_components: int = N_COMPONENTS,
                          progress: bool = False) -> CeilingResult:
    """Each channel's map predicted from the other channels (leave-one-image-out PLS); median over channels.

    ``targets``: ``[I, P, K]`` trial-averaged maps, K >= 2.
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 3 or targets.shape[2] < 2 or targets.shape[0] < 2:
        raise ValueError(f"targets must be [images >= 2, positions, channels >= 2]; got shape {targets.shape}")
    n_img, n_pos, n_chan = targets.shape
    flat = targets.reshape(n_img * n_pos, n_chan)
    rows = np.arange(n_img * n_pos).reshape(n_img, n_pos)
    per_channel = np.zeros((n_img, n_chan))
    channels = range(n_chan)
    if progress:
        from tqdm.auto import tqdm
        channels = tqdm(channels, desc="cross-channel ceiling", unit="channel")
    for k in channels:
        others = np.delete(np.arange(n_chan), k)
        for i in range(n_img):
            train = np.delete(rows, i, axis=0).ravel()
            pred, _ = fit_predict_pls(flat[np.ix_(train, others)], flat[train, k:k + 1],
                                      flat[np.ix_(rows[i], others)], n_components)
            per_channel[i, k] = pearson_per_channel(pred, flat[rows[i], k:k + 1])[0]
    per_image = np.median(per_channel, axis=1)
    return CeilingResult(value=float(per_image.mean()), error=sem(per_image), per_channel=per_channel.mean(axis=0),
                         method="cross_channel_pls", per_image=per_image)


def pairwise_channel_ceiling(targets: np.ndarray) -> CeilingResult:
    """The paper's ceiling, bugs fixed: per image the highest Pearson r between two different channels' full maps,
    averaged over images. ``targets``: ``[I, G, G, K]`` (or ``[I, P, K]``)."""
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 4:
        targets = targets.reshape(targets.shape[0], -1, targets.shape[-1])
    if targets.ndim != 3 or targets.shape[2] < 2:
        raise ValueError(f"targets must be [images, G, G, channels >= 2]; got shape {targets.shape}")
    n_img, _, n_chan = targets.shape
    best = np.zeros(n_img)
    best_per_channel = np.zeros((n_img, n_chan))
    for i in range(n_img):
        maps = targets[i]
        centred = maps - maps.mean(axis=0)
        norms = np.sqrt((centred ** 2).sum(axis=0))
        valid = norms > 1e-12 * np.maximum(np.abs(maps).max(axis=0), 1.0)
        unit = np.where(valid, centred / np.where(valid, norms, 1.0), 0.0)
        corr = unit.T @ unit
        np.fill_diagonal(corr, -np.inf)
        corr[~valid, :] = -np.inf
        corr[:, ~valid] = -np.inf
        row_best = corr.max(axis=1)
        row_best[~np.isfinite(row_best)] = 0.0
        best_per_channel[i] = row_best
        best[i] = row_best.max()
    return CeilingResult(value=float(best.mean()), error=sem(best), per_channel=best_per_channel.mean(axis=0),
                         method="pairwise_channel_max", per_image=best)
