"""``factors``: what changes the ERF (Luo et al. 2016, section 3): subsampling and dilation enlarge
it, skip connections make it smaller, dropout leaves its shape alone, and ReLU keeps roughly the
same law as a linear network.

One base network and one change at a time, all 2-D, ``channels`` channels, a ReLU after every conv,
probed at the centre unit of the output on a ``size``×``size`` input with ``weights="random"`` (a
fresh He-normal draw per sample, ``samples`` noise inputs):

- ``base``: a 3×3 stem and ``blocks`` blocks of two 3×3 convs (``1 + 2·blocks`` convs, no skips);
- ``stride 2``: the first conv of the middle block has stride 2 (later layers step 2 pixels);
- ``dilation 2``: every block conv has dilation 2 (the stem keeps 1);
- ``residual skips``: each block adds its input back (``x + conv(relu(conv(x)))``), same convs;
- ``dropout``: element-wise dropout ``p`` after every ReLU, *kept in training mode* while the ERF
  is measured (each sample sees a fresh mask; inverted scaling by ``1/(1-p)``). The TRF engine
  does not follow train-mode dropout, so this variant's TRF is the base's (same geometry);
- ``linear``: the base with ``activations="linear"`` (ReLU made the identity).

Stride 2 in the stem and dilation 2 in every later conv would give *identical* ERFs at the centre
unit (filter rarefaction: a stride followed by convs equals dilated convs sampled on the stride's
grid), which is why the stride sits in the middle of the stack here. σ is the Gaussian fit (mean of
both axes); the area ratio is RepLKNet's high-contribution area ratio at t = 50 % on the raw map.
The dropout comparison also reports the total-variation distance ``½ Σ |p - q|`` between the
normalised maps, next to the same distance between two base runs with different seeds (the
sampling noise floor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F
from torch import nn

from rflens.experiments.core import (Check, ExperimentResult, HeConv2d, fmt, mean_sigma,
                                     measure_erf, seeded)

__all__ = ["FactorsResult", "FactorNet", "TrainModeDropout", "run", "VARIANTS"]

VARIANTS = ("base", "stride 2", "dilation 2", "residual skips", "dropout", "linear")
AREA_T = 0.5
# variant -> (expected direction of σ vs base, what Luo et al. say)
EXPECTED = {
    "stride 2": (">", "subsampling increases the ERF"),
    "dilation 2": (">", "dilation increases the ERF"),
    "residual skips": ("<", "skip connections make the ERF smaller"),
    "dropout": ("=", "dropout does not change the ERF's shape (σ within 10 %)"),
    "linear": ("≈", "ReLU vs linear: roughly the same (σ within 15 %)"),
}
TOLERANCE = {"dropout": 0.10, "linear": 0.15}


class TrainModeDropout(nn.Module):
    """Element-wise dropout that stays active in eval mode (rflens evaluates models in eval mode):
    ``F.dropout(x, p, training=True)``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=True)


class FactorNet(nn.Module):
    """A 3×3 stem and ``blocks`` blocks of two 3×3 convs, a ReLU after every conv (no biases).

    ``stride_block``: index of the block whose first conv has stride 2 (None: all stride 1);
    ``dilation``: dilation of every block conv; ``skips``: add each block's input to its output
    (before the block's last ReLU); ``dropout``: :class:`TrainModeDropout` after every ReLU.
    """

    def __init__(self, blocks: int = 4, channels: int = 8, stride_block: int | None = None,
                 dilation: int = 1, skips: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = HeConv2d(1, channels, 3, padding=1, bias=False)
        self.convs = nn.ModuleList(
            HeConv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False,
                     stride=2 if stride_block is not None and i == 2 * stride_block else 1)
            for i in range(2 * blocks))
        self.skips = skips
        self.act = nn.ReLU()
        self.drop = TrainModeDropout(dropout) if dropout else nn.Identity()

    def forward(self, x):
        x = self.drop(self.act(self.stem(x)))
        for a, b in zip(self.convs[::2], self.convs[1::2]):
            y = b(self.drop(self.act(a(x))))
            x = self.drop(self.act(x + y if self.skips and y.shape == x.shape else y))
        return x


@dataclass
class VariantERF:
    """One variant: ``sigma`` (px), ``area_ratio`` (t = 50 %, raw), ``side`` of that square (px),
    ``trf`` size, ``erf_trf_ratio`` (95 % extent / TRF, mean of axes), ``ratio`` σ / σ_base."""

    sigma: float
    area_ratio: float
    side: int | None
    trf: int
    erf_trf_ratio: float
    ratio: float
    map: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        from rflens.experiments.core import jsonable

        return {k: jsonable(v) for k, v in self.__dict__.items() if k != "map"}


@dataclass(kw_only=True)
class FactorsResult(ExperimentResult):
    """``variants[name]`` per name of :data:`VARIANTS`; ``dropout_tv`` the total-variation distance
    between the dropout and base maps, ``noise_tv`` between two base runs with different seeds."""

    input_size: int
    variants: dict[str, VariantERF]
    dropout_tv: float
    noise_tv: float

    def figure(self):
        return _figure(self)


def _build(variant: str, blocks: int, channels: int, dropout: float) -> FactorNet:
    options = {"stride 2": {"stride_block": blocks // 2}, "dilation 2": {"dilation": 2},
               "residual skips": {"skips": True}, "dropout": {"dropout": dropout}}
    return FactorNet(blocks, channels, **options.get(variant, {}))


def _measure(variant: str, blocks: int, channels: int, dropout: float, size: int, samples: int,
             seed: int, notes: list[str]) -> tuple[object, np.ndarray]:
    activations = "linear" if variant == "linear" else "as-is"
    with seeded(seed):  # the dropout masks come from torch's global generator
        erf = measure_erf(_build(variant, blocks, channels, dropout), (1, size, size), notes,
                          label=variant, samples=samples, weights="random",
                          activations=activations, seed=seed)
    return erf, erf.normalized


def run(blocks: int = 4, channels: int = 8, size: int = 64, samples: int = 128, dropout: float = 0.3,
        seed: int = 0) -> FactorsResult:
    """Measure every variant of :data:`VARIANTS` (see the module docstring)."""
    notes: list[str] = []
    erfs = {v: _measure(v, blocks, channels, dropout, size, samples, seed, notes) for v in VARIANTS}
    base_erf = erfs["base"][0]
    base_sigma = mean_sigma(base_erf)
    variants = {}
    for name, (erf, normalized) in erfs.items():
        trf = erf.trf.size[0] if erf.trf is not None else base_erf.trf.size[0]
        ratio = [r for r in erf.metrics.erf_trf_ratio if np.isfinite(r)]
        if erf.trf is None:  # same geometry as the base: its TRF
            ratio = [e / trf for e in erf.metrics.extent[0.95]]
        variants[name] = VariantERF(sigma=mean_sigma(erf), area_ratio=erf.metrics.hca_raw[AREA_T],
                                    side=erf.metrics.hca_side_raw[AREA_T], trf=trf,
                                    erf_trf_ratio=float(np.mean(ratio)),
                                    ratio=mean_sigma(erf) / base_sigma, map=normalized)
    other_base = _measure("base", blocks, channels, dropout, size, samples, seed + 1, notes)[1]
    dropout_tv = _tv(variants["dropout"].map, variants["base"].map)
    noise_tv = _tv(other_base, variants["base"].map)
    return FactorsResult(
        name="factors", title="What changes the ERF: subsampling, dilation, skips, dropout, ReLU",
        checks=_checks(variants, dropout_tv, noise_tv),
        settings={"input": f"1×{size}×{size}", "unit": "centre of the output", "blocks": blocks,
                  "convs": 1 + 2 * blocks, "channels": channels, "samples": samples,
                  "weights": "He-normal, a fresh draw per sample", "dropout p": dropout,
                  "dropout mode": "training mode during the ERF measurement",
                  "area ratio": f"raw high-contribution area ratio at t = {AREA_T:g}", "seed": seed,
                  "noise floor": f"base with seed {seed + 1}"},
        notes=notes, input_size=size, variants=variants, dropout_tv=dropout_tv, noise_tv=noise_tv)


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance between two maps normalised to sum 1."""
    return 0.5 * float(np.abs(p - q).sum())


def _checks(variants: dict[str, VariantERF], dropout_tv: float, noise_tv: float) -> list[Check]:
    base = variants["base"]
    checks = []
    for name, (relation, claim) in EXPECTED.items():
        v = variants[name]
        measured = (f"σ {fmt(v.sigma, 2)} vs {fmt(base.sigma, 2)} (×{fmt(v.ratio, 2)}), area "
                    f"{fmt(v.area_ratio, 4)} vs {fmt(base.area_ratio, 4)}")
        if relation == ">":
            ok = v.ratio > 1 and v.area_ratio >= base.area_ratio
        elif relation == "<":
            ok = v.ratio < 1 and v.area_ratio <= base.area_ratio
        else:
            ok = abs(v.ratio - 1) <= TOLERANCE[name]
        if name == "dropout":
            measured += f", TV {fmt(dropout_tv, 3)} (noise floor {fmt(noise_tv, 3)})"
        checks.append(Check(f"{name}: {claim}", _expected_text(relation, name), measured, bool(ok),
                            v.ratio))
    return checks


def _expected_text(relation: str, name: str) -> str:
    if relation == ">":
        return "σ ratio > 1, area ≥ base"
    if relation == "<":
        return "σ ratio < 1, area ≤ base"
    return f"σ ratio 1 ± {TOLERANCE[name]:g}"


# --- figure ---------------------------------------------------------------------------------------

def _figure(r: FactorsResult):
    from rflens import plot

    fig = plot.RFFigure(figsize=(15, 6.4), dpi=plot.DPI, layout="constrained")
    grid = fig.add_gridspec(2, len(r.variants), height_ratios=(1.0, 0.8))
    half = 20
    peak = max(float(v.map.max()) for v in r.variants.values())
    for i, (name, v) in enumerate(r.variants.items()):
        ax = fig.add_subplot(grid[0, i])
        c = r.input_size // 2
        crop = v.map[c - half:c + half + 1, c - half:c + half + 1]
        image = ax.imshow(crop / peak, cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                          extent=(-half - 0.5, half + 0.5, half + 0.5, -half - 0.5))
        ax.set_title(f"{name}\nσ {v.sigma:.2f}, TRF {v.trf}", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="ERF / max over all")
    _bars(fig.add_subplot(grid[1, :]), r)
    fig.suptitle(f"factors: ERF of the centre unit, random He-normal weights "
                 f"({r.settings['samples']} samples), input {r.input_size}×{r.input_size} "
                 f"(central 41×41 shown)", fontsize=10)
    return fig


def _bars(ax, r: FactorsResult) -> None:
    names = [n for n in r.variants if n != "base"]
    ratios = [r.variants[n].ratio for n in names]
    colors = ["#2ca02c" if c.passed else "#d62728" for c in r.checks]
    ax.bar(range(len(names)), ratios, color=colors, width=0.6)
    ax.axhline(1.0, color="k", lw=1, ls="--")
    for i, (n, value) in enumerate(zip(names, ratios)):
        relation = EXPECTED[n][0]
        ax.text(i, value + 0.03, f"×{value:.2f} (expected {relation} 1)", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("σ / σ of the base network")
    ax.set_ylim(0, max(ratios) * 1.2)
    ax.set_title("σ relative to the base (green: agrees with Luo et al.)", fontsize=9)
