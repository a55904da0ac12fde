"""The ``long-range`` figure: ring mass and accuracy per epoch (seed lines, mean, 95 % band), the
per-seed end/init ratios with their intervals, and the seed-averaged ERF maps."""

from __future__ import annotations

from rflens.experiments.seedplots import COLORS, epoch_band, map_panel, ratio_strip
from rflens.experiments.tasks import LABELS, mean_map


def figure(r):
    from rflens import plot

    fig = plot.RFFigure(figsize=(14, 7.2), dpi=plot.DPI, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1, 1))
    ax_ring, ax_ratio, ax_acc = top.subplots(1, 3)
    epochs = [0] + [row["epoch"] for row in r.seeds[0].history[LABELS[0]]]
    for label, color in zip(LABELS, COLORS):
        epoch_band(ax_ring, epochs, [[s.init["ring"]] + [row["ring"] for row in s.history[label]]
                                     for s in r.seeds], color, label)
        epoch_band(ax_acc, epochs[1:], [[row["accuracy"] for row in s.history[label]] for s in r.seeds],
                   color, label)
    ring = r.settings["ring"]
    ax_ring.set_title(f"ERF mass in the ring ({ring})", fontsize=9)
    ax_ring.set_xlabel("epoch")
    ax_ring.set_ylabel("share of ERF mass")
    ax_ring.legend(fontsize=7)
    ax_acc.set_title("held-out accuracy", fontsize=9)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylim(0.4, 1.02)
    ax_acc.legend(fontsize=7)
    iv = r.intervals
    ratio_strip(ax_ratio, {"long-range": iv["long-range: ring end/init"],
                           "control": iv["control: ring end/init"],
                           "long-range /\ncontrol": iv["ring ratio long-range / control"]},
                (COLORS[0], COLORS[1], "0.3"))
    ax_ratio.set_title(f"ring mass end / init: seeds and 95 % intervals (n = {len(r.seeds)})", fontsize=9)
    axes = bottom.subplots(1, 3)
    maps = {"init": mean_map([s.maps["init"] for s in r.seeds if "init" in s.maps])}
    for label in LABELS:
        maps[label] = mean_map([s.maps[label] for s in r.seeds if label in s.maps])
    distance, width = r.distance, r.ring_width
    image = None
    for ax, (name, m) in zip(axes, maps.items()):
        title = "initialisation" if name == "init" else f"after training: {name} task"
        image = map_panel(ax, m, r.center, (distance - width, distance + width),
                          f"{title} (mean of {len(r.seeds)} seeds)")
    if image is not None:
        bottom.colorbar(image, ax=list(axes), fraction=0.02, pad=0.01, label="ERF / its own max")
    fig.suptitle(f"long-range: the ERF of the probed unit (TRF {r.trf} px) on a task that needs "
                 f"evidence at distance d vs a local control", fontsize=10)
    return fig
