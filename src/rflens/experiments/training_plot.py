"""The ``training`` figure: accuracy, σ and mass beyond R per epoch (seed lines, mean, 95 % band),
the per-seed end/init ratios with their intervals, and the seed-averaged ERF on digits before and
after training."""

from __future__ import annotations

from rflens.experiments.seedplots import COLORS, epoch_band, map_panel, ratio_strip
from rflens.experiments.tasks import mean_map


def figure(r):
    from rflens import plot

    fig = plot.RFFigure(figsize=(15, 7.2), dpi=plot.DPI, layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    ax_acc, ax_sigma, ax_beyond = top.subplots(1, 3)
    epochs = [row["epoch"] for row in r.seeds[0].history]
    epoch_band(ax_acc, epochs, [[row["accuracy"] for row in s.history] for s in r.seeds], COLORS[0],
               "held-out accuracy")
    ax_acc.set_ylim(0, 1.02)
    ax_acc.set_title(f"held-out accuracy ({r.seeds[0].test_size} digits)", fontsize=9)
    for ax, key, title in ((ax_sigma, "sigma", "ERF σ (px, Gaussian fit)"),
                           (ax_beyond, "beyond", f"ERF mass beyond R = {r.radius:g} px")):
        for kind, color in zip(("digits", "noise"), (COLORS[2], COLORS[3])):
            epoch_band(ax, epochs, [[row[f"{key}_{kind}"] for row in s.history] for s in r.seeds], color,
                       f"on {'held-out digits' if kind == 'digits' else 'noise'}")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    for ax in (ax_acc, ax_sigma, ax_beyond):
        ax.set_xlabel("epoch")
    ax_ratio, ax_init, ax_end = bottom.subplots(1, 3)
    iv = r.intervals
    ratio_strip(ax_ratio, {"σ digits": iv["sigma digits end/init"], "σ noise": iv["sigma noise end/init"],
                           "beyond R\ndigits": iv["beyond digits end/init"],
                           "beyond R\nnoise": iv["beyond noise end/init"]},
                (COLORS[2], COLORS[3], COLORS[2], COLORS[3]))
    ax_ratio.set_title(f"end / init: seeds and 95 % intervals (n = {len(r.seeds)})", fontsize=9)
    maps = {k: mean_map([s.maps[k] for s in r.seeds if k in s.maps]) for k in ("init", "end")}
    peak = max(float(m.max()) for m in maps.values())
    image = None
    for ax, (key, m) in zip((ax_init, ax_end), maps.items()):
        title = "initialisation" if key == "init" else f"after {epochs[-1]} epoch(s)"
        image = map_panel(ax, m, r.center, (r.radius,),
                          f"ERF on held-out digits, {title} (mean of {len(r.seeds)} seeds)", vmax=peak)
    if image is not None:
        bottom.colorbar(image, ax=[ax_init, ax_end], fraction=0.03, pad=0.01, label="ERF / max of both")
    size = next(iter(maps.values())).shape[0]
    fig.suptitle(f"training: a residual CNN ({r.parameters} parameters) on scikit-learn's digits "
                 f"upsampled to {size} px; probed unit's TRF {r.trf} px, circle at R = TRF / 4",
                 fontsize=10)
    return fig
