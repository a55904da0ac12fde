"""Gaussian fits of an ERF map and the tests built on them (pure numpy + scipy; knows nothing of torch).

- :func:`fit_gaussian_1d` / :func:`gaussian_fit`: least-squares fits (``scipy.optimize.curve_fit``,
  Levenberg–Marquardt) of ``A·exp(−(x−μ)²/2σ²)`` to each axis marginal, started from its moments.
- :func:`fit_gaussian_nd`: one joint fit of a separable, axis-aligned Gaussian
  ``A·exp(−Σ_a (x_a−μ_a)²/2σ_a²)`` to the whole map (``scipy.optimize.least_squares`` with the
  analytic Jacobian), and its R² on the map itself.
- :func:`is_gaussian`: the criterion for printing a Gaussian σ at all (**every marginal fit has
  R² ≥ 0.9**); below it rflens says "not Gaussian" instead of a σ and a Gaussian-tail estimate.
- :func:`gaussian_shape`: the "asymptotically Gaussian" test (:data:`SHAPE_R2`, :data:`SHAPE_KURTOSIS`).

Every fit is made on the map scaled to sum 1 (a marginal scaled to sum 1): ``amplitude`` is a share
of the total mass per pixel, ``sigma`` and ``center`` are pixels (pixel ``j`` is centred on ``j``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

__all__ = ["GaussianFit", "GaussianFitND", "GaussianShape", "fit_gaussian_1d", "gaussian_fit",
           "fit_gaussian_nd", "is_gaussian", "gaussian_shape", "excess_kurtosis", "normal_cdf",
           "GAUSSIAN_R2", "SHAPE_R2", "SHAPE_KURTOSIS"]

NAN = float("nan")
# A marginal fit below this R^2 does not describe the map: no sigma, no Gaussian-tail estimate.
# A flat run (a box marginal) fits with R^2 = 0.83; a sampled Gaussian with 1.
GAUSSIAN_R2 = 0.9
# The "asymptotically Gaussian" test: joint fit R^2 and |excess kurtosis| of every marginal.
SHAPE_R2 = 0.95
SHAPE_KURTOSIS = 0.5


@dataclass(frozen=True)
class GaussianFit:
    """Least-squares fit of ``amplitude * exp(-(x - center)^2 / (2 sigma^2))`` to one axis marginal.

    ``sigma`` and ``center`` are in pixels; ``amplitude`` is relative to a marginal scaled to sum 1;
    ``r2`` is the coefficient of determination of the fit on that marginal (1 is perfect).
    """

    sigma: float
    center: float
    r2: float
    amplitude: float


@dataclass(frozen=True)
class GaussianFitND:
    """Joint fit of ``amplitude * exp(-sum_a (x_a - center_a)^2 / (2 sigma_a^2))`` to a whole map
    scaled to sum 1 (per-axis tuples in axis order; ``r2`` on the map's pixels)."""

    sigma: tuple[float, ...]
    center: tuple[float, ...]
    amplitude: float
    r2: float


@dataclass(frozen=True)
class GaussianShape:
    """The "asymptotically Gaussian" test of one map (see :func:`gaussian_shape`)."""

    gaussian: bool
    r2: float
    excess_kurtosis: tuple[float, ...]
    reason: str


_NAN_FIT = GaussianFit(NAN, NAN, NAN, NAN)


def normal_cdf(z):
    """The standard normal CDF (``scipy.special.ndtr``)."""
    return special.ndtr(z)


def _gauss(x: np.ndarray, a: float, mu: float, s: float) -> np.ndarray:
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2)


def _r2(y: np.ndarray, f: np.ndarray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot <= 0:
        return NAN
    return 1.0 - float(((y - f) ** 2).sum()) / ss_tot


def _moments_1d(y: np.ndarray) -> tuple[float, float]:
    x = np.arange(y.size, dtype=np.float64)
    mu = float((x * y).sum())
    return mu, math.sqrt(max(float(((x - mu) ** 2 * y).sum()), 0.0))


def fit_gaussian_1d(marginal: np.ndarray) -> GaussianFit:
    """Fit a Gaussian to a non-negative 1-D profile (scaled to sum 1) with
    ``scipy.optimize.curve_fit``, started from its moments and its peak.

    Profiles with fewer than three non-zero pixels get the moment estimates (``sigma`` may be 0); a
    fit that does not converge keeps the moment estimates too (R² then says how well they do)."""
    y = np.asarray(marginal, dtype=np.float64)
    total = y.sum() if y.ndim == 1 else 0.0
    if y.ndim != 1 or total <= 0 or not np.all(np.isfinite(y)):
        return _NAN_FIT
    y = y / total
    x = np.arange(y.size, dtype=np.float64)
    mu, s = _moments_1d(y)
    a = float(y.max())
    if np.count_nonzero(y) < 3 or s < 1e-6:
        f = _gauss(x, a, mu, s) if s > 0 else np.where(np.isclose(x, mu), a, 0.0)
        return GaussianFit(s, mu, _r2(y, f), a)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            (a, mu, s), _ = optimize.curve_fit(_gauss, x, y, p0=(a, mu, s), method="lm",
                                               maxfev=2000, ftol=1e-12, xtol=1e-12)
    except (RuntimeError, ValueError):
        pass  # keep the moment estimates
    s = abs(float(s))
    return GaussianFit(s, float(mu), _r2(y, _gauss(x, a, mu, s)), float(a))


def gaussian_fit(values: np.ndarray) -> tuple[GaussianFit, ...]:
    """Per-axis Gaussian fits to the axis marginals of the map (raw scaling)."""
    m = np.asarray(values, dtype=np.float64)
    return tuple(fit_gaussian_1d(m.sum(axis=tuple(b for b in range(m.ndim) if b != a)))
                 for a in range(m.ndim))


def fit_gaussian_nd(values: np.ndarray, start: tuple[GaussianFit, ...] | None = None) -> GaussianFitND:
    """One joint least-squares fit of a separable, axis-aligned Gaussian to the whole map (scaled to
    sum 1), started from the per-axis marginal fits ``start`` (computed when not given). NaN fields
    when the map is empty or a marginal fit failed."""
    m = np.asarray(values, dtype=np.float64)
    total = m.sum()
    nan = GaussianFitND((NAN,) * m.ndim, (NAN,) * m.ndim, NAN, NAN)
    if total <= 0 or not np.all(np.isfinite(m)):
        return nan
    m = m / total
    start = start or gaussian_fit(m)
    if any(not (math.isfinite(f.sigma) and f.sigma > 0) for f in start):
        return nan
    axes = [np.arange(n, dtype=np.float64) for n in m.shape]
    p0 = np.array([float(m.max())] + [f.center for f in start] + [f.sigma for f in start])
    k = m.ndim
    flat = m.ravel()

    def parts(p: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        factors = [np.exp(-0.5 * ((x - mu) / s) ** 2) for x, mu, s in zip(axes, p[1:1 + k], p[1 + k:])]
        model = factors[0]
        for f in factors[1:]:
            model = np.multiply.outer(model, f)
        return factors, p[0] * model

    def residual(p: np.ndarray) -> np.ndarray:
        return parts(p)[1].ravel() - flat

    def jacobian(p: np.ndarray) -> np.ndarray:
        _, model = parts(p)
        cols = [(model / p[0]).ravel() if p[0] != 0 else np.zeros(model.size)]
        for a in range(k):
            shape = [1] * k
            shape[a] = m.shape[a]
            d = (axes[a] - p[1 + a]).reshape(shape)
            s = p[1 + k + a]
            cols.append((model * d / s**2).ravel())
        for a in range(k):
            shape = [1] * k
            shape[a] = m.shape[a]
            d = (axes[a] - p[1 + a]).reshape(shape)
            s = p[1 + k + a]
            cols.append((model * d**2 / s**3).ravel())
        return np.stack(cols, axis=1)

    try:
        fit = optimize.least_squares(residual, p0, jac=jacobian, method="lm", max_nfev=200,
                                     ftol=1e-12, xtol=1e-12)
        p = fit.x
    except (ValueError, np.linalg.LinAlgError):
        p = p0
    sig = tuple(abs(float(s)) for s in p[1 + k:])
    _, model = parts(np.concatenate([p[:1 + k], sig]))
    return GaussianFitND(sigma=sig, center=tuple(float(c) for c in p[1:1 + k]), amplitude=float(p[0]),
                         r2=_r2(flat, model.ravel()))


def is_gaussian(fits: tuple[GaussianFit, ...]) -> bool:
    """The criterion under which a Gaussian σ describes a map: every axis marginal's fit has
    ``R² >= GAUSSIAN_R2`` (0.9). False for NaN fits."""
    return all(math.isfinite(f.r2) and f.r2 >= GAUSSIAN_R2 for f in fits)


def excess_kurtosis(marginal: np.ndarray) -> float:
    """Excess kurtosis ``E[(x−μ)⁴]/σ⁴ − 3`` of a non-negative profile read as a mass distribution
    (0 for a Gaussian, −1.2 for a flat run, −1.5/n for the path counts of n 3-wide uniform kernels,
    positive for heavy tails). NaN for an empty or single-pixel profile."""
    y = np.asarray(marginal, dtype=np.float64)
    total = y.sum()
    if total <= 0:
        return NAN
    y = y / total
    x = np.arange(y.size, dtype=np.float64)
    mu = float((x * y).sum())
    var = float(((x - mu) ** 2 * y).sum())
    if var <= 0:
        return NAN
    return float(((x - mu) ** 4 * y).sum()) / var**2 - 3.0


def gaussian_shape(joint: GaussianFitND, marginals: list[np.ndarray]) -> GaussianShape:
    """The "asymptotically Gaussian" test.

    Luo et al. (2016) show that the ERF of a deep stack of small kernels tends to a Gaussian (a
    central-limit effect: its marginals are repeated self-convolutions of the kernels); the
    large-kernel ConvNets (RepLKNet 2022, SLaK 2023, UniRepLKNet 2024) report ERFs that leave that
    regime — flat, wide plateaus or heavy tails. rflens calls a map *Gaussian-shaped* when both

    - the joint separable Gaussian fit explains the map: ``R² >= SHAPE_R2`` (0.95), and
    - every marginal's excess kurtosis is within ``±SHAPE_KURTOSIS`` (0.5) of a Gaussian's 0
      (a flat field has −1.2, one 3-wide uniform kernel −1.5, three of them −0.5).
    """
    kurt = tuple(excess_kurtosis(y) for y in marginals)
    r2 = joint.r2
    if not math.isfinite(r2) or any(not math.isfinite(k) for k in kurt):
        return GaussianShape(False, r2, kurt, "undefined (empty map or a single pixel)")
    bad = [f"axis {a} excess kurtosis {k:+.2f} outside ±{SHAPE_KURTOSIS:g}"
           for a, k in enumerate(kurt) if abs(k) > SHAPE_KURTOSIS]
    if r2 < SHAPE_R2:
        bad.insert(0, f"joint fit R² {r2:.3f} < {SHAPE_R2:g}")
    if bad:
        return GaussianShape(False, r2, kurt, "; ".join(bad))
    return GaussianShape(True, r2, kurt, f"joint fit R² {r2:.3f} >= {SHAPE_R2:g} and |excess "
                                         f"kurtosis| <= {SHAPE_KURTOSIS:g} on every axis")
