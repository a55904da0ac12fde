"""Tiling geometry of one axis, from the output's periodic field map. Pure numpy; no torch.

Conventions (see docs/tiling.md): coordinates are 0-based input pixels on one spatial axis. The
output's geometric field is a periodic :class:`~rflens.geometry.axis.AxisMap`: unit ``u`` sees the
inclusive interval ``[lo(u), hi(u)]`` (unclipped: it may reach into padding) and
``lo(u + q) = lo(u) + D``. Tiles start at multiples of the *alignment* ``A`` (a multiple of ``D``:
every intermediate tensor's input period divides it), so a tile starting at pixel ``s`` computes
the units of the whole run shifted by ``s * q / D``.

A unit's *own block* is the ``A`` input pixels ``[kA, (k+1)A)`` where ``k = u // qA`` and
``qA = q * A / D`` units make one block. The halo is how far fields reach outside their own block:
``before = max(0, max_u (kA - lo(u)))`` and ``after = max(0, max_u (hi(u) - (kA + A - 1)))``, the
maximum over one period of units (periodicity makes it the maximum over every unit and phase).
A tile owning the blocks ``[b0, b1)`` computes exactly the units of those blocks when its input
window holds ``[b0 - before, b1 + after)``, except on a side that is the image border, where the
padding the tile sees is the padding the whole run sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rflens.geometry.axis import AxisMap

__all__ = ["AxisSegment", "halo_of", "smallest_clean_input", "segments", "min_tile", "count",
           "balanced_tile", "round_up", "round_down", "erf_halo"]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def round_down(value: int, multiple: int) -> int:
    return value // multiple * multiple


def _block_table(fmap: AxisMap, align: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``lo``, ``hi`` of the units of block 0 (``q * align / D`` of them) and that count."""
    if fmap.shift <= 0 or align % fmap.shift:
        raise ValueError(f"alignment {align} is not a multiple of the output period {fmap.shift}")
    per_block = fmap.period * (align // fmap.shift)
    lo, hi = fmap.evaluate(np.arange(per_block, dtype=np.int64))
    return lo, hi, per_block


def halo_of(fmap: AxisMap, align: int) -> tuple[int, int]:
    """``(before, after)`` in input pixels: how far the fields of the units of one block reach
    before its first pixel and after its last one (0 when they stay inside). Units that read no
    input pixel (empty fields) are left out."""
    lo, hi, _ = _block_table(fmap, align)
    full = lo <= hi
    if not full.any():
        return 0, 0
    return max(0, int(-lo[full].min())), max(0, int(hi[full].max()) - (align - 1))


def units_per_block(fmap: AxisMap, align: int) -> int:
    return _block_table(fmap, align)[2]


def smallest_clean_input(fmap: AxisMap, align: int) -> int:
    """The smallest input length for which some output unit's whole field lies inside the input
    (sees no padding): ``min`` over the units of one block of ``hi(u + kq) + 1`` with the first
    block ``k >= 0`` whose field starts at pixel 0 or later."""
    lo, hi, _ = _block_table(fmap, align)
    best = None
    for a, b in zip(lo.tolist(), hi.tolist()):
        if a > b:
            continue
        k = max(0, -(a // align)) if a < 0 else 0  # blocks to move right until lo >= 0
        n = b + k * align + 1
        best = n if best is None else min(best, n)
    return int(best) if best is not None else 1


def min_tile(before: int, after: int, align: int, min_size: int = 1) -> int:
    """The smallest interior tile (a multiple of ``align``) that keeps at least one block: its
    window must hold the rounded-up halo before, one block and the halo after."""
    return max(round_up(round_up(before, align) + align + after, align), round_up(min_size, align))


@dataclass(frozen=True)
class AxisSegment:
    """One tile along one axis. ``start``/``stop``: the input window (half-open, input pixels);
    ``core``: the input blocks whose output units this tile keeps (half-open, multiples of the
    alignment, except the last stop, which is the image size); ``keep``: those output units in
    the whole output (half-open); ``local``: the same units in the tile's own output."""

    start: int
    stop: int
    core: tuple[int, int]
    keep: tuple[int, int]
    local: tuple[int, int]

    @property
    def size(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict:
        return {"input": [self.start, self.stop], "core": list(self.core), "keep": list(self.keep),
                "local": list(self.local)}


def _starts(n_image: int, tile: int, step: int, align: int) -> list[tuple[int, int]]:
    """Input windows ``(start, stop)``: every ``step`` pixels from 0, the last one moved back to end
    at the image border (it is then up to ``align - 1`` pixels longer than ``tile``)."""
    if n_image <= tile:
        return [(0, n_image)]
    windows = [(0, tile)]
    while windows[-1][0] + tile < n_image:
        nxt = windows[-1][0] + step
        if nxt + tile >= n_image:
            last = round_down(n_image - tile, align)
            if last == windows[-1][0]:
                windows[-1] = (last, n_image)
                break
            windows.append((last, n_image))
            break
        windows.append((nxt, nxt + tile))
    return windows


def count(n_image: int, tile: int, before: int, after: int, align: int) -> int:
    """How many tiles of ``tile`` pixels an axis of ``n_image`` pixels needs."""
    step = round_down(tile - after - round_up(before, align), align)
    return len(_starts(n_image, tile, step, align))


def balanced_tile(n_image: int, tile: int, before: int, after: int, align: int,
                  smallest: int) -> int:
    """The smallest tile (a multiple of ``align``, at least ``smallest``, at most ``tile``) that
    needs no more tiles than ``tile`` does: same count, less overlap (the last tile, moved back
    to end at the border, overlaps its neighbour less)."""
    if n_image <= tile:
        return tile
    want = count(n_image, tile, before, after, align)
    lo, hi = round_up(smallest, align) // align, tile // align  # count(hi * align) == want
    while hi - lo > 0:
        mid = (lo + hi) // 2
        if count(n_image, mid * align, before, after, align) <= want:
            hi = mid
        else:
            lo = mid + 1
    return hi * align


def segments(n_image: int, n_out: int, tile: int, before: int, after: int, align: int,
             per_block: int) -> list[AxisSegment]:
    """The tiles along one axis of an image of ``n_image`` pixels whose whole output has ``n_out``
    units. ``tile`` is a multiple of ``align`` and at least :func:`min_tile`. Neighbouring tiles
    hand over at a block boundary ``b`` with ``start_next + before <= b <= stop_prev - after``,
    chosen nearest to the middle of their overlap."""
    head = round_up(before, align)
    step = round_down(tile - after - head, align)
    if n_image > tile and step < align:
        raise ValueError(f"tile {tile} keeps no block (halo {before}/{after}, alignment {align})")
    windows = _starts(n_image, tile, step, align)
    bounds = [0]
    for (s0, e0), (s1, _) in zip(windows, windows[1:]):
        lo, hi = round_up(s1 + before, align), round_down(e0 - after, align)
        if lo > hi:
            raise ValueError(f"tiles {s0}..{e0} and {s1}.. do not overlap enough")
        mid = round_down((s1 + e0) // 2 + align // 2, align)
        bounds.append(min(max(mid, lo), hi))
    bounds.append(n_image)
    out = []
    for j, (s, e) in enumerate(windows):
        c0, c1 = bounds[j], bounds[j + 1]
        k0 = c0 // align * per_block
        k1 = n_out if j == len(windows) - 1 else c1 // align * per_block
        off = s // align * per_block
        out.append(AxisSegment(s, e, (c0, c1), (k0, k1), (k0 - off, k1 - off)))
    return out


def erf_halo(mass_map: np.ndarray, unit: tuple[int, ...], per_block: tuple[int, ...],
             align: tuple[int, ...], mass: float) -> tuple[tuple[tuple[int, int], ...], float]:
    """The halo holding ``mass`` of an ERF map of one output ``unit``: per axis, the interval of
    the marginal that leaves at most ``(1 - mass) / (2 d)`` of the total on each side (so the box
    holds at least ``mass``), measured from the unit's own block as in :func:`halo_of`. Returns
    the per-axis ``(before, after)`` and the mass the box really holds."""
    m = np.asarray(mass_map, dtype=np.float64)
    total = m.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the ERF map is empty (all zero or not finite)")
    m = m / total
    d = m.ndim
    tail = (1.0 - mass) / (2 * d)
    halos, box = [], []
    for k in range(d):
        marginal = m.sum(axis=tuple(a for a in range(d) if a != k))
        left = np.cumsum(marginal)
        right = np.cumsum(marginal[::-1])[::-1]
        lo = int(np.searchsorted(left, tail, side="right"))  # sum(marginal[:lo]) <= tail
        hi = int(len(marginal) - 1 - np.searchsorted(right[::-1], tail, side="right"))
        lo, hi = min(lo, len(marginal) - 1), max(hi, 0)
        start = unit[k] // per_block[k] * align[k]
        halos.append((max(0, start - lo), max(0, hi - (start + align[k] - 1))))
        box.append(slice(lo, hi + 1))
    return tuple(halos), float(m[tuple(box)].sum())
