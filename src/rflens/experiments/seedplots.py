"""Drawing pieces the multi-seed experiments share (matplotlib without pyplot): a quantity per
epoch as seed lines with the mean and its 95 % band, per-seed ratios with their interval, and ERF
maps with circles at given radii."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.patches import Circle

from rflens.experiments.stats import Interval, mean_interval

__all__ = ["epoch_band", "ratio_strip", "map_panel", "log_axis", "COLORS"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def epoch_band(ax, epochs: Sequence[int], per_seed: Sequence[Sequence[float]], color: str, label: str) -> None:
    """Thin lines per seed, the mean over seeds and its 95 % Student-t band (``per_seed[s][e]``)."""
    values = np.asarray(per_seed, dtype=np.float64)
    for row in values:
        ax.plot(epochs, row, color=color, alpha=0.25, lw=0.8)
    intervals = [mean_interval(values[:, e]) for e in range(values.shape[1])]
    ax.plot(epochs, [i.centre for i in intervals], "o-", color=color, ms=3.5, label=label)
    low = [i.low if np.isfinite(i.low) else i.centre for i in intervals]
    high = [i.high if np.isfinite(i.high) else i.centre for i in intervals]
    ax.fill_between(epochs, low, high, color=color, alpha=0.18, lw=0)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def ratio_strip(ax, groups: dict[str, Interval], colors: Sequence[str] = COLORS,
                reference: float = 1.0, log: bool = True) -> None:
    """One column per group: its per-seed values as dots, the interval as a bar, the centre as a
    tick; a dashed line at ``reference``."""
    for i, ((label, iv), color) in enumerate(zip(groups.items(), colors)):
        vals = np.array([v for v in iv.values if np.isfinite(v)])
        jitter = np.linspace(-0.12, 0.12, vals.size) if vals.size > 1 else np.zeros(vals.size)
        ax.plot(i + jitter, vals, "o", color=color, alpha=0.55, ms=4)
        if np.isfinite(iv.low) and np.isfinite(iv.high):
            ax.plot([i + 0.28, i + 0.28], [iv.low, iv.high], color=color, lw=2.5)
        ax.plot([i + 0.2, i + 0.36], [iv.centre, iv.centre], color=color, lw=2)
    ax.axhline(reference, color="0.4", ls="--", lw=0.8)
    if log:
        log_axis(ax)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=7)
    ax.set_xlim(-0.5, len(groups) - 0.4)


def map_panel(ax, erf_map: np.ndarray, center: Sequence[float], radii: Sequence[float], title: str,
              vmax: float | None = None, log_decades: float | None = None) -> object:
    """The map (normalised to the given ``vmax``, default its own maximum) with dashed circles of
    the given ``radii`` around ``center`` (row, column in pixels); returns the image artist. With
    ``log_decades`` the colours show ``log10(map / vmax)`` from ``-log_decades`` to 0."""
    m = np.asarray(erf_map, dtype=np.float64)
    peak = vmax if vmax is not None else float(m.max()) or 1.0
    if log_decades:
        shown = np.log10(np.maximum(m / peak, 10.0 ** -log_decades))
        image = ax.imshow(shown, cmap="viridis", vmin=-log_decades, vmax=0, interpolation="nearest")
    else:
        image = ax.imshow(m / peak, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    for r in radii:
        ax.add_patch(Circle((center[1], center[0]), r, fill=False, ec="white", ls="--", lw=0.9))
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def log_axis(ax) -> None:
    """A logarithmic y axis labelled with plain numbers at 1, 2 and 5 per decade (and at the minor
    ticks when the data span less than about a decade); call it after plotting."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(LogLocator(subs=(1.5, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    low, high = ax.get_ylim()
    narrow = low > 0 and high / low < 12  # less than about a decade: label the minor ticks too
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g") if narrow else NullFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
