"""The ``vit-vs-cnn`` figure: ERF masses and accuracy per epoch for both networks (seed lines,
mean, 95 % band), the ratios the checks use, and the seed-averaged ERF maps on a log scale."""

from __future__ import annotations

from rflens.experiments.seedplots import COLORS, epoch_band, map_panel, ratio_strip
from rflens.experiments.tasks import mean_map

MODELS = ("ViT", "CNN")


def figure(r):
    from rflens import plot

    fig = plot.RFFigure(figsize=(16, 7.6), dpi=plot.DPI, layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    ax_beyond, ax_ring, ax_own, ax_acc = top.subplots(1, 4)
    epochs = [row["epoch"] for row in r.seeds[0].history[MODELS[0]]]
    for name, color in zip(MODELS, COLORS):
        for ax, key in ((ax_beyond, "beyond"), (ax_ring, "ring"), (ax_own, "own_window"),
                        (ax_acc, "accuracy")):
            epoch_band(ax, epochs, [[row[key] for row in s.history[name]] for s in r.seeds], color, name)
    ax_beyond.set_title(f"ERF mass beyond R = {r.radius:g} px", fontsize=9)
    ax_ring.set_title(f"ERF mass in the ring {r.distance:g} ± {r.ring_width:g} px", fontsize=9)
    ax_own.set_title("ERF mass in the probed unit's own 4×4 window", fontsize=9)
    ax_acc.set_title("held-out accuracy (long-range task)", fontsize=9)
    ax_acc.set_ylim(0.4, 1.02)
    for ax in (ax_beyond, ax_ring, ax_own, ax_acc):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes = bottom.subplots(1, 5, width_ratios=(1.3, 1, 1, 1, 1))
    iv = r.intervals
    ratio_strip(axes[0], {"beyond R\nViT / CNN\ninit": iv["init: beyond ViT / CNN"],
                          "beyond R\nViT / CNN\ntrained": iv["trained: beyond ViT / CNN"],
                          "ViT own /\nother patch\ninit": iv["init: ViT own patch dominance"],
                          "ViT own /\nother patch\ntrained": iv["trained: ViT own patch dominance"]},
                ("0.3", "0.3", COLORS[0], COLORS[0]))
    axes[0].set_title(f"seeds and 95 % intervals (n = {len(r.seeds)})", fontsize=9)
    image = None
    panels = [(name, stage) for name in MODELS for stage in ("init", "trained")]
    for ax, (name, stage) in zip(axes[1:], panels):
        m = mean_map([s.maps[name][stage] for s in r.seeds if s.maps])
        image = map_panel(ax, m, r.centers[name], (r.radius,), f"{name}, {stage} (log scale)",
                          log_decades=3)
    if image is not None:
        bottom.colorbar(image, ax=list(axes[1:]), fraction=0.015, pad=0.01, label="log10(ERF / its max)")
    fig.suptitle("vit-vs-cnn: a small ViT (" + f"{r.parameters['ViT']} parameters) and a residual CNN "
                 f"({r.parameters['CNN']}) learning the long-range task; ERF on the image grid, "
                 f"mean of {len(r.seeds)} seeds", fontsize=10)
    return fig
