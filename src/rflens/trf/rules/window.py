"""Sliding-window ops: convolution (1/2/3-D, grouped, dilated, transposed), max/avg pooling,
adaptive pooling, pixel (un)shuffle. Each spatial dimension is handled independently."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from rflens.geometry.axis import AxisMap, compose, transposed_conv_reads, window_reads
from rflens.geometry.fields import Factor, TensorField, dim_size, single_spatial
from rflens.trf.rules.axes import apply_reads, gather_hull, taps_of
from rflens.trf.rules.mixing import canonical, mix
from rflens.trf.rules.registry import OpCall, register


def per_axis(value, n: int) -> list[int]:
    """PyTorch's int-or-list arguments: a length-1 list (or an int) applies to every axis."""
    if isinstance(value, int):
        return [value] * n
    value = list(value)
    return value * n if len(value) == 1 else value


def spatial_update(x, out_shape, n_spatial: int, reads_for, channels_plain: bool = True,
                   taps_for=None, step_for=None) -> TensorField:
    """Field of an op that reads along the last ``n_spatial`` dimensions of ``x`` with
    ``reads_for(k) -> AxisMap`` on the k-th of them; dimension 1 becomes a plain channel
    dimension when ``channels_plain``."""
    field: TensorField = x.field
    nd = len(x.shape)
    if channels_plain and nd - n_spatial >= 2 and any(f.axis is not None for f in field.dims[1]):
        # axis parts folded into the channels (space-to-depth): every output unit mixes them, and
        # what is left of those axes along the spatial dimensions becomes one whole axis again
        mixed = mix(field, [1])
        field = canonical(mixed.with_dims([*mixed.dims[:1], (Factor(x.shape[1]),), *mixed.dims[2:]]))
    dims, lost = list(field.dims), set(field.lost)
    for k in range(n_spatial):
        d = nd - n_spatial + k
        n_out = out_shape[d]
        dim = field.dims[d]
        f = single_spatial(dim)
        if f is None and n_out == dim_size(dim) and reads_for(k).is_identity and \
                (step_for is None or step_for(k) == 1):
            continue  # a 1-wide, stride-1 window reads each unit itself, whatever the dimension holds
        if f is None:
            local = _window_local(dims, d, reads_for(k), n_out, step_for(k) if step_for else 1)
            if local is not None:
                dims = local
                continue
            if any(g.axis is not None for g in dim):
                lost.add("a window op over a flattened spatial dimension")
            dims[d] = (Factor(n_out),)
            continue
        reads = reads_for(k)
        taps = taps_for(k, reads, n_out, f.size) if taps_for else None
        step = step_for(k) if step_for else 1
        dims[d] = (apply_reads(f, reads, n_out, taps, step),)
    if channels_plain and nd - n_spatial >= 2:
        dims[1] = (Factor(out_shape[1]),)
    return field.with_dims(dims, lost=frozenset(lost))


def _window_local(dims: list, d: int, reads: AxisMap, n_out: int, step: int) -> list | None:
    """A window op over the inner part of a split axis (a convolution or pool run inside each
    window of a window partition: EfficientViT's cascaded attention, SAM2-Hiera's query pooling).
    Each window is padded on its own, so a unit reads only its own window; the geometric field is
    that of the same op over the whole axis when the windows tile it (``n_out * stride`` = window
    size). None when dimension ``d`` is not such an inner part."""
    dim = dims[d]
    if len(dim) != 1 or not isinstance(dim[0], Factor) or dim[0].axis is None or dim[0].full \
            or dim[0].step != 1:
        return None
    g = dim[0]
    m, units = g.size, g.units
    siblings = [(dd, j) for dd, other in enumerate(dims) for j, h in enumerate(other)
                if dd != d and h.axis == g.axis]
    if units % m or not siblings or any(dims[dd][j].step % m for dd, j in siblings):
        return None
    stride = reads.shift // reads.period if reads.period == 1 else 0
    if stride < 1 or n_out * stride != m:
        return None
    n_win = units // m
    taps = taps_of(reads, n_out, m, step)  # window-local: -1 outside the window (its padding)
    starts = (np.arange(n_win, dtype=np.int64) * m)[:, None, None]
    whole = np.where(taps[None] >= 0, starts + taps[None], -1).reshape(n_win * n_out, -1)
    lo, hi = gather_hull(g.lo, g.hi, whole)
    fmap = compose(g.field, reads, n_win * n_out, step)
    new_units = n_win * n_out
    out = list(dims)
    out[d] = (Factor(n_out, g.axis, fmap, lo, hi, 1, new_units),)
    for dd, j in siblings:
        h = dims[dd][j]
        parts = list(out[dd])
        parts[j] = replace(h, field=fmap, lo=lo, hi=hi, step=h.step // m * n_out, whole=new_units)
        out[dd] = tuple(parts)
    return out


@register("convolution", "_convolution", "convolution_overrideable", "mkldnn_convolution",
          "cudnn_convolution")
def convolution(call: OpCall) -> list:
    """Every convolution overload (their argument orders differ; read by name). Weights computed
    from the input (dynamic convolution) make the output global."""
    kw = call.kw
    x, w = call.input, kw["weight"]
    if x.field is None:
        return [None]
    n = len(w.shape) - 2
    stride = per_axis(kw["stride"], n)
    padding = per_axis(kw["padding"], n)
    dilation = per_axis(kw["dilation"], n)
    transposed = bool(kw.get("transposed", False))
    kernel = list(w.shape[2:])

    def reads(k: int) -> AxisMap:
        if transposed:
            return transposed_conv_reads(kernel[k], stride[k], padding[k], dilation[k])
        return window_reads(kernel[k], stride[k], padding[k], dilation[k])

    def step(k: int) -> int:
        # a transposed conv's taps i = (o + p - j*d)/s are d/gcd(s, d) apart
        return dilation[k] // math.gcd(stride[k], dilation[k]) if transposed else dilation[k]

    out = spatial_update(x, call.out_shapes[0], n, reads, step_for=step)
    others = [a.field for a in (w, kw.get("bias")) if getattr(a, "field", None) is not None]
    if others:  # weights computed from the input (dynamic convolution): a global dependency
        out = out.with_dims(out.dims, is_global=True)
    return [out]


# 1-D max/average pools reach aten as their 2-D forms on an unsqueezed tensor
@register("max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool2d", "avg_pool3d",
          "mkldnn_max_pool2d", "mkldnn_max_pool3d", "quantized_max_pool1d", "quantized_max_pool2d",
          "quantized_max_pool3d")
def pool(call: OpCall) -> list:
    """Max and average pooling windows (the number of axes is the kernel's)."""
    kw = call.kw
    x = call.input
    if x.field is None:
        return [None for _ in call.out_shapes]
    n = len(kw["kernel_size"])
    kernel = per_axis(kw["kernel_size"], n)
    stride = kernel if not kw["stride"] else per_axis(kw["stride"], n)
    padding = per_axis(kw["padding"], n)
    dilation = per_axis(kw.get("dilation", 1), n)  # average pools have none

    out = spatial_update(x, call.out_shapes[0], n,
                         lambda k: window_reads(kernel[k], stride[k], padding[k], dilation[k]),
                         channels_plain=False, step_for=lambda k: dilation[k])
    return [out for _ in call.out_shapes]


def adaptive_reads(n_in: int, n_out: int) -> AxisMap:
    """Adaptive pooling windows ``floor(i*n/m) .. ceil((i+1)*n/m) - 1`` (exact, periodic)."""
    g = math.gcd(n_in, n_out)
    q, d = n_out // g, n_in // g
    lo = [(i * n_in) // n_out for i in range(q)]
    hi = [-((-(i + 1) * n_in) // n_out) - 1 for i in range(q)]
    return AxisMap.from_arrays(np.array(lo), np.array(hi), q, d)


@register("_adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool3d",
          "mkldnn_adaptive_avg_pool2d")
def adaptive(call: OpCall) -> list:
    """Adaptive pooling (the number of axes is the output size's); pooling a whole axis to one
    unit is a global dependency."""
    x = call.input
    n = len(call.kw["output_size"])
    if x.field is None:
        return [None for _ in call.out_shapes]
    shape = call.out_shapes[0]
    nd = len(x.shape)
    out = spatial_update(x, shape, n, lambda k: adaptive_reads(x.shape[nd - n + k], shape[nd - n + k]),
                         channels_plain=False)
    pooled_whole_axis = any(shape[nd - n + k] == 1 and x.shape[nd - n + k] > 1 for k in range(n))
    if pooled_whole_axis and any(single_spatial(x.field.dims[nd - n + k]) for k in range(n)):
        out = out.with_dims(out.dims, is_global=True)
    return [out for _ in call.out_shapes]


@register("pixel_shuffle")
def pixel_shuffle(call: OpCall) -> list:
    """Output unit ``o`` reads input unit ``o // r`` on each of the last two axes (jump J/r)."""
    x, r = call.input, call.kw["upscale_factor"]
    if x.field is None:
        return [None]
    reads = AxisMap(r, 1, tuple([0] * r), tuple([0] * r))
    return [spatial_update(x, call.out_shapes[0], 2, lambda k: reads)]


@register("pixel_unshuffle")
def pixel_unshuffle(call: OpCall) -> list:
    """Output unit ``o`` gathers input units ``o*r .. o*r + r - 1`` (across its channels)."""
    x, r = call.input, call.kw["downscale_factor"]
    if x.field is None:
        return [None]
    return [spatial_update(x, call.out_shapes[0], 2, lambda k: window_reads(r, r, 0))]
