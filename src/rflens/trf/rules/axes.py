"""Helpers shared by the rules: apply what a layer reads along one axis to a tensor dimension,
broadcast dimensions, and merge the paths that meet at one dimension."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from rflens.geometry.axis import AxisMap, aligned, compose, constant_reads, union
from rflens.geometry.fields import Dim, Factor, dim_size, single_spatial
from rflens.trf.rules.registry import Misalignment

_BIG = np.int64(1) << 60


def taps_of(reads: AxisMap, n_out: int, n_in: int, step: int = 1, clamp: bool = False) -> np.ndarray:
    """Input units each output unit reads, one row per output unit, ``-1`` for none.

    Taps run from ``lo`` to ``hi`` of ``reads`` in steps of ``step``; units outside ``0..n_in-1``
    (padding) are dropped, or clamped onto the border when ``clamp`` (replicate-style access)."""
    a, b = reads.evaluate(np.arange(n_out, dtype=np.int64))
    width = int(max(((b - a) // step + 1).max(initial=0), 0))
    taps = a[:, None] + step * np.arange(width, dtype=np.int64)[None, :]
    inside = taps <= b[:, None]
    if clamp:
        taps = np.clip(taps, 0, n_in - 1)
    else:
        inside &= (taps >= 0) & (taps < n_in)
    return np.where(inside, taps, -1)


def gather_hull(lo: np.ndarray, hi: np.ndarray, taps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact hull of the input pixels behind each row of taps, per component (``lo``/``hi`` of
    shape ``(components, n_in)``; result ``(components, n_out)``; empty: lo > hi)."""
    c, n = lo.shape[0], taps.shape[0]
    if taps.shape[1] == 0:
        return np.full((c, n), _BIG), np.full((c, n), -_BIG)
    valid = taps >= 0
    t = np.where(valid, taps, 0)
    plo, phi = lo[:, t], hi[:, t]
    ok = valid[None] & (plo <= phi)
    return np.where(ok, plo, _BIG).min(axis=2), np.where(ok, phi, -_BIG).max(axis=2)


def apply_reads(f: Factor, reads: AxisMap, n_out: int, taps: np.ndarray | None = None,
                step: int = 1) -> Factor:
    """The factor of a layer's output along one axis, given what each output unit reads."""
    if f.axis is None:
        return Factor(n_out)
    if taps is None and step == 1 and n_out == f.size and reads.is_identity:
        return f  # a 1x1 stride-1 window: nothing changes
    if taps is None:
        taps = taps_of(reads, n_out, f.size, step)
    lo, hi = gather_hull(f.lo, f.hi, taps)
    return Factor(n_out, f.axis, compose(f.field, reads, n_out, step), lo, hi)


def reduce_factor(f: Factor) -> Factor:
    """A spatial factor pooled to a single unit that reads every unit (a global reduction)."""
    if f.axis is None:
        return Factor(1)
    return apply_reads(f, constant_reads(0, f.size - 1), 1)


def reduce_dim(dim: Dim) -> list[Factor]:
    """Spatial factors of a dimension reduced away, each collapsed to one global unit."""
    return [reduce_factor(f) for f in dim if f.axis is not None]


def normalise(dim: Dim) -> Dim:
    """Merge adjacent plain factors and drop plain size-1 factors (keeps factor lists canonical)."""
    out: list[Factor] = []
    for f in dim:
        if f.axis is None and out and out[-1].axis is None:
            out[-1] = Factor(out[-1].size * f.size)
        elif f.axis is None and f.size == 1 and len(dim) > 1:
            continue
        else:
            out.append(f)
    if not out:
        out = [Factor(1)]
    if len(out) > 1:
        out = [f for f in out if not (f.axis is None and f.size == 1)] or [Factor(1)]
    return tuple(out)


def broadcast_factor(f: Factor, n: int) -> Factor:
    """A size-1 spatial factor repeated ``n`` times: every unit reads that one unit."""
    if f.size == n or f.axis is None:
        return f if f.size == n else Factor(n)
    return apply_reads(f, constant_reads(0, 0), n)


def _is_broadcast_context(dim: Dim) -> bool:
    return any(f.axis is not None and f.field.jump == 0 and f.size > 1 for f in dim)


def describe(fmap: AxisMap) -> tuple[str, str]:
    return str(fmap.jump), str(fmap.center)


def merge_dims(dims: list[Dim], n: int, axis_hint: int, call, positions: list[int],
               global_paths: list[bool] | None = None) -> Dim | None:
    """Union of the paths meeting at one output dimension of size ``n``.

    ``dims``: the contributing inputs' dimensions (already broadcast to ``n``). Returns None when
    the paths carry different factor structures rflens cannot line up. Records a misalignment on
    ``call`` when paths disagree on jump or centre."""
    is_global = dict(zip(positions, global_paths or [False] * len(positions)))
    spatial = [(p, d) for p, d in zip(positions, dims) if any(f.axis is not None for f in d)]
    local = [(p, d) for p, d in spatial if not (is_global[p] and _is_broadcast_context(d))]
    if local:  # a pooled global context broadcast over the map (J = 0): the gate is a constant
        spatial = local
    if not spatial:
        return (Factor(n),)
    structures = {tuple((f.size, f.axis) for f in d) for _, d in spatial}
    if len(structures) > 1:
        return None
    ref = spatial[0][1]
    out = []
    for k, f0 in enumerate(ref):
        if f0.axis is None:
            out.append(f0)
            continue
        parts = [d[k] for _, d in spatial]
        if len(parts) == 1:
            out.append(f0)
            continue
        maps = [f.field for f in parts]
        if not aligned(maps, f0.size):
            call.misalignments.append(Misalignment(
                f0.axis, tuple((p, *describe(d[k].field)) for p, d in spatial)))
        # paths become components; compact() merges them again where that stays exact
        lo = np.concatenate([f.lo for f in parts])
        hi = np.concatenate([f.hi for f in parts])
        out.append(Factor(f0.size, f0.axis, union(maps, f0.size), lo, hi))
    return tuple(out)


def frac(value: float) -> Fraction:
    return Fraction(value).limit_denominator(1_000_000)


__all__ = ["taps_of", "gather_hull", "apply_reads", "reduce_factor", "reduce_dim", "normalise",
           "broadcast_factor", "merge_dims", "frac", "dim_size", "single_spatial"]
