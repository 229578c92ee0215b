"""The accuracy / IT-predictivity trade-off (Linsley et al. 2023, experiment 1) for any population of models.

Input: one row per model with ImageNet top-1 (``accuracy``, a fraction), a neural ``score``, a ``category`` and a
``harmonized`` flag (optionally the score's standard ``error``, and ``in_fit`` to choose the models the frontier is
fitted on; default: the non-harmonized ones). :func:`analyze_tradeoff` fits, on those models,

- the **frontier**: a continuous piecewise-linear ("hinge") function with one breakpoint,
  ``f(x) = a + b1 * min(x - c, 0) + b2 * max(x - c, 0)``. For each candidate breakpoint ``c`` on a fine grid the other
  three parameters are an exact least-squares fit; ``c`` minimises the profiled residual sum of squares (the grid
  optimum is then refined continuously). ``c`` is the "peak" accuracy, ``b1``/``b2`` the slopes below/above it. The
  breakpoint must leave at least ``min_per_side`` models on each side, so both slopes are identified;
- a quadratic for comparison (vertex, R², AIC), and a straight line (slope with bootstrap interval: the summary
  for monotone populations, whose breakpoint is not identified);
- Spearman correlations of accuracy and score below and above the peak;
- a seeded bootstrap over models (``n_bootstrap`` resamples, 1,000 by default), fully vectorised, for percentile
  intervals of the peak, the slopes, the frontier band and the per-model trade-off scores.

**Per-model trade-off score** = the model's score minus the frontier at its accuracy. Its interval (``interval=``):

- ``"prediction"`` (default): bootstrap frontier plus a resampled residual of the frontier fit. The interval lies above
  0 only if the model beats what models of its accuracy reach in (1 - alpha/2) of the draws, i.e. it sits above the
  population's scatter band. This is what "breaks the trade-off" should mean for a frontier fitted as a mean curve:
  with a confidence interval alone, half of the ordinary models lie above the curve and, with many models, most of
  them would be flagged;
- ``"confidence"``: bootstrap frontier plus the model's own score error (when known) only: "is the model above the
  mean curve".

A model **breaks the trade-off** when the lower end of its interval is above 0.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from brainscore_core.metrics import Score
from brainscore_core.supported_data_standards.brainio.assemblies import DataAssembly
from scipy import optimize, sparse, stats
from tqdm.auto import tqdm

from benchmarks_it_maps.analysis import families as fam
from benchmarks_it_maps.analysis import leaderboard as lb
from benchmarks_it_maps.analysis import twolines as tl
from benchmarks_it_maps.home import save_figure
from benchmarks_it_maps.runs.results import ResultsDB

_logger = logging.getLogger(__name__)

#: Default number of bootstrap resamples over models.
DEFAULT_BOOTSTRAP = 1000
#: Default candidate-breakpoint grid size (between the feasible extremes; then refined continuously).
DEFAULT_GRID = 401
#: Minimum number of (fitted) models on each side of the breakpoint.
DEFAULT_MIN_PER_SIDE = 3
#: The upper frontier's quantile, its candidate-breakpoint grid and the majorise-minimise steps per fit.
DEFAULT_QUANTILE = 0.9
DEFAULT_QUANTILE_GRID = 161
QUANTILE_ITERATIONS = 60
COARSE_ITERATIONS, FINE_ITERATIONS = 8, 12
#: Minimum number of non-harmonized models needed for the frontier fit.
MIN_MODELS = 8
#: Category names used by the model registry; leaderboard models may also be 'Unknown'.
CATEGORIES = ("CNN", "Transformer", "Robust", "Self-supervised", "Extra data", "Harmonized", "Unknown")
INTERVALS = ("prediction", "confidence")
#: Bootstrap resampling units; frontier kinds ('mean': least squares, 'upper': the DEFAULT_QUANTILE quantile).
BOOTSTRAP_UNITS = ("families", "models")
DEFAULT_BOOTSTRAP_UNIT = "families"
FRONTIERS = ("mean", "upper")
#: Fewest model families a bootstrap over families accepts.
MIN_FAMILIES = 5
#: Keys of :meth:`TradeoffResult.to_json`, in order: the issue's keys, then how the per-model intervals were made
#: (``interval``: 'prediction' or 'confidence', ``ci``, ``n_bootstrap``, ``seed``).
#: Then (issue 15) the model families, the bootstrap unit of the headline intervals, which frontier, the intervals of
#: both bootstrap units side by side, the two-lines test, and both fitted curves.
JSON_KEYS = ("n_models", "benchmark", "peak_accuracy", "peak_ci", "slope_below", "slope_above", "slope_above_ci",
             "spearman_below", "spearman_above", "models", "interval", "ci", "n_bootstrap", "seed",
             "n_families", "bootstrap", "frontier", "quantile", "intervals", "two_lines", "curves")


class TradeoffInputError(ValueError):
    """The model population cannot be analysed (too few models, missing or invalid values, duplicates...)."""


# --------------------------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------------------------
def _listing(names: Iterable[Any], limit: int = 8) -> str:
    names = [str(name) for name in names]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def validate_population(population: pd.DataFrame, *, source: str = "the model table",
                        min_models: int = MIN_MODELS, family_overrides: dict[str, str] | None = None
                        ) -> pd.DataFrame:
    """Check and normalise a population table; returns a copy with columns model, accuracy, score, error,
    category, harmonized, family (+ any extra columns). Missing families come from
    :func:`benchmarks_it_maps.analysis.families.family_of`; ``family_overrides`` (model -> family) win over both.
    Raises :class:`TradeoffInputError` with one clear message."""
    if not isinstance(population, pd.DataFrame):
        raise TradeoffInputError(f"{source}: expected a pandas DataFrame with columns model, accuracy, score, got "
                                 f"{type(population).__name__}")
    missing = [column for column in ("model", "accuracy", "score") if column not in population.columns]
    if missing:
        raise TradeoffInputError(f"{source}: missing column(s) {', '.join(missing)}; a population needs one row per "
                                 f"model with 'model', 'accuracy' (top-1 fraction) and 'score'")
    table = population.copy().reset_index(drop=True)
    table["model"] = table["model"].astype(str)
    duplicated = table.loc[table["model"].duplicated(keep=False), "model"].unique()
    if len(duplicated):
        raise TradeoffInputError(f"{source}: duplicate model name(s) {_listing(duplicated)}; each model must appear "
                                 f"once (rename or drop the repeated rows)")
    table["accuracy"] = pd.to_numeric(table["accuracy"], errors="coerce").astype(float)
    table["score"] = pd.to_numeric(table["score"], errors="coerce").astype(float)
    no_accuracy = table.loc[~np.isfinite(table["accuracy"]), "model"]
    if len(no_accuracy):
        raise TradeoffInputError(
            f"{source}: field 'accuracy' (ImageNet top-1) is missing or not a number for {_listing(no_accuracy)}; "
            f"add their top-1 (model registry entry `top1`, model.json 'top1', or the leaderboard's ImageNet-top1) "
            f"or leave these models out")
    bad_range = table.loc[(table["accuracy"] < 0) | (table["accuracy"] > 1), "model"]
    if len(bad_range):
        raise TradeoffInputError(f"{source}: field 'accuracy' must be a fraction in [0, 1] but is outside for "
                                 f"{_listing(bad_range)}; if these are percentages, divide them by 100")
    bad_score = table.loc[~np.isfinite(table["score"]), "model"]
    if len(bad_score):
        raise TradeoffInputError(f"{source}: field 'score' is not a finite number for {_listing(bad_score)}; "
                                 f"re-score these models or leave them out")
    if "error" not in table.columns:
        table["error"] = np.nan
    table["error"] = pd.to_numeric(table["error"], errors="coerce").astype(float)
    if "harmonized" not in table.columns:
        table["harmonized"] = False
    table["harmonized"] = table["harmonized"].fillna(False).astype(bool)
    if "category" not in table.columns:
        table["category"] = np.where(table["harmonized"], "Harmonized", "Unknown")
    table["category"] = table["category"].fillna("Unknown").astype(str)
    if "family" not in table.columns:
        table["family"] = None
    unknown = table["family"].isna() | (table["family"].astype(str).str.strip() == "")
    table.loc[unknown, "family"] = [fam.family_of(model, family_overrides) for model in table.loc[unknown, "model"]]
    if family_overrides:
        named = table["model"].isin(family_overrides.keys())
        table.loc[named, "family"] = table.loc[named, "model"].map(family_overrides)
    table["family"] = table["family"].astype(str)
    if "in_fit" not in table.columns:
        table["in_fit"] = ~table["harmonized"]
    table["in_fit"] = table["in_fit"].fillna(False).astype(bool)
    fit = table[table["in_fit"]]
    if len(fit) < min_models:
        raise TradeoffInputError(f"{source}: the frontier needs at least {min_models} non-harmonized models with an "
                                 f"accuracy and a score, got {len(fit)}; add models (e.g. from the leaderboard with "
                                 f"--leaderboard) before fitting")
    if fit["accuracy"].nunique() < 4:
        raise TradeoffInputError(f"{source}: the non-harmonized models have only {fit['accuracy'].nunique()} distinct "
                                 f"accuracies; a breakpoint fit needs at least 4")
    return table


# --------------------------------------------------------------------------------------------------------------------
# Hinge (piecewise-linear) frontier
# --------------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Hinge:
    """A continuous piecewise-linear function with one breakpoint: value ``level`` at ``breakpoint``."""
    breakpoint: float
    level: float
    slope_below: float
    slope_above: float

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        d = np.asarray(x, dtype=float) - self.breakpoint
        return self.level + self.slope_below * np.minimum(d, 0) + self.slope_above * np.maximum(d, 0)


def breakpoint_grid(x: np.ndarray, min_per_side: int = DEFAULT_MIN_PER_SIDE, size: int = DEFAULT_GRID) -> np.ndarray:
    """Candidate breakpoints: ``size`` points from the ``min_per_side``-th smallest to the ``min_per_side``-th
    largest accuracy (so that every candidate has at least that many models on each side)."""
    xs = np.sort(np.asarray(x, dtype=float))
    if len(xs) < 2 * min_per_side:
        raise TradeoffInputError(f"need at least {2 * min_per_side} models for a breakpoint with {min_per_side} "
                                 f"models per side, got {len(xs)}")
    return np.linspace(xs[min_per_side - 1], xs[len(xs) - min_per_side], size)


def _profile(x: np.ndarray, y: np.ndarray, weights: np.ndarray, grid: np.ndarray, min_per_side: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Exact weighted least squares of the hinge model for every (resample, candidate breakpoint).

    weights [B, n] (bootstrap counts), grid [G]. Returns (sse [B, G] with inf where the breakpoint is not identified,
    beta [B, G, 3] = (level, slope_below, slope_above)).
    """
    d = x[None, :] - grid[:, None]                      # [G, n]
    u, v = np.minimum(d, 0.0), np.maximum(d, 0.0)
    w = weights.astype(float)
    s0 = w.sum(1)[:, None] * np.ones((1, len(grid)))    # [B, G]
    su, sv = w @ u.T, w @ v.T
    suu, svv = w @ (u * u).T, w @ (v * v).T
    sy = (w @ y)[:, None] * np.ones((1, len(grid)))
    suy, svy = w @ (u * y).T, w @ (v * y).T
    syy = (w @ (y * y))[:, None]
    a = np.empty(su.shape + (3, 3))
    a[..., 0, 0], a[..., 0, 1], a[..., 0, 2] = s0, su, sv
    a[..., 1, 0], a[..., 1, 1], a[..., 1, 2] = su, suu, 0.0
    a[..., 2, 0], a[..., 2, 1], a[..., 2, 2] = sv, 0.0, svv
    rhs = np.stack([sy, suy, svy], axis=-1)             # [B, G, 3]
    present = (weights > 0).astype(float)
    below = present @ (d <= 0).T.astype(float)
    above = present @ (d >= 0).T.astype(float)
    det = np.linalg.det(a)
    scale = s0 * np.maximum(suu, 1e-300) * np.maximum(svv, 1e-300)
    valid = (below >= min_per_side) & (above >= min_per_side) & (np.abs(det) > 1e-10 * scale)
    a[~valid] = np.eye(3)
    beta = np.linalg.solve(a, rhs[..., None])[..., 0]
    sse = syy - (beta * rhs).sum(-1)
    sse = np.where(valid, np.maximum(sse, 0.0), np.inf)
    return sse, beta


def _fit_at(x: np.ndarray, y: np.ndarray, c: float) -> tuple[float, np.ndarray]:
    d = x - c
    design = np.stack([np.ones_like(x), np.minimum(d, 0), np.maximum(d, 0)], axis=1)
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ beta
    return float(residual @ residual), beta


def fit_hinge(x: Sequence[float], y: Sequence[float], *, min_per_side: int = DEFAULT_MIN_PER_SIDE,
              grid_size: int = DEFAULT_GRID) -> Hinge:
    """Least-squares continuous piecewise-linear fit with one breakpoint (grid profile, then continuous refinement)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    grid = breakpoint_grid(x, min_per_side, grid_size)
    sse, _ = _profile(x, y, np.ones((1, len(x))), grid, min_per_side)
    sse = sse[0]
    if not np.isfinite(sse).any():
        raise TradeoffInputError("no breakpoint leaves enough distinct accuracies on both sides for a fit")
    best = int(np.argmin(sse))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    c = grid[best]
    if hi > lo:
        refined = optimize.minimize_scalar(lambda t: _fit_at(x, y, t)[0], bounds=(lo, hi), method="bounded",
                                           options={"xatol": 1e-9 * max(1.0, abs(hi))})
        if refined.success and refined.fun <= _fit_at(x, y, c)[0]:
            c = float(refined.x)
    _, beta = _fit_at(x, y, c)
    return Hinge(float(c), float(beta[0]), float(beta[1]), float(beta[2]))


def _bootstrap_hinge(x: np.ndarray, y: np.ndarray, grid: np.ndarray, weights: np.ndarray, min_per_side: int,
                     chunk: int = 250, progress: bool = False) -> np.ndarray:
    """Hinge parameters (breakpoint, level, slope_below, slope_above) per resample [B, 4]; NaN rows if unidentified."""

    out = np.full((len(weights), 4), np.nan)
    starts = range(0, len(weights), chunk)
    for start in tqdm(starts, desc="bootstrap", unit="chunk", disable=not progress, leave=False):
        w = weights[start:start + chunk]
        sse, beta = _profile(x, y, w, grid, min_per_side)
        best = np.argmin(sse, axis=1)
        ok = np.isfinite(sse[np.arange(len(w)), best])
        rows = np.arange(len(w))
        params = np.column_stack([grid[best], beta[rows, best]])
        params[~ok] = np.nan
        out[start:start + len(w)] = params
    return out


# --------------------------------------------------------------------------------------------------------------------
# Upper frontier: the same hinge fitted to a high quantile (quantile regression)
# --------------------------------------------------------------------------------------------------------------------
def _check_loss(residual: np.ndarray, tau: float) -> np.ndarray:
    """Koenker's check function rho_tau(r) = r * (tau - 1[r < 0])."""
    return residual * (tau - (residual < 0))


def _quantile_at(x: np.ndarray, y: np.ndarray, c: float, tau: float) -> tuple[float, np.ndarray]:
    """Exact quantile regression of the hinge design broken at ``c`` (a linear programme): (check loss, beta)."""
    d = x - c
    design = np.stack([np.ones_like(x), np.minimum(d, 0), np.maximum(d, 0)], axis=1)
    n = len(x)
    # variables: beta (3, free), positive and negative residual parts (n each)
    cost = np.concatenate([np.zeros(3), np.full(n, tau), np.full(n, 1 - tau)])
    identity = sparse.identity(n, format="csr")
    equality = sparse.hstack([sparse.csr_matrix(design), identity, -identity], format="csr")
    bounds = [(None, None)] * 3 + [(0, None)] * (2 * n)
    solution = optimize.linprog(cost, A_eq=equality, b_eq=y, bounds=bounds, method="highs")
    if not solution.success:
        raise TradeoffInputError(f"quantile regression at breakpoint {c:.3f} failed: {solution.message}")
    beta = solution.x[:3]
    return float(_check_loss(y - design @ beta, tau).sum()), beta


def _mm_quantile(y: np.ndarray, w: np.ndarray, u: np.ndarray, v: np.ndarray, beta: np.ndarray, tau: float,
                 iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Majorise-minimise steps (Hunter & Lange 2000) of the weighted hinge quantile regression.

    w [B, 1, n] weights; u, v [G, n] or [B, G, n] the hinge's two slope columns; beta [B, G, 3] start. Each step is a
    weighted least-squares fit with weights ``w / (eps + |r|)`` and a linear term ``(2 tau - 1) w``; it decreases a
    slightly perturbed check loss (``eps`` = 1e-5 of the score range). Returns (check loss [B, G], beta)."""
    linear = (2 * tau - 1) * np.stack(np.broadcast_arrays(w.sum(-1), (w * u).sum(-1), (w * v).sum(-1)), axis=-1)
    eps = 1e-5 * max(float(np.ptp(y)), 1e-12)
    spec = "bgi,gi->bg" if u.ndim == 2 else "bgi,bgi->bg"
    for _ in range(iterations):
        residual = y - (beta[..., :1] + beta[..., 1:2] * u + beta[..., 2:3] * v)
        np.abs(residual, out=residual)
        a = w / (eps + residual)                                        # [B, G, n]
        au, av = a * u, a * v
        s0, su, sv = a.sum(-1), au.sum(-1), av.sum(-1)
        suu, svv = np.einsum(spec, au, u), np.einsum(spec, av, v)
        r0, ru, rv = a @ y + linear[..., 0], au @ y + linear[..., 1], av @ y + linear[..., 2]
        # the normal matrix [[s0, su, sv], [su, suu, 0], [sv, 0, svv]] solved in closed form
        det = s0 * suu * svv - su * su * svv - sv * sv * suu
        det = np.where(np.abs(det) > 1e-300, det, np.inf)
        b0 = (r0 * suu * svv - su * ru * svv - sv * rv * suu) / det
        beta = np.stack([b0, (ru - su * b0) / np.where(suu > 0, suu, np.inf),
                         (rv - sv * b0) / np.where(svv > 0, svv, np.inf)], axis=-1)
    residual = y - (beta[..., :1] + beta[..., 1:2] * u + beta[..., 2:3] * v)
    return (w * _check_loss(residual, tau)).sum(-1), beta


def _profile_quantile(x: np.ndarray, y: np.ndarray, weights: np.ndarray, grid: np.ndarray, tau: float,
                      min_per_side: int, iterations: int = QUANTILE_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Weighted quantile regression of the hinge for every (resample, candidate breakpoint), like :func:`_profile`
    (started from its least-squares fit; see :func:`_mm_quantile`). Returns (check loss [B, G], inf where the
    breakpoint is not identified; beta [B, G, 3])."""
    sse, beta = _profile(x, y, weights, grid, min_per_side)
    valid = np.isfinite(sse)
    d = x[None, :] - grid[:, None]
    u, v = np.minimum(d, 0.0), np.maximum(d, 0.0)
    beta = np.where(valid[..., None], beta, 0.0)
    residual = y - (beta[..., :1] + beta[..., 1:2] * u + beta[..., 2:3] * v)
    beta[..., 0] += np.quantile(residual, tau, axis=-1)   # start: the least-squares line raised to the tau quantile
    loss, beta = _mm_quantile(y, weights.astype(float)[:, None, :], u, v, beta, tau, iterations)
    return np.where(valid, loss, np.inf), beta


def fit_quantile_hinge(x: Sequence[float], y: Sequence[float], *, tau: float = DEFAULT_QUANTILE,
                       min_per_side: int = DEFAULT_MIN_PER_SIDE, grid_size: int = DEFAULT_QUANTILE_GRID) -> Hinge:
    """The one-breakpoint hinge fitted to the ``tau`` quantile of y given x (the upper frontier for tau = 0.9).

    Grid profile by :func:`_profile_quantile`, then the best cell is refined with the exact linear programme."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    grid = breakpoint_grid(x, min_per_side, grid_size)
    loss, _ = _profile_quantile(x, y, np.ones((1, len(x))), grid, tau, min_per_side)
    loss = loss[0]
    if not np.isfinite(loss).any():
        raise TradeoffInputError("no breakpoint leaves enough distinct accuracies on both sides for a fit")
    best = int(np.argmin(loss))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    c = float(grid[best])
    if hi > lo:
        refined = optimize.minimize_scalar(lambda t: _quantile_at(x, y, t, tau)[0], bounds=(lo, hi),
                                           method="bounded", options={"xatol": 1e-4})
        if refined.success and refined.fun <= _quantile_at(x, y, c, tau)[0]:
            c = float(refined.x)
    _, beta = _quantile_at(x, y, c, tau)
    return Hinge(c, float(beta[0]), float(beta[1]), float(beta[2]))


def _bootstrap_quantile_hinge(x: np.ndarray, y: np.ndarray, grid: np.ndarray, weights: np.ndarray, tau: float,
                              min_per_side: int, chunk: int = 50, progress: bool = False) -> np.ndarray:
    """Upper-frontier parameters (breakpoint, level, slope_below, slope_above) per resample [B, 4]; NaN if unidentified.

    Coarse to fine, for speed: the profile on every 8th candidate of ``grid``, then on the candidates
    within one coarse step of each resample's best (the full resolution, started from the coarse fit)."""
    out = np.full((len(weights), 4), np.nan)
    coarse = grid[::8] if len(grid) > 16 else grid
    step = len(grid) // max(len(coarse) - 1, 1) if len(coarse) < len(grid) else 0
    offsets = np.arange(-step, step + 1)
    for start in tqdm(range(0, len(weights), chunk), desc="bootstrap (upper)", unit="chunk", disable=not progress,
                      leave=False):
        w = weights[start:start + chunk]
        rows = np.arange(len(w))
        loss, beta = _profile_quantile(x, y, w, coarse, tau, min_per_side, iterations=COARSE_ITERATIONS)
        best = np.argmin(loss, axis=1)
        ok = np.isfinite(loss[rows, best])
        if step:
            index = np.clip(np.searchsorted(grid, coarse[best])[:, None] + offsets[None, :], 0, len(grid) - 1)
            local = grid[index]                                           # [B, L]
            d = x[None, None, :] - local[:, :, None]                      # [B, L, n]
            present = (w > 0)[:, None, :]
            valid = (((d <= 0) & present).sum(-1) >= min_per_side) & (((d >= 0) & present).sum(-1) >= min_per_side)
            start_beta = np.repeat(beta[rows, best][:, None, :], len(offsets), axis=1)
            fine, fine_beta = _mm_quantile(y, w.astype(float)[:, None, :], np.minimum(d, 0.0), np.maximum(d, 0.0),
                                           start_beta, tau, FINE_ITERATIONS)
            fine = np.where(valid, fine, np.inf)
            pick = np.argmin(fine, axis=1)
            params = np.column_stack([local[rows, pick], fine_beta[rows, pick]])
            ok &= np.isfinite(fine[rows, pick])
        else:
            params = np.column_stack([coarse[best], beta[rows, best]])
        params[~ok] = np.nan
        out[start:start + len(w)] = params
    return out


def _linear_slopes(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares slope of y on x for each row of weights [B, n] (NaN where x is constant)."""
    w = weights.astype(float)
    total = w.sum(1)
    mx, my = (w @ x) / total, (w @ y) / total
    sxx = w @ (x * x) - total * mx * mx
    sxy = w @ (x * y) - total * mx * my
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 1e-12 * np.maximum(total, 1), sxy / sxx, np.nan)


def _evaluate(params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Frontier values [B, len(x)] for bootstrap parameter rows [B, 4]."""
    d = x[None, :] - params[:, :1]
    return params[:, 1:2] + params[:, 2:3] * np.minimum(d, 0) + params[:, 3:4] * np.maximum(d, 0)


# --------------------------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------------------------
def _spearman(x: np.ndarray, y: np.ndarray, side: str) -> tuple[float | None, float | None]:
    if len(x) < 3:
        _logger.warning("Spearman %s the peak: only %d models, not computed", side, len(x))
        return None, None
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        _logger.warning("Spearman %s the peak: constant accuracy or score, not computed", side)
        return None, None
    rho, p = stats.spearmanr(x, y)
    return float(rho), float(p)


def _interval(samples: np.ndarray, ci: float, axis: int = 0) -> np.ndarray:
    alpha = (1 - ci) / 2
    return np.quantile(samples, [alpha, 1 - alpha], axis=axis)


@dataclasses.dataclass
class TradeoffResult:
    """Everything :func:`analyze_tradeoff` measured. Slopes are in score units per unit of accuracy (fraction)."""
    benchmark: str | None
    accuracy_name: str
    n_models: int
    n_fit: int
    frontier: Hinge
    peak_ci: tuple[float, float]
    peak_range: tuple[float, float]
    peak_score_ci: tuple[float, float]
    slope_below_ci: tuple[float, float]
    slope_above_ci: tuple[float, float]
    spearman_below: float | None
    spearman_below_p: float | None
    spearman_above: float | None
    spearman_above_p: float | None
    linear_slope: float
    linear_slope_ci: tuple[float, float]
    r2: float
    quadratic: dict
    ci: float
    interval: str
    n_bootstrap: int
    n_bootstrap_valid: int
    seed: int
    models: pd.DataFrame
    bootstrap: np.ndarray = dataclasses.field(repr=False)
    grid_size: int = DEFAULT_GRID
    n_families: int = 0
    bootstrap_unit: str = DEFAULT_BOOTSTRAP_UNIT
    frontier_kind: str = "mean"
    quantile: float = DEFAULT_QUANTILE
    mean_frontier: Hinge | None = None
    upper_frontier: Hinge | None = None
    #: Interval sets per bootstrap unit ('families', 'models'): peak_ci, slope_below_ci, slope_above_ci, ...
    intervals: dict = dataclasses.field(default_factory=dict)
    two_lines: tl.TwoLinesResult | None = None

    @property
    def peak_accuracy(self) -> float:
        return self.frontier.breakpoint

    @property
    def peak_score(self) -> float:
        return self.frontier.level

    @property
    def slope_below(self) -> float:
        return self.frontier.slope_below

    @property
    def slope_above(self) -> float:
        return self.frontier.slope_above

    @property
    def shape(self) -> str:
        """'peak' (rise then fall: the trade-off), 'trough' (fall then rise) or 'bend' (both slopes of one sign)."""
        if self.slope_below > 0 > self.slope_above:
            return "peak"
        if self.slope_below < 0 < self.slope_above:
            return "trough"
        return "bend"

    @property
    def peak_at_edge(self) -> bool:
        """True when the peak's interval reaches the feasible breakpoint range's end (no interior peak shown)."""
        step = (self.peak_range[1] - self.peak_range[0]) / max(self.grid_size - 1, 1)
        return bool(self.peak_ci[0] <= self.peak_range[0] + step or self.peak_ci[1] >= self.peak_range[1] - step)

    def band(self, x: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap interval of the frontier at accuracies ``x``."""
        values = _evaluate(self.bootstrap, np.asarray(x, dtype=float))
        low, high = _interval(values, self.ci)
        return low, high

    def prediction_band(self, x: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap prediction interval at accuracies ``x``: frontier draws plus resampled residuals of the
        fitted models (seeded). A model above its upper edge is what ``interval='prediction'`` flags."""
        residuals = self.models.loc[self.models["in_fit"], "tradeoff"].to_numpy(float)
        values = _evaluate(self.bootstrap, np.asarray(x, dtype=float))                    # [B, len(x)]
        # the same residual draws at every x (20 per resample): the same marginal law, a smooth curve
        noise = np.random.default_rng(self.seed).choice(residuals, size=(len(values), 20, 1), replace=True)
        low, high = _interval((values[:, None, :] + noise).reshape(-1, values.shape[1]), self.ci)
        return low, high

    def breakers(self) -> list[str]:
        """Models whose trade-off interval lies above 0."""
        return list(self.models.loc[self.models["breaks_tradeoff"], "model"])

    def to_json(self) -> dict:
        """The issue's JSON object (keys :data:`JSON_KEYS`); numbers are plain floats, intervals [low, high].

        ``interval`` says what each model's ``tradeoff_ci`` is: 'prediction' (frontier + population scatter, the
        default) or 'confidence' (frontier + the model's own score error only)."""
        models = []
        for row in self.models.itertuples(index=False):
            models.append({
                "model": row.model, "family": row.family, "category": row.category,
                "harmonized": bool(row.harmonized),
                "accuracy": float(row.accuracy), "score": float(row.score), "frontier": float(row.frontier),
                "tradeoff": float(row.tradeoff), "tradeoff_ci": [float(row.ci_low), float(row.ci_high)],
                "breaks_tradeoff": bool(row.breaks_tradeoff), "in_fit": bool(row.in_fit),
                "source": getattr(row, "source", None),
            })
        return {
            "n_models": int(self.n_models), "benchmark": self.benchmark,
            "peak_accuracy": float(self.peak_accuracy), "peak_ci": [float(v) for v in self.peak_ci],
            "slope_below": float(self.slope_below), "slope_above": float(self.slope_above),
            "slope_above_ci": [float(v) for v in self.slope_above_ci],
            "spearman_below": self.spearman_below, "spearman_above": self.spearman_above,
            "models": models,
            "interval": self.interval, "ci": float(self.ci), "n_bootstrap": int(self.n_bootstrap),
            "seed": int(self.seed),
            "n_families": int(self.n_families), "bootstrap": self.bootstrap_unit, "frontier": self.frontier_kind,
            "quantile": float(self.quantile),
            "intervals": {unit: {key: (list(value) if isinstance(value, tuple) else value)
                                 for key, value in values.items()} for unit, values in self.intervals.items()},
            "two_lines": self.two_lines.to_json() if self.two_lines else None,
            "curves": {name: dataclasses.asdict(curve) for name, curve in
                       (("mean", self.mean_frontier), ("upper", self.upper_frontier)) if curve is not None},
        }

    def summary(self) -> dict:
        """All scalar results (more than :meth:`to_json`), for the text table and the metric's attributes."""
        return {
            "benchmark": self.benchmark, "accuracy": self.accuracy_name, "n_models": self.n_models,
            "n_fit": self.n_fit, "peak_accuracy": self.peak_accuracy, "peak_ci": list(self.peak_ci),
            "peak_range": list(self.peak_range), "peak_at_edge": self.peak_at_edge, "shape": self.shape,
            "peak_score": self.peak_score,
            "peak_score_ci": list(self.peak_score_ci), "slope_below": self.slope_below,
            "slope_below_ci": list(self.slope_below_ci), "slope_above": self.slope_above,
            "slope_above_ci": list(self.slope_above_ci), "spearman_below": self.spearman_below,
            "spearman_below_p": self.spearman_below_p, "spearman_above": self.spearman_above,
            "spearman_above_p": self.spearman_above_p, "linear_slope": self.linear_slope,
            "linear_slope_ci": list(self.linear_slope_ci), "r2_hinge": self.r2, "quadratic": self.quadratic,
            "ci": self.ci, "interval": self.interval, "n_bootstrap": self.n_bootstrap,
            "n_bootstrap_valid": self.n_bootstrap_valid, "seed": self.seed,
            "n_breaking": int(self.models["breaks_tradeoff"].sum()),
            "n_families": self.n_families, "bootstrap": self.bootstrap_unit, "frontier": self.frontier_kind,
            "quantile": self.quantile,
            "two_lines_p": self.two_lines.p if self.two_lines else None,
        }

    def format_table(self, max_models: int | None = 20) -> str:
        """Human-readable summary: frontier statistics, then the models sorted by trade-off score."""
        pct = int(round(self.ci * 100))

        def rng(pair):
            return f"[{pair[0]:.3f}, {pair[1]:.3f}]"

        def sp(rho, p):
            return "n/a" if rho is None else f"{rho:+.3f} (p={p:.2g})"

        q = self.quadratic
        curve = (f"upper frontier ({self.quantile:.0%} quantile hinge)" if self.frontier_kind == "upper" else
                 "mean curve (least-squares hinge)")
        lines = [
            f"Trade-off: {self.benchmark or 'score'} vs {self.accuracy_name} "
            f"({self.n_models} models, {self.n_fit} non-harmonized in the fit, {self.n_families} families)",
            f"  curve: {curve}; intervals: bootstrap over {self.bootstrap_unit}",
            f"  peak accuracy      {self.peak_accuracy:.3f}  {pct}% CI {rng(self.peak_ci)}"
            + ("  (interval reaches the accuracy range's edge)" if self.peak_at_edge else "")
            + ("" if self.shape == "peak" else f"  (breakpoint is a {self.shape}, not a maximum)"),
            f"  score at peak      {self.peak_score:.3f}  {pct}% CI {rng(self.peak_score_ci)}",
            f"  slope below peak   {self.slope_below:+.3f}  {pct}% CI {rng(self.slope_below_ci)}  (per unit top-1)",
            f"  slope above peak   {self.slope_above:+.3f}  {pct}% CI {rng(self.slope_above_ci)}",
            f"  Spearman below     {sp(self.spearman_below, self.spearman_below_p)}",
            f"  Spearman above     {sp(self.spearman_above, self.spearman_above_p)}",
            f"  linear slope       {self.linear_slope:+.3f}  {pct}% CI {rng(self.linear_slope_ci)}  (straight line)",
            f"  hinge R^2 {self.r2:.3f}; quadratic R^2 {q['r2']:.3f}, vertex {q['vertex']:.3f}"
            + ("" if q["concave"] else " (not a maximum)") + f"; AIC hinge {q['aic_hinge']:.1f} vs quadratic "
            f"{q['aic']:.1f}",
            f"  bootstrap: {self.n_bootstrap_valid}/{self.n_bootstrap} resamples, seed {self.seed}, "
            f"{self.interval} intervals",
        ]
        for unit, values in self.intervals.items():
            lines.append(f"  by {unit:<8}  peak {rng(values['peak_ci'])}  slope above {rng(values['slope_above_ci'])}")
        if self.two_lines is not None:
            t = self.two_lines
            lines.append(f"  two-lines test (Simonsohn 2018, mean curve, {t.se_kind} SEs) at {t.breakpoint:.3f}: "
                         f"slope below {t.slope_below:+.3f} (p={t.p_below:.2g}), above {t.slope_above:+.3f} "
                         f"(p={t.p_above:.2g}); inverted-U p = {t.p:.2g}")
        lines.append("")
        models = self.models.sort_values("tradeoff", ascending=False)
        shown = models if max_models is None else models.head(max_models)
        width = max([len("model")] + [len(m) + 2 for m in shown["model"]])
        lines.append(f"{'model':<{width}}  {'category':<15} {'top1':>6} {'score':>6} {'trade-off':>9}  "
                     f"{pct}% interval       breaks")
        for row in shown.itertuples(index=False):
            name = row.model + (" *" if row.harmonized else "")
            lines.append(f"{name:<{width}}  {row.category:<15} {row.accuracy:6.3f} {row.score:6.3f} "
                         f"{row.tradeoff:+9.3f}  [{row.ci_low:+.3f}, {row.ci_high:+.3f}]  "
                         f"{'yes' if row.breaks_tradeoff else 'no'}")
        if max_models is not None and len(models) > max_models:
            lines.append(f"... {len(models) - max_models} more models (use --json for all)")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------------------------------
def fit_quadratic(x: np.ndarray, y: np.ndarray) -> dict:
    """Least-squares quadratic y = a x^2 + b x + c: coefficients, vertex, whether it is a maximum, R^2, SSE, AIC."""
    coefficients = np.polyfit(x, y, 2)
    residual = y - np.polyval(coefficients, x)
    sse = float(residual @ residual)
    sst = float(((y - y.mean()) ** 2).sum())
    a, b, _ = coefficients
    vertex = float(-b / (2 * a)) if a != 0 else math.nan
    return {"coefficients": [float(c) for c in coefficients], "vertex": vertex, "concave": bool(a < 0),
            "r2": 1 - sse / sst if sst > 0 else math.nan, "sse": sse, "aic": _aic(sse, len(x), 3)}


def _aic(sse: float, n: int, k: int) -> float:
    return float(n * math.log(max(sse, 1e-300) / n) + 2 * k)


def bootstrap_weights(families: Sequence[str], n_bootstrap: int, rng: np.random.Generator, unit: str
                      ) -> np.ndarray:
    """Bootstrap weights [B, n]: how often each model enters each resample.

    ``unit='models'``: models are drawn with replacement (n draws). ``unit='families'``: families are drawn with
    replacement (as many draws as there are families) and a drawn family brings all its models (a cluster
    bootstrap: models of one lineage are not independent)."""
    n = len(families)
    if unit == "models":
        return rng.multinomial(n, np.full(n, 1.0 / n), size=int(n_bootstrap))
    labels, index = np.unique(np.asarray(families, dtype=str), return_inverse=True)
    counts = rng.multinomial(len(labels), np.full(len(labels), 1.0 / len(labels)), size=int(n_bootstrap))
    return counts[:, index]


@dataclasses.dataclass
class _Bootstrap:
    """One bootstrap (one resampling unit) of the chosen frontier."""
    unit: str
    params: np.ndarray
    linear: np.ndarray
    n_valid: int

    def intervals(self, ci: float) -> dict:
        p = self.params
        return {"peak_ci": _pair(_interval(p[:, 0], ci)), "peak_score_ci": _pair(_interval(p[:, 1], ci)),
                "slope_below_ci": _pair(_interval(p[:, 2], ci)), "slope_above_ci": _pair(_interval(p[:, 3], ci)),
                "linear_slope_ci": _pair(_interval(self.linear, ci)), "n_bootstrap_valid": int(self.n_valid)}


def _pair(values: Sequence[float]) -> tuple[float, float]:
    return float(values[0]), float(values[1])


def _run_bootstrap(x: np.ndarray, y: np.ndarray, families: np.ndarray, grid: np.ndarray, *, unit: str,
                   frontier: str, quantile: float, n_bootstrap: int, seed: int, min_per_side: int, progress: bool,
                   source: str) -> _Bootstrap:
    rng = np.random.default_rng([seed, BOOTSTRAP_UNITS.index(unit)])
    weights = bootstrap_weights(families, n_bootstrap, rng, unit)
    if frontier == "upper":
        params = _bootstrap_quantile_hinge(x, y, grid, weights, quantile, min_per_side, progress=progress)
    else:
        params = _bootstrap_hinge(x, y, grid, weights, min_per_side, progress=progress)
    valid = np.isfinite(params).all(1)
    if valid.sum() < 0.9 * n_bootstrap:
        _logger.warning("%s: %d of %d bootstrap resamples over %s had too few distinct accuracies for a breakpoint; "
                        "they were dropped", source, int((~valid).sum()), n_bootstrap, unit)
    if valid.sum() < 10:
        raise TradeoffInputError(f"{source}: only {int(valid.sum())} bootstrap resamples over {unit} could be "
                                 f"fitted; add models" + (" or use --bootstrap models" if unit == "families" else ""))
    linear = _linear_slopes(x, y, weights)
    return _Bootstrap(unit, params[valid], linear[np.isfinite(linear)], int(valid.sum()))


def analyze_tradeoff(population: pd.DataFrame, *, benchmark: str | None = None,
                     accuracy_name: str = "ImageNet-top1", n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                     ci: float = 0.95, interval: str = "prediction", min_per_side: int = DEFAULT_MIN_PER_SIDE,
                     grid_size: int | None = None, min_models: int = MIN_MODELS, progress: bool = False,
                     source: str = "the model table", bootstrap: str = DEFAULT_BOOTSTRAP_UNIT,
                     frontier: str = "mean", quantile: float = DEFAULT_QUANTILE,
                     family_overrides: dict[str, str] | None = None, compare: bool = True) -> TradeoffResult:
    """Fit the frontier on the non-harmonized models and score every model against it (see the module docstring).

    ``frontier``: 'mean' (least-squares hinge) or 'upper' (hinge of the ``quantile`` quantile). ``bootstrap``: the
    resampling unit of the reported intervals, 'families' (default) or 'models'; both are computed and reported.
    The two-lines test uses family-clustered standard errors with ``bootstrap='families'``, HC3 otherwise.
    ``compare=False`` skips the other bootstrap unit and the other curve (for simulations: half the time)."""
    if interval not in INTERVALS:
        raise TradeoffInputError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    if bootstrap not in BOOTSTRAP_UNITS:
        raise TradeoffInputError(f"bootstrap must be one of {', '.join(BOOTSTRAP_UNITS)}, got {bootstrap!r}")
    if frontier not in FRONTIERS:
        raise TradeoffInputError(f"frontier must be one of {', '.join(FRONTIERS)}, got {frontier!r}")
    if not 0.5 <= quantile < 1:
        raise TradeoffInputError(f"quantile must be in [0.5, 1), got {quantile}")
    if not 0 < ci < 1:
        raise TradeoffInputError(f"ci must be in (0, 1), got {ci}")
    if int(n_bootstrap) < 10:
        raise TradeoffInputError(f"n_bootstrap must be at least 10, got {n_bootstrap}")
    grid_size = grid_size or (DEFAULT_QUANTILE_GRID if frontier == "upper" else DEFAULT_GRID)
    table = validate_population(population, source=source, min_models=max(min_models, 2 * min_per_side + 2),
                                family_overrides=family_overrides)
    fit_rows = table[table["in_fit"]]
    x, y = fit_rows["accuracy"].to_numpy(float), fit_rows["score"].to_numpy(float)
    families = fit_rows["family"].to_numpy(str)
    n, n_families = len(x), len(set(families))
    if bootstrap == "families" and n_families < MIN_FAMILIES:
        raise TradeoffInputError(f"{source}: the fitted models fall into only {n_families} families; a bootstrap "
                                 f"over families needs at least {MIN_FAMILIES} (use --bootstrap models, or give a "
                                 f"family table with --families)")
    mean_fit = upper_fit = None
    if frontier == "mean" or compare:
        mean_fit = fit_hinge(x, y, min_per_side=min_per_side, grid_size=DEFAULT_GRID)
    if frontier == "upper" or compare:
        upper_fit = fit_quantile_hinge(x, y, tau=quantile, min_per_side=min_per_side,
                                       grid_size=DEFAULT_QUANTILE_GRID)
    curve = upper_fit if frontier == "upper" else mean_fit
    grid = breakpoint_grid(x, min_per_side, grid_size)

    runs = {}
    for unit in BOOTSTRAP_UNITS:
        if unit != bootstrap and (not compare or n_families < MIN_FAMILIES):
            continue
        runs[unit] = _run_bootstrap(x, y, families, grid, unit=unit, frontier=frontier, quantile=quantile,
                                    n_bootstrap=int(n_bootstrap), seed=seed, min_per_side=min_per_side,
                                    progress=progress, source=source)
    primary = runs[bootstrap]
    params = primary.params
    linear_slope = float(_linear_slopes(x, y, np.ones((1, n)))[0])

    residuals = y - curve(x)
    mean_residuals = y - (mean_fit or curve)(x)
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(mean_residuals @ mean_residuals) / sst if sst > 0 else math.nan
    quadratic = fit_quadratic(x, y)
    quadratic["aic_hinge"] = _aic(float(mean_residuals @ mean_residuals), n, 4)

    below = x <= curve.breakpoint
    rho_below, p_below = _spearman(x[below], y[below], "below")
    rho_above, p_above = _spearman(x[~below], y[~below], "above")
    test = tl.two_lines_test(x, y, clusters=families if bootstrap == "families" else None)

    # Per-model trade-off scores and their bootstrap intervals.
    rng = np.random.default_rng([seed, 7])
    acc, score = table["accuracy"].to_numpy(float), table["score"].to_numpy(float)
    draws = score[None, :] - _evaluate(params, acc)                      # [B, models]
    if interval == "prediction":
        draws = draws - rng.choice(residuals, size=draws.shape, replace=True)
    else:
        error = np.nan_to_num(table["error"].to_numpy(float), nan=0.0)
        draws = draws + rng.standard_normal(draws.shape) * error[None, :]
    low, high = _interval(draws, ci)
    models = table.copy()
    models["frontier"] = curve(acc)
    models["tradeoff"] = score - models["frontier"]
    models["ci_low"], models["ci_high"] = low, high
    models["breaks_tradeoff"] = low > 0

    intervals = {unit: run.intervals(ci) for unit, run in runs.items()}
    main = intervals[bootstrap]
    return TradeoffResult(
        benchmark=benchmark, accuracy_name=accuracy_name, n_models=len(table), n_fit=n, frontier=curve,
        peak_ci=main["peak_ci"], peak_range=(float(grid[0]), float(grid[-1])),
        peak_score_ci=main["peak_score_ci"], slope_below_ci=main["slope_below_ci"],
        slope_above_ci=main["slope_above_ci"], spearman_below=rho_below, spearman_below_p=p_below,
        spearman_above=rho_above, spearman_above_p=p_above, linear_slope=linear_slope,
        linear_slope_ci=main["linear_slope_ci"], r2=r2, quadratic=quadratic, ci=ci, interval=interval,
        n_bootstrap=int(n_bootstrap), n_bootstrap_valid=primary.n_valid, seed=seed, models=models,
        bootstrap=params, grid_size=int(grid_size), n_families=n_families, bootstrap_unit=bootstrap,
        frontier_kind=frontier, quantile=float(quantile), mean_frontier=mean_fit, upper_frontier=upper_fit,
        intervals=intervals, two_lines=test)


# --------------------------------------------------------------------------------------------------------------------
# Populations: from the leaderboard, from our results database, or both
# --------------------------------------------------------------------------------------------------------------------
_CATEGORY_HINTS = (  # (category, lower-case name fragments); first match wins
    ("Harmonized", ("harmoniz",)),
    ("Robust", ("robust", "advprop", "adv_", "_eps", "linf", "imagenet_l2", "at_efficientnet")),
    ("Self-supervised", ("barlow", "vicreg", "simclr", "moco", "moclr", "byol", "dino", "swav", "mae_", "-ssl")),
    ("Extra data", ("wsl", "in22k", "in21k", "22k", "21k", "bit-m", "jft", "laion", "clip", "ig1b", "omnivore")),
    ("Transformer", ("vit", "deit", "swin", "transformer", "cvt", "convit", "levit", "beit", "xcit", "cait", "mvit",
                     "focalnet", "pit_", "tnt_", "crossvit")),
)


def leaderboard_category(name: str) -> str:
    """Best-effort category of a leaderboard model from its name; anonymised names ('Model 123') are 'Unknown'."""
    if is_anonymous(name):
        return "Unknown"
    lower = name.lower()
    for category, fragments in _CATEGORY_HINTS:
        if any(fragment in lower for fragment in fragments):
            return category
    return "CNN"


def is_anonymous(name: str) -> bool:
    """Whether a leaderboard model name is anonymised by the website ('Model 1234')."""
    lower = str(name).lower()
    return lower.startswith("model ") and lower[6:].strip().isdigit()


def population_from_leaderboard(frame: pd.DataFrame, benchmark: str, *, accuracy: str = "ImageNet-top1",
                                min_accuracy: float | None = None, exclude_anonymous: bool = False,
                                version: int | None = None) -> pd.DataFrame:
    """Population table from a tidy leaderboard (:func:`benchmarks_it_maps.analysis.leaderboard.load_leaderboard`).

    Uses public models that have both a usable ``benchmark`` value (ceiled) and an ``accuracy`` value (top-1; raw when
    the site shows 'X'); the others are dropped and counted in the log. Names shared by several submissions get the
    model id appended. ``min_accuracy`` drops models below that top-1 (near-chance submissions);
    ``exclude_anonymous`` drops models whose name the website anonymised; ``version`` keeps only that benchmark
    version (default: all, which on a snapshot is one per benchmark). Each model gets its family
    (:func:`benchmarks_it_maps.analysis.families.family_of` of its leaderboard name).
    """

    scores = lb.benchmark_table(frame, benchmark)
    if version is not None:
        known = sorted(int(v) for v in scores["benchmark_version"].dropna().unique())
        if int(version) not in known:
            raise TradeoffInputError(f"{benchmark} has no version {version} on the leaderboard; it has "
                                     f"{_listing(known) or 'no versioned scores'}")
        scores = scores[scores["benchmark_version"] == int(version)]
    accuracies = lb.benchmark_table(frame, accuracy)
    merged = scores.merge(accuracies[["model_id", "value"]].rename(columns={"value": "accuracy"}), on="model_id",
                          how="left")
    missing = merged["accuracy"].isna()
    if missing.any():
        _logger.info("%s: %d of %d leaderboard models have no %s and are left out", benchmark, int(missing.sum()),
                     len(merged), accuracy)
    merged = merged[~missing]
    if min_accuracy is not None:
        merged = merged[merged["accuracy"] >= min_accuracy]
    if exclude_anonymous:
        merged = merged[~merged["model"].map(is_anonymous)]
    return pd.DataFrame({
        "model": merged["label"].astype(str), "accuracy": merged["accuracy"].astype(float),
        "score": merged["value"].astype(float), "error": merged["error"].astype(float),
        "category": [leaderboard_category(name) for name in merged["model"]],
        "harmonized": [leaderboard_category(name) == "Harmonized" for name in merged["model"]],
        "family": [fam.family_of(name) for name in merged["model"]],
        "benchmark_version": merged["benchmark_version"].astype("Int64"),
        "source": "leaderboard",
    }).reset_index(drop=True)


def registry_info(model: str) -> dict:
    """top1 / category / harmonized / family of one of our models: the model registry
    (``harmonized_models.get_entry``; the family from the timm name, not the entry's ``family``, which is the layer
    rule's block type such as 'mbconv'), or the ``model.json`` of a ``harmonized:PATH`` checkpoint folder (family of
    its 'architecture'). Raises :class:`TradeoffInputError` when unknown."""

    if model.startswith("harmonized:"):
        path = Path(model.split(":", 1)[1]).expanduser() / "model.json"
        if not path.is_file():
            raise TradeoffInputError(f"model {model!r}: {path} not found; a harmonized checkpoint folder needs its "
                                     f"model.json with a 'top1' field")
        meta = json.loads(path.read_text())
        architecture = meta.get("architecture")
        return {"top1": meta.get("top1"), "category": "Harmonized", "harmonized": True,
                "family": fam.family_of(str(architecture)) if architecture else None}
    try:
        import harmonized_models
        entry = harmonized_models.get_entry(model)
    except (KeyError, ImportError, AttributeError) as error:
        raise TradeoffInputError(f"model {model!r} has no top-1 accuracy: it is not in the model registry "
                                 f"({error}); record an 'ImageNet-top1' score for it in the results database or "
                                 f"leave it out") from error
    return {"top1": entry.top1, "category": entry.category, "harmonized": bool(entry.harmonized),
            "family": fam.family_of(model)}


def _results_frame(results: Any) -> tuple[pd.DataFrame, str]:
    if isinstance(results, pd.DataFrame):
        return results, "the results table"

    db = results if isinstance(results, ResultsDB) else ResultsDB(results)
    return db.to_frame(), f"results database {getattr(db, 'path', results)}"


def _latest(rows: pd.DataFrame) -> pd.DataFrame:
    """The newest row per model (by creation time, then row id)."""
    order = [c for c in ("created_at", "id") if c in rows.columns]
    if order:
        rows = rows.sort_values(order, kind="stable")
    return rows.groupby("model", sort=False).tail(1)


def population_from_results(results: Any, benchmark: str, *, accuracy: str = "ImageNet-top1",
                            info: Callable[[str], dict] = registry_info, version: int | None = None
                            ) -> pd.DataFrame:
    """Population table from our results database (a ResultsDB, its path, or ``ResultsDB.to_frame()``).

    Per model the latest row (newest) of ``benchmark`` is used (only rows of benchmark ``version`` if given). The
    accuracy comes from an ``accuracy`` row in the same database when present, else from the model registry's
    ``top1`` (or a checkpoint's model.json). Models with neither are left out: the returned table's
    ``attrs["left_out"]`` lists them with the reason, for the caller to print as a note.
    """

    frame, source = _results_frame(results)
    if frame.empty:
        raise TradeoffInputError(f"{source} is empty; score some models first (brainscore score MODEL BENCHMARK)")
    known = sorted(set(frame["benchmark"]))
    if benchmark not in known:
        close = difflib.get_close_matches(benchmark, known, n=5, cutoff=0.4)
        raise TradeoffInputError(f"benchmark {benchmark!r} has no scores in {source}"
                                 + (f"; did you mean {', '.join(close)}?" if close else
                                    f"; it holds {_listing(known)}"))
    rows = frame[frame["benchmark"] == benchmark]
    if version is not None:
        versions = sorted({str(v) for v in rows["benchmark_version"]})
        rows = rows[rows["benchmark_version"].astype(str) == str(version)]
        if rows.empty:
            raise TradeoffInputError(f"{source} has no {benchmark} scores of version {version}; it has version(s) "
                                     f"{_listing(versions)}")
    rows = _latest(rows)
    recorded = _latest(frame[frame["benchmark"] == accuracy]).set_index("model")["score"]
    records, left_out = [], []
    for row in rows.itertuples(index=False):
        model = str(row.model)
        meta: dict = {}
        reason = None
        try:
            meta = info(model)
        except TradeoffInputError as error:
            reason = str(error)
        top1 = float(recorded[model]) if model in recorded.index else meta.get("top1")
        if top1 is None or not np.isfinite(float(top1)):
            left_out.append((model, reason or f"no top-1: registry field 'top1' is empty and no {accuracy!r} row"))
            continue
        records.append({"model": model, "accuracy": float(top1), "score": float(row.score),
                        "error": pd.to_numeric(getattr(row, "error", None), errors="coerce"),
                        "category": meta.get("category") or "Unknown", "harmonized": bool(meta.get("harmonized")),
                        "family": meta.get("family") or fam.family_of(model),
                        "benchmark_version": str(row.benchmark_version), "source": "results"})
    for model, why in left_out:
        _logger.info("%s: %s left out (%s)", source, model, why)
    table = pd.DataFrame.from_records(records, columns=["model", "accuracy", "score", "error", "category",
                                                        "harmonized", "family", "benchmark_version", "source"])
    table.attrs["left_out"] = left_out
    return table


def left_out_note(population: pd.DataFrame) -> str | None:
    """One line naming the models :func:`population_from_results` left out for lack of a top-1 (None if none)."""
    left_out = population.attrs.get("left_out") or []
    if not left_out:
        return None
    return (f"note: {len(left_out)} model(s) without a top-1 accuracy left out: "
            f"{_listing(model for model, _ in left_out)} (record an 'ImageNet-top1' score or set the registry's top1)")


def combine_populations(local: pd.DataFrame, public: pd.DataFrame) -> pd.DataFrame:
    """Our models plus the leaderboard's; a leaderboard model whose name collides with ours gets ' (leaderboard)'."""
    public = public.copy()
    clash = public["model"].isin(set(local["model"]))
    public.loc[clash, "model"] = public.loc[clash, "model"] + " (leaderboard)"
    combined = pd.concat([local, public], ignore_index=True)
    combined.attrs["left_out"] = list(local.attrs.get("left_out") or [])
    return combined


# --------------------------------------------------------------------------------------------------------------------
# Every analysis choice at once: sensitivity table and plot
# --------------------------------------------------------------------------------------------------------------------
#: Minimum top-1 accuracies swept by :func:`sensitivity` (the paper's plots start near 0.36).
SENSITIVITY_MIN_ACCURACY = (0.30, 0.36, 0.40, 0.45, 0.50, 0.55, 0.60)
SENSITIVITY_COLUMNS = ("benchmark", "version", "min_accuracy", "anonymous", "bootstrap", "frontier", "n_models",
                       "n_families", "peak", "peak_low", "peak_high", "peak_at_edge", "slope_above",
                       "slope_above_low", "slope_above_high", "two_lines_p", "two_lines_p_holm", "inverted_u",
                       "note")


def sensitivity(make_population: Callable[..., pd.DataFrame], benchmarks: dict[str, Sequence[Any]], *,
                min_accuracies: Sequence[float] = SENSITIVITY_MIN_ACCURACY,
                anonymous: Sequence[str] = ("in", "out"), frontier: str = "mean",
                quantile: float = DEFAULT_QUANTILE, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                ci: float = 0.95, alpha: float = 0.05, family_overrides: dict[str, str] | None = None,
                progress: bool = False) -> pd.DataFrame:
    """The peak and slope-above intervals and the two-lines test for every combination of analysis choices.

    ``benchmarks`` maps each benchmark to its versions; ``make_population(benchmark, version, min_accuracy,
    exclude_anonymous)`` returns its population. Each (benchmark, version, minimum accuracy, anonymised in/out)
    population is analysed once; it gives one row per bootstrap unit (families, models), whose intervals and
    two-lines standard errors (CR1 by family, HC3) follow that unit. ``two_lines_p_holm`` is Holm-adjusted across
    the benchmarks (and versions) of the same choices; ``inverted_u`` = that adjusted p below ``alpha``. A
    population that cannot be analysed (too few models) gives rows with a ``note`` instead of numbers."""
    jobs = [(benchmark, version, float(minimum), anon) for benchmark, versions in benchmarks.items()
            for version in versions for minimum in min_accuracies for anon in anonymous]
    rows = []
    for benchmark, version, minimum, anon in tqdm(jobs, desc="sensitivity", unit="fit", disable=not progress):
        base = {"benchmark": benchmark, "version": version, "min_accuracy": minimum, "anonymous": anon,
                "frontier": frontier}
        try:
            population = make_population(benchmark, version, minimum, anon == "out")
            result = analyze_tradeoff(population, benchmark=benchmark, n_bootstrap=n_bootstrap, seed=seed, ci=ci,
                                      frontier=frontier, quantile=quantile, family_overrides=family_overrides,
                                      source=f"{benchmark} (top-1 >= {minimum:.2f}, anonymised {anon})")
        except TradeoffInputError as error:
            for unit in BOOTSTRAP_UNITS:
                rows.append({**base, "bootstrap": unit, "note": str(error)})
            continue
        fit = result.models[result.models["in_fit"]]
        x, y = fit["accuracy"].to_numpy(float), fit["score"].to_numpy(float)
        for unit in BOOTSTRAP_UNITS:
            values = result.intervals.get(unit)
            if values is None:
                rows.append({**base, "bootstrap": unit, "n_models": result.n_fit, "n_families": result.n_families,
                             "note": f"only {result.n_families} families"})
                continue
            test = tl.two_lines_test(x, y, clusters=fit["family"].to_numpy(str) if unit == "families" else None)
            rows.append({**base, "bootstrap": unit, "n_models": result.n_fit, "n_families": result.n_families,
                         "peak": result.peak_accuracy, "peak_low": values["peak_ci"][0],
                         "peak_high": values["peak_ci"][1],
                         "peak_at_edge": _at_edge(values["peak_ci"], result.peak_range, result.grid_size),
                         "slope_above": result.slope_above, "slope_above_low": values["slope_above_ci"][0],
                         "slope_above_high": values["slope_above_ci"][1], "two_lines_p": test.p, "note": ""})
    table = pd.DataFrame(rows, columns=list(SENSITIVITY_COLUMNS))
    table["two_lines_p_holm"] = np.nan
    tested = table["two_lines_p"].notna()
    for _, group in table[tested].groupby(["min_accuracy", "anonymous", "bootstrap"], sort=False):
        table.loc[group.index, "two_lines_p_holm"] = tl.holm(group["two_lines_p"].to_numpy(float))
    table["inverted_u"] = table["two_lines_p_holm"] < alpha
    table["note"] = table["note"].fillna("")
    return table


def _at_edge(interval: Sequence[float], feasible: Sequence[float], grid_size: int) -> bool:
    step = (feasible[1] - feasible[0]) / max(grid_size - 1, 1)
    return bool(interval[0] <= feasible[0] + step or interval[1] >= feasible[1] - step)


def format_sensitivity(table: pd.DataFrame) -> str:
    """The sensitivity table as text: one line per choice, the intervals, and where the conclusion holds."""
    lines = [f"{'benchmark':<26} {'ver':>3} {'min':>4} {'anon':>4} {'boot':<8} {'n':>4} {'fam':>4} "
             f"{'peak [CI]':<22} {'slope above [CI]':<25} {'2-lines p':>9} {'Holm p':>7}  inverted U"]
    for row in table.itertuples(index=False):
        head = (f"{row.benchmark:<26} {str(row.version):>3} {row.min_accuracy:4.2f} {row.anonymous:>4} "
                f"{row.bootstrap:<8}")
        if pd.isna(row.peak):
            lines.append(f"{head} {row.note}")
            continue
        edge = "*" if row.peak_at_edge else " "
        lines.append(f"{head} {int(row.n_models):4d} {int(row.n_families):4d} "
                     f"{row.peak:.3f} [{row.peak_low:.3f}, {row.peak_high:.3f}]{edge} "
                     f"{row.slope_above:+.2f} [{row.slope_above_low:+.2f}, {row.slope_above_high:+.2f}]"
                     f"{'':<6} {row.two_lines_p:9.3g} {row.two_lines_p_holm:7.3g}  "
                     f"{'yes' if row.inverted_u else 'no'}")
    lines.append("* peak interval reaches the end of the feasible range (no interior peak shown). Holm: across the "
                 "benchmarks of one choice. inverted U: two-lines test (Simonsohn 2018), Holm p < 0.05.")
    return "\n".join(lines)


def plot_sensitivity(table: pd.DataFrame, path: str | os.PathLike, *, dpi: int = 100,
                     slope_range: tuple[float, float] = (-2.0, 1.0)) -> Path:
    """Forest plot: for each benchmark (column) the peak and the slope-above intervals (rows of panels) of every
    choice; red = slope-above interval below 0, filled marker = two-lines inverted U after Holm. Slope intervals
    are drawn within ``slope_range`` (an end beyond it is clipped, marked by an arrow head)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in {"png", "svg", "pdf"}:
        raise TradeoffInputError(f"plot file {path}: unsupported format {path.suffix!r}; use .png or .svg")
    benchmarks = list(dict.fromkeys(table["benchmark"]))
    versions = table.groupby("benchmark")["version"].agg(lambda v: sorted({str(x) for x in v}))
    by_version = any(len(v) > 1 for v in versions)
    fields = (["version"] if by_version else []) + ["min_accuracy", "anonymous", "bootstrap"]
    choices = table.drop_duplicates(fields)
    keys = [tuple(row) for row in choices[fields].itertuples(index=False)]
    labels = [(f"v{r.version} " if by_version else "") + f"top-1 >= {r.min_accuracy:.2f}, anonymised "
              f"{r.anonymous}, by {r.bootstrap}" for r in choices.itertuples(index=False)]
    height = 1.0 + 0.16 * len(keys)
    fig, axes = plt.subplots(2, len(benchmarks), figsize=(2.9 * len(benchmarks) + 2.6, 2 * height), sharey=True,
                             squeeze=False)
    for column, benchmark in enumerate(benchmarks):
        rows = table[table["benchmark"] == benchmark].set_index(fields)
        title = benchmark + ("" if by_version else f" v{versions[benchmark][0]}")
        for panel, (name, low, high, point) in enumerate((("peak top-1", "peak_low", "peak_high", "peak"),
                                                          ("slope above peak", "slope_above_low",
                                                           "slope_above_high", "slope_above"))):
            ax = axes[panel, column]
            for position, key in enumerate(keys):
                if key not in rows.index or not np.isfinite(rows.loc[key, point]):
                    continue
                row = rows.loc[key]
                color = "tab:red" if row["slope_above_high"] < 0 else "tab:gray"
                lo, hi = row[low], row[high]
                if panel == 1:
                    lo, hi = max(lo, slope_range[0]), min(hi, slope_range[1])
                    for end, clipped in ((lo, row[low] < slope_range[0]), (hi, row[high] > slope_range[1])):
                        if clipped:
                            ax.plot([end], [position], marker="<" if end < 0 else ">", color=color, markersize=4)
                ax.plot([lo, hi], [position, position], color=color, linewidth=2)
                ax.plot([row[point]], [position], marker="o", markersize=5, color=color,
                        markerfacecolor=color if row["inverted_u"] else "white")
            if panel == 1:
                ax.axvline(0, color="black", linewidth=0.8)
                ax.set_xlim(slope_range[0] - 0.1, slope_range[1] + 0.1)
            ax.set_title(f"{title}\n{name}" if panel == 0 else name, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3, axis="x")
            ax.set_yticks(range(len(keys)))
            ax.set_yticklabels(labels, fontsize=6.5)
    axes[0, 0].invert_yaxis()   # the y axes are shared: the first choice on top everywhere
    curve = ", ".join(sorted({str(kind) for kind in table["frontier"].dropna()})) or "mean"
    fig.suptitle(f"Every analysis choice ({curve} curve, 95 % bootstrap intervals). Red: slope above the peak < 0 "
                 "(interval). Filled: inverted U by the two-lines test on the mean curve, Holm p < 0.05 across the "
                 "benchmarks.", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return save_figure(fig, path, format=suffix, dpi=dpi)


# --------------------------------------------------------------------------------------------------------------------
# Brain-Score-style metric
# --------------------------------------------------------------------------------------------------------------------
try:
    from brainscore_core.metrics import Metric as _Metric
except ImportError:  # pragma: no cover - brainscore_core is a dependency
    _Metric = object


def _has_coord(assembly: Any, name: str) -> bool:
    """Whether an assembly has coordinate ``name`` (also as a level of a MultiIndex, which ``in coords`` misses)."""
    if not hasattr(assembly, "dims"):
        return False
    try:
        assembly[name]
    except KeyError:
        return False
    return True


def _model_key(assembly: Any) -> str | None:
    """Name of the coordinate that identifies models in an assembly ('model_identifier' or 'model')."""
    return next((key for key in ("model_identifier", "model") if _has_coord(assembly, key)), None)


class TradeoffMetric(_Metric):
    """The trade-off as a Brain-Score metric: ``metric(accuracies, scores)`` (two 1-D assemblies over a ``model`` dim
    with a ``model_identifier`` coord, or pandas Series indexed by model; optional coords ``category``,
    ``harmonized``, ``error``) or ``metric(population_table)``.

    Returns a :class:`brainscore_core.metrics.Score` whose value is the slope above the peak (negative = accuracy
    costs IT predictivity), with attrs ``error`` (bootstrap SD of that slope), ``raw`` (same value; nothing is
    ceiled), every :meth:`TradeoffResult.summary` value, and ``models`` (per-model trade-off scores as a
    DataAssembly over ``model``).
    """

    def __init__(self, *, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, ci: float = 0.95,
                 interval: str = "prediction", min_per_side: int = DEFAULT_MIN_PER_SIDE,
                 benchmark: str | None = None):
        self.kwargs = dict(n_bootstrap=n_bootstrap, seed=seed, ci=ci, interval=interval, min_per_side=min_per_side)
        self.benchmark = benchmark

    @staticmethod
    def _population(accuracies: Any, scores: Any) -> pd.DataFrame:
        def series(values: Any, name: str) -> pd.Series:
            if isinstance(values, pd.Series):
                return values.rename(name)
            if hasattr(values, "dims") and _model_key(values):
                return pd.Series(np.asarray(values.values, dtype=float), index=[str(m) for m in
                                 values[_model_key(values)].values], name=name)
            raise TradeoffInputError(f"{name}: expected a pandas Series or an assembly with a 'model' coordinate, "
                                     f"got {type(values).__name__}")

        acc, score = series(accuracies, "accuracy"), series(scores, "score")
        missing = sorted(set(score.index) - set(acc.index))
        if missing:
            raise TradeoffInputError(f"no accuracy for model(s) {_listing(missing)}; give every scored model an "
                                     f"accuracy")
        table = pd.DataFrame({"model": score.index.astype(str), "accuracy": acc.reindex(score.index).to_numpy(),
                              "score": score.to_numpy()})
        for column in ("category", "harmonized", "error"):
            for source in (scores, accuracies):
                if _has_coord(source, column) and column not in getattr(source, "dims", ()):
                    values = pd.Series(np.asarray(source[column].values), index=[str(m) for m in
                                       source[_model_key(source)].values])
                    table[column] = values.reindex(table["model"]).to_numpy()
                    break
        return table

    def __call__(self, accuracies: Any, scores: Any = None):

        population = accuracies if scores is None else self._population(accuracies, scores)
        result = analyze_tradeoff(population, benchmark=self.benchmark, **self.kwargs)
        score = Score(result.slope_above)
        score.attrs["error"] = float(np.std(result.bootstrap[:, 3], ddof=1))
        score.attrs["raw"] = float(result.slope_above)
        for key, value in result.summary().items():
            score.attrs[key] = value
        models = result.models
        score.attrs["models"] = DataAssembly(
            models["tradeoff"].to_numpy(float),
            coords={"model_identifier": ("model", models["model"].to_numpy(str)),
                    "accuracy": ("model", models["accuracy"].to_numpy(float)),
                    "score": ("model", models["score"].to_numpy(float)),
                    "category": ("model", models["category"].to_numpy(str)),
                    "harmonized": ("model", models["harmonized"].to_numpy(bool)),
                    "ci_low": ("model", models["ci_low"].to_numpy(float)),
                    "ci_high": ("model", models["ci_high"].to_numpy(float)),
                    "breaks_tradeoff": ("model", models["breaks_tradeoff"].to_numpy(bool))},
            dims=["model"])
        score.attrs["result"] = result
        return score


# --------------------------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------------------------
_COLORS = {"CNN": "#1f77b4", "Transformer": "#ff7f0e", "Robust": "#2ca02c", "Self-supervised": "#9467bd",
           "Extra data": "#8c564b", "Harmonized": "#d62728", "Unknown": "#9e9e9e"}


def plot_tradeoff(result: TradeoffResult, path: str | os.PathLike, *, highlight: Sequence[str] = (),
                  title: str | None = None, dpi: int = 110) -> Path:
    """Figure like the paper's: models coloured by category, harmonized ones as large outlined stars, the frontier
    with its bootstrap band, the quadratic (dashed), and the peak with its interval. Written atomically (.png/.svg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in {"png", "svg", "pdf"}:
        raise TradeoffInputError(f"plot file {path}: unsupported format {path.suffix!r}; use .png or .svg")
    models = result.models
    fig, ax = plt.subplots(figsize=(8.6, 4.6))
    for category in [c for c in CATEGORIES if c in set(models["category"])] + sorted(
            set(models["category"]) - set(CATEGORIES)):
        rows = models[(models["category"] == category) & ~models["harmonized"]]
        if len(rows):
            ax.scatter(rows["accuracy"], rows["score"], s=16, alpha=0.75, color=_COLORS.get(category, "#17becf"),
                       label=f"{category} ({len(rows)})", linewidths=0)
    harmonized = models[models["harmonized"]]
    if len(harmonized):
        ax.scatter(harmonized["accuracy"], harmonized["score"], s=140, marker="*", color=_COLORS["Harmonized"],
                   edgecolors="black", linewidths=0.8, zorder=5, label=f"Harmonized ({len(harmonized)})")
    lo, hi = models["accuracy"].min(), models["accuracy"].max()
    xs = np.linspace(lo, hi, 300)
    band_low, band_high = result.band(xs)
    pct = int(round(result.ci * 100))
    ax.fill_between(xs, band_low, band_high, color="black", alpha=0.15, linewidth=0,
                    label=f"{pct}% bootstrap band ({result.bootstrap_unit})")
    if result.interval == "prediction":
        _, upper = result.prediction_band(xs)
        ax.plot(xs, upper, color="black", linewidth=0.9, linestyle=":",
                label=f"{pct}% prediction band, upper edge")
    names = {"mean": "mean curve (least squares)", "upper": f"upper frontier ({result.quantile:.0%} quantile)"}
    ax.plot(xs, result.frontier(xs), color="black", linewidth=1.8, label=f"{names[result.frontier_kind]}, hinge")
    other = result.upper_frontier if result.frontier_kind == "mean" else result.mean_frontier
    if other is not None:
        kind = "upper" if result.frontier_kind == "mean" else "mean"
        ax.plot(xs, other(xs), color="tab:purple", linewidth=1.4, linestyle="-.", label=f"{names[kind]}, hinge")
    ax.plot(xs, np.polyval(result.quadratic["coefficients"], xs), color="black", linewidth=1, linestyle="--",
            alpha=0.6, label="quadratic")
    ax.axvspan(result.peak_ci[0], result.peak_ci[1], color="tab:orange", alpha=0.12, linewidth=0)
    ax.axvline(result.peak_accuracy, color="tab:orange", linewidth=1.2, linestyle=":")
    ax.plot([result.peak_accuracy], [result.peak_score], marker="v", markersize=9, color="tab:orange",
            markeredgecolor="black", zorder=6,
            label=f"peak {result.peak_accuracy:.3f} [{result.peak_ci[0]:.3f}, {result.peak_ci[1]:.3f}]")
    for name in highlight:
        row = models[models["model"] == name]
        if len(row):
            ax.scatter(row["accuracy"], row["score"], s=120, facecolors="none", edgecolors="black", linewidths=1.5,
                       zorder=7)
            ax.annotate(name, (float(row["accuracy"].iloc[0]), float(row["score"].iloc[0])),
                        xytext=(6, 6), textcoords="offset points", fontsize=8)
    ax.set_xlabel(f"{result.accuracy_name} accuracy (fraction)")
    ax.set_ylabel(f"{result.benchmark or 'neural'} score (ceiled)")
    test = result.two_lines
    low, high = result.slope_above_ci
    ax.set_title(title or f"{result.benchmark or 'score'} ({result.frontier_kind}): slope above peak "
                          f"{result.slope_above:+.2f} [{low:+.2f}, {high:+.2f}] by {result.bootstrap_unit}\n"
                          f"{result.n_fit} models, {result.n_families} families"
                          + (f"; two-lines test (mean curve): inverted-U p = {test.p:.2g}" if test else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.85)
    fig.tight_layout()
    return save_figure(fig, path, format=suffix, dpi=dpi)
