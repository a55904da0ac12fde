"""Helpers shared by the rules: apply what a layer reads along one axis to a tensor dimension,
broadcast dimensions, and merge the paths that meet at one dimension."""

from __future__ import annotations

import functools
from dataclasses import replace
from fractions import Fraction

import numpy as np

from rflens.geometry.axis import AxisMap, aligned, compose, constant_reads, union
from rflens.geometry.fields import Dim, Factor, Tokens, axis_factors, dim_size, single_spatial
from rflens.trf.rules.registry import Misalignment

_BIG = np.int64(1) << 60


@functools.lru_cache(maxsize=4096)
def taps_of(reads: AxisMap, n_out: int, n_in: int, step: int = 1, clamp: bool = False) -> np.ndarray:
    """Input units each output unit reads, one row per output unit, ``-1`` for none (read-only:
    one array is shared by every layer of the same geometry).

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
    out = np.where(inside, taps, -1)
    out.setflags(write=False)
    return out


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
    seen, out = set(), []
    for f in axis_factors(dim):
        if f.axis not in seen:
            seen.add(f.axis)
            out.append(reduce_factor(Factor(f.units, f.axis, f.field, f.lo, f.hi)))
    return out


def normalise(dim: Dim) -> Dim:
    """Canonical factor list: adjacent plain factors merged, plain size-1 factors and size-1
    sub-factors dropped, adjacent sub-factors of one axis that fit (outer step = inner step x inner
    size) joined, a token dimension without extra tokens replaced by its grid."""
    out: list = []
    for f in dim:
        if isinstance(f, Tokens) and not f.before and not f.after:
            out.extend(normalise(f.grid))
            continue
        prev = out[-1] if out else None
        if isinstance(f, Tokens) or isinstance(prev, Tokens):
            out.append(f)
        elif f.axis is None and prev is not None and prev.axis is None:
            out[-1] = Factor(prev.size * f.size)
        elif f.axis is None and f.size == 1 and len(dim) > 1:
            continue
        elif f.axis is not None and not f.full and f.size == 1:
            continue  # one window, or a single unit of a split: adds nothing to the axis index
        elif (f.axis is not None and prev is not None and prev.axis == f.axis
              and prev.step == f.step * f.size and _same_arrays(prev, f)):
            out[-1] = replace(f, size=prev.size * f.size)
        else:
            out.append(f)
    if not out:
        out = [Factor(1)]
    if len(out) > 1:
        out = [f for f in out if isinstance(f, Tokens) or not (f.axis is None and f.size == 1)] \
            or [Factor(1)]
    return tuple(out)


def _same_arrays(a: Factor, b: Factor) -> bool:
    return (a.lo is b.lo and a.hi is b.hi) or (
        a.lo.shape == b.lo.shape and np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi))


def broadcast_factor(f, n: int):
    """A size-1 spatial factor repeated ``n`` times: every unit reads that one unit."""
    if f.size == n or f.axis is None:
        return f if f.size == n else Factor(n)
    if isinstance(f, Tokens) or not f.full:
        raise NotImplementedError("broadcasting a token dimension or a split axis")
    return apply_reads(f, constant_reads(0, 0), n)


def _is_broadcast_context(dim: Dim) -> bool:
    """A path whose units all read the same pixels (a pooled value broadcast back): its geometric
    map has jump 0, or is an explicit table (whose jump is read over its units) constant over them."""
    return any(isinstance(f, Factor) and f.axis is not None and f.size > 1 and (
        f.field.jump == 0 or (f.field.exact_units is not None and _constant(f.field, f.size)))
        for f in dim)


def _constant(fmap: AxisMap, n: int) -> bool:
    lo, hi = fmap.evaluate(np.arange(n, dtype=np.int64))
    return bool((lo == lo[0]).all() and (hi == hi[0]).all())


def describe(fmap: AxisMap) -> tuple[str, str]:
    return str(fmap.jump), str(fmap.center)


def structure(dim: Dim) -> tuple:
    """What must agree for paths to be merged at one dimension: sizes, axes, splits, tokens."""
    return tuple(("tokens", f.before, f.after, structure(f.grid)) if isinstance(f, Tokens)
                 else (f.size, f.axis, f.step, f.units if f.axis is not None else 0) for f in dim)


def has_axis(dim: Dim) -> bool:
    return any(f.axis is not None for f in dim)


def merge_dims(dims: list[Dim], n: int, axis_hint: int, call, positions: list[int],
               global_paths: list[bool] | None = None) -> Dim | None:
    """Union of the paths meeting at one output dimension of size ``n``.

    ``dims``: the contributing inputs' dimensions (already broadcast to ``n``). Returns None when
    the paths carry different factor structures rflens cannot line up. Records a misalignment on
    ``call`` when paths disagree on jump or centre."""
    is_global = dict(zip(positions, global_paths or [False] * len(positions)))
    spatial = [(p, d) for p, d in zip(positions, dims) if has_axis(d)]
    if not spatial:
        return (Factor(n),)
    if len({structure(d) for _, d in spatial}) > 1:
        return None
    # a pooled global context broadcast over the map (J = 0, an SE gate): part of every unit's
    # exact hull, but left out of the geometric field (summary numbers) and the alignment test
    context = [is_global[p] and _is_broadcast_context(d) for p, d in spatial]
    if all(context):
        context = [False] * len(spatial)
    return tuple(_merge_factors([d[k] for _, d in spatial], [p for p, _ in spatial], context, call)
                 for k in range(len(spatial[0][1])))


def _merge_factors(parts: list, positions: list[int], context: list[bool], call):
    f0 = parts[0]
    if isinstance(f0, Tokens):
        grid = tuple(_merge_factors([t.grid[k] for t in parts], positions, context, call)
                     for k in range(len(f0.grid)))
        return replace(f0, grid=grid, mixed=any(t.mixed for t in parts))
    if f0.axis is None or len(parts) == 1 or all(f is f0 for f in parts):
        return f0
    local = [(p, f) for p, f, c in zip(positions, parts, context) if not c]
    # (per component: a unit empty in every component jointly may be so on different axes)
    if any(context) and any(bool((f.lo > f.hi).any()) for _, f in local):
        call.context_over_empty = True
    maps = [f.field for _, f in local]
    if not aligned(maps, f0.units):
        call.misalignments.append(Misalignment(
            f0.axis, tuple((p, *describe(f.field)) for p, f in local)))
    # paths become components; compact() merges them again where that stays exact
    lo = np.concatenate([f.lo for f in parts])
    hi = np.concatenate([f.hi for f in parts])
    return replace(local[0][1], field=union(maps, f0.units), lo=lo, hi=hi)


def frac(value: float) -> Fraction:
    return Fraction(value).limit_denominator(1_000_000)


__all__ = ["taps_of", "gather_hull", "apply_reads", "reduce_factor", "reduce_dim", "normalise",
           "broadcast_factor", "merge_dims", "frac", "dim_size", "single_spatial"]
