"""``large-kernel``: one large depthwise kernel vs stacks of small ones at the same TRF — the
RepLKNet (Ding et al., CVPR 2022) / SLaK claim that large kernels give larger, less concentrated
ERFs than deep stacks of small kernels, and the ``stack-vs-large`` claim (3×3 stacks are more
concentrated than one large kernel) at scale, at initialisation and after training.

Three networks, all with the same stem (3×3 conv, BN, ReLU, 2×2 max pool, 1×1 conv to 16 channels)
and the same TRF (28 px) for the centre unit of ``features``, each with a centre-unit classifier
(:mod:`rflens.experiments.nets`):

- ``large``: one RepLKNet-style block — a 13×13 depthwise conv and a 1×1 conv on a residual branch;
- ``depthwise stack``: six such blocks with 3×3 depthwise kernels;
- ``dense stack``: three residual blocks of two dense 3×3 convs (ResNet-style).

Each seed initialises all three, calibrates their BatchNorm statistics on task images, and trains
them on the ``long-range`` task (:class:`rflens.experiments.tasks.MarkTask`, far mark at 10 px;
the same images in the same order for all three), Adam (``lr``), ``epochs`` × ``per_epoch`` images.

ERF as RepLKNet measures it: ``readout="relu"``, ``reduce="relu"``, averaged over ``erf_samples``
held-out task images; its high-contribution area ratio ``r(t)``
(:func:`rflens.erf.metrics.high_contribution_area`: the smallest centred odd square around the
probed unit's centre pixel holding more than ``t`` of the mass, / input area) at t = 20, 30, 50,
99 % on the ``log10(x + 1)``-scaled map (RepLKNet's table) and on the raw map; and how Gaussian
each ERF is: R² of the Gaussian fit to its axis marginals (mean of both axes).

Checks, stated before the runs:

- equal TRF (exact, from the TRF engine);
- at initialisation and after training, for each t: r_large / r_stack > 1 for both stacks (whole
  95 % interval over seeds; RepLKNet's table: large-kernel networks have larger r at every t);
- at initialisation: R²(stack) − R²(large) > 0 for both stacks (Luo et al. 2016: stacks tend to
  a Gaussian; a single large kernel's ERF is box-like);
- sanity: held-out accuracy > 0.9 for ``large`` and ``dense stack`` (mean over seeds);
- open questions: is the trained ERF of each still more Gaussian (R²)? does the ``r`` comparison
  hold on the raw map (the log scaling depends on gradient magnitudes)? can the depthwise stack
  learn the task in this budget (in a one-seed prototype it did not)?
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rflens.erf.metrics import high_contribution_area
from rflens.experiments.core import Check, ExperimentResult, compare, jsonable, measure_erf, seeded
from rflens.experiments.nets import DepthwiseNet, ResidualCNN, calibrate_batchnorm, parameter_count
from rflens.experiments.stats import (Interval, direction, mean_interval, open_check, ratio_interval)
from rflens.experiments.tasks import MarkTask, accuracy, fit_marks, run_seeds

__all__ = ["LargeKernelResult", "SeedRun", "run", "one_seed", "models", "QUICK", "THRESHOLDS"]

LAYER = "features"
THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
MODELS = ("large", "depthwise stack", "dense stack")
STACKS = MODELS[1:]
STAGES = ("init", "trained")
QUICK = {"seeds": 5, "epochs": 1, "per_epoch": 96, "erf_samples": 8, "test_size": 128,
         "calibration": 128}


def models(kernel: int = 13) -> dict[str, object]:
    """The three networks (fresh draws from torch's global generator), same TRF ``2·kernel + 2``."""
    return {"large": DepthwiseNet(kernel), "depthwise stack": DepthwiseNet(kernel, stack=True),
            "dense stack": ResidualCNN((kernel - 1) // 4)}


@dataclass
class SeedRun:
    """One seed: ``numbers[stage][model]`` with ``r_log10`` and ``r_raw`` (dicts t → area ratio),
    ``r2`` (Gaussian fit, mean of axes) and ``accuracy``; ``curve[model]`` r_log10 at t = 50 % and
    accuracy per epoch. ``maps`` (normalised raw ERF maps) are for the figure only."""

    seed: int
    numbers: dict[str, dict[str, dict]]
    curve: dict[str, list[dict[str, float]]]
    seconds: float
    notes: list[str] = field(default_factory=list)
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "numbers": jsonable(self.numbers), "curve": jsonable(self.curve),
                "seconds": jsonable(self.seconds)}


@dataclass(kw_only=True)
class LargeKernelResult(ExperimentResult):
    """``seeds``: every per-seed value; ``table[stage][model][t]``: intervals of r (log10, %);
    ``intervals``: those the checks use; ``trf[model]`` (px); ``parameters[model]``."""

    seeds: list[SeedRun]
    table: dict[str, dict[str, dict[str, Interval]]]
    intervals: dict[str, Interval]
    trf: dict[str, int]
    parameters: dict[str, int]
    center: tuple[float, float]

    def figure(self):
        from rflens.experiments.large_kernel_plot import figure

        return figure(self)


def _numbers(model, probe, size: int, seed: int, notes: list[str], label: str):
    erf = measure_erf(model, (1, size, size), notes, label=label, layer=LAYER, inputs=probe,
                      samples=probe.shape[0], seed=seed, readout="relu", reduce="relu")
    ref = erf.metrics.reference_pixel
    r_log = {t: high_contribution_area(erf.raw, t, ref, "log10")[1] for t in THRESHOLDS}
    r_raw = {t: high_contribution_area(erf.raw, t, ref, "raw")[1] for t in THRESHOLDS}
    return erf, {"r_log10": r_log, "r_raw": r_raw, "r2": float(np.nanmean(erf.metrics.r2)),
                 "peak": float(erf.raw.max())}


def one_seed(seed: int, *, task: MarkTask, kernel: int, epochs: int, per_epoch: int, batch_size: int,
             lr: float, erf_samples: int, test_size: int, calibration: int) -> SeedRun:
    """Initialise, measure, train and measure the three networks (see the module docstring)."""
    start = time.perf_counter()
    notes: list[str] = []
    with seeded(seed):
        nets = models(kernel)
    center = nets["large"].probe_center(task.size)
    fixed = np.random.default_rng([seed, 0])
    x_test, y_test = task.sample(test_size, center, fixed)
    x_cal, _ = task.sample(calibration, center, fixed)
    probe = x_test[:erf_samples]
    numbers: dict[str, dict[str, dict]] = {stage: {} for stage in STAGES}
    maps: dict[str, dict[str, np.ndarray]] = {stage: {} for stage in STAGES}
    curve: dict[str, list[dict[str, float]]] = {}
    for name, net in nets.items():
        calibrate_batchnorm(net, x_cal)
        erf, numbers["init"][name] = _numbers(net, probe, task.size, seed, notes, f"{name}, init")
        numbers["init"][name]["accuracy"] = accuracy(net, x_test, y_test["long-range"])
        maps["init"][name] = erf.normalized
        rows: list[dict[str, float]] = []
        last: dict = {}

        def after_epoch(epoch: int, loss: float) -> None:
            erf, values = _numbers(net, probe, task.size, seed, notes, f"{name}, epoch {epoch}")
            values["accuracy"] = accuracy(net, x_test, y_test["long-range"])
            rows.append({"epoch": epoch, "loss": loss, "accuracy": values["accuracy"],
                         "r_log10_50": values["r_log10"][0.5], "r2": values["r2"]})
            last.update(values=values, map=erf.normalized)

        fit_marks(net, task, "long-range", center, epochs=epochs, per_epoch=per_epoch,
                  batch_size=batch_size, lr=lr, seed=seed, after_epoch=after_epoch)
        numbers["trained"][name] = last["values"]
        maps["trained"][name] = last["map"]
        curve[name] = rows
    return SeedRun(seed, numbers, curve, time.perf_counter() - start, notes, maps)


def run(seeds: int = 5, epochs: int = 5, per_epoch: int = 1500, batch_size: int = 32, lr: float = 3e-3,
        kernel: int = 13, size: int = 32, distance: float = 10.0, erf_samples: int = 64,
        test_size: int = 1000, calibration: int = 512, workers: int = 1, seed: int = 0) -> LargeKernelResult:
    """Seeds ``seed … seed + seeds - 1``, each :func:`one_seed`; ``workers`` processes."""
    from rflens.erf import trf_of_unit

    task = MarkTask(size=size, distance=distance)
    nets = models(kernel)
    center = nets["large"].probe_center(size)
    task.check(center)
    trf, notes = {}, []
    for name, net in nets.items():
        grid = size // 2 ** net.pools
        info, why = trf_of_unit(net, (1, size, size), LAYER, (grid // 2, grid // 2))
        trf[name] = info.size[0] if info else 0
        if why:
            notes.append(f"{name}: {why}")
    options = dict(task=task, kernel=kernel, epochs=epochs, per_epoch=per_epoch, batch_size=batch_size,
                   lr=lr, erf_samples=erf_samples, test_size=test_size, calibration=calibration)
    runs = run_seeds(one_seed, list(range(seed, seed + seeds)), options, workers)
    notes += [n for r in runs for n in r.notes]
    table, intervals = _aggregate(runs)
    return LargeKernelResult(
        name="large-kernel", title="One large depthwise kernel vs stacks of small ones at the same TRF",
        checks=_checks(trf, intervals),
        settings={"task": task.describe() + "; trained on the long-range label",
                  "models": {"large": f"stem, pool, one block: depthwise {kernel}×{kernel} + 1×1 on a "
                                      "residual branch",
                             "depthwise stack": f"stem, pool, {(kernel - 1) // 2} blocks: depthwise 3×3 "
                                                "+ 1×1 on a residual branch",
                             "dense stack": f"stem, pool, {(kernel - 1) // 4} residual blocks of two "
                                            "dense 3×3 convs"},
                  "width": 16, "batchnorm": f"statistics calibrated on {calibration} task images",
                  "optimiser": f"Adam lr {lr:g}", "batch size": batch_size, "epochs": epochs,
                  "images per epoch": f"{per_epoch}, freshly drawn (the same for the three models)",
                  "erf": f"centre unit of '{LAYER}', readout relu, reduce relu (RepLKNet), "
                         f"{erf_samples} held-out task images",
                  "area ratio": "rflens.erf.metrics.high_contribution_area around the probed unit's "
                                "centre pixel, t = 20/30/50/99 %, log10(x + 1) map (and raw)",
                  "seeds": list(range(seed, seed + seeds)), "interval": "95 % Student-t over seeds",
                  "workers": workers},
        notes=notes, seeds=runs, table=table, intervals=intervals, trf=trf,
        parameters={k: parameter_count(v) for k, v in nets.items()}, center=center)


def _aggregate(runs: list[SeedRun]):
    table: dict[str, dict[str, dict[str, Interval]]] = {}
    iv: dict[str, Interval] = {}
    for stage in STAGES:
        table[stage] = {}
        for name in MODELS:
            rows = [r.numbers[stage][name] for r in runs]
            table[stage][name] = {f"{t:g}": mean_interval([100 * row["r_log10"][t] for row in rows])
                                  for t in THRESHOLDS}
            iv[f"{stage}: {name}: r2"] = mean_interval([row["r2"] for row in rows])
            iv[f"{stage}: {name}: accuracy"] = mean_interval([row["accuracy"] for row in rows])
        for stack in STACKS:
            for scale in ("log10", "raw"):
                for t in THRESHOLDS:
                    iv[f"{stage}: r_{scale}({t:g}) large / {stack}"] = ratio_interval(
                        [r.numbers[stage]["large"][f"r_{scale}"][t] / r.numbers[stage][stack][f"r_{scale}"][t]
                         for r in runs])
            iv[f"{stage}: r2 {stack} - large"] = mean_interval(
                [r.numbers[stage][stack]["r2"] - r.numbers[stage]["large"]["r2"] for r in runs])
    return table, iv


def _both_above(quantity: str, intervals: list[Interval], source: str, digits: int = 3,
                prefix: str = "×", bound: float = 1.0) -> Check:
    ok = all(np.isfinite(i.low) and i.low > bound for i in intervals)
    measured = "; ".join(f"{stack}: {i.text(digits, prefix)}" for stack, i in zip(STACKS, intervals))
    return Check(quantity, f"> {bound:g} for both stacks, whole 95 % intervals ({source})", measured, ok,
                 intervals[0].centre)


def _checks(trf: dict[str, int], iv: dict[str, Interval]) -> list[Check]:
    sizes = set(trf.values())
    checks = [Check("TRF of the probed unit (large, depthwise stack, dense stack)", "equal",
                    " / ".join(f"{trf[m]} px" for m in MODELS), len(sizes) == 1 and 0 not in sizes)]
    source = "RepLKNet: larger r at every t"
    for stage in STAGES:
        for t in THRESHOLDS:
            checks.append(_both_above(f"{stage}: r({t:.0%}) large / stack, log10 map",
                                      [iv[f"{stage}: r_log10({t:g}) large / {s}"] for s in STACKS], source))
    checks.append(_both_above("init: Gaussian-fit R², stack − large",
                              [iv[f"init: r2 {s} - large"] for s in STACKS],
                              "Luo et al. 2016: stacks tend to a Gaussian", prefix="", bound=0.0))
    for name in ("large", "dense stack"):
        checks.append(compare(f"trained: held-out accuracy of {name}, mean over seeds (sanity)",
                              iv[f"trained: {name}: accuracy"].centre, ">", 0.9))
    for stack in STACKS:
        checks.append(open_check(f"trained: Gaussian-fit R², {stack} − large", iv[f"trained: r2 {stack} - large"],
                                 0.0, "is the trained stack still more Gaussian?",
                                 words=("stack more Gaussian", "large more Gaussian")))
    for stage in STAGES:
        answers = []
        for stack in STACKS:
            for t in THRESHOLDS[:3]:
                answers.append(direction(iv[f"{stage}: r_raw({t:g}) large / {stack}"], 1.0,
                                         ("large", "stack")))
        verdict = ("large > stack everywhere" if all(a == "large" for a in answers)
                   else f"larger: {', '.join(answers)}")
        measured = "; ".join(f"{s}: " + ", ".join(iv[f"{stage}: r_raw({t:g}) large / {s}"].text(2, "×")
                                                   for t in THRESHOLDS[:3]) for s in STACKS)
        checks.append(Check(f"{stage}: r(20/30/50 %) large / stack on the raw map",
                            "open question: does the comparison hold without the log scaling?",
                            measured, None, None, answer=verdict))
    checks.append(open_check("trained: held-out accuracy of the depthwise stack",
                             iv["trained: depthwise stack: accuracy"], 0.9,
                             "can six depthwise 3×3 blocks learn the task in this budget?",
                             words=("learns (> 0.9)", "does not (< 0.9)"),
                             neutral="interval contains 0.9"))
    return checks
