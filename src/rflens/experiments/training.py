"""``training``: does the ERF grow while a network learns? (Luo et al. 2016, §4.3: after training on
CIFAR-10 and CamVid the ERF was larger than at initialisation.) Over ``seeds`` seeds, with 95 %
intervals.

Data: scikit-learn's bundled digits (1797 8×8 grey images, 10 classes; no download), upsampled
bilinearly to ``size``×``size`` (48), standardised with the training split's mean and standard
deviation, split into training and held-out sets stratified by class (``test_fraction``; the split
depends on the seed).

Model (:class:`rflens.experiments.nets.ResidualCNN`, ``blocks`` = 6, 10 classes, global-average
readout): 3×3 stem, 2×2 max pool, six residual blocks of 3×3 convs (16 channels, BatchNorm); the
probed unit is the centre unit of ``features`` (the last block), TRF 52 px. Chosen so that its ERF
at initialisation sits well inside its field (ERF/TRF about half, against 0.79 for the earlier
5-layer plain CNN): residual blocks keep the ERF concentrated while the TRF grows by 8 px per block,
so growth has room to show. The BatchNorm statistics are calibrated on the training images before
the first measurement (a fresh BatchNorm's mean 0 / variance 1 would scale every residual branch
down and leave the identity path's ERF alone). Adam (``lr``), cross-entropy, batch ``batch_size``,
``epochs`` epochs.

ERF: at initialisation and after every epoch, the gradient ERF of the probed unit on the first
``erf_samples`` held-out digits and, separately, on as many Gaussian-noise inputs (the same inputs
every epoch). σ: Gaussian fit, mean of both axes (px). *Mass beyond R*: the share of the ERF mass
farther than ``R = TRF / 4`` (13 px) from the unit's centre.

Checks, stated before the runs (Luo et al. 2016: the ERF grows): σ end / init > 1 and mass beyond R
end / init > 1, on held-out digits and on noise, each over the whole 95 % interval over seeds;
sanity: held-out accuracy > 0.9 (mean over seeds); design: ERF/TRF at initialisation < 0.6.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from rflens.errors import RflensError
from rflens.experiments.core import Check, ExperimentResult, compare, jsonable, mean_sigma, measure_erf, seeded
from rflens.experiments.nets import ResidualCNN, calibrate_batchnorm, parameter_count
from rflens.experiments.stats import Interval, interval_check, mean_interval, ratio_interval
from rflens.experiments.tasks import accuracy, mass_beyond, run_seeds, train_epoch

__all__ = ["TrainingResult", "SeedRun", "load_digits", "stratified_split", "run", "one_seed", "QUICK"]

LAYER = "features"
INPUTS = ("digits", "noise")
QUICK = {"seeds": 5, "epochs": 1, "subset": 128, "erf_samples": 8, "test_size": 64}


@functools.lru_cache(maxsize=2)
def load_digits(size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(N, 1, size, size)`` float32 in [0, 1] (bilinear upsampling of the
    8×8 images divided by 16) and ``(N,)`` int64 labels. Cached: do not modify the tensors."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as exc:
        raise RflensError("the training experiment needs scikit-learn, whose digits data set it "
                          "uses (pip install scikit-learn)") from exc
    digits = sk_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x, torch.tensor(digits.target, dtype=torch.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: per class, a shuffled ``test_fraction`` goes to ``test``."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cut = int(round(test_fraction * idx.size))
        test.append(idx[:cut])
        train.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass
class SeedRun:
    """One seed: ``history`` has one dict per epoch 0…E (0 = initialisation): ``loss`` (NaN at 0),
    ``accuracy``, and per input kind ``sigma_<kind>``, ``beyond_<kind>``; ``erf_trf_init`` is the
    ERF/TRF ratio on digits at initialisation. ``maps`` (digits ERF at the first and last epoch,
    normalised) are for the figure only."""

    seed: int
    history: list[dict[str, float]]
    erf_trf_init: float
    train_size: int
    test_size: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def ratio(self, key: str) -> float:
        first, last = self.history[0][key], self.history[-1][key]
        return last / first if first > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"seed": self.seed, "erf_trf_init": jsonable(self.erf_trf_init),
                "train_size": self.train_size, "test_size": self.test_size,
                "seconds": jsonable(self.seconds), "history": jsonable(self.history)}


@dataclass(kw_only=True)
class TrainingResult(ExperimentResult):
    """``seeds``: every per-seed value; ``intervals``: the 95 % intervals the checks use; ``trf``:
    the probed unit's field (px); ``radius``: R of the mass-beyond measure (px)."""

    seeds: list[SeedRun]
    intervals: dict[str, Interval]
    trf: int
    radius: float
    center: tuple[float, float]
    parameters: int

    def figure(self):
        from rflens.experiments.training_plot import figure

        return figure(self)


def _measure(model, probe: torch.Tensor, size: int, center, radius: float, seed: int, notes: list[str],
             label: str) -> tuple[dict[str, float], object]:
    out: dict[str, float] = {}
    digits = None
    for kind in INPUTS:
        erf = measure_erf(model, (1, size, size), notes, label=f"{label}, {kind}", layer=LAYER,
                          inputs=probe if kind == "digits" else "noise", samples=probe.shape[0], seed=seed)
        out[f"sigma_{kind}"] = mean_sigma(erf)
        out[f"beyond_{kind}"] = mass_beyond(erf.raw, center, radius)
        if kind == "digits":
            digits = erf
    return out, digits


def one_seed(seed: int, *, size: int, blocks: int, epochs: int, batch_size: int, lr: float,
             erf_samples: int, test_fraction: float, subset: int | None, test_size: int | None,
             radius: float) -> SeedRun:
    """Train one initialisation on the digits (see the module docstring)."""
    start = time.perf_counter()
    notes: list[str] = []
    x, y = load_digits(size)
    train, test = stratified_split(y.numpy(), test_fraction, seed)
    if subset is not None:
        train = np.sort(train[np.random.default_rng(seed).permutation(train.size)[:subset]])
    x = (x - x[train].mean()) / x[train].std()
    probe = x[test[:erf_samples]]
    if test_size is not None:
        test = test[:test_size]
    with seeded(seed):
        model = ResidualCNN(blocks, classes=10, readout="mean")
    center = model.probe_center(size)
    calibrate_batchnorm(model, x[train])
    numbers, erf = _measure(model, probe, size, center, radius, seed, notes, "epoch 0")
    ratio = float(np.mean(erf.metrics.erf_trf_ratio))
    maps = {"init": erf.normalized}
    history = [{"epoch": 0, "loss": float("nan"), "accuracy": accuracy(model, x[test], y[test]), **numbers}]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        loss = train_epoch(model, opt, x[train], y[train], batch_size, order)
        numbers, erf = _measure(model, probe, size, center, radius, seed, notes, f"epoch {epoch}")
        history.append({"epoch": epoch, "loss": loss, "accuracy": accuracy(model, x[test], y[test]),
                        **numbers})
    maps["end"] = erf.normalized
    return SeedRun(seed, history, ratio, int(train.size), int(test.size), time.perf_counter() - start,
                   notes, maps)


def run(seeds: int = 5, epochs: int = 6, size: int = 48, blocks: int = 6, batch_size: int = 32,
        lr: float = 2e-3, erf_samples: int = 64, test_fraction: float = 0.25, subset: int | None = None,
        test_size: int | None = None, workers: int = 1, seed: int = 0) -> TrainingResult:
    """Seeds ``seed … seed + seeds - 1``, each :func:`one_seed`; ``subset`` limits the training
    split and ``test_size`` the accuracy's held-out images to that many (a wiring check);
    ``workers`` processes."""
    from rflens.erf import trf_of_unit

    net = ResidualCNN(blocks, classes=10, readout="mean")
    grid = size // 2 ** net.pools
    info, why = trf_of_unit(net, (1, size, size), LAYER, (grid // 2, grid // 2))
    if info is None:
        raise RflensError(f"the training experiment needs the probed unit's TRF: {why}")
    radius = info.size[0] / 4
    center = net.probe_center(size)
    options = dict(size=size, blocks=blocks, epochs=epochs, batch_size=batch_size, lr=lr,
                   erf_samples=erf_samples, test_fraction=test_fraction, subset=subset,
                   test_size=test_size, radius=radius)
    runs = run_seeds(one_seed, list(range(seed, seed + seeds)), options, workers)
    intervals = _intervals(runs)
    notes = [n for r in runs for n in r.notes]
    if tuple(info.center) != center:
        notes.append(f"the TRF engine puts the probed unit's centre at {info.center}, the network's "
                     f"geometry at {center}")
    return TrainingResult(
        name="training", title="Does the ERF grow while a residual CNN learns scikit-learn's digits?",
        checks=_checks(intervals, radius),
        settings={"data": f"scikit-learn digits, 8×8 upsampled bilinearly to {size}×{size}, standardised",
                  "split": f"stratified by class, {test_fraction:g} held out, per seed",
                  "model": f"ResidualCNN: 3×3 stem, pool, {blocks} residual blocks of 3×3 convs "
                           "(16 ch, BN), global average pooling, linear",
                  "batchnorm": "statistics calibrated on the training split at initialisation",
                  "optimiser": f"Adam lr {lr:g}", "batch size": batch_size, "epochs": epochs,
                  "erf": f"centre unit of '{LAYER}', |gradient|; {erf_samples} held-out digits and "
                         f"{erf_samples} Gaussian-noise inputs (the same every epoch)",
                  "radius": f"R = TRF / 4 = {radius:g} px", "subset": subset, "test size": test_size,
                  "seeds": list(range(seed, seed + seeds)), "interval": "95 % Student-t over seeds",
                  "workers": workers},
        notes=notes, seeds=runs, intervals=intervals, trf=info.size[0], radius=radius, center=center,
        parameters=parameter_count(net))


def _intervals(runs: list[SeedRun]) -> dict[str, Interval]:
    out = {f"{what} {kind} end/init": ratio_interval([r.ratio(f"{what}_{kind}") for r in runs])
           for what in ("sigma", "beyond") for kind in INPUTS}
    out["accuracy"] = mean_interval([r.history[-1]["accuracy"] for r in runs])
    out["erf/trf at init"] = mean_interval([r.erf_trf_init for r in runs])
    return out


def _checks(iv: dict[str, Interval], radius: float) -> list[Check]:
    source = "Luo et al. 2016 §4.3: the ERF grows"
    checks = []
    for kind, name in (("digits", "held-out digits"), ("noise", "noise")):
        checks.append(interval_check(f"σ on {name}, end / init", iv[f"sigma {kind} end/init"], ">", 1,
                                     source, prefix="×"))
        checks.append(interval_check(f"ERF mass beyond R = {radius:g} px on {name}, end / init",
                                     iv[f"beyond {kind} end/init"], ">", 1, source, prefix="×"))
    checks.append(compare("held-out accuracy after training, mean over seeds (sanity)",
                          iv["accuracy"].centre, ">", 0.9))
    checks.append(compare("ERF/TRF on digits at initialisation, mean over seeds (design: room to grow)",
                          iv["erf/trf at init"].centre, "<", 0.6))
    return checks
