"""The ``large-kernel`` figure: RepLKNet's r(t) per model at initialisation and after training (mean
over seeds, 95 % intervals), r(50 %) and accuracy per epoch, and the seed-averaged ERF maps."""

from __future__ import annotations

import numpy as np

from rflens.experiments.seedplots import COLORS, epoch_band, log_axis, map_panel
from rflens.experiments.tasks import mean_map

MODELS = ("large", "depthwise stack", "dense stack")
STAGES = ("init", "trained")


def figure(r):
    from rflens import plot

    fig = plot.RFFigure(figsize=(16, 7.6), dpi=plot.DPI, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.1, 1))
    ax_init, ax_trained, ax_curve, ax_acc = top.subplots(1, 4)
    for ax, stage in ((ax_init, "init"), (ax_trained, "trained")):
        _bars(ax, r.table[stage], f"r(t) on the log10(x + 1) map, {'initialisation' if stage == 'init' else 'after training'}")
    epochs = [row["epoch"] for row in r.seeds[0].curve[MODELS[0]]]
    for name, color in zip(MODELS, COLORS):
        epoch_band(ax_curve, [0] + epochs, [[s.numbers["init"][name]["r_log10"][0.5] * 100]
                                            + [row["r_log10_50"] * 100 for row in s.curve[name]]
                                            for s in r.seeds], color, name)
        epoch_band(ax_acc, [0] + epochs, [[s.numbers["init"][name]["accuracy"]]
                                          + [row["accuracy"] for row in s.curve[name]]
                                          for s in r.seeds], color, name)
    ax_curve.set_title("r(50 %) (%, log10 map) per epoch", fontsize=9)
    ax_acc.set_title("held-out accuracy (long-range task)", fontsize=9)
    ax_acc.set_ylim(0.4, 1.02)
    for ax in (ax_curve, ax_acc):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes = bottom.subplots(1, 6)
    image = None
    for i, stage in enumerate(STAGES):
        maps = {name: mean_map([s.maps[stage][name] for s in r.seeds if s.maps]) for name in MODELS}
        peak = max(float(m.max()) for m in maps.values())
        for j, name in enumerate(MODELS):
            image = map_panel(axes[3 * i + j], maps[name], r.center, (),
                              f"{name}, {stage} (TRF {r.trf[name]})", vmax=peak)
    if image is not None:
        bottom.colorbar(image, ax=list(axes), fraction=0.012, pad=0.01, label="ERF / max of its stage")
    fig.suptitle(f"large-kernel: one large depthwise kernel vs stacks of small ones at the same TRF "
                 f"(mean of {len(r.seeds)} seeds; parameters: "
                 + ", ".join(f"{k} {v}" for k, v in r.parameters.items()) + ")", fontsize=10)
    return fig


def _bars(ax, by_model, title: str) -> None:
    thresholds = list(next(iter(by_model.values())))
    x = np.arange(len(thresholds))
    width = 0.8 / len(by_model)
    for i, (name, color) in enumerate(zip(MODELS, COLORS)):
        ivs = [by_model[name][t] for t in thresholds]
        centre = np.array([iv.centre for iv in ivs])
        low = np.array([iv.low if np.isfinite(iv.low) else iv.centre for iv in ivs])
        high = np.array([iv.high if np.isfinite(iv.high) else iv.centre for iv in ivs])
        ax.bar(x + (i - 1) * width, centre, width, color=color, alpha=0.8, label=name,
               yerr=np.vstack([centre - low, high - centre]), capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(x, [f"t = {float(t):.0%}" for t in thresholds], fontsize=8)
    ax.set_ylabel("high-contribution area ratio r (% of input)")
    log_axis(ax)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
