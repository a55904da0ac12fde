"""Upsampling/resampling (``F.interpolate``): nearest, nearest-exact, (bi/tri)linear, bicubic.

The source position of output unit ``o`` follows PyTorch: with ``r`` = input units per output
unit (``1/scale_factor`` when a scale factor is passed, else ``n_in/n_out``; with
``align_corners=True``, ``(n_in-1)/(n_out-1)``): nearest reads ``floor(o*r)``, nearest-exact
``floor((o+1/2)*r)``, linear the two neighbours of ``s = (o+1/2)*r - 1/2`` (``o*r`` when corners
are aligned) — one unit when ``s`` is an integer, since the other weight is zero — and bicubic
``floor(s)-1 .. floor(s)+2`` (one unit when ``s`` is an integer). ``r`` is kept as an exact
fraction, so the map is periodic with period ``r.denominator``. The geometric map does not clamp
at the borders (it extends into padding like a zero pad); the exact per-unit hull does, as
PyTorch does."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np

from rflens.geometry.axis import AxisMap
from rflens.trf.rules.axes import frac
from rflens.trf.rules.registry import OpCall, register
from rflens.trf.rules.window import spatial_update


def _floor(x: Fraction) -> int:
    return math.floor(x)


def source_interval(mode: str, o: int, r: Fraction, align_corners: bool) -> tuple[int, int]:
    if mode in ("nearest", "nearest_exact"):
        s = _floor((o + Fraction(1, 2)) * r) if mode == "nearest_exact" else _floor(o * r)
        return s, s
    s = o * r if align_corners else (o + Fraction(1, 2)) * r - Fraction(1, 2)
    f = _floor(s)
    if s == f:
        return f, f
    return (f, f + 1) if mode == "linear" else (f - 1, f + 2)


def resample_reads(mode: str, r: Fraction, align_corners: bool) -> AxisMap:
    q, shift = (r.denominator, r.numerator) if r > 0 else (1, 0)
    lo, hi = zip(*(source_interval(mode, o, r, align_corners) for o in range(q)))
    return AxisMap.from_arrays(np.array(lo), np.array(hi), q, shift)


def resample_taps(mode: str, r: Fraction, align_corners: bool, n_out: int, n_in: int) -> np.ndarray:
    """Input units each output unit really reads: every tap from the first to the last source
    unit, clamped onto the border as PyTorch does (linear also clamps a negative source to 0)."""
    width = 4 if mode == "bicubic" else 2
    rows = np.full((n_out, width), -1, dtype=np.int64)
    for o in range(n_out):
        a, b = source_interval(mode, o, r, align_corners)
        if mode == "linear" and not align_corners:
            s = (o + Fraction(1, 2)) * r - Fraction(1, 2)
            if s < 0:
                a = b = 0
        taps = np.clip(np.arange(a, b + 1), 0, n_in - 1)
        rows[o, : len(taps)] = taps
    return rows


def _ratio(n_in: int, n_out: int, scale, align_corners: bool) -> Fraction:
    if align_corners:
        return Fraction(n_in - 1, n_out - 1) if n_out > 1 else Fraction(0)
    if scale is not None and scale > 0:
        return frac(1.0 / scale)
    return Fraction(n_in, n_out)


_NAME = re.compile(r"_?upsample_(nearest_exact|nearest|linear|bilinear|bicubic|trilinear)(\d)d")


def upsample(call: OpCall) -> list:
    m = _NAME.fullmatch(call.name)
    kind, n = m.group(1), int(m.group(2))
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(kind, kind)
    kw = call.kw
    x = call.input
    if x.field is None:
        return [None]
    align = bool(kw.get("align_corners", False))
    names = ("scales",) if n == 1 else ("scales_d", "scales_h", "scales_w")[3 - n:]
    scales = [kw.get(s) for s in names]
    shape = call.out_shapes[0]
    nd = len(x.shape)
    ratios = [_ratio(x.shape[nd - n + k], shape[nd - n + k], scales[k], align) for k in range(n)]
    return [spatial_update(
        x, shape, n, lambda k: resample_reads(mode, ratios[k], align), channels_plain=False,
        taps_for=lambda k, reads, n_out, n_in: resample_taps(mode, ratios[k], align, n_out, n_in))]


for _kind, _dims in [("nearest", (1, 2, 3)), ("nearest_exact", (1, 2, 3)), ("linear", (1,)),
                     ("bilinear", (2,)), ("bicubic", (2,)), ("trilinear", (3,))]:
    for _n in _dims:
        _names = [f"upsample_{_kind}{_n}d"]
        if _kind == "nearest_exact":
            _names = [f"_upsample_nearest_exact{_n}d"]
        register(*_names)(upsample)
