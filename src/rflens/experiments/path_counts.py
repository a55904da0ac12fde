"""``path-counts``: how many paths lead from each input pixel to one unit of a stack of ``n``
``k×k`` stride-1 convolutions (Luo et al. 2016, section 2.1).

With uniform kernels and no non-linearity the ERF *is* this count (up to a constant factor): per
axis the coefficients of ``(1 + x + ... + x^(k-1))^n`` — two 3×3 layers give ``1 2 3 2 1``, three
``1 3 6 7 6 3 1`` — and the 2-D grid is the outer product of the two axes, ``k^(2n)`` paths in all,
with per-axis variance ``n (k² - 1) / 12``.

Measured three ways that must agree exactly: :func:`rflens.analytic_erf` (exact Python integers),
an independent polynomial power computed here, and the gradient ERF of an ``nn.Sequential`` of
single-channel convs with uniform weights and linear activations (float64), rescaled by
``k^(2n)``. Coordinates of the grids are input pixels relative to the probed unit's centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from torch import nn

from rflens.experiments.core import Check, ExperimentResult, measure_erf

__all__ = ["PathCountsResult", "run", "polynomial_counts"]


@dataclass(kw_only=True)
class PathCountsResult(ExperimentResult):
    """Per depth ``n`` (keys): ``counts_1d`` per-axis integer counts, ``counts_2d`` the 2-D grid
    (rows × columns, exact integers), ``totals`` the number of paths, ``variance`` the exact per-axis
    variance in pixels², ``gradient_max_error`` the largest ``|gradient ERF * k^(2n) - count|``."""

    kernel: int
    depths: list[int]
    counts_1d: dict[int, list[int]]
    counts_2d: dict[int, list[list[int]]]
    totals: dict[int, int]
    variance: dict[int, Fraction]
    gradient_max_error: dict[int, float]

    def figure(self):
        from rflens import plot

        fig = plot.RFFigure(figsize=(4.2 * len(self.depths), 4.4), dpi=plot.DPI, layout="constrained")
        axes = fig.subplots(1, len(self.depths), squeeze=False)[0]
        for ax, n in zip(axes, self.depths):
            title = (f"{n} stacked {self.kernel}×{self.kernel} convs: {self.totals[n]} paths\n"
                     f"per axis {' '.join(map(str, self.counts_1d[n]))}, "
                     f"variance {self.variance[n]} px²")
            plot.path_counts([self.kernel] * n, ax=ax, title=title)
        fig.suptitle("Paths from each input pixel to one unit (exact integers)", fontsize=10)
        return fig


def polynomial_counts(kernel: int, depth: int) -> list[int]:
    """Coefficients of ``(1 + x + ... + x^(kernel-1)) ** depth`` by repeated polynomial
    multiplication in Python integers (independent of :mod:`rflens.erf.analytic`)."""
    coeffs = [1]
    for _ in range(depth):
        out = [0] * (len(coeffs) + kernel - 1)
        for i, c in enumerate(coeffs):
            for j in range(kernel):
                out[i + j] += c
        coeffs = out
    return coeffs


def _stack(depth: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(*[nn.Conv2d(1, 1, kernel, padding=kernel // 2, bias=False)
                           for _ in range(depth)])


def _gradient_error(depth: int, kernel: int, grid: np.ndarray, notes: list[str]) -> float:
    """Largest deviation of the rescaled gradient ERF (uniform weights, linear, float64) from the
    exact grid, over the whole input (zero expected outside the field)."""
    half = depth * (kernel // 2)
    size = 2 * half + 5
    erf = measure_erf(_stack(depth, kernel), (1, size, size), notes, label=f"{depth} layers",
                      samples=1, weights="uniform", activations="linear")
    scaled = erf.normalized * float(kernel ** (2 * depth))
    expected = np.zeros_like(scaled)
    c = size // 2
    expected[c - half:c + half + 1, c - half:c + half + 1] = grid.astype(np.float64)
    return float(np.abs(scaled - expected).max())


def _exact_variance(counts: list[int]) -> Fraction:
    total = sum(counts)
    mean = Fraction(sum(i * c for i, c in enumerate(counts)), total)
    return Fraction(sum(i * i * c for i, c in enumerate(counts)), total) - mean ** 2


def run(depths: tuple[int, ...] = (2, 3), kernel: int = 3, seed: int = 0) -> PathCountsResult:
    """Path counts of ``n`` stacked ``kernel×kernel`` convs for each ``n`` in ``depths``. ``seed`` is
    accepted for a uniform interface; nothing here is random."""
    from rflens.erf.analytic import analytic_erf

    notes: list[str] = []
    checks: list[Check] = []
    c1, c2, totals, variance, errors = {}, {}, {}, {}, {}
    for n in depths:
        result = analytic_erf([kernel] * n, ndim=2)
        axis = list(result.axis_counts[0])
        grid = result.counts
        c1[n] = axis
        c2[n] = [[int(v) for v in row] for row in grid]
        totals[n] = int(sum(int(v) for v in grid.ravel()))
        variance[n] = Fraction(result.variance()[0])
        errors[n] = _gradient_error(n, kernel, grid, notes)
        checks += _checks(n, kernel, axis, grid, totals[n], variance[n], errors[n])
    return PathCountsResult(
        name="path-counts", title="Path counts of stacked k×k convolutions", checks=checks,
        settings={"kernel": kernel, "depths": list(depths), "stride": 1, "padding": "same",
                  "gradient check": "1 sample, weights=uniform, activations=linear, float64"},
        notes=notes, kernel=kernel, depths=list(depths), counts_1d=c1, counts_2d=c2, totals=totals,
        variance=variance, gradient_max_error=errors)


def _checks(n: int, k: int, axis: list[int], grid: np.ndarray, total: int, var: Fraction,
            error: float) -> list[Check]:
    label = f"{n}×{k}×{k}"
    poly = polynomial_counts(k, n)
    outer = np.multiply.outer(np.array(poly, dtype=object), np.array(poly, dtype=object))
    expected_var = Fraction(n * (k * k - 1), 12)
    return [
        Check(f"{label}: per-axis path counts", " ".join(map(str, poly)), " ".join(map(str, axis)),
              axis == poly),
        Check(f"{label}: 2-D grid = outer product, total k^(2n)",
              f"{k ** (2 * n)} paths, centre {poly[len(poly) // 2] ** 2}",
              f"{total} paths, centre {int(grid[grid.shape[0] // 2, grid.shape[1] // 2])}",
              bool((grid == outer).all()) and total == k ** (2 * n), float(total)),
        Check(f"{label}: per-axis variance n(k²-1)/12", f"{expected_var} px²", f"{var} px²",
              var == expected_var, float(var)),
        Check(f"{label}: gradient ERF (uniform, linear) × k^(2n)", "= counts (|err| < 1e-6)",
              f"max |err| {error:.1e}", error < 1e-6, error),
    ]
