"""In-place writes: a tensor after a write into a tensor sharing its storage.

Capture records such a write as a pseudo-op :data:`INPLACE_WRITEBACK` with arguments
``(target before the write, written tensor after it)`` and ``placement`` (where the written
elements sit in the target, from sizes, strides and storage offsets: :mod:`rflens.trf.aliasing`).
Written units take the written tensor's field — its old content is gone (``copy_``, slice
assignment) or already part of the new field (``add_``); the other units keep theirs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rflens.geometry.axis import AxisMap, explicit_reads, union
from rflens.geometry.fields import Factor, TensorField, flags_of, plain
from rflens.trf.rules.axes import apply_reads
from rflens.trf.rules.registry import OpCall, register

INPLACE_WRITEBACK = "<inplace-view-writeback>"


@register(INPLACE_WRITEBACK, schema=("base", "view", "placement"))
def writeback(call: OpCall) -> list:
    """The target of a write (``base``) after the write through ``view`` (see the module
    docstring). A write rflens cannot place loses the geometry (reported)."""
    base, view, place = call.kw["base"], call.kw["view"], call.kw["placement"]
    if place is None:
        live = [a.field for a in (base, view) if a.field is not None]
        if not live:
            return [None]
        flags = flags_of(live)
        flags["lost"] = flags["lost"] | {"an in-place write through a view rflens cannot place"}
        return [TensorField(tuple(plain(s) for s in base.shape), **flags)]
    dims_place, selects = place
    written = _select(view.field, selects) if view.field is not None else None
    placed = _place(written, dims_place, base.shape) if written is not None else None
    if isinstance(placed, str):
        return [_lost(base, view, placed)]
    covered = [which >= 0 if wd is not None else which for wd, which in dims_place]
    if base.field is None:
        return [placed]
    if all(c.all() for c in covered):
        return [placed] if placed is not None else [None]  # every element overwritten
    return [_combine(base.field, placed, covered)]


def place_view(field: TensorField, place: tuple, shape) -> TensorField | str:
    """A view's field from its source's (a strided view placed by capture; see :func:`_place`)."""
    dims_place, selects = place
    return _place(_select(field, selects), dims_place, shape)


def _lost(base, view, why: str) -> TensorField:
    flags = flags_of([a.field for a in (base, view) if a.field is not None])
    flags["lost"] = flags["lost"] | {why}
    return TensorField(tuple(plain(s) for s in base.shape), **flags)


def _select(field: TensorField, selects: list) -> TensorField:
    """The written tensor's field at the positions the target holds fixed (those dims dropped; a
    spatial one becomes a reduced axis keeping that unit's field)."""
    dims, extra = list(field.dims), list(field.extra)
    for wd, index in sorted(selects, reverse=True):
        dim = dims.pop(wd)
        for f in dim:
            # a whole axis, or the one unit left of it (a slice x[:, :, 6:7] written into a
            # one-row buffer): the axis becomes a reduced one, holding that unit's field
            alone = f.size == 1 and not any(g.axis == f.axis for d in dims for g in d)
            if f.axis is not None and isinstance(f, Factor) and (f.full or alone):
                extra.append(apply_reads(f, AxisMap(1, 1, (index,), (index,)), 1))
    return field.with_dims(dims, extra=tuple(extra))


def _place(field: TensorField, dims_place: list, shape) -> TensorField | str:
    """The written field spread onto the target's units (unwritten units empty)."""
    dims = []
    present = {f.axis for dim in field.dims for f in dim if f.axis is not None}
    loose = [f for f in field.extra if f.axis not in present]  # axes the write holds at one unit
    fixed = [d for d, ((wd, which), n) in enumerate(zip(dims_place, shape)) if wd is None and n > 1]
    if len(loose) > 1 or (loose and len(fixed) != 1):
        return "an in-place write of single units of several axes"
    used_extra = set()
    for d, ((wd, which), n) in enumerate(zip(dims_place, shape)):
        if wd is None:  # the written tensor holds this position fixed
            if not loose or d != fixed[0]:
                dims.append(plain(n))
                continue
            f = loose[0]
            used_extra.add(f.axis)
            sel = np.where(which, 0, -1)
            dims.append((apply_reads(f, explicit_reads(np.where(which, 0, 1), np.where(which, 0, 0)), n,
                                     sel[:, None]),))
            continue
        src = field.dims[wd]
        if not any(f.axis is not None for f in src):
            dims.append(plain(n))
            continue
        if len(src) != 1 or not src[0].full:
            return "an in-place write into a view whose dimension is not one whole axis"
        dims.append((apply_reads(src[0], _reads(which), n, which[:, None]),))
    return field.with_dims(dims, extra=tuple(e for e in field.extra if e.axis not in used_extra))


def _reads(which: np.ndarray) -> AxisMap:
    """What target unit ``j`` reads of the written tensor: ``which[j]``; a contiguous placement
    ``which[j] = j - start`` keeps a periodic map (a shift, extended into the unwritten units like
    a zero pad), anything else is an explicit table."""
    inside = np.nonzero(which >= 0)[0]
    start = int(inside[0]) - int(which[inside[0]])
    if np.array_equal(which[inside], inside - start):
        return AxisMap(1, 1, (-start,), (-start,))
    return explicit_reads(np.where(which >= 0, which, 1), np.where(which >= 0, which, 0))


def _combine(old: TensorField, new: TensorField | None, covered: list[np.ndarray]) -> TensorField:
    """Unwritten units keep ``old``, written ones take ``new``: per spatial axis partly written,
    ``old``'s components restricted to the unwritten units there (the complement of a box is a
    union of such slabs); a plain dimension partly written (some channels) keeps ``old`` whole."""
    spatial = {d: f for d, dim in enumerate(old.dims) for f in dim if f.axis is not None}
    if any(len(dim) != 1 for d, dim in enumerate(old.dims) if d in spatial) or \
            any(not c.all() for d, c in enumerate(covered) if d not in spatial):
        partial_axes = []  # no restriction: written units may still hold old paths (a union)
    else:
        partial_axes = [d for d in spatial if not covered[d].all()]
    slabs = partial_axes or [None]
    dims = list(old.dims)
    for d, f in spatial.items():
        los, his = [], []
        for k in slabs:
            mask = ~covered[d] if k == d else np.ones(f.size, dtype=bool)
            los.append(np.where(mask[None, :], f.lo, 1))
            his.append(np.where(mask[None, :], f.hi, 0))
        maps = [f.field]
        if new is not None:
            nf = new.dims[d][0]
            los.append(nf.lo)
            his.append(nf.hi)
            maps.append(nf.field)
        dims[d] = (replace(f, field=union(maps, f.size), lo=np.concatenate(los), hi=np.concatenate(his)),)
    flags = flags_of([x for x in (old, new) if x is not None])
    return TensorField(tuple(dims), extra=old.extra, **flags)
