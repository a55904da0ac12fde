"""``nn.Unfold`` / ``nn.Fold`` (aten ``im2col`` / ``col2im``): sliding windows laid out as columns.

``im2col`` turns (N, C, H, W) into (N, C·kh·kw, L): column ``l`` holds window ``l`` of a 2-D
convolution grid (Ho × Wo, flattened). Over all of its C·kh·kw entries a column reads exactly that
window, so its field is a convolution's, on a token dimension that keeps the (Ho, Wo) grid.
``col2im`` is the adjoint: pixel ``p`` sums every column entry whose window tap lands on it — a
transposed convolution of the column grid with the same kernel, stride, padding and dilation.
Its boxes are flagged as possible supersets (``exact_hull`` False): the tap an entry holds is not
tracked, exact when attention mixes a column's taps (VOLO's outlook attention), a superset when
nothing does (``fold(unfold(x))`` reads one pixel per pixel)."""

from __future__ import annotations

import math

from rflens.geometry.axis import transposed_conv_reads, window_reads
from rflens.geometry.fields import Factor, single_spatial
from rflens.trf.rules.axes import apply_reads
from rflens.trf.rules.registry import Arg, OpCall, register
from rflens.trf.rules.shape import regroup
from rflens.trf.rules.window import per_axis, spatial_update


def _out_size(n: int, k: int, d: int, p: int, s: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _window(kw: dict) -> tuple[list[int], ...]:
    """Kernel size, dilation, padding and stride, one value per axis (two axes)."""
    return tuple(per_axis(kw[name], 2) for name in ("kernel_size", "dilation", "padding", "stride"))


@register("im2col")
def im2col(call: OpCall) -> list:
    x, kw = call.input, call.kw
    if x.field is None:
        return [None]
    k, d, p, s = _window(kw)
    lead = tuple(x.shape[:-2])
    grid = tuple(_out_size(x.shape[-2 + a], k[a], d[a], p[a], s[a]) for a in range(2))
    windows = spatial_update(x, lead + grid, 2, lambda a: window_reads(k[a], s[a], p[a], d[a]),
                             channels_plain=False, step_for=lambda a: d[a])
    got = regroup(windows.dims, lead + (grid[0] * grid[1],))
    if got is None:
        raise NotImplementedError("the window grid cannot be flattened into columns")
    dims, dropped = got
    dims[-2] = (Factor(call.out_shapes[0][-2]),)  # C·kh·kw: channels and taps, read whole per column
    return [windows.with_dims(dims, extra=windows.extra + tuple(dropped))]


@register("col2im")
def col2im(call: OpCall) -> list:
    x, kw = call.input, call.kw
    if x.field is None:
        return [None]
    k, d, p, s = _window(kw)
    size = per_axis(kw["output_size"], 2)
    grid = tuple(_out_size(size[a], k[a], d[a], p[a], s[a]) for a in range(2))
    got = regroup(x.field.dims, tuple(x.shape[:-1]) + grid)
    if got is None:
        raise NotImplementedError("the columns do not unflatten into the window grid")
    dims, dropped = got
    columns = Arg(tuple(x.shape[:-1]) + grid, x.field.with_dims(dims, extra=x.field.extra + tuple(dropped)))
    out = spatial_update(columns, call.out_shapes[0], 2,
                         lambda a: transposed_conv_reads(k[a], s[a], p[a], d[a]), channels_plain=False,
                         step_for=lambda a: d[a] // math.gcd(s[a], d[a]))
    dims = list(out.dims)
    dims[-3] = (Factor(call.out_shapes[0][-3]),)
    # which tap of its window a column entry holds is not tracked (the entries are read whole per
    # column): each pixel gets the windows of all columns it lies in, a superset when the columns
    # were not mixed across taps in between (fold(unfold(x)) is pointwise)
    return [out.with_dims(dims, approximate=True)]


@register("unfold")
def unfold(call: OpCall) -> list:
    """``x.unfold(dimension, size, step)``: dimension ``d`` becomes the windows (a convolution grid
    with kernel ``size``, stride ``step``, no padding) and a new last dimension holds each window's
    ``size`` taps, read whole per window (like a column of ``nn.Unfold``)."""
    x, kw = call.input, call.kw
    if x.field is None:
        return [None]
    d = kw["dimension"] % max(len(x.shape), 1)
    size, step = kw["size"], kw["step"]
    dims = list(x.field.dims)
    f = single_spatial(dims[d]) if dims else None
    n_out = call.out_shapes[0][d] if dims else 1
    lost = set(x.field.lost)
    if f is not None:
        dims[d] = (apply_reads(f, window_reads(size, step, 0), n_out),)
    elif dims and any(g.axis is not None for g in dims[d]):
        lost.add("unfold of a dimension that is not one whole spatial axis")
        dims[d] = (Factor(n_out),)
    elif dims:
        dims[d] = (Factor(n_out),)
    return [x.field.with_dims(dims + [(Factor(size),)], lost=frozenset(lost))]
