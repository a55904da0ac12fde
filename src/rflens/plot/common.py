"""What every picture shares: the figure class, colours, pixel conventions, saving.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rflens.errors import RflensError

BOX_COLOR = "#ffffff"       # the TRF box on heat maps (viridis has no white)
IMAGE_BOX_COLOR = "#00e5ff"  # the TRF box on photographs
CONTOUR_COLORS = ("#ff2d55", "#ffcc00")
DPI = 100


class RFFigure(Figure):
    """A plain matplotlib Figure that shows itself as a PNG in Jupyter without pyplot."""

    def _repr_png_(self) -> bytes:
        return to_png(self)


# --- helpers ----------------------------------------------------------------------------------------

def new_figure(figsize: tuple[float, float]) -> RFFigure:
    return RFFigure(figsize=figsize, dpi=DPI, layout="constrained")


def figure_and_ax(ax: Any, figsize: tuple[float, float]):
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(figsize)
    return fig, fig.add_subplot()


def text(s: Any) -> str:
    """Text for matplotlib with ``$`` escaped (module names are not mathtext)."""
    return str(s).replace("$", r"\$")


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in shape)


def box_rect(box: Sequence[tuple[int, int]], color: str, label: str, linestyle: str = "-",
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


def pixel_extent(shape: Sequence[int], origin: Sequence[int] = (0, 0)) -> tuple[float, ...]:
    """imshow extent putting pixel ``[r, c]`` at data ``(origin[1] + c, origin[0] + r)``."""
    (h, w), (r0, c0) = shape, origin
    return (c0 - 0.5, c0 + w - 0.5, r0 + h - 0.5, r0 - 0.5)


def erf_parts(erf: Any, trf_box: Any) -> tuple[np.ndarray, tuple[int, ...], Any, dict]:
    """(map, origin of the map in input pixels, TRF box or None, description) of an ERF-like object:
    an :class:`rflens.erf.ERFResult`, an :class:`rflens.erf.analytic.AnalyticERF` or an array."""
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


def erf_title(desc: dict, log: bool) -> str:
    if desc["layer"] is None:
        return "ERF (log scale)" if log else "ERF"
    unit = "" if desc["unit"] is None else f" unit {tuple(desc['unit'])}"
    what = f"ERF of {desc['layer']}{unit}"
    if desc.get("model"):
        what += f" — {desc['model']}"
    how = desc["method"] or ""
    if desc.get("samples"):
        how += f", {desc['samples']} samples"
    return text(what + (f"\n{how}" if how else "") + (", log scale" if log else ""))




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
