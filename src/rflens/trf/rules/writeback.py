"""In-place writes through views: the base tensor after one of its views was written.

Capture records such a write as a pseudo-op :data:`INPLACE_WRITEBACK` with arguments
``(old base, written view)`` and ``chain`` (the view ops from base to view); this rule places the
view's new field inside the base."""

from __future__ import annotations

import numpy as np

from rflens.geometry.axis import explicit_reads
from rflens.geometry.fields import TensorField, flags_of, plain
from rflens.trf.rules.axes import apply_reads
from rflens.trf.rules.merge import broadcast_merge
from rflens.trf.rules.registry import Arg, OpCall, register

INPLACE_WRITEBACK = "<inplace-view-writeback>"


@register(INPLACE_WRITEBACK, schema=("base", "view", "chain"))
def writeback(call: OpCall) -> list:
    """A base after an in-place write into one of its views. The view is followed back to the base
    through its chain of slices/selects: each base unit the view covers gets the view's new field
    as a component beside the base's old field (a union: exact when the written region held no
    input-derived data before, as in circular padding; otherwise it may keep overwritten paths).
    Writes through other kinds of view lose the geometry (reported)."""
    base, view = call.kw["base"], call.kw["view"]
    if view.field is None:
        return [base.field]
    placement = _slice_placement(call.kw["chain"], base.shape)
    if placement is None:
        live = [a.field for a in (base, view) if a.field is not None]
        flags = flags_of(live)
        flags["lost"] = flags["lost"] | {"an in-place write through a view rflens cannot follow"}
        return [TensorField(tuple(plain(s) for s in base.shape), **flags)]
    widened = Arg(base.shape, _place(view.field, placement, base.shape))
    parts = (base, widened) if base.field is not None else (widened,)
    # the two parts cover different units: comparing their centres says nothing about alignment
    scratch = OpCall(call.name, (), {}, call.out_shapes)  # misalignments of these parts mean nothing
    merged = broadcast_merge(scratch, base.shape, list(parts))
    return [merged.with_dims(merged.dims, misaligned=any(p.field.misaligned for p in parts))]


def _slice_placement(chain, shape) -> list | None:
    """For each base dimension, ``(view dim or None, start, step, count)`` of the view inside it."""
    if chain is None:
        return None
    place = [[d, 0, 1, n] for d, n in enumerate(shape)]
    for name, args in chain:
        live = [p for p in place if p[0] is not None]
        if name in ("slice", "narrow"):
            vd = args[0] if args else 0
            vd = vd + len(live) if vd < 0 else vd
            p = live[vd]
            start = args[1] if len(args) > 1 and args[1] is not None else 0
            start = start + p[3] if start < 0 else min(max(start, 0), p[3])
            if name == "narrow":
                end, step = start + args[2], 1
            else:
                end = args[2] if len(args) > 2 and args[2] is not None else p[3]
                end = end + p[3] if end < 0 else min(end, p[3])
                step = args[3] if len(args) > 3 else 1
            count = max(0, -(-(end - start) // step))
            p[1], p[2], p[3] = p[1] + start * p[2], p[2] * step, count
        elif name == "select":
            vd, index = args[0], args[1]
            vd = vd + len(live) if vd < 0 else vd
            p = live[vd]
            index = index + p[3] if index < 0 else index
            p[0], p[1], p[3] = None, p[1] + index * p[2], 1
        elif name in ("alias", "detach"):
            continue
        else:
            return None
        k = 0
        for q in place:
            if q[0] is not None:
                q[0] = k
                k += 1
    return place


def _place(field: TensorField, placement, shape) -> TensorField:
    """The view's field spread onto the base's units: covered units carry it, others are empty."""
    dims = []
    for (vd, start, step, count), n in zip(placement, shape):
        src = field.dims[vd] if vd is not None else (plain(1)[0],)
        f = src[0] if len(src) == 1 else None
        if f is None or f.axis is None:
            if f is None and any(g.axis is not None for g in src):
                return field.with_dims([plain(s) for s in shape],
                                       lost=field.lost | {"an in-place write into a flattened view"})
            dims.append(plain(n))
            continue
        units = np.arange(n, dtype=np.int64)
        offset = units - start
        inside = (offset >= 0) & (offset % step == 0) & (offset // step < count)
        which = np.where(inside, offset // step, -1)
        reads = explicit_reads(np.where(inside, which, 1), np.where(inside, which, 0))
        taps = which[:, None]
        dims.append((apply_reads(f, reads, n, taps),))
    return field.with_dims(dims)
