"""A test of an inverted U: Simonsohn's two-lines test (2018, AMPPS 1:538) with the Robin Hood breakpoint, and Holm.

Why: a breakpoint's bootstrap interval is not a test. On a plateau-shaped truth (rise, then flat) the best hinge
puts its breakpoint where noise bends the curve down, and its "slope above" is negative by selection. The two-lines
test estimates the two slopes on either side of a breakpoint chosen *without* fitting the two lines:

1. a penalised cubic spline (P-spline, smoothing chosen by GCV) is fitted to score vs accuracy; the *flat region*
   is the set of accuracies whose fitted value plus one standard error reaches the spline's maximum;
2. a first interrupted regression ``y = a + b1 * xlow + b2 * xhigh + d * high`` (separate lines, a jump allowed)
   is fitted with the break at the median of the flat region;
3. **Robin Hood**: the break moves to the ``z2 / (z1 + z2)`` quantile of the flat region (``z`` = |t| of each
   slope), giving the weaker line more of the data, and the interrupted regression is refitted there.

An inverted U is supported when ``b1 > 0`` and ``b2 < 0``. Each slope's p-value is two-sided when its sign is the
predicted one and 1 otherwise; the test's p is the larger of the two (an intersection-union test: both must hold).
Standard errors are heteroskedasticity-robust (HC3), or cluster-robust by model family (CR1, t with
``families - 1`` degrees of freedom) when models of one family are not independent.

:func:`holm` adjusts the p-values of several benchmarks analysed together (Holm 1979), which share models and
images and so are not independent experiments: Holm controls the family-wise error under any dependence.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import interpolate, stats

#: Minimum number of models on each side of the break (fewer: that slope is not tested, its p is 1).
MIN_PER_SIDE = 3
#: Number of interior spline knots (at most; fewer when there are fewer distinct accuracies).
SPLINE_KNOTS = 8
_LAMBDAS = np.logspace(-4, 6, 41)


@dataclasses.dataclass(frozen=True)
class TwoLinesResult:
    """Result of :func:`two_lines_test`. Slopes are per unit of accuracy; p-values as in the module docstring."""
    breakpoint: float
    first_breakpoint: float
    flat_region: tuple[float, float]
    slope_below: float
    slope_above: float
    se_below: float
    se_above: float
    p_below: float
    p_above: float
    p: float
    n_below: int
    n_above: int
    se_kind: str
    df: int

    @property
    def inverted_u(self) -> bool:
        """Signs are those of an inverted U (significance is judged from :attr:`p`, Holm-adjusted when several)."""
        return self.slope_below > 0 > self.slope_above

    def to_json(self) -> dict:
        return {"breakpoint": self.breakpoint, "first_breakpoint": self.first_breakpoint,
                "flat_region": list(self.flat_region), "slope_below": self.slope_below,
                "slope_above": self.slope_above, "se_below": self.se_below, "se_above": self.se_above,
                "p_below": self.p_below, "p_above": self.p_above, "p": self.p, "n_below": self.n_below,
                "n_above": self.n_above, "se": self.se_kind, "df": self.df}


# --------------------------------------------------------------------------------------------------------------------
# Step 1: P-spline smoother and the flat region
# --------------------------------------------------------------------------------------------------------------------
def _spline_basis(x: np.ndarray, knots: int) -> np.ndarray:
    """Cubic B-spline design matrix with interior knots at quantiles of the distinct values of x."""
    unique = np.unique(x)
    inner = np.quantile(unique, np.linspace(0, 1, min(knots, max(len(unique) - 4, 0)) + 2)[1:-1])
    lo, hi = float(x.min()), float(x.max())
    t = np.concatenate([[lo] * 4, inner, [hi] * 4])
    return interpolate.BSpline.design_matrix(np.clip(x, lo, hi), t, 3).toarray()


def smooth(x: Sequence[float], y: Sequence[float], knots: int = SPLINE_KNOTS) -> tuple[np.ndarray, np.ndarray]:
    """P-spline fit (second-difference penalty, smoothing by generalised cross-validation) at the data points:
    fitted values and their standard errors."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    basis = _spline_basis(x, knots)
    k = basis.shape[1]
    penalty = np.diff(np.eye(k), 2, axis=0)
    penalty = penalty.T @ penalty
    gram = basis.T @ basis
    scale = np.trace(gram) / max(np.trace(penalty), 1e-12)
    best = None
    for lam in _LAMBDAS * scale:
        inverse = np.linalg.pinv(gram + lam * penalty)
        hat = basis @ inverse @ basis.T
        fitted = hat @ y
        dof = float(np.trace(hat))
        rss = float(((y - fitted) ** 2).sum())
        gcv = len(y) * rss / max(len(y) - dof, 1e-9) ** 2
        if best is None or gcv < best[0]:
            best = (gcv, fitted, hat, rss, dof)
    _, fitted, hat, rss, dof = best
    sigma2 = rss / max(len(y) - dof, 1.0)
    se = np.sqrt(np.maximum(sigma2 * (hat ** 2).sum(1), 0.0))
    return fitted, se


def flat_region(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Accuracies where the smoothed score plus one standard error reaches the smoothed maximum (sorted)."""
    fitted, se = smooth(x, y)
    return np.sort(x[fitted + se >= fitted.max()])


# --------------------------------------------------------------------------------------------------------------------
# Steps 2-3: interrupted regression with robust standard errors, Robin Hood
# --------------------------------------------------------------------------------------------------------------------
def _interrupted(x: np.ndarray, y: np.ndarray, xc: float, clusters: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """OLS of y on (1, xlow, xhigh, high) broken at xc: coefficients, their robust SEs, df, n below, n above."""
    high = x > xc
    design = np.column_stack([np.ones_like(x), np.where(high, 0.0, x - xc), np.where(high, x - xc, 0.0),
                              high.astype(float)])
    n, k = design.shape
    bread = np.linalg.pinv(design.T @ design)
    beta = bread @ design.T @ y
    residual = y - design @ beta
    if clusters is None:
        leverage = np.einsum("ij,jk,ik->i", design, bread, design)
        scaled = residual / np.maximum(1 - leverage, 1e-8)
        meat = (design * scaled[:, None] ** 2).T @ design
        df = n - k
    else:
        labels, index = np.unique(clusters, return_inverse=True)
        sums = np.zeros((len(labels), k))
        np.add.at(sums, index, design * residual[:, None])
        groups = len(labels)
        meat = sums.T @ sums * (groups / max(groups - 1, 1)) * ((n - 1) / max(n - k, 1))
        df = groups - 1
    covariance = bread @ meat @ bread
    return beta, np.sqrt(np.maximum(np.diag(covariance), 0.0)), max(df, 1), int((~high).sum()), int(high.sum())


def _directional_p(estimate: float, se: float, df: int, sign: int, n_side: int) -> float:
    """Two-sided p of a slope when it has the predicted sign, else 1 (also 1 when the side has too few models)."""
    if n_side < MIN_PER_SIDE or not se > 0 or not math.isfinite(se) or estimate * sign <= 0:
        return 1.0
    return float(min(1.0, 2 * stats.t.sf(abs(estimate) / se, df)))


def two_lines_test(x: Sequence[float], y: Sequence[float], clusters: Sequence | None = None) -> TwoLinesResult:
    """Simonsohn's two-lines test of an inverted U (rise, then fall) of y in x; see the module docstring.

    ``clusters`` (e.g. model families) switches the standard errors from HC3 to cluster-robust CR1."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    groups = None if clusters is None else np.asarray(clusters)
    order = np.sort(x)
    lowest, highest = order[MIN_PER_SIDE - 1], order[len(order) - MIN_PER_SIDE - 1]
    flat = np.clip(flat_region(x, y), lowest, highest)
    first = float(np.median(flat))
    beta, se, df, _, _ = _interrupted(x, y, first, groups)
    z1, z2 = abs(beta[1] / se[1]) if se[1] > 0 else 0.0, abs(beta[2] / se[2]) if se[2] > 0 else 0.0
    share = z2 / (z1 + z2) if z1 + z2 > 0 else 0.5
    xc = float(np.quantile(flat, share))
    beta, se, df, n_below, n_above = _interrupted(x, y, xc, groups)
    p_below = _directional_p(beta[1], se[1], df, +1, n_below)
    p_above = _directional_p(beta[2], se[2], df, -1, n_above)
    return TwoLinesResult(breakpoint=xc, first_breakpoint=first, flat_region=(float(flat[0]), float(flat[-1])),
                          slope_below=float(beta[1]), slope_above=float(beta[2]), se_below=float(se[1]),
                          se_above=float(se[2]), p_below=p_below, p_above=p_above, p=max(p_below, p_above),
                          n_below=n_below, n_above=n_above, se_kind="HC3" if groups is None else "CR1",
                          df=int(df))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as the input): controls the family-wise error rate."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out
