"""Mixing units along tensor dimensions: attention over tokens, a softmax, norm or reduction along
dimensions, a matrix product contracting a dimension.

Mixing along dimensions ``D`` makes every unit depend on every unit that differs from it only in
its position along ``D``. Per input axis that means: the axis's factors that lie in ``D`` are varied
while the others stay fixed. A whole axis (all of its units in one group) is a *global* dependency;
an axis split into windows (sub-factors; see :class:`rflens.geometry.fields.Factor`) whose inner
part lies in ``D`` and outer part elsewhere is mixed within each window only — exact boxes for
window attention; the outer part mixed and the inner kept is MaxViT's grid attention (dilated).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rflens.geometry.axis import AxisMap, constant_reads, explicit_reads
from rflens.geometry.fields import Dim, Factor, TensorField, Tokens, axis_factors, dim_size, join
from rflens.trf.rules.axes import apply_reads


def _mixed_structure(field: TensorField, dims: list[int], axes: set | None) -> dict[int, set[tuple[int, int]]]:
    """axis -> the (step, size) of its factors that lie in ``dims`` (size > 1 only)."""
    out: dict[int, set[tuple[int, int]]] = {}
    for d in dims:
        for f in axis_factors(field.dims[d]):
            if f.size > 1 and (axes is None or f.axis in axes):
                out.setdefault(f.axis, set()).add((f.step, f.size))
    return out


def _any_factor(field: TensorField, axis: int) -> Factor | None:
    for dim in field.dims:
        for f in axis_factors(dim):
            if f.axis == axis:
                return f
    return None


def _group_reads(units: int, mixed: set[tuple[int, int]]) -> tuple[AxisMap, np.ndarray | None, int]:
    """What each unit of a ``units``-long axis reads when the sub-factors ``mixed`` (step, size) vary:
    a reads map, explicit taps (None when the map and a dilation step say it all) and that step."""
    if len(mixed) == 1:
        (step, size), = mixed
        period = step * size
        if units % period == 0:
            r = np.arange(period, dtype=np.int64)
            lo = r - ((r // step) % size) * step
            return AxisMap.from_arrays(lo, lo + (size - 1) * step, period, period), None, step
    u = np.arange(units, dtype=np.int64)
    base = u.copy()
    offsets = np.zeros(1, dtype=np.int64)
    for step, size in sorted(mixed):
        base -= ((u // step) % size) * step
        offsets = (offsets[:, None] + step * np.arange(size, dtype=np.int64)[None, :]).ravel()
    taps = base[:, None] + offsets[None, :]
    return explicit_reads(taps.min(axis=1), taps.max(axis=1)), taps, 1


def replace_axis(dim: Dim, axis: int, new: Factor):
    """``dim`` with every factor of ``axis`` given ``new``'s field and hulls (sizes and steps kept)."""
    out = []
    for f in dim:
        if isinstance(f, Tokens):
            out.append(replace(f, grid=replace_axis(f.grid, axis, new)))
        elif f.axis == axis:
            out.append(replace(f, field=new.field, lo=new.lo, hi=new.hi))
        else:
            out.append(f)
    return tuple(out)


def mix(field: TensorField, dims: list[int], axes: set | None = None) -> TensorField:
    """``field`` after mixing along ``dims`` (see the module docstring): same dimensions, fields
    grown to each unit's group; ``is_global`` when some axis is mixed whole. Extra tokens of a token
    dimension in ``dims`` become mixed (they now depend on the grid). ``axes``: mix only these."""
    structure = _mixed_structure(field, dims, axes)
    dims_out = list(field.dims)
    is_global = field.is_global
    for axis, mixed in structure.items():
        f = _any_factor(field, axis)
        units = f.units
        whole = Factor(units, axis, f.field, f.lo, f.hi)
        if int(np.prod([z for _, z in mixed])) >= units:
            # every unit depends on every unit: the hulls hold the whole axis; the geometric field
            # keeps describing the local paths (the row is flagged global)
            union_all = apply_reads(whole, constant_reads(0, units - 1), units)
            new = replace(whole, lo=union_all.lo, hi=union_all.hi)
            is_global = True
        else:
            reads, taps, step = _group_reads(units, mixed)
            if taps is not None:
                taps = np.where((taps >= 0) & (taps < units), taps, -1)
            new = apply_reads(whole, reads, units, taps, step)
        dims_out = [replace_axis(dim, axis, new) for dim in dims_out]
    mixed_axes = set(structure)
    for d, dim in enumerate(dims_out):  # extra tokens take part in the mixing of their grid's axes
        dims_out[d] = tuple(replace(f, mixed=True) if isinstance(f, Tokens) and (
            d in dims or {g.axis for g in f.grid} & mixed_axes) else f for f in dim)
    return field.with_dims(dims_out, is_global=is_global)


def drop_dims(field: TensorField, dims: list[int], keepdim: bool, join_axes: bool = True) -> TensorField:
    """``field`` (already mixed along ``dims``) with ``dims`` reduced away (size 1 if ``keepdim``).
    An axis that loses all of its factors becomes a reduced axis (``extra``: one unit, its field
    the union it pooled); an axis that keeps some sub-factors keeps them (their units now stand
    for the groups; with ``join_axes`` they become one whole factor where they can: see
    :func:`canonical`)."""
    kept_axes = {f.axis for d, dim in enumerate(field.dims) if d not in dims for f in axis_factors(dim)}
    extra = list(field.extra)
    new_dims = []
    for d, dim in enumerate(field.dims):
        if d not in dims:
            new_dims.append(dim)
            continue
        gone = {f.axis: f for f in axis_factors(dim) if f.axis not in kept_axes}
        for axis, f in gone.items():
            kept_axes.add(axis)  # one reduced factor per axis
            extra.append(_pooled(f))
        if keepdim:
            single = len(dim) == 1 and isinstance(dim[0], Factor) and dim[0].axis is not None \
                and dim[0].full
            new_dims.append((extra.pop(),) if single and gone else (Factor(1),))
    out = field.with_dims(new_dims, extra=tuple(extra))
    return canonical(out) if join_axes else out


def canonical(field: TensorField) -> TensorField:
    """Where the sub-factors left of a split axis (the window grid after pooling each window) sit
    next to each other in one dimension, they become one whole factor over the units they stand for
    (so window ops and summaries see an ordinary axis again)."""
    dims = list(field.dims)
    axes = {f.axis for dim in dims for f in dim if isinstance(f, Factor) and f.axis is not None}
    for axis in axes:
        # positions are looked up afresh for every axis: an earlier join shortens its dimension
        spots = [(d, p) for d, dim in enumerate(dims) for p, f in enumerate(dim)
                 if isinstance(f, Factor) and f.axis == axis]
        d = spots[0][0]
        if len({dd for dd, _ in spots}) > 1:
            continue
        parts = [dims[d][p] for _, p in spots]
        if all(f.full for f in parts):
            continue
        positions = [p for _, p in spots]
        if positions != list(range(positions[0], positions[0] + len(positions))):
            continue
        whole = join(tuple(parts))
        if whole is not None:
            dim = dims[d]
            dims[d] = (*dim[:positions[0]], whole, *dim[positions[-1] + 1:])
    return field.with_dims(dims)


def _pooled(f: Factor) -> Factor:
    """The reduced factor of an axis pooled whole: one unit reading every unit."""
    whole = Factor(f.units, f.axis, f.field, f.lo, f.hi)
    return apply_reads(whole, constant_reads(0, f.units - 1), 1)


def fold_extra(field: TensorField) -> TensorField:
    """Reduced axes (``extra``) that are also present as dimensions — a path that pooled an axis
    whole met a path that kept it (attention: query tokens and the values they pooled) — become
    components of that axis's factors, the same for every unit: each unit's exact hull holds the
    pooled path; the geometric field keeps describing the kept path. Done only when every axis
    present gets its reduced factor, so the components of all axes stay paired."""
    present = {f.axis for dim in field.dims for f in axis_factors(dim)}
    extra = {e.axis: e for e in field.extra}
    if not present or not present <= set(extra) or len({extra[a].lo.shape[0] for a in present}) > 1:
        return field
    dims = list(field.dims)
    for axis in present:
        e = extra[axis]
        f = _any_factor(field, axis)
        units = f.units
        lo = np.concatenate([f.lo, np.repeat(e.lo, units, axis=1)])
        hi = np.concatenate([f.hi, np.repeat(e.hi, units, axis=1)])
        dims = [replace_axis(dim, axis, replace(f, lo=lo, hi=hi)) for dim in dims]
    return field.with_dims(dims, extra=tuple(e for e in field.extra if e.axis not in present))


def plain_like(dim: Dim) -> Dim:
    return (Factor(dim_size(dim)),)


__all__ = ["mix", "drop_dims", "canonical", "fold_extra", "plain_like", "replace_axis"]
