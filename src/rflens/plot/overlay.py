"""A unit's TRF box and ERF contours drawn on a real image."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from rflens.errors import RflensError
from rflens.erf.metrics import mass_levels
from rflens.plot.common import (CONTOUR_COLORS, IMAGE_BOX_COLOR, box_rect, figure_and_ax,
                                pixel_extent, shape_text, text)

# --- overlay on an image ----------------------------------------------------------------------------

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
        raise RflensError(f"the image is {shape_text(img.shape[:2])} but the receptive field of "
                          f"{rf.model} was computed for a {shape_text(rf.spatial_shape)} input; resize "
                          "the image or recompute with that input size")
    if unit is None:
        unit = tuple(erf.unit) if hasattr(erf, "unit") and erf.unit is not None else \
            tuple(n // 2 for n in field.grid)
    unit = tuple(int(u) for u in unit)
    fig, ax = figure_and_ax(ax, (5.0, 5.0))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest",
              extent=pixel_extent(img.shape[:2]))
    handles = []
    box = field.box(unit, clip=True)
    if box is not None:
        full = field.box(unit, clip=False)
        note = " (clipped)" if full != box else ""
        handles.append(ax.add_patch(box_rect(box, IMAGE_BOX_COLOR, f"TRF of unit {unit}{note}",
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
    ax.set_title(title if title is not None else text(f"{layer} unit {unit} on the image — {rf.model}"),
                 fontsize=9)
    return fig


def _erf_contours(ax: Any, erf: Any, shape: tuple[int, int], fractions: Sequence[float]) -> list:
    m = np.asarray(erf.raw if hasattr(erf, "raw") else erf, dtype=np.float64)
    if m.shape != tuple(shape):
        raise RflensError(f"the ERF map is {shape_text(m.shape)} but the image is {shape_text(shape)}")
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

