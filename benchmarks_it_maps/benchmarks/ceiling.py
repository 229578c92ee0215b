"""Noise ceilings for spatial IT maps: how well could a perfect model predict these maps, given the data's noise?

Brain-Score's convention: a ceiling is a Spearman-Brown corrected split-half reliability of the benchmark's
statistic (per image, median over channels of the half-map correlation across grid positions; mean over images),
and a score is ceiled as raw^2 / reliability (``CeilingResult.value`` is the reliability; ``scale='reliability'``).

- :func:`split_half_ceiling` (default with repetitions, e.g. the simulated twin): random halves of the repetitions.
- :func:`time_split_ceiling` (default without repetitions, e.g. the released file, whose ``imageRF`` is
  trial-summed): the interleaved time bins of the window as two halves (odd vs even bins hold disjoint spikes,
  independent under Poisson firing), corrected for unequal half sizes (:func:`spearman_brown_unequal`). Smoothed
  files (correlated adjacent bins) are detected by :func:`lag1_autocorrelation` and get wider blocks or a one-line
  refusal (:class:`SmoothedTimeCourseError`).
- :func:`cross_channel_ceiling` (named option): each channel's map predicted from the *other* channels of the same
  array by the same leave-one-image-out PLS; an r-scale value (``scale='r'``, squared by ``.reliability``). On the
  twin's released-layout export it is 15-19 % low (docs/BENCHMARKS.md).
- :func:`pairwise_channel_ceiling` (named option): the paper's ceiling (best-correlated pair of channel maps per
  image, averaged over images) with the released code's bugs fixed (PAPER_NOTES 6.8): full-map correlation instead
  of row-wise, every channel included, no normalisation precedence bug, orientation untouched. For comparison with
  published numbers only.

``residual=True`` estimators measure the reliability of the ``-residual_pls`` maps (each half's map minus the
full data's mean map of the other images, the same base the metric subtracts); ``spearman=True`` correlates ranks (for map alignment's Spearman statistic).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from benchmarks_it_maps.benchmarks.metric import (N_COMPONENTS, fit_predict_pls, pearson_per_channel, sem,
                                                  training_mean_maps)


@dataclass
class CeilingResult:
    """A ceiling estimate: ``value`` with ``error`` (SEM over images), per-channel values and the method's name."""

    value: float
    error: float
    per_channel: np.ndarray
    method: str
    per_image: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: ``'reliability'`` (value is a Spearman-Brown corrected split-half reliability, Brain-Score's ceiling) or
    #: ``'r'`` (value is a correlation a perfect model would reach: cross-channel, pairwise)
    scale: str = "reliability"
    #: estimator-specific details (e.g. the time-split block width)
    extra: dict = field(default_factory=dict)

    @property
    def reliability(self) -> float:
        """The ceiling on the reliability scale (what ceiled = raw^2 / ceiling divides by): the value itself, or the
        square of an r-scale estimate (the r^2 a perfect model would reach)."""
        return float(self.value) if self.scale == "reliability" else float(np.sign(self.value) * self.value ** 2)

    def reliability_error(self) -> float:
        """SEM of :attr:`reliability` (delta method for r-scale estimates)."""
        return float(self.error) if self.scale == "reliability" else float(2 * abs(self.value) * self.error)


def spearman_brown(r: np.ndarray, factor: float = 2.0) -> np.ndarray:
    """Spearman-Brown prediction of reliability at ``factor`` times the data; r <= -1 maps to -1 (no blow-up)."""
    r = np.asarray(r, dtype=np.float64)
    denom = 1.0 + (factor - 1.0) * r
    return np.where(denom > 0, factor * r / np.where(denom > 0, denom, 1.0), -1.0)


def _ranks(maps: np.ndarray) -> np.ndarray:
    """Ranks across positions (axis 1) of ``[I, P, K]`` maps: Pearson of ranks = Spearman."""
    return rankdata(maps, axis=1)


def split_half_ceiling(trials: np.ndarray, *, n_splits: int = 10, seed: int = 0,
                       residual: bool = False, spearman: bool = False) -> CeilingResult:
    """Ceiling = split-half reliability of the maps, Spearman-Brown corrected (Brain-Score's convention).

    ``trials``: ``[I, P, K, R]`` responses of K channels at P positions of I images, R repetitions (R >= 2). Each
    split permutes the repetitions (seeded) and averages each half; per image and channel, r = Pearson across
    positions between the half maps, corrected with Spearman-Brown; median over channels per image, mean over images,
    mean over splits. ``residual=True``: the reliability of the residual maps of ``-residual_pls``: each half's map
    of image i minus the *full data's* mean map of the other images, the base the metric subtracts from both the
    prediction and the target. The base's own noise is then shared by the two halves exactly as it is shared by a
    perfect model's residual prediction and the residual target, so Spearman-Brown gives the expected r^2 of a
    perfect model (with a half-specific base the ceiling would be about 5 % lower on the twin's 9 x 9 site).
    ``spearman=True`` correlates ranks (the reliability of a Spearman statistic such as map alignment's).
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
    base = training_mean_maps(trials.mean(axis=-1)) if residual else None
    corrected = np.zeros((n_splits, n_img, n_chan))
    for s in range(n_splits):
        order = rng.permutation(n_rep)
        half_a, half_b = order[: n_rep // 2], order[n_rep // 2:]
        maps_a = trials[..., half_a].mean(axis=-1)
        maps_b = trials[..., half_b].mean(axis=-1)
        corrected[s] = _half_reliability(maps_a, maps_b, base=base, spearman=spearman)
    return _reliability_result(corrected, "split_half_spearman_brown", residual, spearman)


def spearman_brown_unequal(r: np.ndarray, size_a: float, size_b: float) -> np.ndarray:
    """Reliability of the full data from the correlation ``r`` of two parts holding ``size_a`` and ``size_b`` units of
    data (noise variance inversely proportional to size). Equal sizes give Spearman-Brown with factor 2.

    With signal variance s and noise variance v per unit, r^2 = 1 / ((1 + u/a)(1 + u/b)) with u = v/s; the positive
    root u gives the full-data reliability 1 / (1 + u / (a + b)). r <= 0 falls back to Spearman-Brown (factor 2).
    """
    r = np.asarray(r, dtype=np.float64)
    a, b = float(size_a), float(size_b)
    if a <= 0 or b <= 0:
        raise ValueError(f"part sizes must be positive, got {a} and {b}")
    safe = np.clip(r, 1e-12, 1.0)
    p = 1.0 / a + 1.0 / b
    q = (1.0 - 1.0 / safe ** 2) / (a * b)
    u = (-p + np.sqrt(np.maximum(p ** 2 - 4 * q, 0.0))) * a * b / 2.0
    full = 1.0 / (1.0 + u / (a + b))
    return np.where(r > 0, full, spearman_brown(r))


def _half_reliability(maps_a: np.ndarray, maps_b: np.ndarray, *, base: np.ndarray | None = None,
                      spearman: bool = False, sizes: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Spearman-Brown corrected correlation ``[I, K]`` between two half-data maps ``[I, P, K]`` per image and
    channel (across positions); ``base`` (``[I, P, K]``, for the residual maps) is subtracted from both halves."""
    if base is not None:
        maps_a, maps_b = maps_a - base, maps_b - base
    if spearman:
        maps_a, maps_b = _ranks(maps_a), _ranks(maps_b)
    return np.stack([spearman_brown_unequal(pearson_per_channel(a, b), *sizes) for a, b in zip(maps_a, maps_b)])


def _reliability_result(corrected: np.ndarray, method: str, residual: bool, spearman: bool) -> CeilingResult:
    """``corrected`` ``[splits, I, K]`` -> median over channels per image, mean over splits and images."""
    per_image = np.median(corrected, axis=2).mean(axis=0)
    suffix = ("_residual" if residual else "") + ("_spearman" if spearman else "")
    return CeilingResult(value=float(per_image.mean()), error=sem(per_image),
                         per_channel=corrected.mean(axis=(0, 1)), method=method + suffix, per_image=per_image,
                         scale="reliability")


#: Largest lag-1 autocorrelation of the bin-to-bin residuals (pooled over channels) for which time bins count as
#: independent samples of the response (Poisson firing, no smoothing); above it, wider blocks are interleaved.
MAX_LAG1_AUTOCORRELATION = 0.025
#: Time components removed per channel before measuring that autocorrelation: a response ``spont + (m - spont)
#: h(t)`` is rank 2 in (presentation, time); one more absorbs a latency or shape difference.
SIGNAL_RANK = 3


class CeilingError(ValueError):
    """No valid ceiling for this site's data (the message names the site and what to do, in one line)."""


class SmoothedTimeCourseError(CeilingError):
    """The time bins are not independent samples (e.g. a smoothed file): no time-split ceiling is possible."""


def lag1_autocorrelation(bins: np.ndarray, signal_rank: int = SIGNAL_RANK) -> float:
    """Lag-1 autocorrelation of the noise between adjacent time bins of ``bins`` ``[I, P, K, T]``: about 0 for
    independent (Poisson) bins, clearly positive when the time course was smoothed before binning.

    Per channel, each presentation's mean and the best rank-``signal_rank`` (presentation x time) approximation are
    projected out (projector Q over time); the rest is noise. Projection alone biases the residuals' lag-1
    correlation (negative for white noise, and it hides part of a positive one), so the noise's own correlation rho
    is solved from the moment equation of noise with covariance D^1/2 (I + rho M) D^1/2 (M = S + S^T, S the lag-1
    shift: correlation reaching one bin, as smoothing narrower than a bin gives; D = diag of each bin's mean count,
    Poisson variance following the time course): measured sum(e_t e_t+1) / sum(e_t^2) =
    (tr(B) + rho tr(B M)) / (tr(G) + rho tr(G M)) with B = D^1/2 Q A Q D^1/2, G = D^1/2 Q D^1/2, A = M / 2. Channels
    are pooled by their residual energy.
    """
    raw = np.asarray(bins, dtype=np.float64)
    bins = raw
    n_img, n_pos, n_chan, n_t = bins.shape
    if n_t < signal_rank + 3:
        raise ValueError(f"need at least {signal_rank + 3} time bins to measure their autocorrelation, got {n_t}")
    shift = np.eye(n_t, k=1)
    m_sym = shift + shift.T
    a_sym = m_sym / 2
    total = weight = 0.0
    for k in range(n_chan):
        m = bins[:, :, k, :].reshape(n_img * n_pos, n_t)
        m = m - m.mean(axis=1, keepdims=True)
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        basis, _ = np.linalg.qr(np.column_stack([np.ones(n_t), vt[:signal_rank].T]))
        q = np.eye(n_t) - basis @ basis.T
        resid = m @ q
        energy = float((resid ** 2).sum())
        if energy <= 0:
            continue
        ratio = float((resid[:, 1:] * resid[:, :-1]).sum()) / energy
        # Poisson noise: variance proportional to the mean count of each bin (the time course), D = diag(mean)
        scale = np.sqrt(np.clip(raw[:, :, k, :].mean(axis=(0, 1)), 1e-12, None))
        b = scale[:, None] * (q @ a_sym @ q) * scale[None, :]
        g = scale[:, None] * q * scale[None, :]
        denom = ratio * np.trace(g @ m_sym) - np.trace(b @ m_sym)
        if abs(denom) < 1e-12:
            continue
        rho = (np.trace(b) - ratio * np.trace(g)) / denom
        total += energy * rho
        weight += energy
    return float(total / weight) if weight > 0 else 0.0


def _blocks(bins: np.ndarray, width: int) -> np.ndarray:
    """Average consecutive ``width``-bin blocks of ``[..., T]`` (a trailing partial block is dropped)."""
    n = bins.shape[-1] // width
    return bins[..., : n * width].reshape(*bins.shape[:-1], n, width).mean(axis=-1)


def interleave_width(bins: np.ndarray, *, max_autocorrelation: float = MAX_LAG1_AUTOCORRELATION,
                     label: str = "the data") -> tuple[int, float]:
    """The narrowest block width (in bins) whose block-averaged residuals have a lag-1 autocorrelation at most
    ``max_autocorrelation``, and that autocorrelation; at least ``SIGNAL_RANK + 3`` blocks must remain. Raises
    :class:`SmoothedTimeCourseError` (one line naming ``label``) when no width qualifies."""
    n_t = bins.shape[-1]
    measured = []
    for width in range(1, max(1, n_t // (SIGNAL_RANK + 3)) + 1):
        rho = lag1_autocorrelation(_blocks(bins, width))
        measured.append(f"{width}: {rho:.2f}")
        if rho <= max_autocorrelation:
            return width, rho
    raise SmoothedTimeCourseError(
        f"{label}: adjacent time bins are correlated (lag-1 autocorrelation of the bin-to-bin residuals by block "
        f"width {', '.join(measured)}; limit {max_autocorrelation}), as in a smoothed time course, so odd and even "
        "bins are not independent halves; use a file with unsmoothed spike counts, or ceiling_method='cross_channel'")


def time_split_ceiling(bins: np.ndarray, *, residual: bool = False, spearman: bool = False,
                       max_autocorrelation: float = MAX_LAG1_AUTOCORRELATION,
                       label: str = "the data") -> CeilingResult:
    """Noise ceiling for data without repetitions: split-half reliability over interleaved time bins.

    ``bins``: ``[I, P, K, T]`` responses in the T time bins of the analysis window. Under Poisson firing, the spikes
    of disjoint time bins are independent, so the mean map over odd blocks and over even blocks are two independent
    halves of the data; their correlation, corrected to the full window (Spearman-Brown, sizes taken into account),
    is the reliability. Blocks are single bins unless the bins are correlated (a smoothed file, see
    :func:`interleave_width`). ``residual``/``spearman`` as in :func:`split_half_ceiling`.
    """
    bins = np.asarray(bins, dtype=np.float64)
    if bins.ndim != 4:
        raise ValueError(f"bins must be [images, positions, channels, time bins]; got shape {bins.shape}")
    if not np.all(np.isfinite(bins)):
        raise ValueError("time bins contain non-finite values (NaN or inf)")
    width, rho = interleave_width(bins, max_autocorrelation=max_autocorrelation, label=label)
    blocks = _blocks(bins, width)
    odd, even = blocks[..., 0::2], blocks[..., 1::2]
    base = training_mean_maps(bins.mean(axis=-1)) if residual else None
    corrected = _half_reliability(odd.mean(axis=-1), even.mean(axis=-1), base=base, spearman=spearman,
                                  sizes=(odd.shape[-1], even.shape[-1]))[None]
    result = _reliability_result(corrected, "time_split_spearman_brown", residual, spearman)
    result.extra = dict(block_bins=width, lag1_autocorrelation=rho)
    return result


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
                         method="cross_channel_pls", per_image=per_image, scale="r")


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
                         method="pairwise_channel_max", per_image=best, scale="r")
