"""``stack-vs-large``: stacked small kernels vs one large kernel of the same TRF (Luo et al. 2016;
the VGG argument of Simonyan & Zisserman 2015).

Two 3×3 convs and one 5×5 conv see the same 5×5 TRF, three 3×3 and one 7×7 the same 7×7, but the
stack's ERF is more concentrated: with uniform weights its per-axis profile is ``1 2 3 2 1`` instead
of flat, so σ² = 2·8/12 = 4/3 against 24/12 = 2 (and 2 against 4 for the 7×7 pair).

Each model is a 2-D chain of 'same' convs probed at the centre unit of a ``size``×``size`` input,
measured twice with :func:`rflens.effective_receptive_field`: ``uniform`` (``weights="uniform",
activations="linear"``, one sample, exact) and ``random + ReLU`` (``channels`` channels, a ReLU after
each conv, ``weights="random"``: a fresh He-normal draw per sample, ``samples`` noise inputs).
Reported: the TRF size, σ (Gaussian fit, mean of both axes), the moment standard deviation, and
RepLKNet's high-contribution area ratio on the raw map (area of the smallest centred square holding
more than t of the mass / input area, t = 20, 30, 50, 99 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import nn

from rflens.experiments.core import Check, ExperimentResult, HeConv2d, fmt, mean_sigma, measure_erf

__all__ = ["StackVsLargeResult", "run", "PAIRS"]

# (label, kernels of the stack, kernel of the single layer)
PAIRS = (("2×3×3 vs 5×5", (3, 3), 5), ("3×3×3 vs 7×7", (3, 3, 3), 7))
THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
SETTINGS = {"uniform": {"weights": "uniform", "activations": "linear"},
            "random + ReLU": {"weights": "random", "activations": "as-is"}}


@dataclass
class Measurement:
    """One model under one setting: ``sigma`` (Gaussian fit, mean of axes, px), ``std`` (moments,
    mean of axes, px), ``trf`` size, ``area_ratio[t]`` (raw high-contribution area ratio),
    ``side[t]`` (its square side, px), ``map`` the normalised ERF over the TRF box."""

    model: str
    trf: int
    sigma: float
    std: float
    area_ratio: dict[float, float]
    side: dict[float, int | None]
    map: list[list[float]]

    def to_dict(self) -> dict:
        from rflens.experiments.core import jsonable

        return {k: jsonable(v) for k, v in self.__dict__.items()}


@dataclass(kw_only=True)
class StackVsLargeResult(ExperimentResult):
    """``pairs[label][setting] = (stack, large)`` measurements; ``input_size`` in pixels."""

    input_size: int
    pairs: dict[str, dict[str, tuple[Measurement, Measurement]]]

    def figure(self):
        return _figure(self)


def chain(kernels: tuple[int, ...], channels: int) -> nn.Sequential:
    """'Same' 2-D convs with the given kernel sizes (He-normal draws, no bias), a ReLU after each."""
    layers: list[nn.Module] = []
    for i, k in enumerate(kernels):
        layers += [HeConv2d(1 if i == 0 else channels, channels, k, padding=k // 2, bias=False),
                   nn.ReLU()]
    return nn.Sequential(*layers)


def _measure(kernels: tuple[int, ...], setting: str, size: int, channels: int, samples: int,
             seed: int, notes: list[str]) -> Measurement:
    k = kernels[0]
    name = f"{len(kernels)}×{k}×{k}" if len(kernels) > 1 else f"{k}×{k}"
    kwargs = dict(SETTINGS[setting], samples=1 if setting == "uniform" else samples, seed=seed)
    erf = measure_erf(chain(kernels, channels), (1, size, size), notes, label=f"{name}, {setting}",
                      **kwargs)
    m = erf.metrics
    (r0, r1), (c0, c1) = erf.trf.box
    crop = erf.normalized[max(r0, 0):r1 + 1, max(c0, 0):c1 + 1]
    return Measurement(model=name, trf=erf.trf.size[0], sigma=mean_sigma(erf),
                       std=float(np.mean(m.std)), area_ratio={t: m.hca_raw[t] for t in THRESHOLDS},
                       side={t: m.hca_side_raw[t] for t in THRESHOLDS}, map=crop.tolist())


def run(size: int = 21, channels: int = 8, samples: int = 256, seed: int = 0) -> StackVsLargeResult:
    """Compare each pair of :data:`PAIRS` under both settings on a ``size``×``size`` input."""
    notes: list[str] = []
    pairs: dict = {}
    checks: list[Check] = []
    for label, stack, large in PAIRS:
        pairs[label] = {s: (_measure(stack, s, size, channels, samples, seed, notes),
                            _measure((large,), s, size, channels, samples, seed, notes))
                        for s in SETTINGS}
        checks += _checks(label, pairs[label])
    return StackVsLargeResult(
        name="stack-vs-large", title="Stacked 3×3 convs vs one large kernel of the same TRF",
        checks=checks,
        settings={"input": f"1×{size}×{size}", "unit": "centre", "channels (random)": channels,
                  "samples (random)": samples, "samples (uniform)": 1,
                  "weights (random)": "He-normal, a fresh draw per sample", "area ratio":
                  "raw high-contribution area ratio, t = 20/30/50/99 %", "seed": seed},
        notes=notes, input_size=size, pairs=pairs)


def _checks(label: str, by_setting: dict[str, tuple[Measurement, Measurement]]) -> list[Check]:
    stack, large = by_setting["uniform"]
    checks = [Check(f"{label}: TRF size", "equal", f"{stack.trf} vs {large.trf}", stack.trf == large.trf)]
    for setting, (s, l) in by_setting.items():
        expected = "stack smaller"
        if setting == "uniform":  # exact moment std per axis: sqrt(n (k^2 - 1) / 12)
            expected += (f" (exact std {math.sqrt(_variance(stack.model)):.3f} vs "
                         f"{math.sqrt(_variance(large.model)):.3f})")
        checks.append(Check(f"{label}, {setting}: σ stack < σ large", expected,
                            f"σ {fmt(s.sigma)} vs {fmt(l.sigma)} (std {fmt(s.std)} vs {fmt(l.std)})",
                            s.sigma < l.sigma and s.std < l.std, s.sigma / l.sigma))
        ratios = " / ".join(f"{fmt(s.area_ratio[t], 4)}:{fmt(l.area_ratio[t], 4)}" for t in THRESHOLDS)
        never_larger = all(s.area_ratio[t] <= l.area_ratio[t] for t in THRESHOLDS)
        smaller_once = any(s.area_ratio[t] < l.area_ratio[t] for t in THRESHOLDS)
        checks.append(Check(f"{label}, {setting}: area ratio t=20/30/50/99% (stack:large)",
                            "stack ≤ large, < for some t", ratios, never_larger and smaller_once))
    return checks


def _variance(model: str) -> float:
    """Exact per-axis variance ``n (k² - 1) / 12`` of a uniform chain named ``n×k×k`` or ``k×k``."""
    parts = [int(p) for p in model.split("×")]
    n, k = (parts[0], parts[1]) if len(parts) == 3 else (1, parts[0])
    return n * (k * k - 1) / 12


# --- figure ---------------------------------------------------------------------------------------

def _figure(r: StackVsLargeResult):
    from rflens import plot

    fig = plot.RFFigure(figsize=(12.5, 3.6 * len(r.pairs)), dpi=plot.DPI, layout="constrained")
    grid = fig.subplots(len(r.pairs), 3, squeeze=False)
    for row, (label, by_setting) in zip(grid, r.pairs.items()):
        stack, large = by_setting["random + ReLU"]
        peak = max(np.max(stack.map), np.max(large.map))
        for ax, m in zip(row[:2], (stack, large)):
            values = np.asarray(m.map)
            half = (values.shape[0] - 1) / 2
            image = ax.imshow(values, cmap="viridis", vmin=0, vmax=peak, interpolation="nearest",
                              extent=(-half - 0.5, half + 0.5, half + 0.5, -half - 0.5))
            ax.set_title(f"{m.model}, random + ReLU: σ {m.sigma:.2f}, TRF {m.trf}", fontsize=9)
            ax.set_xlabel("column − centre (px)")
            ax.set_ylabel("row − centre (px)")
        fig.colorbar(image, ax=row[1], fraction=0.046, pad=0.03, label="share of ERF mass")
        _profiles(row[2], by_setting, label)
    fig.suptitle(f"stack-vs-large: equal TRF, different ERF (input {r.input_size}×{r.input_size}, "
                 "centre unit)", fontsize=10)
    return fig


def _profiles(ax, by_setting: dict[str, tuple[Measurement, Measurement]], label: str) -> None:
    colors = ("#d62728", "#1f77b4")
    for setting, style in (("uniform", "o:"), ("random + ReLU", "s-")):
        for m, c in zip(by_setting[setting], colors):
            y = np.asarray(m.map).sum(axis=1)
            x = np.arange(y.size) - (y.size - 1) / 2
            ax.plot(x, y, style, color=c, ms=3.5, lw=1.1, label=f"{m.model}, {setting}: σ {m.sigma:.2f}")
    ax.set_xlabel("row − centre (px)")
    ax.set_ylabel("row marginal (share of mass)")
    ax.set_title(f"{label}: per-axis profiles", fontsize=9)
    ax.legend(fontsize=7)
