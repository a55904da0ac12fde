"""Confidence intervals over seeds, and checks that pass only when an interval clears a bound.

Two kinds of interval, both Student-t intervals over independent seeds (``scipy.stats.t``):

- :func:`mean_interval`: the arithmetic mean of the values, ``mean ± t(0.975, n-1) · s / √n``;
  for differences and shares.
- :func:`ratio_interval`: for positive ratios (end / start, A / B). The interval is taken on
  ``log(ratio)`` and exponentiated, so its centre is the *geometric* mean and ×2 and ×½ are
  equally far from 1; an interval excludes 1 exactly when the log interval excludes 0.

A check built by :func:`interval_check` passes only when the whole interval lies on the expected
side of the bound (``low > bound`` for ``>``, ``high < bound`` for ``<``), and
:func:`not_above_check` when it does *not* lie wholly above the bound ("does not grow": no
evidence of growth at this level). Fewer than two finite values give NaN bounds, and a check on
them fails. Where the literature is silent, :func:`open_check` reports the interval as an *open
question* whose answer is the direction it shows ("above 1", "below 1" or "no clear change").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rflens.experiments.core import Check, fmt, jsonable

__all__ = ["Interval", "mean_interval", "ratio_interval", "interval_check", "not_above_check",
           "open_check", "direction", "LEVEL"]

LEVEL = 0.95
NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    """``centre`` and ``[low, high]``: a ``level`` confidence interval over the ``n`` finite
    ``values`` (one per seed, in seed order; non-finite values are kept in ``values`` but left out).
    ``kind`` is ``"mean"`` (arithmetic mean) or ``"ratio"`` (geometric mean, interval on logs)."""

    centre: float
    low: float
    high: float
    level: float
    n: int
    kind: str
    values: tuple[float, ...]

    def text(self, digits: int = 3, prefix: str = "") -> str:
        """``1.62 [1.41, 1.86]`` (``prefix`` before each number, e.g. ``×``)."""
        return (f"{prefix}{fmt(self.centre, digits)} [{prefix}{fmt(self.low, digits)}, "
                f"{prefix}{fmt(self.high, digits)}]")

    def to_dict(self) -> dict:
        return {"centre": jsonable(self.centre), "low": jsonable(self.low),
                "high": jsonable(self.high), "level": self.level, "n": self.n,
                "kind": "geometric mean; Student-t interval of log values" if self.kind == "ratio"
                else "arithmetic mean; Student-t interval",
                "values": [jsonable(v) for v in self.values]}


def _t_bounds(x: np.ndarray, level: float) -> tuple[float, float, float]:
    from scipy import stats

    if x.size < 2:
        return (float(x.mean()) if x.size else NAN), NAN, NAN
    mean = float(x.mean())
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1)) * sem
    return mean, mean - half, mean + half


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Student-t interval of the arithmetic mean of the finite ``values``."""
    raw = tuple(float(v) for v in values)
    x = np.array([v for v in raw if math.isfinite(v)], dtype=np.float64)
    centre, low, high = _t_bounds(x, level)
    return Interval(centre, low, high, level, int(x.size), "mean", raw)


def ratio_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Geometric mean of positive ratios with the exponentiated t-interval of their logs (values
    that are not finite and positive are left out)."""
    raw = tuple(float(v) for v in values)
    x = np.array([v for v in raw if math.isfinite(v) and v > 0], dtype=np.float64)
    centre, low, high = _t_bounds(np.log(x), level)
    return Interval(*(math.exp(v) if math.isfinite(v) else NAN for v in (centre, low, high)),
                    level, int(x.size), "ratio", raw)


def interval_check(quantity: str, interval: Interval, relation: str, bound: float, source: str,
                   digits: int = 3, prefix: str = "") -> Check:
    """Passes when the whole interval lies ``relation`` (``>`` or ``<``) ``bound``. ``source`` says
    where the expectation comes from (a paper, or "open question: ...")."""
    if relation == ">":
        ok = math.isfinite(interval.low) and interval.low > bound
    elif relation == "<":
        ok = math.isfinite(interval.high) and interval.high < bound
    else:
        raise ValueError(f"relation must be '>' or '<', not {relation!r}")
    return Check(quantity, f"{relation} {bound:g}, whole 95 % interval ({source})",
                 _measured(interval, digits, prefix), bool(ok), interval.centre)


def not_above_check(quantity: str, interval: Interval, bound: float, source: str, digits: int = 3,
                    prefix: str = "") -> Check:
    """Passes when the interval does not lie wholly above ``bound`` (no evidence of an increase)."""
    ok = math.isfinite(interval.high) and not interval.low > bound
    return Check(quantity, f"not wholly > {bound:g} ({source})", _measured(interval, digits, prefix),
                 bool(ok), interval.centre)


def direction(interval: Interval, bound: float, words: tuple[str, str] = ("above", "below"),
              neutral: str = "no clear change") -> str:
    """``words[0]`` when the whole interval lies above ``bound``, ``words[1]`` when below, else
    ``neutral`` (also for NaN bounds)."""
    if math.isfinite(interval.low) and interval.low > bound:
        return words[0]
    if math.isfinite(interval.high) and interval.high < bound:
        return words[1]
    return neutral


def open_check(quantity: str, interval: Interval, bound: float, question: str,
               words: tuple[str, str] = ("grows", "shrinks"), digits: int = 3, prefix: str = "",
               neutral: str = "no clear change") -> Check:
    """An open question about ``interval`` relative to ``bound``: reported with its answer
    (:func:`direction` with ``words`` and ``neutral``), counted neither as agreeing nor
    disagreeing."""
    return Check(quantity, f"open question: {question}", _measured(interval, digits, prefix), None,
                 interval.centre, answer=direction(interval, bound, words, neutral))


def _measured(interval: Interval, digits: int, prefix: str) -> str:
    what = "geo-mean" if interval.kind == "ratio" else "mean"
    return f"{what} {interval.text(digits, prefix)}, n = {interval.n}"
