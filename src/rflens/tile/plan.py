"""``rflens.tile.plan(model, input_shape, tile=...)``: halo, alignment and tile grid from the exact
per-unit fields of the model's output (docs/tiling.md derives every number)."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import torch
from torch import nn

from rflens.errors import RflensError
from rflens.tile import analysis as an
from rflens.tile.geometry import (balanced_tile, count, erf_halo, halo_of, min_tile, round_down,
                                  segments, smallest_clean_input, units_per_block)
from rflens.tile.result import TilePlan
from rflens.trf.engine import receptive_field
from rflens.trf.instrument import LayerRef

# default tile window per axis when none is given, by number of spatial axes
DEFAULT_TILE = {1: 16384, 2: 512, 3: 128}


def _per_axis(value: Any, n: int, what: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    values = (value,) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) == 1:
        values = values * n
    if len(values) != n or any(v < 1 for v in values):
        raise RflensError(f"{what} {value!r} needs {n} positive size(s), one per spatial axis")
    return values


def plan(model: nn.Module, input_shape: Sequence[int], tile: int | Sequence[int] | None = None, *,
         layer: str | None = None, erf: Any = None, erf_mass: float = 0.99,
         name: str | None = None) -> TilePlan:
    """Plan tiled inference of ``model`` (up to ``layer``; default its output) on an input of
    ``input_shape = (C, *spatial)`` pixels (no batch axis).

    ``tile``: the largest tile window in input pixels (one int for every axis, or one per axis);
    rounded down to a multiple of the alignment, then reduced to the smallest multiple that needs
    no more tiles (less overlap); default :data:`DEFAULT_TILE` (at most the input). The
    halo comes from the exact fields; ``erf`` (an ERF result of the same ``layer`` on the same
    input shape, e.g. ``rflens.effective_receptive_field(model, layer, input_shape)``) replaces it
    by the halo holding ``erf_mass`` of the ERF mass (never exact; for models with global paths).
    The model is not run (meta tensors) and not modified.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise RflensError(f"input shape {shape} must be (channels, *spatial) with positive sizes")
    if erf is not None and not 0 < erf_mass < 1:
        raise RflensError(f"erf_mass {erf_mass} must be a fraction between 0 and 1, e.g. 0.99")
    label = name or type(model).__name__
    rf, ref = _rows(model, shape, layer, label)
    row = rf[ref.name]
    whole = an.trace_at(model, (1, *shape), ref)
    facts = an.inspect_graph(whole)
    align = facts.align
    reasons, global_module = _refusals(row, facts)
    maps = [f.field if f is not None else None for f in row.factors]
    if not maps or any(m is None or m.shift <= 0 or m.exact_units is not None for m in maps):
        maps = None
        if not reasons:
            reasons.append(f"the output of '{row.name}' does not move with the input")
    per_block = tuple(units_per_block(m, a) for m, a in zip(maps, align)) if maps else ()
    halo = source = box_mass = None
    if maps is not None and not reasons:
        halo, source = tuple(halo_of(m, a) for m, a in zip(maps, align)), "trf"
        if facts.empty_node is not None:
            reasons.append(f"{an.describe_op(facts.empty_node)} makes units that read no input "
                           "pixel (a transposed convolution with kernel < stride); where tiles "
                           "cut through them is not bounded by the fields: use --check")
    exact = not reasons
    if erf is not None:
        if maps is None:
            raise RflensError(f"the output of '{row.name}' has no periodic field: no tiling plan, "
                              "not even from the ERF")
        halo, box_mass = _erf_halo(erf, shape, per_block, align, erf_mass)
        source, exact = "erf", False
        reasons.append(f"the halo holds {erf_mass:g} of the ERF mass, not the whole field")
    mins = an.min_sizes(model, (1, *shape), align)
    n = len(shape) - 1
    useful = _useful(rf, maps, align, mins, n)
    unproductive = tuple(r.name for r in rf if r.exceeds_input and not r.is_global and r.known)
    tile_size = axes = None
    notes: list[str] = []
    dims = an.output_dims(whole) if halo is not None else _dims_if_any(whole)
    if halo is not None:
        tile_size, axes, notes, why = _grid(model, ref, whole, tile, halo, align, per_block, mins,
                                            dims)
        if why:
            reasons.append(why)
            exact = False
    return TilePlan(label, row.name, shape, whole.out.shape, dims, exact,
                    "; ".join(reasons) or None, global_module, halo, source, align, per_block, mins,
                    useful, unproductive, tile_size, axes, tuple(notes),
                    erf_mass if erf is not None else None, box_mass)


def _rows(model: nn.Module, shape: tuple[int, ...], layer: str | None, label: str):
    """The TRF rows and the tiled layer (for a dict output, its first tensor: ``output[out]``)."""
    ref = LayerRef.parse(layer, model)
    x = torch.empty((1, *shape), dtype=an.model_dtype(model), device="meta")
    rf = receptive_field(model, example_inputs=x, name=label)
    if ref.name not in rf and not ref.key:
        first = next((r.name for r in rf if r.name.startswith(ref.name + "[")), None)
        if first is not None:
            ref = LayerRef(ref.module, ref.call, first[len(ref.name):])
    return rf, ref


def _refusals(row, facts) -> tuple[list[str], str | None]:
    """Why the output cannot be tiled exactly (unknown, global, not periodic) and the first
    global module."""
    if not row.known:
        return [f"the field of '{row.name}' is unknown "
                f"({', '.join(row.unknown_ops + row.lost)})"], None
    if row.is_global:
        node = facts.global_node
        module = (node.module or "output") if node is not None else row.name
        what = an.describe_op(node) if node is not None else f"'{row.name}'"
        return [f"a global path: {what} makes every output unit depend on the whole input "
                f"(first global module: '{module}')"], module
    if facts.aperiodic_node is not None:
        return [f"the field of {an.describe_op(facts.aperiodic_node)} is not periodic (a resize "
                "to a fixed size, a spatial concatenation, ...): tiles would not compute what "
                "the whole input computes"], None
    return [], None


def _dims_if_any(whole) -> tuple[int, ...]:
    try:
        return an.output_dims(whole)
    except RflensError:  # e.g. a classifier's (B, classes): no plan is made anyway
        return ()


def _erf_halo(erf: Any, shape, per_block, align, mass: float):
    raw = getattr(erf, "raw", None)
    unit = getattr(erf, "unit", None)
    if raw is None or unit is None or tuple(raw.shape) != tuple(shape[1:]):
        raise RflensError("erf= must be an ERF result of the tiled layer on the same input shape "
                          f"{'x'.join(map(str, shape))} (rflens.effective_receptive_field)")
    try:
        return erf_halo(raw, tuple(unit), per_block, align, mass)
    except ValueError as exc:
        raise RflensError(f"cannot take a halo from this ERF: {exc}") from None


def _useful(rf, maps, align, mins, n):
    rows = [r for r in rf if r.known]  # axes pooled to one unit (jump 0) have no local field
    largest = tuple(max((r.size[k] for r in rows if (r.axes[k].jump or 0) > 0), default=1)
                    for k in range(n))
    if maps is None:
        return tuple(m or 1 for m in mins), largest
    smallest = tuple(max(smallest_clean_input(m, a), mn or 1) for m, a, mn in zip(maps, align, mins))
    return smallest, largest


def _grid(model, ref, whole, tile, halo, align, per_block, mins, dims):
    shape = whole.shape
    spatial = shape[2:]
    n = len(spatial)
    asked = _per_axis(tile, n, "tile")
    notes, sizes = [], []
    for k in range(n):
        before, after = halo[k]
        smallest = min_tile(before, after, align[k], mins[k] or 1)
        want = asked[k] if asked else max(DEFAULT_TILE.get(n, 128), smallest)
        size = round_down(want, align[k])
        if asked and size != want and want < spatial[k]:
            notes.append(f"tile {want} on axis {k} rounded down to {size}, a multiple of "
                         f"{align[k]}")
        if size < smallest and spatial[k] > size:
            raise RflensError(f"tile {want} on axis {k} is too small: with halo {before}/{after} "
                              f"and tile offsets a multiple of {align[k]} a tile needs at least "
                              f"{smallest} pixels")
        if size >= spatial[k] or size < smallest:
            sizes.append(spatial[k])
            continue
        even = balanced_tile(spatial[k], size, before, after, align[k], smallest)
        if even < size:
            notes.append(f"tile {size} on axis {k} reduced to {even}: the smallest multiple of "
                         f"{align[k]} that needs no more tiles "
                         f"({count(spatial[k], size, before, after, align[k])})")
        sizes.append(even)
    if n > 1 and len(notes) == n and len({nt.replace(f" on axis {k}", "")
                                          for k, nt in enumerate(notes)}) == 1:
        notes = [notes[0].replace(" on axis 0", " on every axis")]
    axes = []
    for k in range(n):
        before, after = halo[k]
        axes.append(tuple(segments(spatial[k], whole.out.shape[dims[k]], sizes[k], before, after,
                                   align[k], per_block[k])))
    return tuple(sizes), tuple(axes), notes, _verify(model, ref, whole, axes, dims)


def _verify(model, ref, whole, axes, dims) -> str | None:
    """Trace every distinct tile shape: same ops and fields as the whole input, and every tile's
    output long enough for the units it keeps (the last one exactly as long)."""
    options = [sorted({s.size for s in segs}) for segs in axes]
    for combo in itertools.product(*options):
        if combo == tuple(whole.shape[2:]):
            continue
        try:
            t = an.trace_at(model, whole.shape[:2] + combo, ref)
        except RflensError as exc:
            raise RflensError(f"the model does not run on a {'x'.join(map(str, combo))} tile "
                              f"({exc}); choose another --tile") from None
        why = an.same_geometry(whole, t)
        if why:
            return why
        for k, segs in enumerate(axes):
            n_out = t.out.shape[dims[k]]
            for s in segs:
                if s.size != combo[k]:
                    continue
                last = s is segs[-1]
                if s.local[1] > n_out or (last and s.local[1] != n_out):
                    return (f"a {combo[k]}-pixel tile gives {n_out} output units on axis {k}, not "
                            f"the {s.local[1]} the whole output needs: the output does not move "
                            "with the input")
    return None
