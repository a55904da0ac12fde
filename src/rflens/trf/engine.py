"""The theoretical-receptive-field entry point: ``rflens.receptive_field(model, input_shape=...)``."""

from __future__ import annotations

import functools

import gc
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch
from torch.utils._pytree import tree_flatten

from rflens.errors import RflensError, UnsupportedOpError
from rflens.geometry.fields import TensorField, Tokens, axis_factors, enumerate_units
from rflens.trf.capture import Capture, TensorRef, capture_with_fallback
from rflens.trf.graph import Analysis, analyse
from rflens.trf.instrument import eager
from rflens.trf.result import AxisField, LayerField, ReceptiveField
from rflens.trf.too_small import explain_too_small


def receptive_field(model: torch.nn.Module, input_shape: Sequence[int] | None = None, *,
                    example_inputs=None, spatial_inputs: Sequence[int] | None = None,
                    ops: bool = False, strict: bool = False, name: str | None = None) -> ReceptiveField:
    """Exact theoretical receptive field of every layer of ``model``.

    ``input_shape``: one input without the batch dimension, ``(C, *spatial)`` — e.g.
    ``(3, 224, 224)``; the model runs on batch 1 in the model's own dtype. Alternatively
    ``example_inputs``: a tensor, or a tuple of positional inputs (lists and dicts of tensors
    inside it are fine). Fields are in the pixels of the *image inputs*: ``spatial_inputs`` lists
    which tensors carry the grid (indices among all input tensors in order, nested ones
    flattened); by default the first tensor and every tensor with its rank and spatial sizes (two
    images of optical flow, a mask beside its image). Other tensors — a timestep, a class label, a
    conditioning vector — are read as constants: they add no dependency on pixels. The first
    image input's dimensions after batch and channels are spatial.

    ``ops=True`` adds one row per aten op. ``strict=True`` raises :class:`UnsupportedOpError` if
    any op has no rule. The model is not modified (it runs on meta copies of its weights, in eval
    mode; its train/eval flags are restored).
    """
    model = eager(model)
    inputs = _inputs(model, input_shape, example_inputs)
    tensors = [t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)]
    spatial = _spatial_inputs(tensors, spatial_inputs)
    first = tensors[spatial[0]]
    n_spatial = first.dim() - 2
    if n_spatial < 1:
        raise RflensError(f"input shape {tuple(first.shape[1:])} has no spatial axis; give "
                          "(channels, *spatial), e.g. 3x224x224")
    label = name or type(model).__name__
    cap, analysis = trace(model, inputs, n_spatial, spatial)
    result = _build(cap, analysis, label, tuple(first.shape), ops)
    if strict and result.unsupported_ops:
        u = result.unsupported_ops[0]
        more = f" and {len(result.unsupported_ops) - 1} more" if len(result.unsupported_ops) > 1 else ""
        raise UnsupportedOpError(f"op {u.op} in module {u.module or '(root)'} has {u.reason}{more}; "
                                 "drop --strict to see the partial result")
    return result


def _spatial_inputs(tensors: list[torch.Tensor], chosen: Sequence[int] | None) -> list[int]:
    if chosen is not None:
        chosen = [int(k) for k in chosen]
        if not chosen or any(not 0 <= k < len(tensors) for k in chosen):
            raise RflensError(f"spatial_inputs {chosen} must name input tensors 0..{len(tensors) - 1}")
        return chosen
    first = tensors[0]
    return [k for k, t in enumerate(tensors)
            if t.dim() == first.dim() and tuple(t.shape[2:]) == tuple(first.shape[2:])]


def trace(model: torch.nn.Module, inputs: tuple, n_spatial: int,
          spatial: Sequence[int] | None = None) -> tuple[Capture, Analysis]:
    """Capture ``model(*inputs)`` and give every captured tensor its field (the engine's first two
    steps; :mod:`rflens.dense` and :mod:`rflens.tile` read the op graph from here). An input too
    small for the model is explained (failing layer, minimum size)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of capture walks the whole model: pure overhead
    try:
        cap = capture_with_fallback(model, inputs)
        return cap, analyse(cap, n_spatial, spatial)
    except RflensError as exc:
        explain_too_small(model, inputs, exc)
        raise
    finally:
        if gc_was_enabled:
            gc.enable()


def _inputs(model: torch.nn.Module, input_shape, example_inputs) -> tuple:
    if (input_shape is None) == (example_inputs is None):
        raise RflensError("give exactly one of input_shape=(C, H, W) or example_inputs=")
    if example_inputs is not None:
        if isinstance(example_inputs, torch.Tensor):
            return (example_inputs,)
        inputs = tuple(example_inputs)
        if not any(isinstance(t, torch.Tensor) for t in tree_flatten(inputs)[0]):
            raise RflensError("example_inputs holds no tensor")
        return inputs
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise RflensError(f"input shape {shape} must be (channels, *spatial) with positive sizes, "
                          "e.g. (3, 224, 224)")
    # the model's own floating dtype (a float64 or bfloat16 model rejects a float32 input)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return (torch.empty((1, *shape), dtype=dtype, device="meta"),)


def _axis_fields(field: TensorField, n_spatial: int):
    by_axis = field.axis_fields()
    axes, factors = [], []
    for k in range(n_spatial):
        entry = by_axis.get(k)
        if entry is None:
            axes.append(None)
            factors.append(None)
            continue
        f = entry[1]
        axes.append(axis_summary(f.field, f.units))
        factors.append(f)
    return tuple(axes), tuple(factors)


def _period(lo: np.ndarray, hi: np.ndarray) -> int | None:
    """The smallest ``q`` with ``lo[i + q] = lo[i] + D`` and the same for ``hi`` over the table
    (a resampling step computed in floating point repeats like this), None if none up to half
    the table's length."""
    n = len(lo)
    if n < 2:
        return None
    for q in range(1, max(n // 2, 1) + 1):
        d = lo[q] - lo[0] if q < n else 0
        if np.all(lo[q:] - lo[:-q] == d) and np.all(hi[q:] - hi[:-q] == d):
            return q
    return None


@functools.lru_cache(maxsize=4096)
def axis_summary(m, units: int | None = None) -> AxisField:
    """Size, jump, padding and centre of a periodic map over its first ``units`` units (all of an
    explicit table's when None), or None with a reason where no single number describes the axis
    (see :class:`AxisField`)."""
    notes = []
    jump = m.jump
    if m.exact_units is not None:  # an explicit table: evenly spaced over its units, or no jump
        n = m.exact_units if units is None else min(m.exact_units, units)
        lo, hi = m.evaluate(np.arange(max(n, 1), dtype=np.int64))
        full = lo <= hi
        period = _period(lo, hi) if full.all() else None
        if period is not None:
            jump = Fraction(int(lo[period] - lo[0]), period)
        elif len(lo) < 2:
            jump = None
            notes.append("a single unit: no spacing to give a jump")
        else:
            jump = None
            notes.append("its units are not evenly spaced (a concatenation, roll, partial write "
                         "or resampling table along the axis): no single jump, padding or centre")
    padding, center = (m.padding, m.center) if jump is not None or m.exact_units is None \
        or n < 2 else (None, None)
    if m.lo_table[0] > m.hi_table[0]:
        padding = center = None
        notes.append("unit 0 reads nothing (an empty unit): no padding or centre to read from it")
    return AxisField(m.size, jump, padding, center, m.uniform and jump is not None,
                     "; ".join(notes) or None)


def _row(name: str, op: str, ref: TensorRef, analysis: Analysis, spatial: tuple[int, ...]) -> LayerField | None:
    if ref.id is None or ref.id not in analysis.fields:
        return None  # the output does not depend on the input
    field = analysis.fields[ref.id]
    axes, factors = _axis_fields(field, len(spatial))
    lost = tuple(sorted(field.lost))
    if any(a is None for a in axes) and not field.unknown and not lost:
        lost = ("no input axis can be followed to this output",)
    return LayerField(name, op, ref.shape, axes, not field.misaligned, field.is_global,
                      tuple(sorted(field.unknown)), lost, spatial, not field.approximate, factors,
                      (tuple(_layout(dim) for dim in field.dims), _axis_units(field, len(spatial))))


def _axis_units(field: TensorField, n_spatial: int) -> tuple:
    """Per input axis, the whole-axis units a row's unit indices stand for (None: the same)."""
    parts: dict[int, list] = {}
    for dim in field.dims:
        for f in axis_factors(dim):
            parts.setdefault(f.axis, []).append(f)
    out = []
    for k in range(n_spatial):
        fs = parts.get(k)
        out.append(None if not fs or (len(fs) == 1 and fs[0].full) else tuple(enumerate_units(tuple(fs))))
    return tuple(out)


def _layout(dim) -> tuple:
    """The parts of one tensor dimension as :meth:`LayerField.locate` reads them."""
    parts = []
    for f in dim:
        if isinstance(f, Tokens):
            parts.append(("tokens", f.before, f.after, _layout(f.grid)))
        elif f.axis is None:
            parts.append(("plain", f.size))
        else:
            parts.append(("axis", f.size, f.axis, f.step))
    return tuple(parts)


def _build(cap: Capture, analysis: Analysis, label: str, input_shape, ops: bool) -> ReceptiveField:
    spatial = tuple(input_shape[2:])
    rows: list[tuple[int, int, LayerField]] = []
    seen: dict[str, int] = {}
    for order, event in enumerate(cap.modules):
        base = event.name or "output"
        if event.call:
            base = f"{base}#{event.call + 1}"
        for suffix, ref in event.outputs:
            row = _row(base + suffix, event.type_name, ref, analysis, spatial)
            if row is not None:
                rows.append((event.after_node, order, row))
    if ops:
        for node in cap.nodes:
            for k, ref in enumerate(node.outputs):
                key = f"{node.module or 'output'}:{node.name}"
                seen[key] = seen.get(key, 0) + 1
                label_k = key if seen[key] == 1 else f"{key}#{seen[key]}"
                row = _row(label_k + (f"[{k}]" if k else ""), f"aten.{node.name}", ref, analysis, spatial)
                if row is not None:
                    rows.append((node.index + 1, -1, row))
    rows.sort(key=lambda r: (r[0], r[1]))
    warnings = ([cap.stopped] if cap.stopped else []) + list(cap.notes)
    for (op, module), n in analysis.value_reads.items():
        warnings.append(f"data-dependent control flow: aten.{op} in module {module or '(root)'} "
                        f"({n}×) reads a value computed from the input (.item(), a tensor's truth "
                        "value): the fields are those of the branch this input took")
    for issue in analysis.alignment:
        warnings.append(issue.describe())
    for u in analysis.unsupported:
        warnings.append(f"op {u.op} in module {u.module or '(root)'} ({u.count}×) has {u.reason}: "
                        "its outputs and everything after them are marked unknown")
    layers = tuple(r[2] for r in rows)
    approx = [layer.name for layer in layers if not layer.exact_hull]
    if approx:
        warnings.append(f"{len(approx)} layer(s), from {approx[0]} on, merge more paths that are "
                        "empty on different axes than rflens tracks separately, fold columns "
                        "whose window taps it does not track (nn.Fold), or select by the values of "
                        "a constant mask it does not read (where, masked_fill): their clipped boxes "
                        "may be supersets of the exact ones")
    big = [layer.name for layer in layers if layer.exceeds_input and not layer.is_global]
    if big:
        warnings.append(f"{len(big)} layer(s) have a field larger than the input, from {big[0]} on")
    return ReceptiveField(label, tuple(input_shape), layers, tuple(analysis.alignment),
                          tuple(analysis.unsupported), tuple(warnings), cap.path)
