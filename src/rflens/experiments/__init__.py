"""Reproductions of the receptive-field literature, each with a figure and numbers.

Every experiment is a function ``run(seed=0, **options) -> ExperimentResult`` in its own module,
registered in :data:`EXPERIMENTS`. :func:`run_experiment` times it (wall and CPU seconds), and
writes ``DIR/NAME.json`` (:meth:`ExperimentResult.to_dict`) and ``DIR/NAME.png`` (its figure).
Each result carries :class:`Check` rows: a quantity, what the literature (or exact theory) expects,
what was measured, and whether they agree (open questions: what was found). ``docs/experiments.md``
shows the figures and numbers.

=================  =========================================================================
``path-counts``    exact per-pixel path counts of 2 and 3 stacked 3×3 convs
``sqrt-growth``    ERF σ over depth 1…64 (uniform, random, random + ReLU): σ ∝ √n, ERF/TRF ∝ 1/√n
``stack-vs-large`` 2×3×3 vs 5×5 and 3×3×3 vs 7×7: equal TRF, the stack's ERF more concentrated
``factors``        subsampling, dilation, skip connections, dropout, ReLU vs linear
``training``       a residual CNN learns scikit-learn's digits: σ and mass beyond R, five seeds
``long-range``     a task needing evidence at distance d vs a local control, five seeds
``large-kernel``   one 13×13 depthwise kernel vs 3×3 stacks, same TRF: RepLKNet's r(t), R²
``vit-vs-cnn``     a small ViT and a CNN of similar size on the same task, ERF on the image grid
=================  =========================================================================

The last four train networks over seeds (:mod:`.stats` intervals, :mod:`.tasks`, :mod:`.nets`);
their modules define ``QUICK`` (the options of ``run_experiment(..., quick=True)``) and take
``workers`` (processes for the seeds).
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rflens.errors import RflensError
from rflens.experiments.core import Check, ExperimentResult, compress_notes, seeded

__all__ = ["EXPERIMENTS", "Experiment", "Check", "ExperimentResult", "names", "get",
           "run_experiment", "write_outputs", "DEFAULT_DIR"]

DEFAULT_DIR = "out/experiments"


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its CLI ``name``, a one-line ``summary``, and the module holding
    ``run(seed=0, **options)``."""

    name: str
    summary: str
    module: str

    def runner(self) -> Callable[..., ExperimentResult]:
        return self._module().run

    def quick_options(self) -> dict[str, Any] | None:
        """The options of its quick mode (the module's ``QUICK``), None when it has none (it is
        fast as it is)."""
        quick = getattr(self._module(), "QUICK", None)
        return dict(quick) if quick is not None else None

    def takes(self, option: str) -> bool:
        """Whether its ``run`` has a parameter called ``option``."""
        import inspect

        return option in inspect.signature(self.runner()).parameters

    def _module(self):
        import importlib

        return importlib.import_module(f"rflens.experiments.{self.module}")


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("path-counts", "exact per-pixel path counts of 2 and 3 stacked 3×3 convs", "path_counts"),
    Experiment("sqrt-growth", "ERF σ over depth 1…64: exponent ≈ 0.5, ERF/TRF slope ≈ -0.5",
               "sqrt_growth"),
    Experiment("stack-vs-large", "2×3×3 vs 5×5, 3×3×3 vs 7×7: equal TRF, σ and area ratios",
               "stack_vs_large"),
    Experiment("factors", "subsampling, dilation, skips, dropout, ReLU vs linear on the ERF", "factors"),
    Experiment("training", "a residual CNN learns scikit-learn's digits: does the ERF grow? (seeds, "
               "95 % intervals)", "training"),
    Experiment("long-range", "ERF mass at distance d grows when the task needs it, not in a control "
               "(seeds, 95 % intervals)", "long_range"),
    Experiment("large-kernel", "one large depthwise kernel vs stacks of small ones, same TRF: RepLKNet's "
               "r(t) and Gaussian fit, at init and trained", "large_kernel"),
    Experiment("vit-vs-cnn", "a small ViT and a CNN of similar size learning the same task: ERF on the "
               "image grid (seeds, 95 % intervals)", "vit_vs_cnn"),
)}


def names() -> list[str]:
    """The experiment names, in the order ``all`` runs them."""
    return list(EXPERIMENTS)


def get(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name raises :class:`RflensError` naming close
    matches."""
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    close = difflib.get_close_matches(name, names() + ["all", "list"], n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise RflensError(f"unknown experiment '{name}'{hint} (choose from {', '.join(names())}, all, "
                      "list)")


def run_experiment(name: str, out_dir: str | Path | None = DEFAULT_DIR, *, seed: int = 0,
                   threads: int | None = None, quick: bool = False, workers: int | None = None,
                   **options: Any) -> ExperimentResult:
    """Run experiment ``name`` with ``seed`` and its ``options`` (see each module's ``run``), time
    it (wall seconds; CPU seconds of this process and its seed workers), and write ``out_dir/NAME.json`` and ``out_dir/NAME.png`` (nothing when ``out_dir`` is
    None). ``threads``: torch's intra-op threads during the run (None: leave as set); the value
    used is recorded in ``settings["threads"]``. ``quick``: use the experiment's quick mode (its
    module's ``QUICK`` options, under any given ``options``; experiments without one run as they
    are); ``settings["mode"]`` records ``quick`` or ``full``. ``workers``: processes for the
    seeds of a multi-seed experiment (ignored by the others; the numbers do not depend on it)."""
    import torch

    experiment = get(name)
    mode = "full"
    if quick and (preset := experiment.quick_options()) is not None:
        options = {**preset, **options}
        mode = "quick"
    if workers is not None:
        if workers < 1:
            raise RflensError(f"workers must be a positive integer, not {workers}")
        if experiment.takes("workers"):
            options["workers"] = workers
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise RflensError(f"threads must be a positive integer, not {threads}")
        torch.set_num_threads(threads)
    try:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        with seeded(seed):  # anything drawn from the global generators is reproducible too
            result = experiment.runner()(seed=seed, **options)
        result.wall_s = time.perf_counter() - wall
        result.cpu_s = _cpu_seconds() - cpu
        result.settings["threads"] = torch.get_num_threads()
        result.settings["mode"] = mode
        result.notes = compress_notes(result.notes)
    finally:
        torch.set_num_threads(before)
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (seed workers)."""
    import os

    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def write_outputs(result: ExperimentResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``NAME.json`` and ``NAME.png`` of ``result`` into ``out_dir`` (created if missing)."""
    from rflens import plot

    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        json_path = folder / f"{result.name}.json"
        json_path.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise RflensError(f"cannot write into {folder}: {exc.strerror}") from exc
    png_path = folder / f"{result.name}.png"
    plot.save(result.figure(), png_path)
    return json_path, png_path
