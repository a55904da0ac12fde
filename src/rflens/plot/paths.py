"""Path counts of a small conv stack, the exact integer in each cell."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from rflens.errors import RflensError
from rflens.erf.analytic import AnalyticERF, analytic_erf, chain_of
from rflens.geometry.chain import parse_chain
from rflens.plot.common import figure_and_ax, pixel_extent, text

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

    ``chain``: a chain spec (:func:`rflens.erf.analytic.parse_chain`: ``[3, 3]`` is two 3×3 stride-1
    convs; ``ndim`` spatial axes, 1 or 2), an ``nn.Sequential`` chain, or an ``AnalyticERF`` with
    ``axis_counts``. The unit is unit 0
    of the last layer (its field is centred on pixel 0 for odd kernels with 'same' padding);
    coordinates are input pixels relative to that, as in :func:`rflens.erf.analytic.path_counts_1d`.
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
    fig, ax = figure_and_ax(ax, (max(3.2, 0.45 * counts.shape[1] + 1.6), max(2.2, 0.45 * counts.shape[0] + 1.2)))
    origin = (box[0][0], box[1][0])
    ax.imshow(values, cmap="Blues", vmin=0, vmax=peak, interpolation="nearest",
              extent=pixel_extent(counts.shape, origin))
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
    desc = _chain_text(layers) if layers else text(result.layer or "the chain")
    default = f"Paths from each input pixel to one unit\n{desc} ({total} paths" + \
        ("" if written else "; too many cells to write the counts") + ")"
    ax.set_title(title if title is not None else default, fontsize=9)
    return fig


def _analytic(chain: Any, ndim: int) -> tuple[Any, list | None]:
    """``(AnalyticERF with exact counts, its chain layers or None)`` for ``chain``."""

    if isinstance(chain, AnalyticERF):
        return chain, None
    if isinstance(chain, (list, tuple)):
        return analytic_erf(list(chain), ndim=ndim), parse_chain(list(chain), ndim)
    layers = chain_of(chain)
    if not layers:
        raise RflensError("path_counts needs a chain: a list like [3, 3] or an nn.Sequential of "
                          "convolutions and pooling")
    return analytic_erf(chain), layers

