"""``vit-vs-cnn``: the ERF of a small vision transformer and a CNN of similar size while both learn
the same task, measured on the image grid.

Networks (:mod:`rflens.experiments.nets`), each with a centre-unit classifier:

- ``ViT``: :class:`TinyViT` — 4×4 patches (an 8×8 token grid on a 32-pixel input), fixed 2-D
  sine-cosine position embeddings, two pre-norm transformer blocks (width 32, 4 heads, MLP ×2);
  its ``features`` output is the residual stream put back on the token grid (:class:`TokenGrid`),
  so the probed unit is the centre token and the ERF is computed on the input image's pixels;
- ``CNN``: :class:`ResidualCNN` with four residual blocks (the ``long-range`` network, TRF 36 px).

Task: the ``long-range`` task (:class:`rflens.experiments.tasks.MarkTask`, far mark at 10 px) around
each network's probed unit — the ViT's centre token covers pixels 16–19 (centre 17.5), the CNN's
centre unit is centred at 16.5, so each network's images are the same draws with the marks placed
around its own unit. Both train on the same draws in the same order (Adam, ``lr``, ``epochs`` ×
``per_epoch`` images); the CNN's BatchNorm statistics are calibrated first.

Measured at initialisation and after every epoch, on ``erf_samples`` held-out images (gradient
ERF, ``|gradient|`` of the summed channels of the probed unit): the share of the ERF mass beyond
``R`` (9 px, a quarter of the CNN's TRF), in the ring ``10 ± 2`` px (where the far mark lies), in
the probed unit's own 4×4 window, and, for the ViT, the own patch's share over the largest share of
any other patch of the 4×4 patch grid.

Checks, stated before the runs:

- mass beyond R, ViT / CNN > 1 at initialisation and after training (Dosovitskiy et al. 2021:
  attention integrates the whole image from the first layer; Raghu et al. 2021: ViT receptive
  fields are more global than ResNets');
- the ViT's own patch outweighs every other patch, at initialisation and after training (Raghu et
  al. 2021: a strong dependence on the centre patch, kept by the residual connections);
- the CNN's ring mass grows (end / init > 1; the ``long-range`` finding); sanity: CNN held-out
  accuracy > 0.9;
- open questions: does the ViT's ring mass grow? does the ViT learn the task in this budget?
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rflens.experiments.core import Check, ExperimentResult, compare, jsonable, measure_erf, seeded
from rflens.experiments.nets import ResidualCNN, TinyViT, calibrate_batchnorm, parameter_count
from rflens.experiments.stats import (Interval, interval_check, mean_interval, open_check, ratio_interval)
from rflens.experiments.tasks import MarkTask, accuracy, fit_marks, radial_masses, run_seeds

__all__ = ["VitVsCnnResult", "SeedRun", "run", "one_seed", "patch_shares", "QUICK"]

LAYER = "features"
MODELS = ("ViT", "CNN")
PATCH = 4
QUICK = {"seeds": 5, "epochs": 1, "per_epoch": 96, "erf_samples": 8, "test_size": 128,
         "calibration": 128}


def _models(size: int) -> dict[str, object]:
    return {"ViT": TinyViT(size=size, patch=PATCH), "CNN": ResidualCNN(4)}


def patch_shares(erf_map: np.ndarray, patch: int) -> np.ndarray:
    """Share of the map's mass in each cell of the ``patch``×``patch`` grid starting at pixel 0."""
    m = np.asarray(erf_map, dtype=np.float64)
    h, w = m.shape[0] // patch, m.shape[1] // patch
    cells = m[:h * patch, :w * patch].reshape(h, patch, w, patch).sum(axis=(1, 3))
    return cells / max(float(m.sum()), 1e-300)


def _numbers(model, name: str, probe, task: MarkTask, center, radius: float, width: float, seed: int,
             notes: list[str], label: str):
    erf = measure_erf(model, (1, task.size, task.size), notes, label=f"{name}, {label}", layer=LAYER,
                      inputs=probe, samples=probe.shape[0], seed=seed)
    half = PATCH / 2
    out = radial_masses(erf.raw, center, {"ring": (task.distance - width, task.distance + width)},
                        {"beyond": radius})
    r0, c0 = (int(round(c - half + 0.5)) for c in center)
    out["own_window"] = float(erf.raw[r0:r0 + PATCH, c0:c0 + PATCH].sum() / erf.raw.sum())
    if name == "ViT":
        cells = patch_shares(erf.raw, PATCH)
        own = (int(center[0] // PATCH), int(center[1] // PATCH))
        others = np.delete(cells.ravel(), own[0] * cells.shape[1] + own[1])
        out["own_patch_dominance"] = float(cells[own] / others.max())
    return erf, out


@dataclass
class SeedRun:
    """One seed: ``history[model]`` has one dict per epoch 0…E (0 = initialisation) with ``loss``,
    ``accuracy``, ``beyond``, ``ring``, ``own_window`` (and ``own_patch_dominance`` for the ViT).
    ``maps[model][stage]`` (normalised ERFs) are for the figure only."""

    seed: int
    history: dict[str, list[dict[str, float]]]
    seconds: float
    notes: list[str] = field(default_factory=list)
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def value(self, model: str, key: str, epoch: int = -1) -> float:
        return self.history[model][epoch][key]

    def to_dict(self) -> dict:
        return {"seed": self.seed, "history": jsonable(self.history), "seconds": jsonable(self.seconds)}


@dataclass(kw_only=True)
class VitVsCnnResult(ExperimentResult):
    """``seeds``: every per-seed value; ``intervals``: those the checks use; ``centers[model]``:
    the probed unit's centre (px); ``parameters[model]``; ``radius`` R (px)."""

    seeds: list[SeedRun]
    intervals: dict[str, Interval]
    centers: dict[str, tuple[float, float]]
    parameters: dict[str, int]
    radius: float
    distance: float
    ring_width: float

    def figure(self):
        from rflens.experiments.vit_vs_cnn_plot import figure

        return figure(self)


def one_seed(seed: int, *, task: MarkTask, epochs: int, per_epoch: int, batch_size: int, lr: float,
             erf_samples: int, test_size: int, calibration: int, radius: float, ring_width: float) -> SeedRun:
    """Initialise, measure and train both networks (see the module docstring)."""
    start = time.perf_counter()
    notes: list[str] = []
    with seeded(seed):
        nets = _models(task.size)
    history: dict[str, list[dict[str, float]]] = {}
    maps: dict[str, dict[str, np.ndarray]] = {}
    for name, net in nets.items():
        center = net.probe_center(task.size)
        fixed = np.random.default_rng([seed, 0])
        x_test, y_test = task.sample(test_size, center, fixed)
        x_cal, _ = task.sample(calibration, center, fixed)
        probe = x_test[:erf_samples]
        calibrate_batchnorm(net, x_cal)
        erf, numbers = _numbers(net, name, probe, task, center, radius, ring_width, seed, notes, "init")
        rows = [{"epoch": 0, "loss": float("nan"), "accuracy": accuracy(net, x_test, y_test["long-range"]),
                 **numbers}]
        maps[name] = {"init": erf.normalized}

        def after_epoch(epoch: int, loss: float) -> None:
            erf, numbers = _numbers(net, name, probe, task, center, radius, ring_width, seed, notes,
                                    f"epoch {epoch}")
            rows.append({"epoch": epoch, "loss": loss,
                         "accuracy": accuracy(net, x_test, y_test["long-range"]), **numbers})
            maps[name]["trained"] = erf.normalized

        fit_marks(net, task, "long-range", center, epochs=epochs, per_epoch=per_epoch,
                  batch_size=batch_size, lr=lr, seed=seed, after_epoch=after_epoch)
        history[name] = rows
    return SeedRun(seed, history, time.perf_counter() - start, notes, maps)


def run(seeds: int = 5, epochs: int = 6, per_epoch: int = 2000, batch_size: int = 32, lr: float = 3e-3,
        size: int = 32, distance: float = 10.0, ring_width: float = 2.0, radius: float = 9.0,
        erf_samples: int = 64, test_size: int = 1000, calibration: int = 512, workers: int = 1,
        seed: int = 0) -> VitVsCnnResult:
    """Seeds ``seed … seed + seeds - 1``, each :func:`one_seed`; ``workers`` processes."""
    task = MarkTask(size=size, distance=distance)
    nets = _models(size)
    centers = {k: v.probe_center(size) for k, v in nets.items()}
    for c in centers.values():
        task.check(c)
    options = dict(task=task, epochs=epochs, per_epoch=per_epoch, batch_size=batch_size, lr=lr,
                   erf_samples=erf_samples, test_size=test_size, calibration=calibration, radius=radius,
                   ring_width=ring_width)
    runs = run_seeds(one_seed, list(range(seed, seed + seeds)), options, workers)
    notes = [n for r in runs for n in r.notes]
    intervals = _intervals(runs)
    params = {k: parameter_count(v) for k, v in nets.items()}
    return VitVsCnnResult(
        name="vit-vs-cnn", title="The ERF of a small ViT and a CNN of similar size while learning the same task",
        checks=_checks(intervals, radius),
        settings={"task": task.describe() + "; long-range label, marks around each network's probed unit",
                  "ViT": f"4×4 patches, width 32, 2 pre-norm blocks, 4 heads, MLP ×2, fixed sin-cos "
                         f"positions, tokens back on their 8×8 grid ({params['ViT']} parameters)",
                  "CNN": f"ResidualCNN, 4 residual blocks of 3×3 convs, 16 ch, BN ({params['CNN']} parameters)",
                  "optimiser": f"Adam lr {lr:g}", "batch size": batch_size, "epochs": epochs,
                  "images per epoch": f"{per_epoch}, freshly drawn (the same draws for both)",
                  "erf": f"centre unit of '{LAYER}', |gradient| of the channel sum, {erf_samples} "
                         "held-out task images",
                  "radius": f"R = {radius:g} px", "ring": f"distance {distance:g} ± {ring_width:g} px",
                  "seeds": list(range(seed, seed + seeds)), "interval": "95 % Student-t over seeds",
                  "workers": workers},
        notes=notes, seeds=runs, intervals=intervals, centers=centers, parameters=params, radius=radius,
        distance=distance, ring_width=ring_width)


def _intervals(runs: list[SeedRun]) -> dict[str, Interval]:
    iv: dict[str, Interval] = {}
    for stage, epoch in (("init", 0), ("trained", -1)):
        iv[f"{stage}: beyond ViT / CNN"] = ratio_interval(
            [r.value("ViT", "beyond", epoch) / r.value("CNN", "beyond", epoch) for r in runs])
        iv[f"{stage}: ViT own patch dominance"] = ratio_interval(
            [r.value("ViT", "own_patch_dominance", epoch) for r in runs])
        for name in MODELS:
            for key in ("beyond", "ring", "own_window", "accuracy"):
                iv[f"{stage}: {name} {key}"] = mean_interval([r.value(name, key, epoch) for r in runs])
    for name in MODELS:
        iv[f"{name}: ring end/init"] = ratio_interval(
            [r.value(name, "ring") / r.value(name, "ring", 0) for r in runs])
    return iv


def _checks(iv: dict[str, Interval], radius: float) -> list[Check]:
    checks = []
    for stage, source in (("init", "Dosovitskiy et al. 2021: attention sees the whole image"),
                          ("trained", "Raghu et al. 2021: ViT fields more global than ResNets'")):
        checks.append(interval_check(f"{stage}: ERF mass beyond R = {radius:g} px, ViT / CNN",
                                     iv[f"{stage}: beyond ViT / CNN"], ">", 1, source, prefix="×"))
    for stage in ("init", "trained"):
        checks.append(interval_check(f"{stage}: ViT own patch / largest other patch",
                                     iv[f"{stage}: ViT own patch dominance"], ">", 1,
                                     "Raghu et al. 2021: strong centre-patch dependence", prefix="×"))
    checks.append(interval_check("CNN: ring mass end / init", iv["CNN: ring end/init"], ">", 1,
                                 "the long-range finding", prefix="×"))
    checks.append(compare("CNN: held-out accuracy after training, mean over seeds (sanity)",
                          iv["trained: CNN accuracy"].centre, ">", 0.9))
    checks.append(open_check("ViT: ring mass end / init", iv["ViT: ring end/init"], 1,
                             "does an already global field move its mass to where the evidence is?",
                             prefix="×"))
    checks.append(open_check("ViT: held-out accuracy after training", iv["trained: ViT accuracy"], 0.9,
                             "does the ViT learn the task in this budget?",
                             words=("learns (> 0.9)", "does not (< 0.9)"),
                             neutral="interval contains 0.9"))
    return checks
