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

import torch

from rflens.geometry.axis import AxisMap, explicit_reads
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


def _ratio(n_in: int, n_out: int, scale, align_corners: bool) -> Fraction | None:
    """The exact source step when it is a simple fraction (then the map is periodic); None when
    PyTorch's floating-point step is not one (``scale_factor=math.pi``): sources are then computed
    unit by unit in PyTorch's own arithmetic."""
    if align_corners:
        return Fraction(n_in - 1, n_out - 1) if n_out > 1 else Fraction(0)
    if scale is not None and scale > 0:
        r = Fraction(1.0 / scale)
        simple = r.limit_denominator(max(n_out, 64))
        return simple if simple == r else None
    return Fraction(n_in, n_out)


def _float_sources(mode: str, n_in: int, n_out: int, scale, align: bool, dtype) -> tuple:
    """First and last source unit per output unit when the step is not a simple fraction: the
    step rounded to the op's math type as PyTorch's CPU kernels round it (float32 for float32/16
    tensors), the positions computed both exactly and rounded to that type — kernels differ in
    whether they fuse the multiply-add — and the union of both kept (a superset only where the two
    disagree, at a source a hair from a pixel centre)."""
    ft = np.float64 if dtype in (torch.float64,) else np.float32
    step = ft(1.0 / scale) if scale is not None and scale > 0 else ft(n_in) / ft(n_out)
    exact = Fraction(float(step))
    half = Fraction(1, 2)
    los, his, ambiguous = [], [], False
    for o in range(n_out):
        if mode in ("nearest", "nearest_exact"):  # one multiplication: one rounding
            src = math.floor(float(step * ft(o + (0.5 if mode == "nearest_exact" else 0.0))))
            los.append(min(src, n_in - 1))
            his.append(min(src, n_in - 1))
            continue
        fused = Fraction(float(ft(float((o + half) * exact - half))))  # one rounding (multiply-add)
        split = Fraction(float(step * ft(o + 0.5) - ft(0.5)))          # a rounding per operation
        cands = [_linear_like(mode, fused), _linear_like(mode, split)]
        ambiguous |= cands[0] != cands[1]
        los.append(min(c[0] for c in cands))
        his.append(max(c[1] for c in cands))
    return np.array(los, dtype=np.int64), np.array(his, dtype=np.int64), ambiguous


def _linear_like(mode: str, s: Fraction) -> tuple[int, int]:
    if mode == "linear" and s < 0:
        return 0, 0
    f = math.floor(s)
    if s == f:
        return f, f
    return (f, f + 1) if mode == "linear" else (f - 1, f + 2)


def _axis_rule(mode: str, n_in: int, n_out: int, scale, align: bool, dtype, copy: bool):
    """(reads, taps, ambiguous) of one axis; ambiguous: the sources of some unit depend on how the
    kernel rounds (the union is kept, flagged as a possible superset)."""
    if copy:  # PyTorch copies an axis whose size does not change
        r = Fraction(1)
    else:
        r = _ratio(n_in, n_out, scale, align)
    if r is not None:
        return resample_reads(mode, r, align), resample_taps(mode, r, align, n_out, n_in), False
    lo, hi, ambiguous = _float_sources(mode, n_in, n_out, scale, align, dtype)
    width = int((hi - lo).max()) + 1 if n_out else 1
    taps = lo[:, None] + np.arange(width)[None, :]
    taps = np.where(taps <= hi[:, None], np.clip(taps, 0, n_in - 1), -1)
    return explicit_reads(lo, hi), taps, ambiguous


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
    sizes = [(x.shape[nd - n + k], shape[nd - n + k]) for k in range(n)]
    same = all(a == b for a, b in sizes)
    rules = [_axis_rule(mode, a, b, scales[k], align, x.dtype,
                        copy=a == b and (same or mode in ("nearest", "linear")) and mode != "nearest_exact")
             for k, (a, b) in enumerate(sizes)]
    out = spatial_update(x, shape, n, lambda k: rules[k][0], channels_plain=False,
                         taps_for=lambda k, reads, n_out, n_in: rules[k][1])
    if any(r[2] for r in rules):
        out = out.with_dims(out.dims, approximate=True)
    return [out]


for _kind, _dims in [("nearest", (1, 2, 3)), ("nearest_exact", (1, 2, 3)), ("linear", (1,)),
                     ("bilinear", (2,)), ("bicubic", (2,)), ("trilinear", (3,))]:
    for _n in _dims:
        _names = [f"upsample_{_kind}{_n}d"]
        if _kind == "nearest_exact":
            _names = [f"_upsample_nearest_exact{_n}d"]
        register(*_names)(upsample)


def _aa_sources(kind: str, n_in: int, n_out: int, scale) -> np.ndarray:
    """Antialiased resampling (``antialias=True``): output unit ``i`` reads the input units under
    its filter, widened by the scale when downsampling — PyTorch's support ``interp/2 * s`` (s ≥ 1)
    around ``s (i + 1/2)``; taps whose filter weight is exactly 0 are no dependency."""
    s = 1.0 / scale if scale is not None and scale > 0 else n_in / n_out
    interp = 2 if kind == "bilinear" else 4
    support = interp / 2 * s if s >= 1 else interp / 2
    inv = 1 / s if s >= 1 else 1.0

    def weight(x: float) -> float:
        x = abs(x)
        if kind == "bilinear":
            return max(0.0, 1 - x)
        a = -0.5
        if x < 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        return (((x - 5) * x + 8) * x - 4) * a if x < 2 else 0.0

    rows = []
    for i in range(n_out):
        center = s * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        rows.append([j for j in range(xmin, xmax) if weight((j - center + 0.5) * inv) != 0])
    width = max((len(r) for r in rows), default=1) or 1
    taps = np.full((n_out, width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        taps[i, :len(r)] = r
    return taps


@register("_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa")
def upsample_aa(call: OpCall) -> list:
    kw = call.kw
    x = call.input
    if x.field is None:
        return [None]
    if kw.get("align_corners"):
        raise NotImplementedError("antialiased resampling with align_corners=True")
    kind = "bilinear" if "bilinear" in call.name else "bicubic"
    shape = call.out_shapes[0]
    taps = [_aa_sources(kind, x.shape[2 + k], shape[2 + k], kw.get(name))
            for k, name in enumerate(("scales_h", "scales_w"))]

    def reads(k: int) -> AxisMap:
        t = taps[k]
        ok = t >= 0
        big = np.int64(1) << 40
        return explicit_reads(np.where(ok, t, big).min(axis=1), np.where(ok, t, -big).max(axis=1))

    return [spatial_update(x, shape, 2, reads, channels_plain=False,
                           taps_for=lambda k, r, n_out, n_in: taps[k])]
