"""Where does monkey 1's PL array end and its ML array begin? ``brainscore data channels`` checks the assumed split.

George's 63 channels come from two arrays (PL and ML). The split used here (``conventions.M1PL``/``M1ML``: 0-31 PL,
32-62 ML) follows the authors' docstring; the released code splits at 33 and a published summary counts ML 32 / PL
31. Channels of one array share receptive-field position and neighbourhood, so their maps co-vary: the
channel-by-channel correlation of the maps (over images and grid positions, each channel's mean map over images
subtracted so that the shared position profile does not make every pair alike) should form two blocks. The boundary
that best separates the blocks (largest mean within-block minus between-block r^2) is where the data put it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.home import save_figure


def monkey1_maps(family: str, *, home: str | Path | None = None) -> np.ndarray:
    """Monkey 1's maps ``[I, G, G, 63]`` (both sites, channel order), default window, repetitions averaged."""
    parts = []
    for site in (cv.M1PL, cv.M1ML):
        maps = data.response_maps(data.load_assembly(f"{family}.{site.key}", home=home))
        parts.append(maps.transpose("stimulus_id", "row", "col", "channel").values)
    return np.concatenate(parts, axis=-1)


def channel_correlation(maps: np.ndarray) -> np.ndarray:
    """Channel x channel Pearson r ``[K, K]`` of ``maps`` ``[I, G, G, K]`` over images and positions, after
    subtracting each channel's mean map over images (the shared position profile)."""
    residual = maps - maps.mean(axis=0, keepdims=True)
    flat = residual.reshape(-1, maps.shape[-1])
    flat = flat - flat.mean(axis=0)
    norm = np.sqrt((flat ** 2).sum(axis=0))
    norm[norm == 0] = 1.0
    unit = flat / norm
    return unit.T @ unit


def block_contrast(corr: np.ndarray, boundary: int) -> float:
    """Mean within-block minus mean between-block squared correlation (r^2: channels of one array may co-vary with
    either sign) for blocks [0, boundary) and [boundary, K), diagonal excluded."""
    k = corr.shape[0]
    same = np.zeros((k, k), dtype=bool)
    same[:boundary, :boundary] = same[boundary:, boundary:] = True
    off = ~np.eye(k, dtype=bool)
    r2 = corr ** 2
    return float(r2[same & off].mean() - r2[~same].mean())


def best_boundary(corr: np.ndarray, min_block: int = 4) -> tuple[int, dict[int, float]]:
    """The boundary with the largest :func:`block_contrast` and the contrast at every candidate."""
    candidates = list(range(min_block, corr.shape[0] - min_block + 1))
    contrast = {b: block_contrast(corr, b) for b in candidates}
    return max(contrast, key=contrast.get), contrast


def split_check(family: str = cv.IDENTIFIER, *, home: str | Path | None = None, min_block: int = 4,
                n_boot: int = 200, seed: int = 0) -> dict:
    """The assumed PL/ML boundary, the boundary the data favour, the contrast at every candidate boundary and a
    bootstrap over images (``support``: fraction of resamples whose best boundary is each channel)."""
    maps = monkey1_maps(family, home=home)
    corr = channel_correlation(maps)
    found, contrast = best_boundary(corr, min_block)
    rng = np.random.default_rng(seed)
    draws = [best_boundary(channel_correlation(maps[rng.integers(0, len(maps), len(maps))]), min_block)[0]
             for _ in range(n_boot)]
    support = {int(b): float(c) / n_boot for b, c in zip(*np.unique(draws, return_counts=True))}
    assumed = cv.M1ML.channels.start
    return {"family": family, "assumed_boundary": assumed, "data_boundary": found,
            "assumed_contrast": contrast.get(assumed, block_contrast(corr, assumed)),
            "data_contrast": contrast[found], "contrast": contrast, "support": support, "correlation": corr}


def format_split(result: dict) -> str:
    """One paragraph: assumed vs found boundary, in 0-based channel numbers."""
    a, d = result["assumed_boundary"], result["data_boundary"]
    support = result.get("support", {})
    found, kept = support.get(d, 0.0), support.get(a, 0.0)
    if a == d:
        verdict = "the data agree with the assumed split"
    elif found < 0.8:
        verdict = ("the data do not pin the boundary down (more images are needed); nothing contradicts the "
                   "assumed split")
    else:
        verdict = (f"the data put the boundary at channel {d} (PL 0-{d - 1}, ML {d}-62): check docs/DATA.md before "
                   "trusting the M1PL/M1ML sites")
    return (f"{result['family']} monkey 1: assumed PL 0-{a - 1} | ML {a}-62 (block contrast "
            f"{result['assumed_contrast']:.3f}); best boundary in the data: channel {d} (contrast "
            f"{result['data_contrast']:.3f}; best in {100 * found:.0f}% of image resamples, the assumed one in "
            f"{100 * kept:.0f}%); {verdict}")


def plot_split(result: dict, path: str | Path) -> Path:
    """Heat map of the channel correlation, the assumed boundary (solid) and the data's (dashed); PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    corr = result["correlation"]
    fig, (ax, side) = plt.subplots(1, 2, figsize=(9.5, 4.8), gridspec_kw={"width_ratios": [1.15, 1]})
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    for b, style, label in ((result["assumed_boundary"], "-", "assumed"), (result["data_boundary"], "--", "data")):
        ax.axhline(b - 0.5, color="k", ls=style, lw=1.2, label=f"{label} boundary ({b})")
        ax.axvline(b - 0.5, color="k", ls=style, lw=1.2)
    ax.set_xlabel("channel (0-based)")
    ax.set_ylabel("channel (0-based)")
    ax.set_title("monkey 1 channel-by-channel map correlation", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=7, frameon=False)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Pearson r (mean map removed)")
    bounds, contrast = zip(*sorted(result["contrast"].items()))
    side.plot(bounds, contrast, color="0.2")
    side.axvline(result["assumed_boundary"], color="tab:blue", label="assumed")
    side.axvline(result["data_boundary"], color="tab:red", ls="--", label="data")
    side.set_xlabel("boundary = first ML channel")
    side.set_ylabel("within- minus between-block r$^2$")
    side.set_title("where the data put the PL/ML boundary", fontsize=9)
    side.legend(fontsize=7)
    fig.suptitle(f"{result['family']}: PL/ML channel split", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, format="png", dpi=110, bbox_inches="tight")
