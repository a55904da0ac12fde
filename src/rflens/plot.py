"""Pictures of receptive fields. Every function returns a :class:`matplotlib.figure.Figure`.

Figures are built without ``pyplot``: nothing is registered with a GUI backend, nothing needs
closing, and they render with Agg (PNG) whatever backend is configured. In Jupyter they display
themselves (``_repr_png_``). Pass ``ax=`` (or ``axes=``) to draw into axes of your own, e.g. from
``plt.subplots()``, to show them interactively. :func:`save` writes PNG, SVG or PDF by suffix.

Conventions (see ``docs/receptive-fields.md``): coordinates are 0-based input pixels; pixel ``j``
covers ``[j - 0.5, j + 0.5]`` in data coordinates, so a box ``(lo, hi)`` (inclusive) is drawn from
``lo - 0.5`` to ``hi + 0.5``. Images and maps are indexed ``[row, column]`` (axis 0 is drawn
vertically, top to bottom; axis 1 horizontally). Boxes drawn on images are clipped to the input.

Artists tests and users may look for carry a ``gid``: ``"trf-box"`` (TRF rectangle),
``"erf-contour"``, ``"trf-size"`` / ``"trf-size-axis{k}"``, ``"erf-size"``, ``"input-size"``,
``"exceeds-input"``, ``"global"``, ``"unknown"``, ``"erf-marginal"``, ``"gaussian-fit"``,
``"trf-bound"``, ``"count"``.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from rflens.errors import RflensError

__all__ = ["erf_map", "erf_profiles", "growth", "overlay", "path_counts", "save", "to_png",
           "data_uri", "RFFigure", "BOX_COLOR", "IMAGE_BOX_COLOR", "mass_levels", "clip_box"]

BOX_COLOR = "#ffffff"       # the TRF box on heat maps (viridis has no white)
IMAGE_BOX_COLOR = "#00e5ff"  # the TRF box on photographs
CONTOUR_COLORS = ("#ff2d55", "#ffcc00")
DPI = 100


class RFFigure(Figure):
    """A plain matplotlib Figure that shows itself as a PNG in Jupyter without pyplot."""

    def _repr_png_(self) -> bytes:
        return to_png(self)


# --- helpers ----------------------------------------------------------------------------------------

def _new_figure(figsize: tuple[float, float]) -> RFFigure:
    return RFFigure(figsize=figsize, dpi=DPI, layout="constrained")


def _figure_and_ax(ax: Any, figsize: tuple[float, float]):
    if ax is not None:
        return ax.figure, ax
    fig = _new_figure(figsize)
    return fig, fig.add_subplot()


def _text(s: Any) -> str:
    """Text for matplotlib with ``$`` escaped (module names are not mathtext)."""
    return str(s).replace("$", r"\$")


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in shape)


def _box_rect(box: Sequence[tuple[int, int]], color: str, label: str, linestyle: str = "-",
              linewidth: float = 1.5) -> Rectangle:
    """Rectangle over an inclusive 2-D pixel box ``((row_lo, row_hi), (col_lo, col_hi))``."""
    (r0, r1), (c0, c1) = box
    return Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, edgecolor=color,
                     linewidth=linewidth, linestyle=linestyle, label=label, gid="trf-box")


def clip_box(box: Sequence[tuple[int, int]], shape: Sequence[int]) -> tuple[tuple[int, int], ...] | None:
    """An inclusive box clipped to an array of ``shape`` (None when it misses the array)."""
    out = []
    for (lo, hi), n in zip(box, shape):
        lo, hi = max(int(lo), 0), min(int(hi), int(n) - 1)
        if lo > hi:
            return None
        out.append((lo, hi))
    return tuple(out)


def _pixel_extent(shape: Sequence[int], origin: Sequence[int] = (0, 0)) -> tuple[float, ...]:
    """imshow extent putting pixel ``[r, c]`` at data ``(origin[1] + c, origin[0] + r)``."""
    (h, w), (r0, c0) = shape, origin
    return (c0 - 0.5, c0 + w - 0.5, r0 + h - 0.5, r0 - 0.5)


def _erf_parts(erf: Any, trf_box: Any) -> tuple[np.ndarray, tuple[int, ...], Any, dict]:
    """(map, origin of the map in input pixels, TRF box or None, description) of an ERF-like object:
    an :class:`rflens.erf.ERFResult`, an :class:`rflens.analytic.AnalyticERF` or an array."""
    if hasattr(erf, "raw") and hasattr(erf, "metrics"):
        box = trf_box if trf_box is not None else (erf.trf.box if erf.trf else None)
        desc = {"layer": erf.layer or "output", "unit": tuple(erf.unit), "model": erf.model,
                "method": erf.method, "samples": erf.samples}
        return np.asarray(erf.raw, dtype=np.float64), (0,) * erf.raw.ndim, box, desc
    if hasattr(erf, "box") and hasattr(erf, "map") and hasattr(erf, "axis_counts"):
        box = trf_box if trf_box is not None else erf.box
        desc = {"layer": erf.layer or "output", "unit": erf.unit, "model": None,
                "method": "analytic", "samples": 0}
        return np.asarray(erf.map, dtype=np.float64), tuple(lo for lo, _ in erf.box), box, desc
    m = np.asarray(erf, dtype=np.float64)
    return m, (0,) * m.ndim, trf_box, {"layer": None, "unit": None, "model": None,
                                       "method": None, "samples": None}


def _erf_title(desc: dict, log: bool) -> str:
    if desc["layer"] is None:
        return "ERF (log scale)" if log else "ERF"
    unit = "" if desc["unit"] is None else f" unit {tuple(desc['unit'])}"
    what = f"ERF of {desc['layer']}{unit}"
    if desc.get("model"):
        what += f" — {desc['model']}"
    how = desc["method"] or ""
    if desc.get("samples"):
        how += f", {desc['samples']} samples"
    return _text(what + (f"\n{how}" if how else "") + (", log scale" if log else ""))


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
    m, origin, box, desc = _erf_parts(erf, trf_box)
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
    fig, ax = _figure_and_ax(ax, (5.2, 4.4))
    limits = (-float(decades), 0.0) if log else (0.0, 1.0)
    image = ax.imshow(values, cmap=cmap, interpolation="nearest", vmin=limits[0], vmax=limits[1],
                      extent=_pixel_extent(m.shape, origin))
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(f"log10(influence / max), floored at -{decades:g}" if log else "influence / max")
    if box is not None:
        shown = clip_box(tuple((lo - o, hi - o) for (lo, hi), o in zip(box, origin)), m.shape)
        if shown is not None:
            shown = tuple((lo + o, hi + o) for (lo, hi), o in zip(shown, origin))
            clipped = tuple(tuple(b) for b in box) != shown
            ax.add_patch(_box_rect(shown, BOX_COLOR, "TRF" + (" (clipped to the input)" if clipped else "")))
            ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
            if zoom:
                (r0, r1), (c0, c1) = _zoom_limits(shown, origin, m.shape)
                ax.set_xlim(c0, c1)
                ax.set_ylim(r1, r0)
    ax.set_xlabel("column (input pixel)")
    ax.set_ylabel("row (input pixel)")
    ax.set_title(title if title is not None else _erf_title(desc, log), fontsize=9)
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
    fig, ax = _figure_and_ax(ax, (6.0, 3.2))
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
    ax.set_title(title if title is not None else _erf_title(desc, log), fontsize=9)
    return fig


# --- ERF profiles ----------------------------------------------------------------------------------

_AXIS_NAMES = {1: ("",), 2: ("rows", "columns"), 3: ("depth", "rows", "columns")}


def erf_profiles(erf: Any, *, trf_box: Any = None, zoom: bool = False, title: str | None = None,
                 axes: Sequence[Any] | None = None) -> Figure:
    """Per-axis ERF profiles: the marginal of the map along each axis (share of the total mass per
    input pixel, raw scaling), the least-squares Gaussian fit of :func:`rflens.metrics.gaussian_fit`
    (σ and R² in the legend), and the TRF bounds ``lo - 0.5`` / ``hi + 0.5`` of the probed unit
    (unclipped; the input's outside is shaded when the TRF reaches past it). The x range covers the
    input and the TRF; ``zoom=True``: only the TRF plus a 10 % margin."""
    from rflens.metrics import gaussian_fit, marginals

    m, origin, box, desc = _erf_parts(erf, trf_box)
    if m.sum() <= 0:
        raise RflensError("the ERF map is empty (all zero): nothing to profile")
    profiles, fits = marginals(m), gaussian_fit(m)
    if axes is None:
        fig = _new_figure((4.2 * m.ndim, 3.2))
        axes = fig.subplots(1, m.ndim, squeeze=False)[0]
    else:
        fig = axes[0].figure
    for k, (ax, y, fit) in enumerate(zip(axes, profiles, fits)):
        _profile_axis(ax, k, m.ndim, y / y.sum(), fit, origin[k], box[k] if box is not None else None,
                      zoom)
    fig.suptitle(title if title is not None else _text(f"ERF profiles of {desc['layer'] or 'the map'}"),
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
                label=f"Gaussian σ={fit.sigma:.3g} px, R²={fit.r2:.3f}")
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


# --- growth over depth -----------------------------------------------------------------------------

def growth(rf: Any, erf_sizes: Mapping[str, float] | None = None, *, erf_label: str = "ERF (95% mass extent)",
           title: str | None = None, ax: Any = None) -> Figure:
    """TRF size of every layer in execution order (x: row index of ``rf.layers``; y: input pixels).

    One line per axis when the axes differ (gid ``"trf-size-axis{k}"``), else one (``"trf-size"``);
    layers whose field is unknown are gaps (grey bands, gid ``"unknown"``). Global layers (which
    also depend on every pixel) are marked with hollow diamonds at their geometric size. The input
    size is a dotted horizontal line per distinct spatial size (``"input-size"``); layers whose
    field exceeds the input are shaded red (``"exceeds-input"``: more depth there adds no new
    pixels). ``erf_sizes`` maps layer names to an ERF size in pixels (e.g. the 95 % mass extent,
    :attr:`rflens.metrics.ERFMetrics.extent`), drawn as points (``"erf-size"``).
    """
    layers = list(rf.layers)
    if not layers:
        raise RflensError(f"{rf.model} has no layers to plot")
    fig, ax = _figure_and_ax(ax, (max(7.0, min(14.0, 0.09 * len(layers) + 5)), 4.4))
    x = np.arange(len(layers))
    _size_lines(ax, layers, x)
    _spans(ax, [layer.exceeds_input and not layer.is_global for layer in layers], "#f4a6a6",
           "TRF larger than the input", "exceeds-input")
    _spans(ax, [not layer.known for layer in layers], "0.8", "field unknown (op without rule)", "unknown")
    _global_marks(ax, layers, x)
    for k, n in enumerate(sorted(set(rf.spatial_shape), reverse=True)):
        ax.axhline(n, color="k", linestyle=":", linewidth=1.2, gid="input-size",
                   label=f"input size {n} px" if k == 0 else f"input size {n} px")
    if erf_sizes:
        index = {layer.name: i for i, layer in enumerate(layers)}
        missing = [name for name in erf_sizes if name not in index]
        if missing:
            rf[missing[0]]  # raises the usual "no layer named ... did you mean" error
        xs = [index[name] for name in erf_sizes]
        ax.plot(xs, list(erf_sizes.values()), linestyle="none", marker="o", markersize=7,
                color="#ff7f0e", markeredgecolor="k", gid="erf-size", label=erf_label, zorder=5)
    _depth_ticks(ax, [layer.name for layer in layers])
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("layer (execution order)")
    ax.set_ylabel("receptive field size (input pixels)")
    ax.set_title(title if title is not None else _text(
        f"Receptive-field growth: {rf.model} at input {_shape_text(rf.input_shape[1:])}"), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _size_lines(ax: Any, layers: list, x: np.ndarray) -> None:
    n_axes = max((len(layer.size) for layer in layers if layer.known), default=1)
    sizes = np.full((len(layers), n_axes), np.nan)
    for i, layer in enumerate(layers):
        if layer.known:
            sizes[i, :len(layer.size)] = layer.size
    same = all(np.array_equal(sizes[:, 0], sizes[:, k], equal_nan=True) for k in range(n_axes))
    if same:
        ax.plot(x, sizes[:, 0], marker=".", color="#1f77b4", gid="trf-size", label="TRF size")
        return
    for k in range(n_axes):
        ax.plot(x, sizes[:, k], marker=".", gid=f"trf-size-axis{k}", label=f"TRF size, axis {k}")


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """Inclusive index ranges of consecutive True flags."""
    runs, start = [], None
    for i, flag in enumerate(list(flags) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def _spans(ax: Any, flags: Sequence[bool], color: str, label: str, gid: str) -> None:
    for k, (a, b) in enumerate(_runs(flags)):
        ax.axvspan(a - 0.5, b + 0.5, color=color, alpha=0.45, linewidth=0, zorder=0, gid=gid,
                   label=label if k == 0 else None)


def _global_marks(ax: Any, layers: list, x: np.ndarray) -> None:
    idx = [i for i, layer in enumerate(layers) if layer.is_global and layer.known]
    if idx:
        ax.plot(x[idx], [max(layers[i].size) for i in idx], linestyle="none", marker="D",
                markerfacecolor="none", markeredgecolor="#7b3294", markersize=7, gid="global",
                label="global: depends on every pixel", zorder=4)


def _depth_ticks(ax: Any, names: list[str]) -> None:
    """Every name for short models; else one tick per top-level module, at its last row."""
    if len(names) <= 32:
        ticks, labels = list(range(len(names))), names
    else:
        last: dict[str, int] = {}
        for i, name in enumerate(names):
            last[name.split(".")[0].split("#")[0].split(":")[0]] = i
        ticks, labels = list(last.values()), list(last.keys())
        if len(ticks) > 40:
            step = math.ceil(len(ticks) / 40)
            ticks, labels = ticks[::step], labels[::step]
    ax.set_xticks(ticks)
    ax.set_xticklabels([_text(n) for n in labels], rotation=60, ha="right", fontsize=7)


# --- overlay on an image ----------------------------------------------------------------------------

def mass_levels(values: np.ndarray, fractions: Sequence[float] = (0.5, 0.9)) -> list[float]:
    """For each fraction ``p``, the map value ``v`` such that the pixels with value ``>= v`` hold at
    least ``p`` of the total mass (the highest-density region holding ``p``)."""
    flat = np.sort(np.asarray(values, dtype=np.float64).ravel())[::-1]
    cum = np.cumsum(flat)
    if cum.size == 0 or cum[-1] <= 0:
        return [math.nan for _ in fractions]
    return [float(flat[min(int(np.searchsorted(cum, p * cum[-1], side="left")), flat.size - 1)])
            for p in fractions]


def _as_image(image: Any) -> np.ndarray:
    """An image as float ``H×W`` or ``H×W×3/4`` in [0, 1]; torch ``C×H×W`` tensors are accepted."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            image = np.moveaxis(image, 0, -1)
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (3, 4)):
        raise RflensError(f"an image must be H×W, H×W×3 or H×W×4 (or a C×H×W tensor), not shape {img.shape}")
    img = img.astype(np.float64)
    if img.size and img.max() > 1.0:
        img = img / 255.0
    return np.clip(img, 0.0, 1.0)


def overlay(image: Any, rf: Any, layer: str, unit: Sequence[int] | None = None, *, erf: Any = None,
            fractions: Sequence[float] = (0.5, 0.9), title: str | None = None, ax: Any = None) -> Figure:
    """A unit's TRF box (and its ERF contours) drawn on a real image.

    ``image``: ``H×W`` (grey) or ``H×W×3`` array (uint8 0..255 or float 0..1), or a ``C×H×W`` tensor,
    the same spatial size as ``rf``'s input. ``unit``: indices into ``layer``'s output grid (default:
    ``erf.unit`` when ``erf`` is given, else ``n // 2`` per axis). The box is
    ``rf.box(layer, unit, clip=True)`` (gid ``"trf-box"``); the unit's field centre is a ``+``.
    ``erf`` (an ``ERFResult`` or an array over the input) adds contours around the highest-density
    regions holding ``fractions`` of its mass (gid ``"erf-contour"``, levels :func:`mass_levels`).
    """
    if len(rf.spatial_shape) != 2:
        raise RflensError(f"overlay draws on 2-D images; {rf.model} has {len(rf.spatial_shape)} "
                          "spatial axes")
    img = _as_image(image)
    field = rf[layer]
    if tuple(img.shape[:2]) != tuple(rf.spatial_shape):
        raise RflensError(f"the image is {_shape_text(img.shape[:2])} but the receptive field of "
                          f"{rf.model} was computed for a {_shape_text(rf.spatial_shape)} input; resize "
                          "the image or recompute with that input size")
    if unit is None:
        unit = tuple(erf.unit) if hasattr(erf, "unit") and erf.unit is not None else \
            tuple(n // 2 for n in field.grid)
    unit = tuple(int(u) for u in unit)
    fig, ax = _figure_and_ax(ax, (5.0, 5.0))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest",
              extent=_pixel_extent(img.shape[:2]))
    handles = []
    box = field.box(unit, clip=True)
    if box is not None:
        full = field.box(unit, clip=False)
        note = " (clipped)" if full != box else ""
        handles.append(ax.add_patch(_box_rect(box, IMAGE_BOX_COLOR, f"TRF of unit {unit}{note}",
                                              linewidth=2)))
        (r0, r1), (c0, c1) = full
        ax.plot([(c0 + c1) / 2], [(r0 + r1) / 2], marker="+", markersize=12, color=IMAGE_BOX_COLOR,
                markeredgewidth=2, linestyle="none")
    if erf is not None:
        handles += _erf_contours(ax, erf, img.shape[:2], fractions)
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.7)
    ax.set_xlabel("column (input pixel)")
    ax.set_ylabel("row (input pixel)")
    ax.set_title(title if title is not None else _text(f"{layer} unit {unit} on the image — {rf.model}"),
                 fontsize=9)
    return fig


def _erf_contours(ax: Any, erf: Any, shape: tuple[int, int], fractions: Sequence[float]) -> list:
    m = np.asarray(erf.raw if hasattr(erf, "raw") else erf, dtype=np.float64)
    if m.shape != tuple(shape):
        raise RflensError(f"the ERF map is {_shape_text(m.shape)} but the image is {_shape_text(shape)}")
    pairs = sorted({(lv, p) for lv, p in zip(mass_levels(m, fractions), fractions)
                    if math.isfinite(lv) and lv > 0})
    if not pairs:
        return []
    handles = []
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for k, (level, p) in enumerate(pairs):
        color = CONTOUR_COLORS[k % len(CONTOUR_COLORS)]
        cs = ax.contour(xx, yy, m, levels=[level], colors=[color], linewidths=1.5)
        cs.set_gid("erf-contour")
        handles.append(Patch(facecolor="none", edgecolor=color, label=f"ERF {p:.0%} of mass"))
    return handles


# --- path-count grid --------------------------------------------------------------------------------

def _chain_text(layers: Sequence[Any]) -> str:
    parts = []
    for c in layers:
        text = "×".join(map(str, c.kernel))
        if any(s != 1 for s in c.stride):
            text += "/" + "×".join(map(str, c.stride))
        if any(d != 1 for d in c.dilation):
            text += " d" + "×".join(map(str, c.dilation))
        parts.append(text)
    return " → ".join(parts)


def path_counts(chain: Any = (3, 3), *, ndim: int = 2, max_cells: int = 21, title: str | None = None,
                ax: Any = None) -> Figure:
    """The number of paths from every input pixel to one output unit of a small conv stack, with the
    exact integer count written in each cell: why the centre of the TRF matters most.

    ``chain``: a chain spec (:func:`rflens.analytic.parse_chain`: ``[3, 3]`` is two 3×3 stride-1
    convs; ``ndim`` spatial axes, 1 or 2), an ``nn.Sequential`` chain, or an ``AnalyticERF`` with
    ``axis_counts``. The unit is unit 0
    of the last layer (its field is centred on pixel 0 for odd kernels with 'same' padding);
    coordinates are input pixels relative to that, as in :func:`rflens.analytic.path_counts_1d`.
    Colour limits are ``(0, max count)``. Counts are written (gid ``"count"``) when both axes have
    at most ``max_cells`` cells.
    """
    result, layers = _analytic(chain, ndim)
    counts = result.counts
    if counts is None:
        raise RflensError("path counts exist for chains of convolutions and pooling only; this "
                          "analytic ERF was computed on a general graph")
    if counts.ndim == 1:
        counts = counts[None, :]
        box = ((0, 0),) + tuple(result.box)
    elif counts.ndim == 2:
        box = tuple(result.box)
    else:
        raise RflensError(f"path_counts draws 1-D or 2-D chains, not {counts.ndim}-D")
    values = counts.astype(np.float64)
    peak = float(values.max())
    fig, ax = _figure_and_ax(ax, (max(3.2, 0.45 * counts.shape[1] + 1.6), max(2.2, 0.45 * counts.shape[0] + 1.2)))
    origin = (box[0][0], box[1][0])
    ax.imshow(values, cmap="Blues", vmin=0, vmax=peak, interpolation="nearest",
              extent=_pixel_extent(counts.shape, origin))
    written = max(counts.shape) <= max_cells
    if written:
        size = 9 if max(counts.shape) <= 9 else 6
        for (r, c), value in np.ndenumerate(counts):
            ax.text(origin[1] + c, origin[0] + r, str(int(value)), ha="center", va="center",
                    fontsize=size, color="white" if value > 0.6 * peak else "black", gid="count")
    ax.set_xticks(range(box[1][0], box[1][1] + 1))
    ax.set_yticks(range(box[0][0], box[0][1] + 1))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("input column")
    ax.set_ylabel("input row" if result.counts.ndim == 2 else "")
    total = int(sum(int(v) for v in counts.ravel()))
    desc = _chain_text(layers) if layers else _text(result.layer or "the chain")
    default = f"Paths from each input pixel to one unit\n{desc} ({total} paths" + \
        ("" if written else "; too many cells to write the counts") + ")"
    ax.set_title(title if title is not None else default, fontsize=9)
    return fig


def _analytic(chain: Any, ndim: int) -> tuple[Any, list | None]:
    """``(AnalyticERF with exact counts, its chain layers or None)`` for ``chain``."""
    from rflens.analytic import AnalyticERF, analytic_erf, chain_of, parse_chain

    if isinstance(chain, AnalyticERF):
        return chain, None
    if isinstance(chain, (list, tuple)):
        return analytic_erf(list(chain), ndim=ndim), parse_chain(list(chain), ndim)
    layers = chain_of(chain)
    if not layers:
        raise RflensError("path_counts needs a chain: a list like [3, 3] or an nn.Sequential of "
                          "convolutions and pooling")
    return analytic_erf(chain), layers


# --- output -----------------------------------------------------------------------------------------

def to_png(fig: Figure, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (Agg, ``dpi`` default the figure's)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, facecolor="white")
    return buf.getvalue()


def data_uri(fig: Figure, dpi: float | None = None) -> str:
    """The figure as a ``data:image/png;base64,...`` URI, for self-contained HTML."""
    import base64

    return "data:image/png;base64," + base64.b64encode(to_png(fig, dpi)).decode("ascii")


def save(fig: Figure, path: str | os.PathLike | io.IOBase, *, dpi: float | None = None) -> None:
    """Write ``fig`` to ``path``; the format comes from the suffix (``.png``, ``.svg``, ``.pdf``,
    ``.jpg``, ...). A file object gets PNG. Missing parent folders are created. Bad suffixes and
    unwritable paths raise :class:`RflensError` with one line."""
    if not isinstance(path, (str, os.PathLike)):
        fig.savefig(path, format="png", dpi=dpi or fig.dpi, facecolor="white")
        return
    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise RflensError(f"cannot save a figure as '{target.name}': use a .png, .svg or .pdf file "
                          f"(supported: {', '.join(sorted(supported))})")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, format=fmt, dpi=dpi or fig.dpi, facecolor="white")
    except OSError as exc:
        raise RflensError(f"cannot write {target}: {exc.strerror or exc}") from exc
