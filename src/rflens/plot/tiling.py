"""A tiling plan drawn on its image: tile windows, the region each tile keeps, one tile's halo."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from rflens.errors import RflensError
from rflens.plot.common import figure_and_ax, pixel_extent, shape_text, text
from rflens.plot.overlay import _as_image

WINDOW_COLOR = "#ffcc00"
KEEP_COLOR = "#00e5ff"
SEAM_COLOR = "#ffffff"


def _rect(r: tuple[int, int], c: tuple[int, int], **kw) -> Rectangle:
    """Rectangle over half-open pixel ranges ``r`` (rows) and ``c`` (columns)."""
    return Rectangle((c[0] - 0.5, r[0] - 0.5), c[1] - c[0], r[1] - r[0], **kw)


def tile_plan(plan: Any, image: Any = None, *, axes: Sequence[int] = (0, 1),
              highlight: Sequence[int] | None = None, title: str | None = None,
              ax: Any = None) -> Figure:
    """Draw a :class:`rflens.tile.TilePlan` over the input it tiles.

    Thin white lines are the seams between the regions the tiles keep (their ``core`` input
    blocks); one tile (``highlight``, a grid index; default the one nearest the centre) shows its
    input window (yellow, gid ``"tile-window"``: the kept region plus the halo) and its kept
    region (cyan, gid ``"tile-keep"``). Every other window is outlined faintly (gid
    ``"tile-window"`` too). ``image``: an ``H×W(×3)`` array or ``C×H×W`` tensor of the plan's
    input size (default a grey canvas). ``axes``: which two spatial axes to draw for 3-D plans;
    a 1-D plan is drawn as one row of bars per tile.
    """
    if not plan.axes:
        raise RflensError(f"the plan has no tiles to draw ({plan.reason})")
    spatial = plan.spatial
    if len(spatial) == 1:
        return _bars(plan, title, ax)
    ax0, ax1 = (int(a) for a in axes)
    if len({ax0, ax1}) != 2 or not all(0 <= a < len(spatial) for a in (ax0, ax1)):
        raise RflensError(f"axes {tuple(axes)} must name two different spatial axes of the "
                          f"{len(spatial)}-D plan")
    shape = (spatial[ax0], spatial[ax1])
    rows, cols = plan.axes[ax0], plan.axes[ax1]
    if highlight is None:
        highlight = (len(rows) // 2, len(cols) // 2)
    hr, hc = rows[highlight[0]], cols[highlight[1]]
    fig, ax = figure_and_ax(ax, (6.0, 6.0 * shape[0] / max(shape[1], 1) + 0.4))
    if image is not None:
        img = _as_image(image)
        if tuple(img.shape[:2]) != shape:
            raise RflensError(f"the image is {shape_text(img.shape[:2])} but the plan tiles "
                              f"{shape_text(shape)} pixels")
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1,
                  interpolation="nearest", extent=pixel_extent(shape))
    else:
        ax.imshow(np.full(shape, 0.55), cmap="gray", vmin=0, vmax=1, extent=pixel_extent(shape))
    for r in rows:
        for c in cols:
            ax.add_patch(_rect((r.start, r.stop), (c.start, c.stop), fill=False, linewidth=0.6,
                               edgecolor=WINDOW_COLOR, alpha=0.35, gid="tile-window"))
    for r in rows[1:]:
        ax.plot([-0.5, shape[1] - 0.5], [r.core[0] - 0.5] * 2, color=SEAM_COLOR, linewidth=0.8)
    for c in cols[1:]:
        ax.plot([c.core[0] - 0.5] * 2, [-0.5, shape[0] - 0.5], color=SEAM_COLOR, linewidth=0.8)
    ax.add_patch(_rect(hr.core, hc.core, facecolor=KEEP_COLOR, alpha=0.3, edgecolor=KEEP_COLOR,
                       linewidth=2, gid="tile-keep"))
    ax.add_patch(_rect((hr.start, hr.stop), (hc.start, hc.stop), fill=False, linewidth=2,
                       edgecolor=WINDOW_COLOR, gid="tile-window"))
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    ax.set_xlabel(f"axis {ax1} (input pixel)")
    ax.set_ylabel(f"axis {ax0} (input pixel)")
    ax.legend(handles=[Patch(facecolor="none", edgecolor=WINDOW_COLOR, linewidth=2,
                             label=f"tile {tuple(highlight)}: input window"),
                       Patch(facecolor=KEEP_COLOR, alpha=0.5, edgecolor=KEEP_COLOR,
                             label="the region it keeps"),
                       Patch(facecolor="none", edgecolor=SEAM_COLOR, label="seams")],
              fontsize=7, loc="upper right", framealpha=0.7)
    ax.set_title(title if title is not None else _title(plan), fontsize=9)
    return fig


def _title(plan: Any) -> str:
    halo = "?" if plan.halo is None else " × ".join(f"{b}/{a}" for b, a in plan.halo)
    kind = "exact" if plan.exact else "not exact"
    return text(f"{plan.model}: {shape_text(plan.grid)} tiles of {shape_text(plan.tile)} px\n"
                f"halo {halo} ({kind}), tile offsets multiples of {shape_text(plan.multiple)}")


def _bars(plan: Any, title: str | None, ax: Any) -> Figure:
    segs = plan.axes[0]
    fig, ax = figure_and_ax(ax, (7.0, 0.35 * len(segs) + 1.2))
    for j, s in enumerate(segs):
        ax.add_patch(Rectangle((s.start - 0.5, j - 0.35), s.stop - s.start, 0.7, facecolor="none",
                               edgecolor=WINDOW_COLOR, linewidth=1.5, gid="tile-window"))
        ax.add_patch(Rectangle((s.core[0] - 0.5, j - 0.2), s.core[1] - s.core[0], 0.4,
                               facecolor=KEEP_COLOR, gid="tile-keep"))
    ax.set_xlim(-0.5, plan.spatial[0] - 0.5)
    ax.set_ylim(len(segs) - 0.5, -0.5)
    ax.set_yticks(range(len(segs)))
    ax.set_ylabel("tile")
    ax.set_xlabel("input position")
    ax.set_title(title if title is not None else _title(plan), fontsize=9)
    return fig
