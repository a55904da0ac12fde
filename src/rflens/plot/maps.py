"""ERF heat maps and per-axis profiles."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from rflens.erf.gaussian import GAUSSIAN_R2
from rflens.errors import RflensError
from rflens.plot.common import (BOX_COLOR, box_rect, clip_box, erf_parts, erf_title, figure_and_ax,
                                new_figure, pixel_extent, text)

# --- ERF heat map -----------------------------------------------------------------------------------

def erf_map(erf: Any, *, log: bool = False, decades: float = 4.0, trf_box: Any = None,
            zoom: bool = False, title: str | None = None, cmap: str = "viridis", ax: Any = None) -> Figure:
    """Heat map of an ERF with the TRF box of the probed unit drawn on it.

    ``erf``: an ``ERFResult`` (its ``raw`` map over the input and ``trf.box``), an ``AnalyticERF``
    (its ``map`` over its own ``box``) or a non-negative array over input pixels (give ``trf_box``,
    inclusive per axis, unclipped). Colour is the map divided by its maximum: linear scale from 0 to
    1 (colour limits ``(0, 1)``), or with ``log=True`` ``log10(map / max)`` floored at ``-decades``
    (colour limits ``(-decades, 0)``). The TRF box is drawn clipped to the map as a white rectangle
    (gid ``"trf-box"``). ``zoom=True`` limits the view to the TRF box plus a 10 % margin (clipped to
    the map): a gradient ERF is zero outside its TRF, so nothing is hidden. 3-D maps are summed over
    their first axis; 1-D maps are drawn as a profile.
    """
    m, origin, box, desc = erf_parts(erf, trf_box)
    if m.ndim == 3:
        m, origin, box = m.sum(axis=0), origin[1:], (box[1:] if box is not None else None)
    if m.ndim not in (1, 2):
        raise RflensError(f"erf_map draws 1-D, 2-D or 3-D maps, not {m.ndim}-D")
    if not (np.isfinite(m).all() and (m >= 0).all()):
        raise RflensError("an ERF map must be finite and non-negative")
    peak = float(m.max()) if m.size and m.max() > 0 else 1.0
    values = m / peak
    if log:
        with np.errstate(divide="ignore"):
            values = np.maximum(np.log10(values), -float(decades))
    if m.ndim == 1:
        return _erf_line(values, origin[0], box, desc, log, decades, title, ax)
    fig, ax = figure_and_ax(ax, (5.2, 4.4))
    limits = (-float(decades), 0.0) if log else (0.0, 1.0)
    image = ax.imshow(values, cmap=cmap, interpolation="nearest", vmin=limits[0], vmax=limits[1],
                      extent=pixel_extent(m.shape, origin))
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(f"log10(influence / max), floored at -{decades:g}" if log else "influence / max")
    if box is not None:
        shown = clip_box(tuple((lo - o, hi - o) for (lo, hi), o in zip(box, origin)), m.shape)
        if shown is not None:
            shown = tuple((lo + o, hi + o) for (lo, hi), o in zip(shown, origin))
            clipped = tuple(tuple(b) for b in box) != shown
            ax.add_patch(box_rect(shown, BOX_COLOR, "TRF" + (" (clipped to the input)" if clipped else "")))
            ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
            if zoom:
                (r0, r1), (c0, c1) = _zoom_limits(shown, origin, m.shape)
                ax.set_xlim(c0, c1)
                ax.set_ylim(r1, r0)
    ax.set_xlabel("column (input pixel)")
    ax.set_ylabel("row (input pixel)")
    ax.set_title(title if title is not None else erf_title(desc, log), fontsize=9)
    return fig


def _zoom_limits(box: Sequence[tuple[int, int]], origin: Sequence[int], shape: Sequence[int],
                 margin: float = 0.1) -> tuple[tuple[float, float], ...]:
    """Per axis, data limits around an inclusive box with ``margin`` of its size on each side (at
    least one pixel), clipped to the map's pixel edges."""
    out = []
    for (lo, hi), o, n in zip(box, origin, shape):
        pad = max(1.0, margin * (hi - lo + 1))
        out.append((max(lo - 0.5 - pad, o - 0.5), min(hi + 0.5 + pad, o + n - 0.5)))
    return tuple(out)


def _erf_line(values: np.ndarray, origin: int, box: Any, desc: dict, log: bool, decades: float,
              title: str | None, ax: Any) -> Figure:
    fig, ax = figure_and_ax(ax, (6.0, 3.2))
    x = origin + np.arange(values.size)
    ax.step(x, values, where="mid", gid="erf-marginal", label="ERF / max")
    ax.set_ylim((-decades, 0.1) if log else (0, 1.05))
    if box is not None:
        (lo, hi), = box
        for k, edge in enumerate((lo - 0.5, hi + 0.5)):
            ax.axvline(edge, color="k", linestyle="--", linewidth=1, gid="trf-bound",
                       label="TRF bounds" if k == 0 else None)
    ax.set_xlabel("input pixel")
    ax.set_ylabel("log10(influence / max)" if log else "influence / max")
    ax.legend(fontsize=7)
    ax.set_title(title if title is not None else erf_title(desc, log), fontsize=9)
    return fig


# --- ERF profiles ----------------------------------------------------------------------------------

_AXIS_NAMES = {1: ("",), 2: ("rows", "columns"), 3: ("depth", "rows", "columns")}


def erf_profiles(erf: Any, *, trf_box: Any = None, zoom: bool = False, title: str | None = None,
                 axes: Sequence[Any] | None = None) -> Figure:
    """Per-axis ERF profiles: the marginal of the map along each axis (share of the total mass per
    input pixel, raw scaling), the least-squares Gaussian fit of :func:`rflens.erf.metrics.gaussian_fit`
    (σ and R² in the legend; read from an ``ERFResult``'s metrics, fitted here for other maps), and
    the TRF bounds ``lo - 0.5`` / ``hi + 0.5`` of the probed unit (unclipped; the input's outside is
    shaded when the TRF reaches past it). The x range covers the input and the TRF; ``zoom=True``:
    only the TRF plus a 10 % margin."""
    from rflens.erf.metrics import GaussianFit, gaussian_fit, marginals

    m, origin, box, desc = erf_parts(erf, trf_box)
    if m.sum() <= 0:
        raise RflensError("the ERF map is empty (all zero): nothing to profile")
    metrics = getattr(erf, "metrics", None)
    if metrics is not None and len(getattr(metrics, "amplitude", ())) == m.ndim:
        fits = tuple(GaussianFit(*v) for v in zip(metrics.sigma, metrics.center, metrics.r2,
                                                 metrics.amplitude))
    else:
        fits = gaussian_fit(m)
    profiles = marginals(m)
    if axes is None:
        fig = new_figure((4.2 * m.ndim, 3.2))
        axes = fig.subplots(1, m.ndim, squeeze=False)[0]
    else:
        fig = axes[0].figure
    for k, (ax, y, fit) in enumerate(zip(axes, profiles, fits)):
        _profile_axis(ax, k, m.ndim, y / y.sum(), fit, origin[k], box[k] if box is not None else None,
                      zoom)
    fig.suptitle(title if title is not None else text(f"ERF profiles of {desc['layer'] or 'the map'}"),
                 fontsize=10)
    return fig


def _profile_axis(ax: Any, k: int, ndim: int, share: np.ndarray, fit: Any, origin: int,
                  box: tuple[int, int] | None, zoom: bool) -> None:
    n = share.size
    x = origin + np.arange(n)
    ax.bar(x, share, width=1.0, color="#9ecae1", edgecolor="none", label="ERF marginal",
           gid="erf-marginal")
    lo_x, hi_x = origin - 0.5, origin + n - 0.5
    if box is not None:
        if zoom:
            pad = max(1.0, 0.1 * (box[1] - box[0] + 1))
            lo_x, hi_x = box[0] - 0.5 - pad, box[1] + 0.5 + pad
        else:
            lo_x, hi_x = min(lo_x, box[0] - 0.5), max(hi_x, box[1] + 0.5)
    if math.isfinite(fit.sigma) and fit.sigma > 0:
        dense = np.linspace(lo_x, hi_x, 600)
        curve = fit.amplitude * np.exp(-0.5 * ((dense - origin - fit.center) / fit.sigma) ** 2)
        ax.plot(dense, curve, color="#d62728", linewidth=1.5, gid="gaussian-fit",
                label=(f"Gaussian σ={fit.sigma:.3g} px, R²={fit.r2:.3f}" if fit.r2 >= GAUSSIAN_R2
                       else f"Gaussian fit, R²={fit.r2:.3f}: not Gaussian"))
    if box is not None:
        for j, edge in enumerate((box[0] - 0.5, box[1] + 0.5)):
            ax.axvline(edge, color="k", linestyle="--", linewidth=1, gid="trf-bound",
                       label=f"TRF bounds {box[0]}..{box[1]}" if j == 0 else None)
    margin = 0.0 if zoom and box is not None else 0.02 * (hi_x - lo_x)
    ax.set_xlim(lo_x - margin, hi_x + margin)
    for a, b in ((lo_x - margin, origin - 0.5), (origin + n - 0.5, hi_x + margin)):
        if b > a:
            ax.axvspan(a, b, color="0.85", zorder=0, linewidth=0)
    names = _AXIS_NAMES.get(ndim, ("",) * ndim)
    ax.set_title(f"axis {k}" + (f" ({names[k]})" if names[k] else ""), fontsize=9)
    ax.set_xlabel("input pixel")
    if k == 0:
        ax.set_ylabel("share of ERF mass per pixel")
    ax.legend(fontsize=7, loc="upper right")

