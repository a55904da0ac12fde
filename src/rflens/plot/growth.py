"""Receptive-field growth over depth: TRF size per layer, ERF sizes where measured."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from rflens.errors import RflensError
from rflens.plot.common import figure_and_ax, shape_text, text

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
    :attr:`rflens.erf.metrics.ERFMetrics.extent`), drawn as points (``"erf-size"``).
    """
    layers = list(rf.layers)
    if not layers:
        raise RflensError(f"{rf.model} has no layers to plot")
    fig, ax = figure_and_ax(ax, (max(7.0, min(14.0, 0.09 * len(layers) + 5)), 4.4))
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
    ax.set_title(title if title is not None else text(
        f"Receptive-field growth: {rf.model} at input {shape_text(rf.input_shape[1:])}"), fontsize=10)
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
    ax.set_xticklabels([text(n) for n in labels], rotation=60, ha="right", fontsize=7)

