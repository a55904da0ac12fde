"""Shape ops: view/reshape, permute/transpose, (un)squeeze, slicing, select, split, cat/stack.

Spatial dimensions are followed through all of them. ``view`` works on factors: flattening
dimensions concatenates their factors and splitting at factor boundaries restores them; a view
that would split a spatial axis itself loses the geometry (reported, never guessed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rflens.geometry.axis import AxisMap, explicit_reads, union
from rflens.geometry.fields import Dim, Factor, TensorField, Tokens, dim_size, flags_of
from rflens.trf.rules.axes import apply_reads, merge_dims, normalise
from rflens.trf.rules.merge import merged_extra
from rflens.trf.rules.registry import Arg, OpCall, register
from rflens.trf.rules.tokens import slice_tokens, token_dim, with_tokens
from rflens.trf.rules.writeback import place_view


def _wrap(d: int, n: int) -> int:
    return d + n if d < 0 else d


def regroup(dims: tuple[Dim, ...], shape: tuple[int, ...]) -> tuple[list[Dim], list[Factor]] | None:
    """Factors of ``dims`` regrouped into dimensions of ``shape``. A plain factor splits freely; a
    spatial factor splits into an outer and an inner sub-factor (a window partition); a token
    dimension moves whole. None when the view cannot be followed (it would split a token dimension,
    or a factor into pieces that do not divide it). Also returns whole spatial size-1 factors that
    were dropped (they become reduced axes)."""
    factors = [f for d in dims for f in d]
    out: list[Dim] = []
    dropped: list[Factor] = []
    i = 0
    for size in shape:
        group: list = []
        prod = 1
        while prod < size:
            while i < len(factors) and factors[i].size == 1:
                f = factors[i]
                if isinstance(f, Factor) and f.axis is not None and f.full:
                    dropped.append(f)
                i += 1
            if i >= len(factors):
                return None
            f = factors[i]
            if size % (prod * f.size) == 0:
                group.append(f)
                prod *= f.size
                i += 1
            elif not isinstance(f, Tokens) and size % prod == 0 and f.size % (size // prod) == 0:
                outer, inner = _split(f, size // prod)
                group.append(outer)
                factors[i] = inner
                prod = size
            else:
                return None
        if size == 1:
            if i < len(factors) and factors[i].size == 1:
                group.append(factors[i])
                i += 1
            else:
                group.append(Factor(1))
        out.append(normalise(tuple(group)))
    for f in factors[i:]:
        if f.size != 1:
            return None
        if isinstance(f, Factor) and f.axis is not None and f.full:
            dropped.append(f)
    return out, dropped


def _split(f: Factor, outer: int) -> tuple[Factor, Factor]:
    """A factor of ``n`` units as ``outer`` steps of an inner part of ``n // outer`` units."""
    inner = f.size // outer
    if f.axis is None:
        return Factor(outer), Factor(inner)
    return (replace(f, size=outer, step=f.step * inner, whole=f.units),
            replace(f, size=inner, whole=f.units))


@register("squeeze", "squeeze_", "squeeze_copy")
def squeeze(call: OpCall) -> list:
    """Drop the named size-1 dimensions (all size-1 dimensions without ``dim``); a dropped
    spatial dimension becomes a reduced axis (its one unit keeps its field)."""
    x = call.input
    if x.field is None:
        return [None]
    n = len(x.shape)
    dim = call.kw.get("dim")
    if dim is None:
        drop = {d for d in range(n) if x.shape[d] == 1}
    else:
        drop = {_wrap(d, n) for d in (dim if isinstance(dim, (list, tuple)) else [dim])}
        drop = {d for d in drop if x.shape[d] == 1}
    kept = [dim_ for d, dim_ in enumerate(x.field.dims) if d not in drop]
    gone = tuple(f for d in sorted(drop) for f in x.field.dims[d] if f.axis is not None)
    return [x.field.with_dims(kept, extra=x.field.extra + gone)]


@register("unsqueeze", "unsqueeze_", "unsqueeze_copy")
def unsqueeze(call: OpCall) -> list:
    x = call.input
    if x.field is None:
        return [None]
    d = _wrap(call.kw["dim"], len(x.shape) + 1)
    dims = list(x.field.dims)
    dims.insert(d, (Factor(1),))
    return [x.field.with_dims(dims)]


@register("view", "_unsafe_view", "_reshape_alias", "view_copy", "_reshape_copy")
def view(call: OpCall) -> list:
    """Views and reshapes, by factors (the output shape is what matters; see :func:`regroup`)."""
    x = call.input
    if x.field is None:
        return [None]
    shape = call.out_shapes[0]
    got = regroup(x.field.dims, shape)
    if got is None:
        lost = x.field.lost | {f"{call.name} from {x.shape} to {shape} splits a token dimension "
                               "or an axis into pieces rflens cannot follow"}
        return [x.field.with_dims([(Factor(s),) for s in shape], lost=lost)]
    dims, dropped = got
    return [x.field.with_dims(dims, extra=x.field.extra + tuple(dropped))]


@register("permute", "permute_copy", "transpose", "transpose_", "transpose_copy", "t", "t_", "t_copy")
def permute(call: OpCall) -> list:
    x = call.input
    if x.field is None:
        return [None]
    n = len(x.shape)
    kw = call.kw
    if "dims" in kw:
        order = [_wrap(d, n) for d in kw["dims"]]
    else:
        if "dim0" not in kw:  # t(): the last two of at most two dimensions
            a, b = (0, 1) if n == 2 else (0, 0)
        else:
            a, b = _wrap(kw["dim0"], n), _wrap(kw["dim1"], n)
        order = list(range(n))
        order[a], order[b] = order[b], order[a]
    return [x.field.with_dims([x.field.dims[d] for d in order])]


def _slice_dim(field: TensorField, d: int, start: int, step: int, n_out: int) -> TensorField | None:
    dim = field.dims[d]
    dims = list(field.dims)
    if len(dim) == 1 and isinstance(dim[0], Tokens):
        return slice_tokens(field, d, start, step, n_out, _slice_dim)
    if len(dim) == 1 and dim[0].axis is not None and dim[0].full:
        reads = AxisMap(1, step, (start,), (start,))
        dims[d] = (apply_reads(dim[0], reads, n_out),)
        return field.with_dims(dims)
    if dim_size(dim) == n_out and start == 0 and step == 1:
        return field
    if n_out == 0:
        return None  # an empty slice (x[:, :0]: no prefix tokens) holds nothing
    inner = dim_size(dim[1:])
    outer = dim[0]
    if len(dim) > 1 and step == 1 and start % inner == 0 and n_out % inner == 0 and \
            isinstance(outer, Factor) and outer.axis is not None and outer.full:
        # whole rows of a flattened grid: a slice of its outer axis
        rows = apply_reads(outer, AxisMap(1, 1, (start // inner,), (start // inner,)), n_out // inner)
        dims[d] = (rows, *dim[1:])
        return field.with_dims(dims)
    if any(f.axis is not None for f in dim):
        dims[d] = (Factor(n_out),)
        return field.with_dims(dims, lost=field.lost | {"a slice of a flattened spatial dimension"})
    dims[d] = (Factor(n_out),)
    return field.with_dims(dims)


def _norm_start(start, n: int) -> int:
    start = 0 if start is None else start
    start = start + n if start < 0 else start
    return min(max(start, 0), n)


@register("slice", "slice_copy")
def slice_(call: OpCall) -> list:
    x = call.input
    if x.field is None:
        return [None]
    n = len(x.shape)
    kw = call.kw
    d = _wrap(kw["dim"], n)
    start = _norm_start(kw["start"], x.shape[d])
    step = kw["step"] or 1
    return [_slice_dim(x.field, d, start, step, call.out_shapes[0][d])]


@register("select", "select_copy")
def select(call: OpCall) -> list:
    x = call.input
    if x.field is None:
        return [None]
    n = len(x.shape)
    d = _wrap(call.kw["dim"], n)
    index = call.kw["index"]
    index = index + x.shape[d] if index < 0 else index
    return [_select_dim(x.field, d, index)]


def _select_dim(field: TensorField, d: int, index: int) -> TensorField | None:
    """Unit ``index`` of dimension ``d``, the dimension dropped (a spatial one becomes a reduced
    axis that keeps that unit's field; a class token depends on what it attended to)."""
    one = _slice_dim(field, d, index, 1, 1)
    if one is None:
        return None
    dims = list(one.dims)
    removed = dims.pop(d)
    extra = one.extra + tuple(f for f in removed if f.axis is not None)
    return one.with_dims(dims, extra=extra)


@register("split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes",
          "split_with_sizes_copy", "split_copy", "unbind", "unbind_copy")
def split(call: OpCall) -> list:
    """Consecutive pieces along ``dim`` (``unbind``: pieces of one unit, the dimension dropped)."""
    x = call.input
    if x.field is None:
        return [None for _ in call.out_shapes]
    n = len(x.shape)
    d = _wrap(call.kw["dim"], n)
    out, offset = [], 0
    for shape in call.out_shapes:
        if len(shape) < n:  # unbind
            out.append(_select_dim(x.field, d, offset))
            offset += 1
            continue
        out.append(_slice_dim(x.field, d, offset, 1, shape[d]))
        offset += shape[d]
    return out


def _components(f: Factor) -> int:
    return f.lo.shape[0]


def _concat_spatial(pieces: list[Arg], d: int, shape: tuple[int, ...], axis: int) -> list[Dim] | None:
    """Concatenation along spatial dimension ``d``: each output unit comes from one piece, so every
    piece becomes its own components (its hulls on the other axes, and on ``d`` only over its own
    units), never a union with the other pieces. None when the pieces' other dimensions do not
    carry the same axes."""
    live = [(a, start) for a, start in zip(pieces, np.cumsum([0] + [a.shape[d] for a in pieces]))
            if a.field is not None]
    dims: list[Dim] = []
    for k, n in enumerate(shape):
        if k == d:
            continue
        own = [a.field.dims[k] for a, _ in live]
        if len({tuple((f.size, f.axis) for f in dim) for dim in own}) > 1:
            return None
        if not any(f.axis is not None for f in own[0]):
            dims.append((Factor(n),))
            continue
        if len(own[0]) > 1:
            return None
        parts = [dim[0] for dim in own]
        dims.append((Factor(n, axis=parts[0].axis, field=union([f.field for f in parts], n),
                            lo=np.concatenate([f.lo for f in parts]),
                            hi=np.concatenate([f.hi for f in parts])),))
    los, his, glo, ghi = [], [], [], []
    n_out = shape[d]
    for a, start in live:
        f = a.field.dims[d][0]
        lo = np.ones((_components(f), n_out), dtype=np.int64)
        hi = np.zeros((_components(f), n_out), dtype=np.int64)
        lo[:, start:start + f.size], hi[:, start:start + f.size] = f.lo, f.hi
        los.append(lo)
        his.append(hi)
    for a, start in zip(pieces, np.cumsum([0] + [a.shape[d] for a in pieces])):
        f = a.field.dims[d][0] if a.field is not None else None
        gl, gh = (f.field.evaluate(np.arange(a.shape[d])) if f is not None and f.axis == axis
                  else (np.ones(a.shape[d], dtype=np.int64), np.zeros(a.shape[d], dtype=np.int64)))
        glo.append(gl)
        ghi.append(gh)
    cat_factor = Factor(n_out, axis, explicit_reads(np.concatenate(glo), np.concatenate(ghi)),
                        np.concatenate(los), np.concatenate(his))
    dims.insert(d, (cat_factor,))
    return dims


@register("cat", "stack")
def cat(call: OpCall) -> list:
    tensors = [a for a in call.kw["tensors"] if isinstance(a, Arg)]
    shape = call.out_shapes[0]
    live = [a for a in tensors if a.field is not None]
    if not live:
        return [None]
    nd = len(shape)
    stacking = call.name == "stack"
    d = _wrap(call.kw["dim"], nd if stacking else len(tensors[0].shape))
    if not stacking:  # empty pieces (legacy 1-D empties, or none along d) add nothing
        tensors = [a for a in tensors if not (len(a.shape) == 1 and a.shape[0] == 0) and a.shape[d] > 0]
        if len(tensors) == 1 and tuple(tensors[0].shape) == tuple(shape):
            return [tensors[0].field]
    flags = flags_of([a.field for a in live])
    spatial = set() if stacking else {f.axis for a in live for f in a.field.dims[d] if f.axis is not None}
    if spatial:
        single = len(spatial) == 1 and all(len(a.field.dims[d]) == 1 and a.field.dims[d][0].axis in spatial
                                            and getattr(a.field.dims[d][0], "full", False) for a in live)
        token = None if single else token_dim(tensors, d)
        dims = _concat_spatial(tensors, d, shape, spatial.pop()) if single else None
        if token is not None:
            return [with_tokens(call, tensors, d, shape, token, flags)]
        if dims is None:
            reason = f"{call.name} along a spatial dimension of tensors that carry different axes"
            return [TensorField(tuple((Factor(s),) for s in shape),
                                **{**flags, "lost": flags["lost"] | {reason}})]
        return [TensorField(tuple(dims), extra=merged_extra([a.field for a in live], call), **flags)]
    other = [k for k in range(nd) if k != d]
    dims: list[Dim | None] = [None] * nd
    lost = set()
    for k in other:
        src = k if (not stacking or k < d) else k - 1
        contributions, positions, globals_ = [], [], []
        for pos, a in enumerate(tensors):
            if a.field is not None:
                contributions.append(a.field.dims[src])
                positions.append(pos)
                globals_.append(a.field.is_global)
        merged = merge_dims(contributions, shape[k], k, call, positions, globals_)
        if merged is None:
            lost.add(f"{call.name} of tensors whose dimension {k} carries different axes")
            merged = (Factor(shape[k]),)
        dims[k] = merged
    dims[d] = (Factor(shape[d]),)  # stacked entries or concatenated channels: plain
    flags["misaligned"] = flags["misaligned"] or bool(call.misalignments)
    flags["lost"] = flags["lost"] | frozenset(lost)
    return [TensorField(tuple(dims), extra=merged_extra([a.field for a in live], call), **flags)]


@register("repeat")
def repeat(call: OpCall) -> list:
    x = call.input
    if x.field is None:
        return [None]
    shape = call.out_shapes[0]
    reps = list(call.kw["repeats"])
    nd = len(shape)
    dims = []
    for k in range(nd):
        src = k - (nd - len(x.shape))
        if src < 0 or reps[k] == 1:
            dims.append(x.field.dims[src] if src >= 0 else (Factor(shape[k]),))
            continue
        dim = x.field.dims[src]
        if any(f.axis is not None for f in dim):
            n = x.shape[src]
            idx = np.arange(shape[k]) % n
            f = dim[0]
            gl, gh = f.field.evaluate(idx)
            dims.append((Factor(shape[k], f.axis, explicit_reads(gl, gh), f.lo[:, idx], f.hi[:, idx]),))
        else:
            dims.append((Factor(shape[k]),))
    return [x.field.with_dims(dims)]


@register("as_strided", "as_strided_", "as_strided_copy")
def as_strided(call: OpCall) -> list:
    """A view made from sizes, strides and a storage offset: capture places its elements in its
    source (:mod:`rflens.trf.aliasing`) and the source's field follows them; a view that overlaps
    itself or wraps across rows is not followed (reported). ``as_strided_`` restrides in place;
    it is followed when it cannot move spatial data (same sizes, spatial dimensions of size 1)."""
    x = call.input
    if x.field is None:
        return [None]
    shape = call.out_shapes[0]
    place = call.kw.get("placement")
    if place:
        placed = place_view(x.field, place, shape)
        if not isinstance(placed, str):
            return [placed]
    spatial_sizes = [f.size for d in x.field.dims for f in d if f.axis is not None]
    if tuple(shape) == tuple(x.shape) and all(n == 1 for n in spatial_sizes):
        return [x.field]
    raise NotImplementedError("as_strided of a view rflens cannot place (overlapping or wrapping)")


@register("roll")
def roll(call: OpCall) -> list:
    """A cyclic shift: unit ``u`` of a rolled spatial dimension reads unit ``(u - shift) mod n``
    (fields wrap around the border, Swin's shifted windows). A roll of the flattened tensor
    (no ``dims``) or of a dimension that is not one whole axis is not followed (reported)."""
    x = call.input
    if x.field is None:
        return [None]
    shifts, dims = list(call.kw["shifts"]), list(call.kw.get("dims") or [])
    field = x.field
    if not dims:
        if any(f.axis is not None for dim in field.dims for f in dim):
            return [field.with_dims(field.dims, lost=field.lost | {"roll of the flattened tensor"})]
        return [field]
    out = list(field.dims)
    for shift, d in zip(shifts, dims):
        d = _wrap(d, len(x.shape))
        dim = out[d]
        if not any(f.axis is not None for f in dim):
            continue
        f = dim[0] if len(dim) == 1 and isinstance(dim[0], Factor) and dim[0].full else None
        if f is None:
            return [field.with_dims(field.dims, lost=field.lost | {"roll of a dimension that is not one whole axis"})]
        n = f.size
        src = (np.arange(n, dtype=np.int64) - shift) % n
        out[d] = (apply_reads(f, explicit_reads(src, src), n, src[:, None]),)
    return [field.with_dims(out)]
