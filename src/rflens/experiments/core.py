"""Pieces every experiment shares: checks against the literature, the result base class, power-law
fits, seeding, ERF measurement with warnings collected, and JSON conversion.

Conventions used by every experiment:

- **σ** is the Gaussian-fit sigma of :mod:`rflens.erf.metrics` (least-squares fit to each axis marginal
  of the ERF map, raw scaling, pixels); a 2-D map reports the mean of its two axes.
- **Power laws** are fitted by least squares on ``log y = a + b log n``; the *exponent* is ``b``,
  R² is the coefficient of determination of that line in log-log space.
- **Random weights** are a fresh He-normal draw per ERF sample (``weights="random"`` of
  :func:`rflens.effective_receptive_field` with :class:`HeConv1d` / :class:`HeConv2d` layers, whose
  ``reset_parameters`` draws He-normal weights and zero biases): the ERF's shape does not depend on
  the weight scale, He scaling only keeps gradients O(1) through deep ReLU stacks.
- Every random choice derives from one integer ``seed``.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["Check", "ExperimentResult", "PowerFit", "power_fit", "within", "compare", "seeded",
           "measure_erf", "HeConv1d", "HeConv2d", "jsonable", "mean_sigma", "fmt", "compress_notes"]

NAN = float("nan")


# --- checks ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One comparison with the literature: ``quantity`` measured as ``measured`` where the literature
    (or exact theory) expects ``expected``; ``passed`` says whether they agree. ``value`` is the
    measured number (None when the quantity is not a single number).

    An *open question* (the literature is silent) has an ``answer`` (what was found, e.g. "grows")
    and ``passed`` None: it is reported, never counted as agreeing or disagreeing."""

    quantity: str
    expected: str
    measured: str
    passed: bool | None
    value: float | None = None
    answer: str | None = None

    @property
    def open(self) -> bool:
        """True for an open question."""
        return self.answer is not None

    def to_dict(self) -> dict:
        out = {"quantity": self.quantity, "expected": self.expected, "measured": self.measured,
               "passed": None if self.open else bool(self.passed), "value": jsonable(self.value)}
        if self.open:
            out.update(open_question=True, answer=self.answer)
        return out


def fmt(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant decimals (``nan`` spelled out)."""
    return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"


def within(quantity: str, value: float, target: float, tol: float, digits: int = 3) -> Check:
    """Check ``|value - target| <= tol``."""
    ok = math.isfinite(value) and abs(value - target) <= tol
    return Check(quantity, f"{target:g} ± {tol:g}", fmt(value, digits), ok, float(value))


def compare(quantity: str, value: float, relation: str, bound: float, digits: int = 3) -> Check:
    """Check ``value RELATION bound`` for relation ``<``, ``<=``, ``>`` or ``>=``."""
    ops = {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound}
    ok = math.isfinite(value) and ops[relation]
    return Check(quantity, f"{relation} {bound:g}", fmt(value, digits), bool(ok), float(value))


# --- results --------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class ExperimentResult:
    """What every experiment returns. Subclasses add their measurements as dataclass fields (they
    become the ``data`` part of :meth:`to_dict`) and draw them in :meth:`figure`.

    ``wall_s`` / ``cpu_s``: wall-clock and CPU seconds of the run (CPU time counts every thread and
    the seed worker processes, so it can exceed the wall time); set by
    :func:`rflens.experiments.run_experiment`.
    ``notes``: warnings raised while measuring (deduplicated), kept for the record.
    """

    name: str
    title: str
    checks: list[Check]
    settings: dict
    notes: list[str] = field(default_factory=list)
    wall_s: float = NAN
    cpu_s: float = NAN

    @property
    def passed(self) -> bool:
        """True when every check agrees with the literature (open questions are not counted)."""
        return all(c.passed for c in self.checks if not c.open)

    def data(self) -> dict:
        """The subclass's own fields, JSON-ready."""
        base = {f.name for f in fields(ExperimentResult)}
        return {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.name not in base}

    def to_dict(self) -> dict:
        """JSON-ready dict: ``schema_version``, name, checks, timing, settings, notes and ``data``."""
        return {"schema_version": 1, "experiment": self.name, "title": self.title,
                "passed": self.passed, "checks": [c.to_dict() for c in self.checks],
                "wall_s": jsonable(self.wall_s), "cpu_s": jsonable(self.cpu_s),
                "settings": jsonable(self.settings), "notes": list(self.notes), "data": self.data()}

    def figure(self):  # pragma: no cover - every subclass draws its own
        raise NotImplementedError


def jsonable(value: Any) -> Any:
    """``value`` made JSON-ready: numpy scalars/arrays to Python, NaN/Inf to None, fractions to
    ``"p/q"`` strings, tuples to lists, dataclasses with ``to_dict`` through it."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# --- power laws -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PowerFit:
    """``y ≈ prefactor * n ** exponent`` fitted on ``log y`` vs ``log n`` over ``n_range``
    (inclusive); ``r2`` is the coefficient of determination in log-log space."""

    exponent: float
    prefactor: float
    r2: float
    n_range: tuple[int, int]
    points: int

    def to_dict(self) -> dict:
        return {"exponent": jsonable(self.exponent), "prefactor": jsonable(self.prefactor),
                "r2": jsonable(self.r2), "n_range": list(self.n_range), "points": self.points}


def power_fit(n: Sequence[float], y: Sequence[float], n_min: float = 0) -> PowerFit:
    """Least-squares power law through the points with ``n >= n_min`` (non-finite or non-positive
    ``y`` left out); NaN numbers when fewer than two points remain."""
    n_arr, y_arr = np.asarray(n, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = (n_arr >= n_min) & np.isfinite(y_arr) & (y_arr > 0)
    n_arr, y_arr = n_arr[keep], y_arr[keep]
    if n_arr.size < 2:
        return PowerFit(NAN, NAN, NAN, (0, 0), int(n_arr.size))
    lx, ly = np.log(n_arr), np.log(y_arr)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (intercept + slope * lx)
    total = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else NAN
    return PowerFit(float(slope), float(math.exp(intercept)), r2,
                    (int(n_arr.min()), int(n_arr.max())), int(n_arr.size))


# --- models and measurement -----------------------------------------------------------------------

class HeConv1d(nn.Conv1d):
    """A 1-D conv whose random draw is He-normal (fan-in, ReLU gain) with zero bias."""

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class HeConv2d(nn.Conv2d):
    """A 2-D conv whose random draw is He-normal (fan-in, ReLU gain) with zero bias."""

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's and numpy's global generators seeded by ``seed``, restoring both
    afterwards (models built inside get reproducible initial weights)."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


def measure_erf(model: nn.Module, input_shape: tuple[int, ...], notes: list[str] | None = None,
                label: str = "", **kwargs: Any):
    """:func:`rflens.effective_receptive_field` of the model output (or ``layer=``), without a
    progress bar, its warnings appended (once each, prefixed by ``label``) to ``notes`` instead of
    printed."""
    from rflens.erf import effective_receptive_field

    layer = kwargs.pop("layer", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = effective_receptive_field(model, layer, input_shape, progress=False, **kwargs)
    if notes is not None:
        for w in caught:
            text = f"{label}: {w.message}" if label else str(w.message)
            if text not in notes:
                notes.append(text)
    return result


def compress_notes(notes: Sequence[str]) -> list[str]:
    """``notes`` with messages that differ only in their numbers (depth, epoch, percentages) merged:
    the first of each kind, followed by ``(and N more like it)`` when there were more."""
    groups: dict[str, list[str]] = {}
    for note in notes:
        groups.setdefault(re.sub(r"\d+(\.\d+)?", "#", note), []).append(note)
    return [g[0] + (f" (and {len(g) - 1} more like it)" if len(g) > 1 else "") for g in groups.values()]


def mean_sigma(result: Any) -> float:
    """Mean over axes of the Gaussian-fit σ of an ERF result (pixels)."""
    values = [s for s in result.metrics.sigma if math.isfinite(s)]
    return float(np.mean(values)) if values else NAN
