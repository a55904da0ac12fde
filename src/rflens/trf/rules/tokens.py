"""Token dimensions: a flattened grid with extra tokens around it (class, distillation and register
tokens, learned queries), as vision transformers build them (see
:class:`rflens.geometry.fields.Tokens`). Concatenating extra tokens to a grid makes one; slicing
the grid back out (``x[:, 1:]``) gives the grid again; the extra tokens alone depend on nothing
until they attend to the grid, and on all of it after."""

from __future__ import annotations

from dataclasses import replace

from rflens.geometry.fields import Factor, TensorField, Tokens, dim_size
from rflens.trf.rules.axes import merge_dims, normalise
from rflens.trf.rules.merge import merged_extra
from rflens.trf.rules.mixing import drop_dims, mix
from rflens.trf.rules.registry import Arg, OpCall


def token_dim(pieces: list[Arg], d: int) -> Tokens | None:
    """Concatenation along a flattened grid (``cat([cls_token, patches], dim=1)``): one piece holds
    the grid, the others are extra tokens before and after it. None if no single piece holds a
    grid, or if another piece carries an axis too."""
    grids = [k for k, a in enumerate(pieces)
             if a.field is not None and any(f.axis is not None for f in a.field.dims[d])]
    if len(grids) != 1:
        return None
    g = pieces[grids[0]]
    dim = g.field.dims[d]
    before = sum(a.shape[d] for a in pieces[:grids[0]])
    after = sum(a.shape[d] for a in pieces[grids[0] + 1:])
    mixed = any(a.field is not None for k, a in enumerate(pieces) if k != grids[0])
    if len(dim) == 1 and isinstance(dim[0], Tokens):
        t = dim[0]
        return replace(t, before=t.before + before, after=t.after + after, mixed=t.mixed or mixed)
    if any(isinstance(f, Tokens) for f in dim):
        return None
    return Tokens(tuple(dim), before, after, mixed)


def with_tokens(call: OpCall, pieces: list[Arg], d: int, shape, token: Tokens, flags: dict) -> TensorField:
    """The output of a concatenation along a token dimension: the other dimensions merged over the
    pieces that carry a field, dimension ``d`` the token dimension."""
    dims, lost = [], set(flags["lost"])
    for k in range(len(shape)):
        if k == d:
            dims.append((token,))
            continue
        parts = [a.field.dims[k] for a in pieces if a.field is not None]
        merged = merge_dims(parts, shape[k], k, call, list(range(len(parts))))
        if merged is None:
            lost.add(f"{call.name} of tensors whose dimension {k} carries different axes")
            merged = (Factor(shape[k]),)
        dims.append(merged)
    return TensorField(tuple(dims), extra=merged_extra([a.field for a in pieces if a.field is not None], call),
                       **{**flags, "lost": frozenset(lost)})


def slice_tokens(field: TensorField, d: int, start: int, step: int, n_out: int,
                 slice_dim) -> TensorField | None:
    """A slice of a token dimension: exactly the grid (``x[:, 1:]`` after a class token) gives the
    grid back; extra tokens only give what they depend on (nothing before they attended to the
    grid, the whole grid after: global)."""
    t = field.dims[d][0]
    grid = dim_size(t.grid)
    dims = list(field.dims)
    stop = start + step * (n_out - 1)
    if step == 1 and start == t.before and n_out == grid:
        dims[d] = normalise(t.grid)
        return field.with_dims(dims)
    if n_out and (stop < t.before or start >= t.before + grid) and all(
            not (t.before <= i < t.before + grid) for i in range(start, stop + 1, step)):
        return _extra_tokens(field, d, n_out)
    if t.before <= start and stop < t.before + grid and step == 1 and len(t.grid) == 1:
        dims[d] = t.grid
        return slice_dim(field.with_dims(dims), d, start - t.before, 1, n_out)
    return field.with_dims([*dims[:d], (Factor(n_out),), *dims[d + 1:]],
                           lost=field.lost | {"a slice across a token dimension's grid and extra tokens"})


def _extra_tokens(field: TensorField, d: int, n_out: int) -> TensorField | None:
    """Extra tokens alone: None (no dependency) until they attend to the grid; after, every one
    depends on the whole grid (global; its axes reduced to one unit)."""
    t = field.dims[d][0]
    if not t.mixed:
        return None
    pooled = drop_dims(mix(field, [d]), [d], keepdim=False)
    dims = list(pooled.dims)
    dims.insert(d, (Factor(n_out),))
    return pooled.with_dims(dims)
