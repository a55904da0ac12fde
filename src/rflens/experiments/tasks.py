"""What the training experiments share: the generated long-range task, the training loop, the
radial ERF masses, and running seeds in worker processes.

**The mark task** (:class:`MarkTask`). Each ``size``×``size`` single-channel image is Gaussian
noise (standard deviation ``noise``) with two square marks of side ``mark`` and amplitude
``±amplitude`` added, each sign drawn independently:

- the *near* mark, centred on the probed unit's centre (rounded to a pixel) moved by up to
  ``jitter`` pixels on each axis;
- the *far* mark, at Euclidean distance ``distance`` from the probed unit's centre in a uniformly
  random direction (its centre rounded to a pixel).

The *long-range* label is the far mark's sign, the *control* label the near mark's: the two tasks
see the same images and differ only in which evidence decides the label, so a network trained on
the long-range task needs the input at distance ``distance``, one trained on the control needs only
its centre (and can ignore the far mark, which is then a distractor).

**Radial masses** (:func:`radial_masses`) read a normalised ERF map around a centre given in input
pixels: the share of the mass at pixels whose centre lies at Euclidean distance ``r`` with
``low <= r <= high`` (a ring), and beyond a radius (``r > radius``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rflens.errors import RflensError

__all__ = ["MarkTask", "LABELS", "train_epoch", "fit_marks", "accuracy", "radial_masses", "ring_mass",
           "mass_beyond", "run_seeds", "mean_map"]

LABELS = ("long-range", "control")


@dataclass(frozen=True)
class MarkTask:
    """The generated task (see the module docstring). Lengths in pixels."""

    size: int = 32
    distance: float = 10.0
    amplitude: float = 2.0
    noise: float = 1.0
    mark: int = 3
    jitter: int = 1

    def check(self, center: tuple[float, float]) -> None:
        """Raise :class:`RflensError` unless both marks fit inside the image around ``center``
        and the far mark cannot touch the near one."""
        half = self.mark // 2
        reach = self.distance + half + 1
        for c in center:
            if c - reach < 0 or c + reach > self.size - 1:
                raise RflensError(f"marks at distance {self.distance:g} around pixel {c:g} do not fit "
                                  f"a {self.size}-pixel image; use a larger size or a smaller distance")
        if self.distance - math.sqrt(2) * (self.jitter + 1) < self.mark:
            raise RflensError(f"distance {self.distance:g} is too small: the far mark could touch the "
                              f"near one (mark {self.mark}, jitter {self.jitter})")

    def sample(self, n: int, center: tuple[float, float],
               rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``n`` images ``(n, 1, size, size)`` float32 and their labels ``{"long-range": far sign
        > 0, "control": near sign > 0}`` (int64), drawn from ``rng``."""
        self.check(center)
        x = (self.noise * rng.standard_normal((n, 1, self.size, self.size))).astype(np.float32)
        signs = {"near": rng.choice((-1.0, 1.0), n), "far": rng.choice((-1.0, 1.0), n)}
        angle = rng.uniform(0.0, 2 * math.pi, n)
        jitter = rng.integers(-self.jitter, self.jitter + 1, (n, 2))
        cr, cc = (math.floor(c + 0.5) for c in center)
        near = (cr + jitter[:, 0], cc + jitter[:, 1])
        far = (np.floor(center[0] + self.distance * np.sin(angle) + 0.5).astype(int),
               np.floor(center[1] + self.distance * np.cos(angle) + 0.5).astype(int))
        rows = np.arange(n)
        half = self.mark // 2
        for key, (r, c) in (("near", near), ("far", far)):
            for dr in range(-half, half + 1):
                for dc in range(-half, half + 1):
                    x[rows, 0, r + dr, c + dc] += self.amplitude * signs[key]
        labels = {"long-range": torch.from_numpy((signs["far"] > 0).astype(np.int64)),
                  "control": torch.from_numpy((signs["near"] > 0).astype(np.int64))}
        return torch.from_numpy(x), labels

    def describe(self) -> str:
        return (f"{self.size}×{self.size} Gaussian noise (std {self.noise:g}) + two {self.mark}×{self.mark} "
                f"marks of amplitude ±{self.amplitude:g}: near (centre ± {self.jitter} px) and far "
                f"(distance {self.distance:g} px, random direction); long-range label = far sign, "
                "control label = near sign")


# --- training -------------------------------------------------------------------------------------

def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator) -> float:
    """One pass over ``(x, y)`` in a random order (from ``generator``), cross-entropy, in training
    mode; returns the mean loss."""
    model.train()
    order = torch.randperm(x.shape[0], generator=generator)
    total, count = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        idx = order[start:start + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * idx.numel()
        count += idx.numel()
    return total / max(count, 1)


def fit_marks(model: nn.Module, task: MarkTask, label: str, center: tuple[float, float], *, epochs: int,
              per_epoch: int, batch_size: int, lr: float, seed: int,
              after_epoch: Callable[[int, float], None]) -> None:
    """Train ``model`` on ``task``'s ``label`` (``"long-range"`` or ``"control"``) with Adam
    (``lr``): ``epochs`` epochs of ``per_epoch`` images drawn fresh from ``(seed, epoch)`` — so
    every model trained with the same seed sees the same images in the same order — calling
    ``after_epoch(epoch, mean loss)`` after each."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        x, y = task.sample(per_epoch, center, np.random.default_rng([seed, 1000 + epoch]))
        after_epoch(epoch, train_epoch(model, opt, x, y[label], batch_size, order))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Share of ``x`` classified as ``y``, in eval mode."""
    model.eval()
    right = 0
    for start in range(0, x.shape[0], batch_size):
        right += int((model(x[start:start + batch_size]).argmax(dim=1) == y[start:start + batch_size]).sum())
    return right / max(x.shape[0], 1)


# --- radial masses --------------------------------------------------------------------------------

def _distances(shape: tuple[int, ...], center: Sequence[float]) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, center)))


def radial_masses(erf_map: np.ndarray, center: Sequence[float], rings: dict[str, tuple[float, float]],
                  beyond: dict[str, float]) -> dict[str, float]:
    """Shares of the total mass of ``erf_map`` (non-negative; any scale): for each ``name: (low,
    high)`` of ``rings`` the pixels at distance ``low <= r <= high`` from ``center`` (pixels), for
    each ``name: radius`` of ``beyond`` the pixels at ``r > radius``. NaN for an all-zero map."""
    m = np.asarray(erf_map, dtype=np.float64)
    total = m.sum()
    r = _distances(m.shape, center)
    out: dict[str, float] = {}
    for name, (low, high) in rings.items():
        out[name] = float(m[(r >= low) & (r <= high)].sum() / total) if total > 0 else math.nan
    for name, radius in beyond.items():
        out[name] = float(m[r > radius].sum() / total) if total > 0 else math.nan
    return out


def ring_mass(erf_map: np.ndarray, center: Sequence[float], low: float, high: float) -> float:
    """Share of the mass at distance ``low <= r <= high`` from ``center``."""
    return radial_masses(erf_map, center, {"ring": (low, high)}, {})["ring"]


def mass_beyond(erf_map: np.ndarray, center: Sequence[float], radius: float) -> float:
    """Share of the mass at distance ``r > radius`` from ``center``."""
    return radial_masses(erf_map, center, {}, {"beyond": radius})["beyond"]


def mean_map(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of normalised maps (each scaled to sum 1 first): the picture of a seed average."""
    scaled = [np.asarray(m, dtype=np.float64) / max(float(np.sum(m)), 1e-300) for m in maps]
    return np.mean(scaled, axis=0)


# --- seeds in worker processes --------------------------------------------------------------------

def _call(args: tuple[Callable[..., Any], int, dict, int]) -> Any:
    fn, seed, options, threads = args
    torch.set_num_threads(threads)
    return fn(seed, **options)


def run_seeds(fn: Callable[..., Any], seeds: Sequence[int], options: dict, workers: int = 1) -> list:
    """``[fn(seed, **options) for seed in seeds]``, in ``workers`` processes when ``workers > 1``
    (spawned; each with as many torch threads as the caller has, so results are identical to a
    serial run with the same thread count). ``fn`` must be a module-level function."""
    if workers < 1:
        raise RflensError(f"workers must be a positive integer, not {workers}")
    threads = torch.get_num_threads()
    if workers == 1 or len(seeds) < 2:
        return [fn(seed, **options) for seed in seeds]
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(seeds)), mp_context=context) as pool:
        return list(pool.map(_call, [(fn, s, options, threads) for s in seeds]))
