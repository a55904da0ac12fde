"""``sqrt-growth``: the ERF grows like √n while the TRF grows like n (Luo et al. 2016, sections
2.2-2.4 and figure 1).

A 1-D stack of ``n`` 3-wide stride-1 'same' convs with ``channels`` channels and a ReLU after each,
probed at the centre unit of its output on an input of ``length`` pixels (every TRF fits inside:
``2n + 1 <= 129 < 192``). Three settings of :func:`rflens.effective_receptive_field`:

- ``uniform``: ``weights="uniform", activations="linear"`` (one sample: it is deterministic);
  the ERF is the path count, σ² = n (k² - 1) / 12 exactly;
- ``random``: ``weights="random", activations="linear"`` (He-normal, a fresh draw per sample);
- ``random + ReLU``: ``weights="random", activations="as-is"``.

Per depth: σ (Gaussian fit), the moment standard deviation, the fit's R², and the ERF/TRF ratio
of :mod:`rflens.erf.metrics` (the central 95 %-mass extent / TRF size). The exponent is the slope of
``log σ`` vs ``log n`` over depths ``n >= fit_from``; the ERF/TRF slope likewise. Why ``fit_from``
(default 8): the laws are asymptotic — for a handful of layers the ERF still fills its TRF (the
95 % extent cannot exceed it) and the Gaussian fit of a near-flat profile overestimates σ; both
flatten the fitted slopes. The fit over every depth is reported too (``fit_all``). The finite-n
ERF/TRF slope is not exactly -0.5 even for an exact √n law: the TRF is ``2n + 1``, whose own slope
over 8…64 is about 0.97, so -0.47 is what a perfect √n law gives there (``trf_exponent``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from rflens.experiments.core import (Check, ExperimentResult, HeConv1d, PowerFit, fmt, measure_erf,
                                     power_fit, within)

__all__ = ["SqrtGrowthResult", "run", "DEPTHS", "SETTINGS", "BOUNDS"]

DEPTHS = (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64)
KERNEL = 3
# name -> keyword arguments of effective_receptive_field (samples added for the random settings)
SETTINGS: dict[str, dict] = {
    "uniform": {"weights": "uniform", "activations": "linear"},
    "random": {"weights": "random", "activations": "linear"},
    "random + ReLU": {"weights": "random", "activations": "as-is"},
}
# the σ-exponent bounds issue 4 set (0.5 ± 0.03 uniform, 0.5 ± 0.1 random + ReLU; random linear
# gets the random + ReLU bound) and the ERF/TRF slope bound
BOUNDS = {"uniform": 0.03, "random": 0.1, "random + ReLU": 0.1}
RATIO_BOUND = 0.1
PROFILE_DEPTHS = (4, 16, 64)


@dataclass
class Series:
    """One setting's measurements over ``depths`` (lists aligned with it): σ (Gaussian fit), the
    moment standard deviation, the fit's R², the ERF/TRF ratio and the TRF size per depth; power
    laws of σ over ``n >= fit_from`` (``fit``) and over every depth (``fit_all``), of the moment
    standard deviation (``std_fit``), and of the ERF/TRF ratio (``ratio_fit``, ``ratio_fit_all``);
    normalised profiles over the TRF at a few depths."""

    sigma: list[float]
    std: list[float]
    r2: list[float]
    erf_trf_ratio: list[float]
    trf_size: list[int]
    fit: PowerFit
    fit_all: PowerFit
    std_fit: PowerFit
    ratio_fit: PowerFit
    ratio_fit_all: PowerFit
    profiles: dict[int, list[float]]

    def to_dict(self) -> dict:
        from rflens.experiments.core import jsonable

        return {k: jsonable(v) for k, v in self.__dict__.items()}


@dataclass(kw_only=True)
class SqrtGrowthResult(ExperimentResult):
    """``series[setting]`` per setting of :data:`SETTINGS`; ``trf_exponent`` the slope of the TRF
    size ``2n + 1`` over the fit range (what the ERF/TRF slope is offset by at finite n)."""

    depths: list[int]
    fit_from: int
    series: dict[str, Series]
    trf_exponent: float
    uniform_variance_error: float

    def figure(self):
        return _figure(self)


def chain(depth: int, channels: int) -> nn.Sequential:
    """``depth`` 3-wide 'same' 1-D convs (He-normal draws, no bias), a ReLU after each."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [HeConv1d(1 if i == 0 else channels, channels, KERNEL, padding=KERNEL // 2,
                            bias=False), nn.ReLU()]
    return nn.Sequential(*layers)


def _series(setting: str, depths: tuple[int, ...], fit_from: int, channels: int, length: int,
            samples: int, seed: int, notes: list[str]) -> Series:
    kwargs = dict(SETTINGS[setting], samples=1 if setting == "uniform" else samples, seed=seed)
    rows = []
    profiles = {}
    for n in depths:
        erf = measure_erf(chain(n, channels), (1, length), notes, label=f"{setting}, n={n}", **kwargs)
        m = erf.metrics
        rows.append((m.sigma[0], m.std[0], m.r2[0], m.erf_trf_ratio[0], erf.trf.size[0]))
        if n in PROFILE_DEPTHS:
            lo, hi = erf.trf.box[0]
            profiles[n] = list(erf.normalized[max(lo, 0):hi + 1])
    sigma, std, r2, ratio, trf = (list(col) for col in zip(*rows))
    return Series(sigma=sigma, std=std, r2=r2, erf_trf_ratio=ratio, trf_size=trf,
                  fit=power_fit(depths, sigma, fit_from), fit_all=power_fit(depths, sigma),
                  std_fit=power_fit(depths, std, fit_from),
                  ratio_fit=power_fit(depths, ratio, fit_from), ratio_fit_all=power_fit(depths, ratio),
                  profiles=profiles)


def run(depths: tuple[int, ...] = DEPTHS, fit_from: int = 8, channels: int = 16, length: int = 192,
        samples: int = 256, seed: int = 0) -> SqrtGrowthResult:
    """Measure σ and the ERF/TRF ratio of the three settings at every depth in ``depths``."""
    depths = tuple(sorted(depths))
    if 2 * depths[-1] * (KERNEL // 2) + 1 > length:
        from rflens.errors import RflensError

        raise RflensError(f"length {length} is too small for depth {depths[-1]}: the TRF must fit")
    notes: list[str] = []
    series = {s: _series(s, depths, fit_from, channels, length, samples, seed, notes) for s in SETTINGS}
    fitted = [n for n in depths if n >= fit_from]
    trf_exponent = power_fit(fitted, [2 * n + 1 for n in fitted]).exponent
    exact = np.array([n * (KERNEL * KERNEL - 1) / 12 for n in depths])
    var_error = float(np.max(np.abs(np.array(series["uniform"].std) ** 2 / exact - 1)))
    return SqrtGrowthResult(
        name="sqrt-growth", title="ERF σ grows like √n, ERF/TRF shrinks like 1/√n",
        checks=_checks(series, var_error),
        settings={"input": f"1-D, 1×{length}", "kernel": KERNEL, "channels": channels,
                  "nonlinearity": "ReLU after every conv (identity when activations='linear')",
                  "unit": "centre of the last layer", "samples": samples,
                  "uniform samples": 1, "weights": "He-normal, a fresh draw per sample",
                  "fit": f"least squares on log-log, depths n >= {fit_from}", "seed": seed},
        notes=notes, depths=list(depths), fit_from=fit_from, series=series,
        trf_exponent=trf_exponent, uniform_variance_error=var_error)


def _checks(series: dict[str, Series], var_error: float) -> list[Check]:
    checks = [within(f"σ exponent, {name} (R² {fmt(s.fit.r2, 4)})", s.fit.exponent, 0.5, BOUNDS[name])
              for name, s in series.items()]
    checks += [within(f"ERF/TRF slope, {name} (R² {fmt(s.ratio_fit.r2, 4)})", s.ratio_fit.exponent,
                      -0.5, RATIO_BOUND) for name, s in series.items()]
    checks.append(Check("uniform: σ² (moments) = n(k²-1)/12", "exact (rel. err < 1e-9)",
                        f"max rel. err {var_error:.1e}", var_error < 1e-9, var_error))
    return checks


# --- figure ---------------------------------------------------------------------------------------

COLORS = {"uniform": "#1f77b4", "random": "#2ca02c", "random + ReLU": "#d62728"}


def _figure(r: SqrtGrowthResult):
    from rflens import plot

    fig = plot.RFFigure(figsize=(14.5, 4.3), dpi=plot.DPI, layout="constrained")
    ax_s, ax_r, ax_p = fig.subplots(1, 3)
    n = np.array(r.depths, dtype=float)
    fit_n = np.array([d for d in r.depths if d >= r.fit_from], dtype=float)
    for name, s in r.series.items():
        c = COLORS[name]
        ax_s.plot(n, s.sigma, "o", color=c, ms=4, label=f"{name}: exponent {s.fit.exponent:.3f}")
        ax_s.plot(fit_n, s.fit.prefactor * fit_n ** s.fit.exponent, "-", color=c, lw=1)
        ax_r.plot(n, s.erf_trf_ratio, "o", color=c, ms=4, label=f"{name}: slope {s.ratio_fit.exponent:.3f}")
        ax_r.plot(fit_n, s.ratio_fit.prefactor * fit_n ** s.ratio_fit.exponent, "-", color=c, lw=1)
    ax_s.plot(n, np.sqrt(n * (KERNEL ** 2 - 1) / 12), "k:", lw=1, label="√(n(k²-1)/12) exact")
    anchor = r.series["uniform"].ratio_fit
    ref = anchor.prefactor * fit_n[0] ** anchor.exponent * (n / fit_n[0]) ** -0.5
    ax_r.plot(n, ref, "k:", lw=1, label=f"∝ n^-0.5 (through uniform at n={r.fit_from})")
    for ax, what in ((ax_s, "ERF σ (Gaussian fit, px)"), (ax_r, "ERF/TRF (95% extent / TRF size)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvspan(r.fit_from, n[-1], color="0.93", zorder=0, label=f"fit range n ≥ {r.fit_from}")
        ax.set_xlabel("depth n (3-wide convs)")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    ax_s.set_title("σ over depth (log-log)", fontsize=9)
    ax_r.set_title("ERF/TRF ratio over depth (log-log)", fontsize=9)
    _profiles(ax_p, r)
    fig.suptitle("sqrt-growth: 1-D stacks of n 3-wide convs, centre unit", fontsize=10)
    return fig


def _profiles(ax, r: SqrtGrowthResult) -> None:
    styles = {"uniform": ":", "random + ReLU": "-"}
    for name, style in styles.items():
        for depth, profile in r.series[name].profiles.items():
            y = np.asarray(profile)
            x = np.arange(y.size) - (y.size - 1) / 2
            ax.plot(x, y, style, lw=1.2, label=f"{name}, n={depth}")
    ax.set_xlim(-35, 35)
    ax.set_xlabel("input pixel relative to the unit's centre")
    ax.set_ylabel("share of ERF mass per pixel")
    ax.set_title("ERF profiles (normalised sample means)", fontsize=9)
    ax.legend(fontsize=7)
