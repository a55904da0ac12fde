"""ONNX ``Resize`` (and ``Upsample``) as PyTorch ops whose receptive-field geometry is exact.

ONNX maps output index ``o`` of an axis to a source coordinate ``x(o)`` by its
``coordinate_transformation_mode`` (``r = 1/scale``; ``scale = out/in`` when ``sizes`` are given)::

    half_pixel            (o + 1/2) r - 1/2
    pytorch_half_pixel    (o + 1/2) r - 1/2, or 0 when the output has one unit
    align_corners         o (in - 1)/(out - 1), or 0 when the output has one unit
    asymmetric            o r
    tf_half_pixel_for_nn  (o + 1/2) r
    tf_crop_and_resize    start (in - 1) + o (end - start)(in - 1)/(out - 1)   (roi start, end)

``nearest`` reads ``round(x)`` (``nearest_mode``: round_prefer_floor, round_prefer_ceil, floor,
ceil), clamped to the axis; ``linear`` the two neighbours of ``x`` (one when ``x`` is an integer),
clamped; ``cubic`` four. Every ``x(o)`` is an exact fraction ``(A o + B) / D``.

When PyTorch's ``F.interpolate`` computes the same map (nearest ``floor(o in/out)``, nearest-exact
``floor((o + 1/2) in/out)``, linear/cubic with ``align_corners`` False = half_pixel or True) it is
called directly. Otherwise each axis is resampled on its own, exactly:

- nearest: ``s(o) = floor((P o + C) / Q)`` for integers ``P, Q, C``; the axis is first repeated
  ``Q`` times (nearest upsampling by an integer factor), edge-padded for the clamp, then sliced
  from ``C`` with step ``P``.
- linear: the axis is linearly interpolated onto the grid ``j / D`` (``align_corners`` upsampling
  to ``(in - 1) D + 1`` units), edge-padded (or padded with ``extrapolation_value`` for
  tf_crop_and_resize, whose outside points are that constant), then sliced from ``B`` with step
  ``A``.

These are ops rflens has exact rules for, so the fields of the converted graph are the ONNX ones.
The intermediate axis has ``in * Q`` (or ``(in - 1) D + 1``) units: cheap for the usual integer
factors, larger for odd size ratios.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rflens.sources.onnx_ops import ConversionError, attributes, constant, text

MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
         "tf_crop_and_resize")
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _fraction(value: float) -> Fraction:
    """A float32 scale or roi value as the short fraction it stands for (2.0, 0.5, 1/3, ...)."""
    return Fraction(float(np.float32(value))).limit_denominator(1 << 16)


def source_coordinate(mode: str, n_in: int, n_out: int, scale: Fraction,
                      roi: tuple[Fraction, Fraction] | None) -> tuple[int, int, int]:
    """``(A, B, D)`` with ``x(o) = (A o + B) / D``, D > 0, for one axis."""
    if mode == "align_corners" or (mode == "pytorch_half_pixel" and n_out == 1):
        x1 = Fraction(n_in - 1, n_out - 1) if n_out > 1 else Fraction(0)
        x0 = Fraction(0)
    elif mode == "tf_crop_and_resize":
        start, end = roi
        if n_out > 1:
            x0, x1 = start * (n_in - 1), (end - start) * (n_in - 1) / (n_out - 1)
        else:
            x0, x1 = (start + end) / 2 * (n_in - 1), Fraction(0)
    else:
        r = 1 / scale
        x0 = {"asymmetric": Fraction(0), "tf_half_pixel_for_nn": r / 2}.get(mode, (r - 1) / 2)
        x1 = r
    d = math.lcm(x0.denominator, x1.denominator)
    return int(x1 * d), int(x0 * d), d


def nearest_index(a: int, b: int, d: int, rounding: str) -> tuple[int, int, int]:
    """``(P, C, Q)`` with ``round(x(o)) = floor((P o + C) / Q)``, reduced."""
    if rounding == "floor":
        p, c, q = a, b, d
    elif rounding == "ceil":
        p, c, q = a, b + d - 1, d
    elif rounding == "round_prefer_ceil":  # floor(x + 1/2)
        p, c, q = 2 * a, 2 * b + d, 2 * d
    else:  # round_prefer_floor: ceil(x - 1/2)
        p, c, q = 2 * a, 2 * b + d - 1, 2 * d
    g = math.gcd(p, q) or 1
    return p // g, c // g, q // g  # floor((g p' o + c) / (g q')) = floor((p' o + c // g) / q')


def _nearest_map(p: int, c: int, q: int, n_in: int, n_out: int) -> list[int]:
    return [min(max((p * o + c) // q, 0), n_in - 1) for o in range(n_out)]


def _torch_nearest_map(n_in: int, n_out: int, r: Fraction, exact: bool) -> list[int]:
    return [min(math.floor((o + Fraction(1, 2)) * r) if exact else math.floor(o * r), n_in - 1)
            for o in range(n_out)]


def _slice_axis(x: torch.Tensor, dim: int, start: int, step: int, count: int) -> torch.Tensor:
    index = [slice(None)] * x.dim()
    index[dim] = slice(start, start + step * (count - 1) + 1, step)
    return x[tuple(index)]


def _pad_axis(x: torch.Tensor, dim: int, before: int, after: int, value: float | None) -> torch.Tensor:
    """Pad one axis: edge replication (``value`` None) or a constant."""
    if before == 0 and after == 0:
        return x
    pads = [0, 0] * (x.dim() - 1 - dim) + [before, after]
    if value is not None:
        return F.pad(x, pads, value=value)
    spatial = x.dim() - 2
    pads = pads + [0, 0] * (spatial - len(pads) // 2)  # replicate pads all spatial axes
    return F.pad(x, pads, mode="replicate")


def _resize_axis(x: torch.Tensor, dim: int, size: int, mode: str, align: bool | None) -> torch.Tensor:
    sizes = list(x.shape[2:])
    sizes[dim - 2] = size
    return F.interpolate(x, size=sizes, mode=mode, align_corners=align)


def nearest_axis(x: torch.Tensor, dim: int, p: int, c: int, q: int, n_out: int) -> torch.Tensor:
    """``out[o] = x[clamp(floor((p o + c) / q))]`` along ``dim`` (see the module docstring)."""
    n_in = x.shape[dim]
    if q > 1:
        x = _resize_axis(x, dim, n_in * q, "nearest", None)
    if p == 0:
        index = min(max(c // q, 0), n_in - 1)
        one = _slice_axis(x, dim, index * q, 1, 1)
        reps = [1] * x.dim()
        reps[dim] = n_out
        return one.repeat(reps)
    last = p * (n_out - 1) + c
    before, after = max(0, -c), max(0, last - (n_in * q - 1))
    x = _pad_axis(x, dim, before, after, None)
    return _slice_axis(x, dim, c + before, p, n_out)


def linear_axis(x: torch.Tensor, dim: int, a: int, b: int, d: int, n_out: int,
                outside: float | None) -> torch.Tensor:
    """``out[o]`` = linear interpolation of ``x`` at ``(a o + b) / d`` along ``dim``; outside the
    axis the edge value (``outside`` None) or the constant ``outside``."""
    n_in = x.shape[dim]
    g = math.gcd(math.gcd(a, b), d) or 1
    a, b, d = a // g, b // g, d // g
    if d > 1 and n_in > 1:
        x = _resize_axis(x, dim, (n_in - 1) * d + 1, _LINEAR[x.dim() - 2], True)
    else:
        d = 1 if n_in == 1 else d
    grid = (n_in - 1) * d + 1
    if a == 0:
        j = b
        if outside is not None and not 0 <= j < grid:
            return torch.full_like(_slice_axis(x, dim, 0, 1, 1), outside).repeat(
                [n_out if k == dim else 1 for k in range(x.dim())])
        one = _slice_axis(x, dim, min(max(j, 0), grid - 1), 1, 1)
        return one.repeat([n_out if k == dim else 1 for k in range(x.dim())])
    last = a * (n_out - 1) + b
    before, after = max(0, -b), max(0, last - (grid - 1))
    x = _pad_axis(x, dim, before, after, outside)
    return _slice_axis(x, dim, b + before, a, n_out)


class Resize(nn.Module):
    """ONNX Resize-11/13 (``Upsample`` is read as Resize with ``asymmetric`` coordinates).

    ``scales``/``sizes``/``roi`` are the node's constant inputs (None: computed in the graph, then
    passed to ``forward``). Batch and channel axes must keep their size."""

    def __init__(self, mode: str, coordinates: str, nearest: str, scales: Sequence[float] | None,
                 sizes: Sequence[int] | None, roi: Sequence[float] | None, extrapolation: float,
                 where: str) -> None:
        super().__init__()
        self.mode, self.coordinates, self.nearest = mode, coordinates, nearest
        self.scales = tuple(float(s) for s in scales) if scales is not None else None
        self.sizes = tuple(int(s) for s in sizes) if sizes is not None else None
        self.roi = tuple(float(v) for v in roi) if roi is not None else None
        self.extrapolation, self.where = extrapolation, where

    def extra_repr(self) -> str:
        return f"mode={self.mode}, coordinates={self.coordinates}" + (
            f", nearest_mode={self.nearest}" if self.mode == "nearest" else "")

    def forward(self, x: torch.Tensor, *dynamic: torch.Tensor) -> torch.Tensor:
        scales, sizes, roi = self.scales, self.sizes, self.roi
        values = iter(dynamic)
        if scales is None and sizes is None:
            given = [v.tolist() for v in values]
            scales, sizes = (None, given[-1]) if len(given[-1]) and isinstance(given[-1][0], int) \
                else (given[-1], None)
        n = x.dim() - 2
        axes = self._axes(x, scales, sizes, roi)
        if all(a is None for a in axes):
            return x
        native = self._native(x, axes, n, scales if not sizes else None)
        if native is not None:
            return native
        for k, axis in enumerate(axes):
            if axis is not None:
                x = self._one_axis(x, 2 + k, *axis)
        return x

    def _axes(self, x: torch.Tensor, scales, sizes, roi) -> list:
        """Per spatial axis ``(n_out, A, B, D)``, or None where the axis maps onto itself."""
        shape, n = tuple(x.shape), x.dim() - 2
        if sizes is not None and len(sizes):
            if len(sizes) != x.dim():
                raise ValueError(f"Resize node {self.where}: sizes {list(sizes)} for a rank-{x.dim()} input")
            if list(sizes[1:2]) != [shape[1]]:
                raise ValueError(f"Resize node {self.where} resizes the channel axis ({shape[1]} -> "
                                 f"{sizes[1]}); rflens resizes spatial axes only")
            outs = [int(s) for s in sizes[2:]]
            ratios = [Fraction(o, i) for o, i in zip(outs, shape[2:])]
        else:
            if len(scales) != x.dim() or any(float(s) != 1.0 for s in scales[:2]):
                raise ValueError(f"Resize node {self.where}: scales {list(scales)} must be 1 on the batch "
                                 "and channel axes")
            ratios = [_fraction(s) for s in scales[2:]]
            outs = [math.floor(i * float(np.float32(s))) for i, s in zip(shape[2:], scales[2:])]
        out = []
        for k in range(n):
            box = None
            if self.coordinates == "tf_crop_and_resize":
                box = (_fraction(roi[2 + k]), _fraction(roi[x.dim() + 2 + k]))
            a, b, d = source_coordinate(self.coordinates, shape[2 + k], outs[k], ratios[k], box)
            identity = outs[k] == shape[2 + k] and a == d and b == 0
            out.append(None if identity else (outs[k], a, b, d))
        return out

    def _native(self, x: torch.Tensor, axes: list, n: int, scales) -> torch.Tensor | None:
        """One ``F.interpolate`` call when it computes exactly the ONNX map on every axis: with
        ``size`` (PyTorch's ratio ``in/out``) or, for ONNX scales, ``scale_factor`` (ratio
        ``1/scale``, taken as ``Fraction(1/scale).limit_denominator(10**6)`` like rflens' rule)."""
        shape = x.shape[2:]
        outs = [shape[k] if axes[k] is None else axes[k][0] for k in range(n)]
        calls = [({"size": outs}, [Fraction(shape[k], outs[k]) for k in range(n)])]
        if scales is not None:
            factors = [float(np.float32(v)) for v in scales[2:]]
            ratios = [Fraction(1.0 / f).limit_denominator(10**6) for f in factors]
            if all(r == 1 / _fraction(f) for r, f in zip(ratios, factors)):
                calls.append(({"scale_factor": factors, "recompute_scale_factor": False}, ratios))
        for kwargs, ratios in calls:
            if self.mode == "nearest":
                wanted = [None if axes[k] is None else
                          _nearest_map(*nearest_index(*axes[k][1:], self.nearest), shape[k], outs[k])
                          for k in range(n)]
                for torch_mode, exact in (("nearest", False), ("nearest-exact", True)):
                    if all(w is None or w == _torch_nearest_map(shape[k], outs[k], ratios[k], exact)
                           for k, w in enumerate(wanted)):
                        return F.interpolate(x, mode=torch_mode, **kwargs)
                continue
            if self.mode == "cubic" and n != 2:
                return None
            for align, like in ((False, "half_pixel"), (True, "align_corners")):
                if all(axes[k] is None or axes[k][1:] == source_coordinate(
                        like, shape[k], outs[k], 1 / ratios[k], None) for k in range(n)):
                    kind = "bicubic" if self.mode == "cubic" else _LINEAR[n]
                    return F.interpolate(x, mode=kind, align_corners=align, **kwargs)
        return None

    def _one_axis(self, x: torch.Tensor, dim: int, n_out: int, a: int, b: int, d: int) -> torch.Tensor:
        if self.mode == "nearest":
            p, c, q = nearest_index(a, b, d, self.nearest)
            return nearest_axis(x, dim, p, c, q, n_out)
        n_in = x.shape[dim]
        for align, like in ((False, "half_pixel"), (True, "align_corners")):
            if (a, b, d) == source_coordinate(like, n_in, n_out, Fraction(n_out, n_in), None):
                if self.mode == "linear":
                    return _resize_axis(x, dim, n_out, _LINEAR[x.dim() - 2], align)
                if x.dim() == 4:
                    return _resize_axis(x, dim, n_out, "bicubic", align)
                if x.dim() == 3:  # 1-D: bicubic over a dummy axis of one unit
                    return _resize_axis(x.unsqueeze(2), 3, n_out, "bicubic", align).squeeze(2)
        if self.mode == "linear":
            outside = self.extrapolation if self.coordinates == "tf_crop_and_resize" else None
            return linear_axis(x, dim, a, b, d, n_out, outside)
        raise ValueError(f"Resize node {self.where}: cubic interpolation with "
                         f"coordinate_transformation_mode={self.coordinates} on {x.dim() - 2}-D input "
                         "has no exact PyTorch counterpart; rflens converts cubic with half_pixel, "
                         "pytorch_half_pixel or align_corners on 1-D and 2-D input")


def convert_resize(node: Any, graph: Any) -> tuple[nn.Module, tuple[str, ...]]:
    attrs = attributes(node)
    mode = text(attrs.get("mode", "nearest"))
    coords = text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    nearest = text(attrs.get("nearest_mode", "round_prefer_floor"))
    where = f"'{node.name}'"
    if mode not in ("nearest", "linear", "cubic"):
        raise ConversionError(f"mode '{mode}' is not an ONNX Resize mode")
    if coords not in MODES:
        raise ConversionError(f"coordinate_transformation_mode '{coords}' is not supported "
                              f"(rflens converts {', '.join(MODES)})")
    if nearest not in NEAREST:
        raise ConversionError(f"nearest_mode '{nearest}' is not an ONNX rounding mode")
    if mode == "cubic" and (int(attrs.get("exclude_outside", 0)) or float(attrs.get("cubic_coeff_a", -0.75)) != -0.75):
        raise ConversionError("cubic with exclude_outside=1 or cubic_coeff_a other than -0.75 has no "
                              "PyTorch counterpart")
    if int(attrs.get("antialias", 0)):
        raise ConversionError("antialias=1 is not supported")
    inputs = list(node.input_values) + [""] * (4 - len(node.input_values))
    roi, scales, sizes = (constant(graph, inputs[i]) for i in (1, 2, 3))
    if coords == "tf_crop_and_resize" and roi is None:
        raise ConversionError("tf_crop_and_resize needs a constant roi")
    dynamic = [name for name in inputs[2:] if name and constant(graph, name) is None]
    if len(dynamic) > 1:
        raise ConversionError("both scales and sizes are computed in the graph")
    sizes_given = sizes is not None and sizes.size
    module = Resize(mode, coords, nearest,
                    None if sizes_given or scales is None or not scales.size else scales.tolist(),
                    sizes.tolist() if sizes_given else None,
                    roi.tolist() if roi is not None and roi.size else None,
                    float(attrs.get("extrapolation_value", 0.0)), where)
    if not dynamic and module.scales is None and module.sizes is None:
        raise ConversionError("neither scales nor sizes is given")
    return module, (inputs[0], *dynamic)


CONVERTERS = {"Resize": convert_resize}
