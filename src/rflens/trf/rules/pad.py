"""Padding (``F.pad``: constant, reflect, replicate, circular).

Geometrically every pad mode shifts the field by the left pad, like a zero pad (negative pads crop).
The exact per-unit hull differs at the borders: a reflect/replicate pad unit reads a real unit
(its mirror / the border unit), a constant pad unit reads nothing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rflens.geometry.axis import AxisMap
from rflens.geometry.fields import Tokens, single_spatial
from rflens.trf.rules.registry import Arg, OpCall, register
from rflens.trf.rules.window import spatial_update


def _taps(mode: str, left: int):
    def taps(k, reads, n_out, n_in):
        i = np.arange(n_out, dtype=np.int64) - left
        if mode == "circular":
            i = np.mod(i, n_in)
        elif mode == "reflect":
            i = np.abs(i)
            i = np.where(i >= n_in, 2 * (n_in - 1) - i, i)
        elif mode == "replicate":
            i = np.clip(i, 0, n_in - 1)
        else:
            i = np.where((i >= 0) & (i < n_in), i, -1)
        return i[:, None]
    return taps


def _pad_tokens(x: Arg, pad: list[int]) -> tuple[Arg, list[int]]:
    """A zero pad of a token dimension or flattened grid (CoaT pads a zero token where the class
    token sits): the new units are extra tokens that read nothing. Returns ``x`` with those
    dimensions already padded, and the pads left for the window rule."""
    n = len(pad) // 2
    dims, pad = list(x.field.dims), list(pad)
    for k in range(n):
        d = len(dims) - 1 - k
        left, right = pad[2 * k], pad[2 * k + 1]
        dim = dims[d]
        if (left or right) and left >= 0 and right >= 0 and single_spatial(dim) is None \
                and any(f.axis is not None for f in dim):
            t = dim[0] if len(dim) == 1 and isinstance(dim[0], Tokens) else Tokens(tuple(dim))
            if any(isinstance(f, Tokens) for f in t.grid):
                continue
            dims[d] = (replace(t, before=t.before + left, after=t.after + right),)
            pad[2 * k] = pad[2 * k + 1] = 0
    return Arg(x.shape, x.field.with_dims(dims), x.dtype), pad


def _pad(call: OpCall, mode: str, pad: list[int]) -> list:
    x = call.input
    if x.field is None:
        return [None]
    if mode == "constant":
        x, pad = _pad_tokens(x, pad)
    n = len(pad) // 2
    lefts = [pad[2 * (n - 1 - k)] for k in range(n)]  # pad lists run from the last dim backwards

    def reads(k: int) -> AxisMap:
        return AxisMap(1, 1, (-lefts[k],), (-lefts[k],))

    def taps(k, r, n_out, n_in):
        return _taps(mode, lefts[k])(k, r, n_out, n_in)

    return [spatial_update(x, call.out_shapes[0], n, reads, channels_plain=False, taps_for=taps)]


@register("constant_pad_nd")
def constant_pad(call: OpCall) -> list:
    return _pad(call, "constant", list(call.kw["pad"]))


@register("reflection_pad1d", "reflection_pad2d", "reflection_pad3d")
def reflection_pad(call: OpCall) -> list:
    return _pad(call, "reflect", list(call.kw["padding"]))


@register("replication_pad1d", "replication_pad2d", "replication_pad3d")
def replication_pad(call: OpCall) -> list:
    return _pad(call, "replicate", list(call.kw["padding"]))


@register("pad_circular", schema=("input", "pad"))
def circular_pad(call: OpCall) -> list:
    """``F.pad(x, pad, mode="circular")``, recorded whole by capture: a pad unit reads the unit at the
    opposite border (its index modulo the size). The geometric field is that of a zero pad (the
    field on the torus); the exact hull shows the wrap."""
    return _pad(call, "circular", list(call.kw["pad"]))
