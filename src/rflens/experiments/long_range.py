"""``long-range``: does the ERF grow *because the task needs it*? The causal version of Luo et
al. 2016 §4.3 (the ERF grew while networks trained on CIFAR-10 and CamVid).

Task (:class:`rflens.experiments.tasks.MarkTask`): 32×32 noise images with a near mark at the
probed unit's centre and a far mark at distance ``distance`` (10 px) in a random direction. The
*long-range* label is the far mark's sign, the *control* label the near mark's: the same images,
only the evidence that decides the label differs.

Network (:class:`rflens.experiments.nets.ResidualCNN`, ``blocks`` = 4): 3×3 stem, 2×2 max pool,
four residual blocks of 3×3 convs (16 channels, BatchNorm), TRF 36 px; the classifier reads only
the centre unit of ``features`` — the probed unit — so the label must be decided from what that
unit sees. Per seed: one initialisation, shared by both tasks; BatchNorm statistics calibrated on
task images before the first measurement (a fresh BatchNorm holds mean 0 / variance 1, not the
statistics the network computes with; ``calibration`` images); Adam (``lr``), batch ``batch_size``, ``epochs`` epochs of
``per_epoch`` freshly drawn images — the same images and batch order for both tasks.

Measured: the gradient ERF of the centre unit of ``features`` on ``erf_samples`` held-out task
images (the same at every epoch), at initialisation and after every epoch. *Ring mass*: the share
of the ERF mass at distance ``distance ± ring_width`` from the unit's centre (where the far mark
lies); *mass beyond*: the share at ``r > distance - ring_width``. Held-out accuracy on
``test_size`` images.

Checks, stated before the runs:

- long-range task: ring mass end / init > 1 (whole 95 % interval over seeds) — the task needs
  the evidence at distance d, so the ERF must reach it;
- control: ring mass end / init *not* wholly above 1 — it needs only the centre;
- contrast (per seed, paired): (long-range ratio) / (control ratio) > 1;
- sanity: mean held-out accuracy on each task > 0.9;
- open question: σ (Gaussian fit) end / init on each task.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from rflens.experiments.core import Check, ExperimentResult, compare, jsonable, mean_sigma, measure_erf, seeded
from rflens.experiments.nets import ResidualCNN, calibrate_batchnorm, parameter_count
from rflens.experiments.stats import (Interval, interval_check, mean_interval, not_above_check,
                                      open_check, ratio_interval)
from rflens.experiments.tasks import LABELS, MarkTask, accuracy, fit_marks, radial_masses, run_seeds

__all__ = ["LongRangeResult", "SeedRun", "run", "one_seed", "QUICK"]

LAYER = "features"
QUICK = {"seeds": 5, "epochs": 1, "per_epoch": 128, "erf_samples": 8, "test_size": 128,
         "calibration": 128}


@dataclass
class SeedRun:
    """One seed: ``init`` (ERF numbers at initialisation, shared by both tasks) and ``history[task]``
    (one dict per epoch 1…E: ``loss``, ``accuracy``, ``ring``, ``beyond``, ``sigma``); ``maps``
    (normalised ERF maps at init and at the end of each task) are for the figure only."""

    seed: int
    init: dict[str, float]
    history: dict[str, list[dict[str, float]]]
    seconds: float
    notes: list[str] = field(default_factory=list)
    maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def end(self, task: str, key: str) -> float:
        return self.history[task][-1][key]

    def ratio(self, task: str, key: str) -> float:
        return self.end(task, key) / self.init[key] if self.init[key] > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"seed": self.seed, "init": jsonable(self.init), "history": jsonable(self.history),
                "seconds": jsonable(self.seconds)}


@dataclass(kw_only=True)
class LongRangeResult(ExperimentResult):
    """``seeds``: every per-seed value; ``intervals``: the 95 % intervals the checks use;
    ``center``: the probed unit's centre (pixels); ``trf``: its field side (pixels)."""

    seeds: list[SeedRun]
    intervals: dict[str, Interval]
    center: tuple[float, float]
    distance: float
    ring_width: float
    trf: int
    parameters: int

    def figure(self):
        from rflens.experiments.long_range_plot import figure

        return figure(self)


def _erf_numbers(model, probe, task: MarkTask, center, ring_width: float, seed: int,
                 notes: list[str], label: str):
    erf = measure_erf(model, (1, task.size, task.size), notes, label=label, layer=LAYER,
                      inputs=probe, samples=probe.shape[0], seed=seed)
    masses = radial_masses(erf.raw, center,
                           {"ring": (task.distance - ring_width, task.distance + ring_width)},
                           {"beyond": task.distance - ring_width})
    return erf, {**masses, "sigma": mean_sigma(erf)}


def one_seed(seed: int, *, task: MarkTask, blocks: int, epochs: int, per_epoch: int, batch_size: int,
             lr: float, erf_samples: int, test_size: int, ring_width: float, calibration: int) -> SeedRun:
    """Train one initialisation on both tasks (see the module docstring)."""
    start = time.perf_counter()
    notes: list[str] = []
    with seeded(seed):
        base = ResidualCNN(blocks)
    center = base.probe_center(task.size)
    fixed = np.random.default_rng([seed, 0])
    x_test, y_test = task.sample(test_size, center, fixed)
    x_cal, _ = task.sample(calibration, center, fixed)
    probe = x_test[:erf_samples]
    calibrate_batchnorm(base, x_cal)
    erf, init = _erf_numbers(base, probe, task, center, ring_width, seed, notes, "init")
    maps = {"init": erf.normalized}
    history: dict[str, list[dict[str, float]]] = {}
    for label in LABELS:
        model = copy.deepcopy(base)
        rows: list[dict[str, float]] = []

        def after_epoch(epoch: int, loss: float) -> None:
            erf, numbers = _erf_numbers(model, probe, task, center, ring_width, seed, notes,
                                        f"{label}, epoch {epoch}")
            rows.append({"epoch": epoch, "loss": loss, "accuracy": accuracy(model, x_test, y_test[label]),
                         **numbers})
            maps[label] = erf.normalized

        fit_marks(model, task, label, center, epochs=epochs, per_epoch=per_epoch, batch_size=batch_size,
                  lr=lr, seed=seed, after_epoch=after_epoch)
        history[label] = rows
    return SeedRun(seed, init, history, time.perf_counter() - start, notes, maps)


def run(seeds: int = 5, epochs: int = 6, per_epoch: int = 2000, batch_size: int = 32, lr: float = 3e-3,
        blocks: int = 4, size: int = 32, distance: float = 10.0, ring_width: float = 2.0,
        erf_samples: int = 64, test_size: int = 1000, calibration: int = 512, workers: int = 1,
        seed: int = 0) -> LongRangeResult:
    """Seeds ``seed … seed + seeds - 1``, each :func:`one_seed`; ``workers`` processes."""
    task = MarkTask(size=size, distance=distance)
    probe_net = ResidualCNN(blocks)
    center = probe_net.probe_center(size)
    task.check(center)
    options = dict(task=task, blocks=blocks, epochs=epochs, per_epoch=per_epoch, batch_size=batch_size,
                   lr=lr, erf_samples=erf_samples, test_size=test_size, ring_width=ring_width,
                   calibration=calibration)
    runs = run_seeds(one_seed, list(range(seed, seed + seeds)), options, workers)
    intervals = _intervals(runs)
    notes = [n for r in runs for n in r.notes]
    from rflens.erf import trf_of_unit

    grid = size // 2 ** probe_net.pools
    info, why = trf_of_unit(probe_net, (1, size, size), LAYER, (grid // 2, grid // 2))
    if why:
        notes.append(why)
    elif tuple(info.center) != center:
        notes.append(f"the TRF engine puts the probed unit's centre at {info.center}, the network's "
                     f"geometry at {center}")
    return LongRangeResult(
        name="long-range", title="ERF growth driven by the task: evidence at distance d vs a local control",
        checks=_checks(intervals, distance, ring_width),
        settings={"task": task.describe(), "model": f"ResidualCNN: 3×3 stem, pool, {blocks} residual "
                  "blocks of 3×3 convs (16 ch, BN), centre-unit readout",
                  "batchnorm": f"statistics calibrated on {calibration} task images at initialisation",
                  "optimiser": f"Adam lr {lr:g}", "batch size": batch_size, "epochs": epochs,
                  "images per epoch": f"{per_epoch}, freshly drawn (the same for both tasks)",
                  "erf": f"centre unit of '{LAYER}', |gradient|, {erf_samples} held-out task images",
                  "ring": f"distance {distance:g} ± {ring_width:g} px", "beyond": f"r > {distance - ring_width:g} px",
                  "seeds": list(range(seed, seed + seeds)), "interval": "95 % Student-t over seeds",
                  "workers": workers},
        notes=notes, seeds=runs, intervals=intervals, center=center, distance=distance,
        ring_width=ring_width, trf=info.size[0] if info else 0, parameters=parameter_count(probe_net))


def _intervals(runs: list[SeedRun]) -> dict[str, Interval]:
    out: dict[str, Interval] = {}
    for label in LABELS:
        for key in ("ring", "beyond", "sigma"):
            out[f"{label}: {key} end/init"] = ratio_interval([r.ratio(label, key) for r in runs])
        out[f"{label}: accuracy"] = mean_interval([r.end(label, "accuracy") for r in runs])
    out["ring ratio long-range / control"] = ratio_interval(
        [r.ratio("long-range", "ring") / r.ratio("control", "ring") for r in runs])
    out["init: ring"] = mean_interval([r.init["ring"] for r in runs])
    return out


def _checks(iv: dict[str, Interval], distance: float, width: float) -> list[Check]:
    ring = f"ring mass at d = {distance:g} ± {width:g} px"
    return [
        interval_check(f"long-range task: {ring}, end / init", iv["long-range: ring end/init"], ">", 1,
                       "the label needs the evidence at d", prefix="×"),
        not_above_check(f"control task: {ring}, end / init", iv["control: ring end/init"], 1,
                        "the label needs only the centre", prefix="×"),
        interval_check(f"paired contrast: long-range ratio / control ratio ({ring})",
                       iv["ring ratio long-range / control"], ">", 1,
                       "growth caused by the task", prefix="×"),
        compare("long-range task: held-out accuracy, mean over seeds (sanity)",
                iv["long-range: accuracy"].centre, ">", 0.9),
        compare("control task: held-out accuracy, mean over seeds (sanity)",
                iv["control: accuracy"].centre, ">", 0.9),
        open_check("long-range task: σ end / init", iv["long-range: sigma end/init"], 1,
                   "does the Gaussian-fit σ follow the ring mass?", prefix="×"),
        open_check("control task: σ end / init", iv["control: sigma end/init"], 1,
                   "does the Gaussian-fit σ follow the ring mass?", prefix="×"),
    ]
