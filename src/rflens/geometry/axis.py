"""Per-axis receptive-field algebra. Pure Python and numpy; knows nothing of torch.

Conventions (see docs/receptive-fields.md): coordinates are 0-based input pixel indices on one
spatial axis. A unit ``i`` of a feature map sees the inclusive input interval ``[lo(i), hi(i)]``.

Every layer rflens understands maps output units to input units *periodically*: shifting the output
index by a period ``q`` shifts what it reads by a fixed number ``D`` of input units (a convolution has
``q = 1, D = stride``; a 2× nearest upsampling has ``q = 2, D = 1``; adaptive pooling from ``n`` to
``m`` has ``q = m/g, D = n/g``). Such maps compose and stay periodic, so one small table per axis
describes the exact field of *every* unit, including units that sit in padding (the unclipped
field). The jump is ``J = D/q`` (an exact fraction); the map is *uniform* when ``q == 1``.

Maps are non-decreasing in ``i``. A unit that reads nothing (a transposed convolution whose kernel
is smaller than its stride) is *empty*: ``lo(i) > hi(i)``; by convention an empty unit carries the
``lo`` of the next non-empty unit and the ``hi`` of the previous one, which keeps both functions
non-decreasing and makes composition work without special cases.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np

__all__ = ["AxisMap", "Interval", "compose", "union", "aligned", "transposed_conv_reads",
           "window_reads", "constant_reads", "explicit_reads"]

Interval = tuple[int, int]


@dataclass(frozen=True)
class AxisMap:
    """Periodic map from unit index to an inclusive interval on the axis below it.

    ``lo(i) = lo_table[i mod period] + (i div period) * shift`` and the same for ``hi``.
    ``exact_units`` is ``None`` when the map is exact for every integer ``i``; otherwise only units
    ``0 <= i < exact_units`` are exact and units beyond are an extrapolation (used only for the
    unclipped field of units that sit in padding).
    """

    period: int
    shift: int
    lo_table: tuple[int, ...]
    hi_table: tuple[int, ...]
    exact_units: int | None = None

    # construction -------------------------------------------------------------------------
    @staticmethod
    def identity() -> "AxisMap":
        """The input itself: unit i sees pixel i (R = 1, J = 1, P = 0)."""
        return AxisMap(1, 1, (0,), (0,))

    @staticmethod
    def affine(size: int, jump: int, padding: int) -> "AxisMap":
        """A uniform field ``[i*jump - padding, i*jump - padding + size - 1]``."""
        return AxisMap(1, jump, (-padding,), (-padding + size - 1,))

    @staticmethod
    def from_arrays(lo: np.ndarray, hi: np.ndarray, period: int, shift: int,
                    exact_units: int | None = None) -> "AxisMap":
        lo, hi = _canonical_empties(np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64))
        return AxisMap(int(period), int(shift), tuple(int(v) for v in lo), tuple(int(v) for v in hi),
                       exact_units)._canonical()

    # evaluation ---------------------------------------------------------------------------
    def evaluate(self, units: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive intervals ``(lo, hi)`` of the given unit indices (vectorised, int64)."""
        units = np.asarray(units, dtype=np.int64)
        if self.period == 1:  # uniform: no table lookup
            offset = units * self.shift
            return offset + self.lo_table[0], offset + self.hi_table[0]
        block, phase = np.divmod(units, self.period)
        lo_table, hi_table = self._tables
        return lo_table[phase] + block * self.shift, hi_table[phase] + block * self.shift

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.lo_table, dtype=np.int64), np.asarray(self.hi_table, dtype=np.int64)

    def interval(self, unit: int) -> Interval:
        lo, hi = self.evaluate(np.array([unit]))
        return int(lo[0]), int(hi[0])

    @cached_property
    def is_identity(self) -> bool:
        """Unit ``i`` reads exactly unit ``i`` (for every integer ``i``)."""
        return (self.period == 1 and self.shift == 1 and self.lo_table == (0,) and self.hi_table == (0,)
                and self.exact_units is None)

    @property
    def has_no_empty(self) -> bool:
        return all(lo <= hi for lo, hi in zip(self.lo_table, self.hi_table))

    @cached_property
    def monotone(self) -> bool:
        """No empty unit and both ends non-decreasing in the unit index (then the hull over a
        range of units is given by its two endpoints). Convolution chains are; maps built from
        phase-dependent maps with gaps, unions of different jumps and concatenations may not be."""
        if self.exact_units is not None or not self.has_no_empty:
            return False
        lo, hi = self.evaluate(np.arange(self.period + 1))
        return bool((np.diff(lo) >= 0).all() and (np.diff(hi) >= 0).all())

    # summary numbers ----------------------------------------------------------------------
    @property
    def jump(self) -> Fraction:
        """Input pixels between neighbouring units (exact; below 1 after upsampling)."""
        return Fraction(self.shift, self.period)

    @property
    def uniform(self) -> bool:
        """True when every unit has the same size and units are evenly spaced."""
        return self.period == 1 and self.exact_units is None

    def sizes(self, units: np.ndarray | None = None) -> np.ndarray:
        lo, hi = self.evaluate(np.arange(self.period) if units is None else units)
        return np.maximum(hi - lo + 1, 0)

    @cached_property
    def size(self) -> int:
        """Receptive-field size; for a non-uniform map the largest size over its phases."""
        return max(max(hi - lo + 1, 0) for lo, hi in zip(self.lo_table, self.hi_table))

    @property
    def padding(self) -> int:
        """Effective padding: how far unit 0's field starts before pixel 0."""
        return -self.lo_table[0]

    @property
    def center(self) -> Fraction:
        """Centre of unit 0's field, ``(lo(0) + hi(0)) / 2`` (= ``-P + (R-1)/2`` when uniform)."""
        return Fraction(self.lo_table[0] + self.hi_table[0], 2)

    def centers(self, units: np.ndarray) -> np.ndarray:
        lo, hi = self.evaluate(units)
        return (lo + hi) / 2.0

    # internals ----------------------------------------------------------------------------
    def _canonical(self) -> "AxisMap":
        """Smallest period that reproduces the same map."""
        q, lo, hi = self.period, self.lo_table, self.hi_table
        if self.exact_units is not None:
            return self
        for p in range(1, q):
            if q % p or (self.shift * p) % q:
                continue
            step = self.shift * p // q
            if all(lo[r + p] == lo[r] + step and hi[r + p] == hi[r] + step for r in range(q - p)):
                return AxisMap(p, step, lo[:p], hi[:p])
        return self


def _canonical_empties(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empty entries become ``(1, 0)`` (any lo > hi marks an empty unit; one form keeps tables
    comparable)."""
    empty = lo > hi
    if empty.any():
        lo, hi = np.where(empty, 1, lo), np.where(empty, 0, hi)
    return lo, hi


def _hull_over_taps(below: AxisMap, a: np.ndarray, b: np.ndarray, step: int):
    """Per output unit, the hull of the fields of units ``a, a+step, ..., <= b`` of ``below``,
    skipping empty units; empty (lo > hi) when there are none. With no empty units, step 1 and
    a non-decreasing map the endpoints suffice."""
    if step == 1 and below.monotone and bool((a <= b).all()):
        lo, _ = below.evaluate(a)
        _, hi = below.evaluate(b)
        return lo, hi
    width = int(max(((b - a) // step + 1).max(initial=1), 1))
    taps = a[:, None] + step * np.arange(width, dtype=np.int64)[None, :]
    valid = taps <= b[:, None]
    tl, th = below.evaluate(taps)
    ok = valid & (tl <= th)
    big = np.int64(1) << 60
    lo = np.where(ok, tl, big).min(axis=1)
    hi = np.where(ok, th, -big).max(axis=1)
    none = ~ok.any(axis=1)
    return np.where(none, 1, lo), np.where(none, 0, hi)


@functools.lru_cache(maxsize=4096)
def compose(below: AxisMap, reads: AxisMap, units: int | None = None, step: int = 1) -> AxisMap:
    """Field of a layer whose units read ``reads(o)`` (intervals of units of the map ``below``).

    ``below`` maps units of the layer's input to input pixels; the result maps the layer's output
    units to input pixels. Exact because both maps are non-decreasing. When either map is only
    exact on a range (an explicit table), the result is tabulated over ``units`` output units.
    """
    if below.exact_units is not None or reads.exact_units is not None:
        n = max(units if units is not None else (reads.exact_units or below.exact_units or 1), 1)
        a, b = reads.evaluate(np.arange(n, dtype=np.int64))
        return _explicit(*_hull_over_taps(below, a, b, step))
    m = below.period // math.gcd(reads.shift, below.period)  # taps move by whole periods of below
    period = reads.period * m
    units = np.arange(period + 1, dtype=np.int64)
    a, b = reads.evaluate(units)
    lo, hi = _hull_over_taps(below, a, b, step)
    shift = reads.shift * m // below.period * below.shift
    return AxisMap.from_arrays(lo[:period], hi[:period], period, shift)


def _explicit(lo: np.ndarray, hi: np.ndarray) -> AxisMap:
    """A map exact on units ``0..len(lo)-1``, extrapolated periodically beyond."""
    lo, hi = _canonical_empties(np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64))
    full = lo <= hi
    span = (hi[full].max() - lo[full].min()) if full.any() else 0
    shift = int(max(span, 0)) + 1
    n = len(lo)
    return AxisMap(n, shift, tuple(int(v) for v in lo), tuple(int(v) for v in hi), n)


def _all_uniform(maps: list[AxisMap]) -> bool:
    """Every map is one interval repeated with a fixed shift and none is empty (the cheap case)."""
    return all(m.period == 1 and m.exact_units is None and m.lo_table[0] <= m.hi_table[0]
               for m in maps)


def union(maps: list[AxisMap], units: int) -> AxisMap:
    """Union of several paths' fields for a tensor with ``units`` units on this axis.

    Exact for every integer unit when all paths have the same jump; otherwise exact on
    ``0..units-1`` (explicit table) and extrapolated beyond.
    """
    if len(maps) == 1:
        return maps[0]
    if _all_uniform(maps) and len({m.shift for m in maps}) == 1:
        return AxisMap(1, maps[0].shift, (min(m.lo_table[0] for m in maps),),
                       (max(m.hi_table[0] for m in maps),))
    jumps = {m.jump for m in maps}
    exact_all = all(m.exact_units is None for m in maps)
    if len(jumps) == 1 and exact_all:
        period = math.lcm(*(m.period for m in maps))
        idx = np.arange(period, dtype=np.int64)
    else:
        period = None
        idx = np.arange(max(units, 1), dtype=np.int64)
    los, his = zip(*(m.evaluate(idx) for m in maps))
    lo_stack, hi_stack = np.stack(los), np.stack(his)
    empty = lo_stack > hi_stack
    big = np.iinfo(np.int64).max // 4
    lo = np.where(empty, big, lo_stack).min(axis=0)
    hi = np.where(empty, -big, hi_stack).max(axis=0)
    all_empty = empty.all(axis=0)
    lo, hi = np.where(all_empty, 1, lo), np.where(all_empty, 0, hi)
    if period is None:
        return _explicit(lo, hi)
    shift = int(next(iter(jumps)) * period)
    return AxisMap.from_arrays(lo, hi, period, shift)


def aligned(maps: list[AxisMap], units: int) -> bool:
    """True when all paths have the same jump and the same centre for every unit."""
    if len(maps) < 2:
        return True
    if _all_uniform(maps):
        return (len({m.shift for m in maps}) == 1
                and len({m.lo_table[0] + m.hi_table[0] for m in maps}) == 1)
    if len({m.jump for m in maps}) > 1:
        return False
    period = math.lcm(*(m.period for m in maps))
    n = max(units, 1) if any(m.exact_units is not None for m in maps) else period
    idx = np.arange(n, dtype=np.int64)
    centers = []
    for m in maps:
        lo, hi = m.evaluate(idx)
        c = (lo + hi).astype(np.float64)
        c[lo > hi] = np.nan
        centers.append(c)
    ref = centers[0]
    for c in centers[1:]:
        both = ~np.isnan(ref) & ~np.isnan(c)
        if not np.array_equal(ref[both], c[both]):
            return False
    return True


# --- what one layer's output unit reads from its input units (all periodic maps) ---------------

def window_reads(kernel: int, stride: int, padding: int, dilation: int = 1) -> AxisMap:
    """Convolution / pooling: unit ``o`` reads ``[o*s - p, o*s - p + d*(k-1)]``."""
    return AxisMap(1, stride, (-padding,), (-padding + dilation * (kernel - 1),))



def transposed_conv_reads(kernel: int, stride: int, padding: int, dilation: int = 1) -> AxisMap:
    """Transposed convolution: output ``o`` reads input ``i`` when ``o = i*s - p + j*d``, 0≤j<k."""
    lo, hi = [], []
    for o in range(stride):
        hits = [(o + padding - j * dilation) // stride for j in range(kernel)
                if (o + padding - j * dilation) % stride == 0]
        if hits:
            lo.append(min(hits))
            hi.append(max(hits))
        else:
            lo.append(None)
            hi.append(None)
    return _fill_empties(lo, hi, stride, 1)


def _fill_empties(lo: list, hi: list, period: int, shift: int) -> AxisMap:
    """A periodic reads map whose ``None`` entries are units that read nothing (empty)."""
    if all(v is None for v in lo):
        raise ValueError("a layer whose units read nothing at all")
    lo_f = np.array([1 if v is None else v for v in lo])
    hi_f = np.array([0 if v is None else v for v in hi])
    return AxisMap.from_arrays(lo_f, hi_f, period, shift)


def constant_reads(lo: int, hi: int) -> AxisMap:
    """Every output unit reads the same input units (a broadcast)."""
    return AxisMap(1, 0, (lo,), (hi,))


def explicit_reads(lo: np.ndarray, hi: np.ndarray) -> AxisMap:
    """Reads given unit by unit (exact for the listed units only)."""
    return _explicit(np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64))
