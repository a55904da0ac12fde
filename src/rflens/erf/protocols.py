"""The published ERF read-outs, computed as their authors define them (pure numpy).

- **RepLKNet** (Ding et al., CVPR 2022; its ``erf/analyze_erf.py``): ``A = log10(M + 1)`` of the
  per-sample mean map ``M`` (ReLU of the gradient summed over channels, ReLU of the unit's channels
  summed), scaled to maximum 1. For each threshold ``t`` in 0.2/0.3/0.5/0.99, ``r(t)`` is the
  smallest square of side ``2i + 1`` (``i = 1, 2, ...``: a single pixel is never tested) around the
  centre pixel whose share of ``A`` is *greater* than ``t``; the published numbers are its side and
  its area over the input area. RepLKNet centres the squares on pixel ``(H//2, W//2)`` and stops
  before the square reaches the first row (``i < H//2``; for a threshold never reached its script
  fails on ``None``). rflens centres them on the probed unit's TRF centre pixel, tries every square
  that lies wholly inside the input (for even sizes and a centred unit exactly RepLKNet's range) and
  says "never reached" otherwise.
- **OpenERF** (Kim et al.): radial cumulative mass — the share of the map (scaled to sum 1) on the
  pixels whose centres lie within ``r`` = 5, 10, 20, 30, 40, 60, 80 px of a centre — and the centre
  of mass. OpenERF measures around the image's centre pixel; rflens around the probed unit's TRF
  centre (on a ResNet at 224 the two are 16 px apart) and reports how far apart they are.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["REPLKNET_THRESHOLDS", "OPENERF_RADII", "replknet_scaled", "replknet_area_ratios",
           "radial_mass", "image_center", "summed_area", "box_sum"]

REPLKNET_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
OPENERF_RADII = (5, 10, 20, 30, 40, 60, 80)
NAN = float("nan")


def summed_area(m: np.ndarray) -> np.ndarray:
    """Summed-area table of ``m`` with a leading zero row/column on every axis."""
    sat = np.pad(np.asarray(m, dtype=np.float64), [(1, 0)] * m.ndim)
    for ax in range(m.ndim):
        sat = np.cumsum(sat, axis=ax)
    return sat


def box_sum(sat: np.ndarray, lo: list[int], hi: list[int]) -> float:
    """Sum of the map over the inclusive box ``lo..hi`` from its :func:`summed_area` table."""
    total = 0.0
    for corner in itertools.product((0, 1), repeat=len(lo)):
        idx = tuple(hi[a] + 1 if c else lo[a] for a, c in enumerate(corner))
        total += (-1) ** (len(lo) - sum(corner)) * sat[idx]
    return float(total)


def image_center(shape: tuple[int, ...]) -> tuple[float, ...]:
    """The input's geometric centre in pixels, ``(n - 1) / 2`` per axis."""
    return tuple((n - 1) / 2 for n in shape)


def replknet_scaled(raw: np.ndarray) -> np.ndarray:
    """RepLKNet's ``A``: ``log10(raw + 1)`` scaled to maximum 1 (all zero stays zero)."""
    a = np.log10(np.asarray(raw, dtype=np.float64) + 1.0)
    peak = a.max() if a.size else 0.0
    return a / peak if peak > 0 else a


def replknet_area_ratios(raw: np.ndarray, center: tuple[int, ...],
                         thresholds: tuple[float, ...] = REPLKNET_THRESHOLDS
                         ) -> dict[float, tuple[int | None, float]]:
    """``{t: (side, area ratio)}`` of RepLKNet's high-contribution squares on ``A`` (see the module
    docstring) around the pixel ``center``; ``(None, nan)`` where no square inside the input holds
    more than ``t`` of ``A``. The ratio is ``side**ndim / input area``."""
    a = replknet_scaled(raw)
    total = a.sum()
    out: dict[float, tuple[int | None, float]] = {t: (None, NAN) for t in thresholds}
    if total <= 0:
        return out
    c = [int(v) for v in center]
    reach = min(min(ci, n - 1 - ci) for ci, n in zip(c, a.shape))
    sat = summed_area(a)
    pending = sorted(thresholds)
    for i in range(1, reach + 1):
        share = box_sum(sat, [ci - i for ci in c], [ci + i for ci in c]) / total
        while pending and share > pending[0]:
            side = 2 * i + 1
            out[pending.pop(0)] = (side, side ** a.ndim / a.size)
        if not pending:
            break
    return out


def radial_mass(raw: np.ndarray, center: tuple[float, ...],
                radii: tuple[float, ...] = OPENERF_RADII) -> dict[float, float]:
    """``{r: share}``: the share of the map (scaled to sum 1) on the pixels whose centres lie within
    Euclidean distance ``r`` (pixels, inclusive) of ``center``. NaN for an empty map or a non-finite
    centre."""
    m = np.asarray(raw, dtype=np.float64)
    total = m.sum()
    if total <= 0 or not all(math.isfinite(c) for c in center):
        return {r: NAN for r in radii}
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in m.shape], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, center)))
    return {r: float(m[dist <= r].sum() / total) for r in radii}
