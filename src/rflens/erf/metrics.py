"""Metrics of an effective-receptive-field map. Pure numpy; knows nothing of torch.

A *map* is a non-negative float array over the input's spatial axes (``(H, W)`` for images, any
number of axes in general), indexed by 0-based input pixel. Every metric states the scaling it uses:

- **raw**: the map as measured (the per-sample mean of the reduced input gradient), read as a mass
  distribution: only ratios of pixel values matter, so any constant factor is irrelevant.
- **log10**: ``log10(x + 1)`` of that per-sample mean map, as RepLKNet (Ding et al., CVPR 2022) does
  before its high-contribution area ratio. Unlike *raw*, this scaling depends on the absolute size
  of the gradients (tiny gradients make it linear again).

Coordinates and units: positions are pixel indices (pixel ``j`` covers ``[j - 0.5, j + 0.5]``),
lengths are pixels, areas are fractions of the input area. A threshold that is never reached, an
empty (all-zero) map or a fit that is undefined yields NaN, never an exception.

The Gaussian fits live in :mod:`rflens.erf.gaussian`, the published read-outs (RepLKNet's area
ratios, OpenERF's radial mass) in :mod:`rflens.erf.protocols`; :func:`compute_metrics` gathers all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rflens.erf.gaussian import (GAUSSIAN_R2, GaussianFit, fit_gaussian_1d, fit_gaussian_nd,
                                 gaussian_fit, gaussian_shape, is_gaussian, normal_cdf)
from rflens.erf.protocols import (OPENERF_RADII, REPLKNET_THRESHOLDS, box_sum, image_center,
                                  radial_mass, replknet_area_ratios, summed_area)

__all__ = [
    "MASS_LEVELS", "HCA_THRESHOLDS", "GaussianFit", "ERFMetrics", "marginals", "moments",
    "fit_gaussian_1d", "gaussian_fit", "central_extent", "mass_radius", "mass_radii",
    "high_contribution_area",
    "log_scale", "gaussian_outside_fraction", "box_outside_fraction", "reference_pixel",
    "compute_metrics", "mass_levels",
]

MASS_LEVELS = (0.5, 0.9, 0.95)
HCA_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
RATIO_LEVEL = 0.95
NAN = float("nan")


def _as_map(values: np.ndarray) -> np.ndarray:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim == 0:
        raise ValueError("an ERF map needs at least one spatial axis")
    if not np.all(np.isfinite(m)):
        raise ValueError("the ERF map contains NaN or Inf values")
    if np.any(m < 0):
        raise ValueError("an ERF map must be non-negative (reduce the gradient with abs, relu or square)")
    return m


def marginals(values: np.ndarray) -> list[np.ndarray]:
    """Per-axis marginals: the map summed over every other axis (float64, raw scaling)."""
    m = _as_map(values)
    axes = range(m.ndim)
    return [m.sum(axis=tuple(a for a in axes if a != ax)) for ax in axes]


def moments(values: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Centre of mass and standard deviation per axis, in pixels (raw scaling).

    For a linear stack of ``n`` uniform ``k``-wide kernels the variance is exactly ``n*(k*k-1)/12``.
    """
    means, stds = [], []
    for y in marginals(values):
        total = y.sum()
        if total <= 0:
            means.append(NAN)
            stds.append(NAN)
            continue
        x = np.arange(y.size, dtype=np.float64)
        mu = float((x * y).sum() / total)
        var = float(((x - mu) ** 2 * y).sum() / total)
        means.append(mu)
        stds.append(math.sqrt(max(var, 0.0)))
    return tuple(means), tuple(stds)


def _quantile(y: np.ndarray, q: float) -> float:
    """Position (pixels) below which a fraction ``q`` of the profile's mass lies; each pixel's mass is
    spread uniformly over ``[j - 0.5, j + 0.5]``."""
    cum = np.cumsum(y)
    target = q * cum[-1]
    j = int(np.searchsorted(cum, target, side="left"))
    j = min(j, y.size - 1)
    while j > 0 and y[j] == 0:  # never land inside an empty stretch
        j -= 1
    before = cum[j - 1] if j > 0 else 0.0
    frac = (target - before) / y[j] if y[j] > 0 else 0.0
    return j - 0.5 + float(min(max(frac, 0.0), 1.0))


def central_extent(values: np.ndarray, p: float) -> tuple[float, ...]:
    """Per axis, the length in pixels of the central interval holding a fraction ``p`` of the mass of
    the axis marginal: from its ``(1-p)/2`` to its ``(1+p)/2`` quantile (raw scaling, continuous:
    a uniform run of ``s`` pixels has extent ``p * s``)."""
    out = []
    for y in marginals(values):
        if y.sum() <= 0 or not 0 < p <= 1:
            out.append(NAN)
            continue
        out.append(_quantile(y, (1 + p) / 2) - _quantile(y, (1 - p) / 2))
    return tuple(out)


def mass_radius(values: np.ndarray, p: float, center: tuple[float, ...] | None = None) -> float:
    """Smallest Euclidean distance ``r`` (pixels, from ``center``, default the centre of mass) such that
    the pixels whose centres lie within ``r`` hold at least a fraction ``p`` of the mass (raw)."""
    return mass_radii(values, (p,), center)[0]


def mass_radii(values: np.ndarray, levels: tuple[float, ...],
               center: tuple[float, ...] | None = None) -> tuple[float, ...]:
    """:func:`mass_radius` for several levels with one sort."""
    m = _as_map(values)
    total = m.sum()
    if total <= 0:
        return tuple(NAN for _ in levels)
    if center is None:
        center = moments(m)[0]
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in m.shape], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, center))).ravel()
    order = np.argsort(dist, kind="stable")
    cum = np.cumsum(m.ravel()[order])
    out = []
    for p in levels:
        idx = int(np.searchsorted(cum, p * total * (1 - 1e-12), side="left")) if 0 < p <= 1 else cum.size
        out.append(float(dist[order[idx]]) if idx < cum.size else NAN)
    return tuple(out)


def reference_pixel(values: np.ndarray, center: tuple[float, ...] | None = None) -> tuple[int, ...]:
    """The pixel nearest to ``center`` (default: the centre of mass), halves rounded down, clipped
    to the map. Centred squares and radii of :func:`compute_metrics` are taken around it."""
    m = np.asarray(values)
    if center is None:
        center = moments(m)[0]
    pix = []
    for c, n in zip(center, m.shape):
        c = (n - 1) / 2 if not math.isfinite(c) else c
        pix.append(int(min(max(math.ceil(c - 0.5), 0), n - 1)))
    return tuple(pix)


def high_contribution_area(values: np.ndarray, t: float, center: tuple[int, ...] | None = None,
                           scaling: str = "raw") -> tuple[int | None, float]:
    """RepLKNet's high-contribution area ratio: the smallest centred square (cube in 3-D) of odd side
    ``2i+1`` (i = 0, 1, ...) around pixel ``center`` (default :func:`reference_pixel`) whose mass
    *exceeds* a fraction ``t`` of the total; returns ``(side, area / input area)``. The square is
    clipped to the input, and the area counted is the clipped one. ``scaling`` is ``"raw"`` or
    ``"log10"`` (``log10(x + 1)`` first). Unreached (``t >= 1`` or an empty map): ``(None, nan)``."""
    m = _as_map(values)
    if scaling == "log10":
        m = log_scale(m)
    elif scaling != "raw":
        raise ValueError(f"unknown scaling {scaling!r}; use 'raw' or 'log10'")
    total = m.sum()
    if total <= 0:
        return None, NAN
    c = list(reference_pixel(m) if center is None else center)
    sat = summed_area(m)
    reach = max(max(ci, n - 1 - ci) for ci, n in zip(c, m.shape))
    for i in range(reach + 1):
        lo = [max(ci - i, 0) for ci in c]
        hi = [min(ci + i, n - 1) for ci, n in zip(c, m.shape)]
        if box_sum(sat, lo, hi) > t * total:
            area = math.prod(h - l + 1 for l, h in zip(lo, hi))
            return 2 * i + 1, area / m.size
    return None, NAN


def log_scale(values: np.ndarray) -> np.ndarray:
    """RepLKNet's scaling ``log10(x + 1)`` (applied to the per-sample mean map)."""
    return np.log10(_as_map(values) + 1.0)


def gaussian_outside_fraction(fits: tuple[GaussianFit, ...], shape: tuple[int, ...]) -> float:
    """Estimated fraction of the ERF mass outside the input: the mass of the fitted separable Gaussian
    (one fit per axis) that falls outside ``[-0.5, n - 0.5]`` on some axis. NaN when a fit failed."""
    inside = 1.0
    for fit, n in zip(fits, shape):
        if not (math.isfinite(fit.sigma) and math.isfinite(fit.center)):
            return NAN
        if fit.sigma == 0:
            inside *= 1.0 if -0.5 <= fit.center <= n - 0.5 else 0.0
            continue
        inside *= float(normal_cdf((n - 0.5 - fit.center) / fit.sigma)
                        - normal_cdf((-0.5 - fit.center) / fit.sigma))
    return float(min(max(1.0 - inside, 0.0), 1.0))


def box_outside_fraction(box: tuple[tuple[int, int], ...], shape: tuple[int, ...]) -> float:
    """Fraction of the area of an (unclipped, inclusive) box that lies outside the input."""
    inside = 1.0
    for (lo, hi), n in zip(box, shape):
        size = hi - lo + 1
        if size <= 0:
            return NAN
        inside *= max(0, min(hi, n - 1) - max(lo, 0) + 1) / size
    return 1.0 - inside


NOT_GAUSSIAN = "not estimated: the map is not Gaussian"


@dataclass(frozen=True)
class ERFMetrics:
    """All ERF metrics of one map. Per-axis values are tuples in axis order (H, W for images).

    - ``sigma``, ``center``, ``r2``, ``amplitude``: per-axis Gaussian fit to the axis marginals (raw
      scaling; ``amplitude`` as a share of the marginal's mass per pixel, so a plot can draw the
      fit). ``gaussian``: whether those fits describe the map at all (every ``r2 >= 0.9``,
      :func:`rflens.erf.gaussian.is_gaussian`); renderers print "not Gaussian" instead of σ otherwise.
    - ``joint_sigma``, ``joint_center``, ``joint_amplitude``, ``joint_r2``: one joint fit of a
      separable Gaussian to the whole map scaled to sum 1, R² on its pixels.
    - ``gaussian_shaped``, ``excess_kurtosis``, ``shape_reason``: the "asymptotically Gaussian"
      test (:func:`rflens.erf.gaussian.gaussian_shape`).
    - ``mean``, ``std``: centre of mass and standard deviation per axis (raw scaling).
    - ``reference_pixel``: the pixel centred squares are built around (the TRF centre of the probed
      unit when known, else the centre of mass); ``radius_center``: the same point unrounded;
      ``center_offset``: ``radius_center`` minus the input's centre ``(n - 1) / 2`` per axis.
    - ``mass_radius[p]``: Euclidean radius (pixels) around ``radius_center`` holding ``p`` (raw).
    - ``radial_mass[r]``: share of the mass within ``r`` px of ``radius_center`` (OpenERF's radii).
    - ``extent[p]``: per-axis central interval holding ``p`` of the marginal mass (pixels, raw).
    - ``erf_trf_ratio``: per axis, ``extent[0.95] / TRF size`` (NaN without a TRF): the share of
      the theoretical field that holds the central 95 % of the ERF mass; 0.95 for a flat ERF that
      fills its TRF, shrinking like ``1/sqrt(n)`` for ``n`` stacked layers.
    - ``hca_raw[t]`` / ``hca_log10[t]`` and ``hca_side_*``: high-contribution area ratio (area of
      the smallest centred square, clipped to the input, holding more than ``t`` of the mass /
      input area) on the raw and on the ``log10(x + 1)`` map; the side in pixels.
    - ``replknet[t]``: ``(side, area ratio)`` exactly as RepLKNet publishes it
      (:func:`rflens.erf.protocols.replknet_area_ratios`), ``(None, nan)`` when never reached.
    - ``outside_fraction``: estimated share of ERF mass outside the input (see ``outside_method``;
      NaN with the method saying so when the map is not Gaussian).
    - ``trf_outside_fraction``: share of the TRF box's area that lies outside the input.
    """

    sigma: tuple[float, ...]
    center: tuple[float, ...]
    r2: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reference_pixel: tuple[int, ...]
    radius_center: tuple[float, ...]
    mass_radius: dict[float, float]
    extent: dict[float, tuple[float, ...]]
    erf_trf_ratio: tuple[float, ...]
    hca_raw: dict[float, float]
    hca_log10: dict[float, float]
    hca_side_raw: dict[float, int | None]
    hca_side_log10: dict[float, int | None]
    outside_fraction: float
    trf_outside_fraction: float
    outside_method: str = "gaussian-tail estimate"
    notes: dict[str, str] = field(default_factory=dict)
    amplitude: tuple[float, ...] = ()
    gaussian: bool = False
    joint_sigma: tuple[float, ...] = ()
    joint_center: tuple[float, ...] = ()
    joint_amplitude: float = NAN
    joint_r2: float = NAN
    gaussian_shaped: bool = False
    excess_kurtosis: tuple[float, ...] = ()
    shape_reason: str = ""
    center_offset: tuple[float, ...] = ()
    radial_mass: dict[float, float] = field(default_factory=dict)
    replknet: dict[float, tuple[int | None, float]] = field(default_factory=dict)

    @property
    def center_distance(self) -> float:
        """Euclidean distance (pixels) from ``radius_center`` to the input's centre."""
        return math.hypot(*self.center_offset) if self.center_offset else NAN

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None), each group stating its scaling."""
        return {
            "gaussian": {"scaling": "raw; per-axis marginals scaled to sum 1, least-squares fit "
                                    "A*exp(-(x-center)^2/(2*sigma^2)); pixels",
                         "sigma": _clean(self.sigma), "center": _clean(self.center),
                         "amplitude": _clean(self.amplitude), "r2": _clean(self.r2),
                         "is_gaussian": self.gaussian,
                         "criterion": f"every marginal fit has R^2 >= {GAUSSIAN_R2:g}"},
            "gaussian_joint": {"scaling": "raw; whole map scaled to sum 1, separable axis-aligned "
                                          "Gaussian fit; pixels", "sigma": _clean(self.joint_sigma),
                               "center": _clean(self.joint_center),
                               "amplitude": _clean(self.joint_amplitude), "r2": _clean(self.joint_r2)},
            "gaussian_shape": {"gaussian_shaped": self.gaussian_shaped,
                               "excess_kurtosis": _clean(self.excess_kurtosis),
                               "reason": self.shape_reason},
            "moments": {"scaling": "raw; per-axis marginals as mass distributions; pixels",
                        "mean": _clean(self.mean), "std": _clean(self.std)},
            "reference_pixel": list(self.reference_pixel),
            "radius_center": _clean(self.radius_center),
            "center_offset": {"definition": "radius_center minus the input centre (n-1)/2, pixels",
                              "value": _clean(self.center_offset),
                              "distance": _clean(self.center_distance)},
            "mass_radius": {"scaling": "raw; Euclidean radius in pixels around radius_center",
                            **{_pct(p): _clean(v) for p, v in self.mass_radius.items()}},
            "radial_mass": {"scaling": "raw, sum 1; share within r pixels of radius_center "
                                       "(OpenERF's radial cumulative mass)",
                            **{f"{r:g}": _clean(v) for r, v in self.radial_mass.items()}},
            "extent": {"scaling": "raw; per-axis central interval of the marginal, pixels",
                       **{_pct(p): _clean(v) for p, v in self.extent.items()}},
            "erf_trf_ratio": {"definition": "per axis: 95%-mass central extent / TRF size",
                              "value": _clean(self.erf_trf_ratio)},
            "high_contribution_area_ratio": {
                "definition": "area of the smallest centred odd square around reference_pixel "
                              "holding more than t of the mass, clipped to the input, / input area",
                "raw": {"scaling": "raw", **{_pct(t): _clean(v) for t, v in self.hca_raw.items()}},
                "log10": {"scaling": "log10(x + 1) of the per-sample mean map",
                          **{_pct(t): _clean(v) for t, v in self.hca_log10.items()}},
                "side_raw": {_pct(t): v for t, v in self.hca_side_raw.items()},
                "side_log10": {_pct(t): v for t, v in self.hca_side_log10.items()},
            },
            "replknet2022": {
                "definition": "A = log10(M + 1) / max; smallest square of side 2i+1 (i >= 1) around "
                              "reference_pixel, inside the input, holding more than t of A; side "
                              "and side^2 / input area; null: never reached",
                **{_pct(t): {"side": side, "area_ratio": _clean(ratio)}
                   for t, (side, ratio) in self.replknet.items()}},
            "outside_fraction": {"method": self.outside_method, "value": _clean(self.outside_fraction)},
            "trf_outside_fraction": {"definition": "share of the unclipped TRF box area outside the input",
                                     "value": _clean(self.trf_outside_fraction)},
        }


def _pct(p: float) -> str:
    return f"{round(p * 100, 6):g}"


def _clean(value):
    if isinstance(value, (tuple, list)):
        return [_clean(v) for v in value]
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def compute_metrics(raw: np.ndarray, trf_size: tuple[int, ...] | None = None,
                    trf_box: tuple[tuple[int, int], ...] | None = None,
                    center: tuple[float, ...] | None = None,
                    outside_fraction: float | None = None,
                    outside_method: str = "gaussian-tail estimate") -> ERFMetrics:
    """Every metric of :class:`ERFMetrics` for a per-sample mean map ``raw``.

    ``center`` (pixels, e.g. the TRF centre of the probed unit) picks the reference pixel for
    radii and squares; default the centre of mass. ``outside_fraction`` overrides the Gaussian-tail
    estimate (an analytic map knows its exact value); without it, a map that is not Gaussian gets
    NaN and ``outside_method`` says why.
    """
    m = _as_map(raw)
    fits = gaussian_fit(m)
    joint = fit_gaussian_nd(m, fits)
    shape = gaussian_shape(joint, marginals(m))
    mean, std = moments(m)
    ref = reference_pixel(m, center)
    radius_center = tuple(float(c) for c in (mean if center is None else center))
    extent = {p: central_extent(m, p) for p in MASS_LEVELS}
    ratio = extent[RATIO_LEVEL]
    if trf_size is not None:
        ratio = tuple(e / s if s > 0 else NAN for e, s in zip(ratio, trf_size))
    else:
        ratio = tuple(NAN for _ in ratio)
    hca = {s: {t: high_contribution_area(m, t, ref, s) for t in HCA_THRESHOLDS} for s in ("raw", "log10")}
    gaussian = is_gaussian(fits)
    if outside_fraction is None:
        if gaussian:
            outside_fraction = gaussian_outside_fraction(fits, m.shape)
        else:
            outside_fraction = NAN
            r2 = ", ".join("nan" if not math.isfinite(f.r2) else f"{f.r2:.2f}" for f in fits)
            outside_method = f"{NOT_GAUSSIAN} (marginal fit R² {r2} < {GAUSSIAN_R2:g})"
    return ERFMetrics(
        sigma=tuple(f.sigma for f in fits), center=tuple(f.center for f in fits),
        r2=tuple(f.r2 for f in fits), mean=mean, std=std, reference_pixel=ref,
        radius_center=radius_center,
        mass_radius=dict(zip(MASS_LEVELS, mass_radii(m, MASS_LEVELS, radius_center))),
        extent=extent, erf_trf_ratio=ratio,
        hca_raw={t: v[1] for t, v in hca["raw"].items()},
        hca_log10={t: v[1] for t, v in hca["log10"].items()},
        hca_side_raw={t: v[0] for t, v in hca["raw"].items()},
        hca_side_log10={t: v[0] for t, v in hca["log10"].items()},
        outside_fraction=float(outside_fraction),
        trf_outside_fraction=box_outside_fraction(trf_box, m.shape) if trf_box else NAN,
        outside_method=outside_method,
        amplitude=tuple(f.amplitude for f in fits), gaussian=gaussian,
        joint_sigma=joint.sigma, joint_center=joint.center, joint_amplitude=joint.amplitude,
        joint_r2=joint.r2, gaussian_shaped=shape.gaussian, excess_kurtosis=shape.excess_kurtosis,
        shape_reason=shape.reason,
        center_offset=tuple(c - i for c, i in zip(radius_center, image_center(m.shape))),
        radial_mass=radial_mass(m, radius_center, OPENERF_RADII),
        replknet=replknet_area_ratios(m, ref, REPLKNET_THRESHOLDS),
    )


def mass_levels(values: np.ndarray, fractions: Sequence[float] = (0.5, 0.9)) -> list[float]:
    """For each fraction ``p``, the map value ``v`` such that the pixels with value ``>= v`` hold at
    least ``p`` of the total mass (the highest-density region holding ``p``)."""
    flat = np.sort(np.asarray(values, dtype=np.float64).ravel())[::-1]
    cum = np.cumsum(flat)
    if cum.size == 0 or cum[-1] <= 0:
        return [math.nan for _ in fractions]
    return [float(flat[min(int(np.searchsorted(cum, p * cum[-1], side="left")), flat.size - 1)])
            for p in fractions]
