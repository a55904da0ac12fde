"""The analytic ERF of any graph the TRF engine handles: one float64 backward pass through a copy
of the model with every weight equal (:func:`rflens.erf.weights.uniformize`) and linear
activations (:func:`rflens.erf.linear.linear_mode`), from the unit to a zero input.

What the map covers (the choices, docs/erf.md "Analytic ERF"):

- **Local field** (the TRF engine gives the unit's box, no global path): the input is enlarged by
  whole periods ``D`` of the layer's output grid (the :class:`~rflens.geometry.axis.AxisMap`
  ``shift``: ``D`` input pixels move the grid by ``q`` units and repeat every unit's phase), so the
  probed unit keeps its phase and its box fits; the enlarged network's TRF is checked to give the
  shifted box, then the map is cropped to the box. No path is cut by the border; the mass outside
  the given input is exact. Where the enlargement is too large for the memory budget, fails, or
  changes the geometry (size-dependent crops or paddings), the map is computed on the given input,
  ``clipped`` and said why.
- **Global field** (some path pools over a whole axis and survives linearisation: a pooled
  context branch, ASPP image pooling, ``cumsum``): the map covers the whole input and is computed
  on the input *as given* — enlarging it would change what the global branch averages (its
  weights are ``1/N`` of the map it pools). Paths that end in zero padding are not counted, so the
  mass outside the input is unknown (NaN). A field marked global only through a multiplicative
  gate (squeeze-and-excitation: a constant under linearisation) or a normalisation (affine under
  linearisation) is local here; a note says so. Which one it is shows on the given input when the
  map has mass outside the unit's local box, else on an input enlarged by a whole field and a
  period beyond the box on each side (a surviving global path then reaches pixels outside it).
- **No TRF** (an op without a rule): the map is the whole given input; the ERF/TRF ratio is
  unknown and a note says why.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from rflens.errors import RflensError
from rflens.erf.linear import left_nonlinear, linear_mode, mark_input
from rflens.erf.memory import memory_budget, saved_bytes
from rflens.erf.probe import resolve_unit
from rflens.erf.result import TRFInfo
from rflens.erf.weights import uniformize
from rflens.geometry.axis import AxisMap
from rflens.trf.instrument import LayerRef, run_to_layer

Box = tuple[tuple[int, int], ...]
# With mean weights every layer preserves mass, so a unit's map sums to about 1 (2**k after k
# residual merges); a total below this is cancellation (e.g. weight standardisation of equal
# weights, which leaves only rounding noise) and counts as empty.
_EMPTY = 1e-9

_STANDARD_CONV_FORWARDS = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward,
                           nn.ConvTranspose1d.forward, nn.ConvTranspose2d.forward,
                           nn.ConvTranspose3d.forward}


@dataclass(frozen=True)
class GraphERF:
    """``map`` (float64, unnormalised) over ``box`` (inclusive input pixels per axis) for ``unit``."""

    unit: tuple[int, ...]
    box: Box
    map: np.ndarray
    clipped: bool
    is_global: bool
    trf: TRFInfo | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class UnitField:
    """The probed unit's TRF (None with a reason when the engine cannot give it) and the per-axis
    maps of its layer (for the enlargement period)."""

    trf: TRFInfo | None
    maps: tuple[AxisMap, ...] | None
    reason: str | None


def unit_field(model: nn.Module, input_shape: tuple[int, ...], layer: str | None,
               unit: tuple[int, ...]) -> UnitField:
    """Ask the TRF engine (meta tensors: no compute) for ``unit``'s field at ``input_shape``."""
    from rflens.trf.engine import receptive_field

    try:
        first = next((p for p in model.parameters() if p.is_floating_point()), None)
        dtype = first.dtype if first is not None else torch.float32
        rf = receptive_field(model, example_inputs=torch.empty((1, *input_shape), dtype=dtype,
                                                               device="meta"))
        name = LayerRef.parse(layer, model).name
        if name not in rf:
            return UnitField(None, None, f"the TRF engine has no layer '{name}'")
        row = rf[name]
        if not row.known:
            why = ", ".join(row.unknown_ops + row.lost)
            return UnitField(None, None, f"the TRF engine does not know the field of '{name}' ({why})")
        if len(row.factors) != len(unit) or any(not 0 <= u < n for u, n in zip(unit, row.grid)):
            return UnitField(None, None, f"the TRF engine's grid {row.grid} of '{name}' does not hold "
                                         f"unit {unit}")
        box = row.box(tuple(unit), clip=False)
        if box is None:
            return UnitField(None, None, f"unit {tuple(unit)} of '{name}' reads no input pixel")
        info = TRFInfo(box=box, size=tuple(hi - lo + 1 for lo, hi in box),
                       center=tuple((lo + hi) / 2 for lo, hi in box),
                       jump=tuple(float(j) for j in row.jump), is_global=row.is_global)
        return UnitField(info, tuple(f.field for f in row.factors), None)
    except Exception as exc:  # the analytic map does not depend on the TRF engine succeeding
        return UnitField(None, None, f"the TRF engine failed ({type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:160] if str(exc) else ''})")


class _Work:
    """A float64 CPU copy of the model with uniform weights, and its unit gradients."""

    def __init__(self, model: nn.Module, layer: str | None) -> None:
        self.layer = layer
        self.model = uniformize(copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval())
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.target = LayerRef.parse(layer, self.model)
        self.left: set[str] = set()

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        x = mark_input(torch.zeros((1, *shape), dtype=torch.float64))  # linearised as in gradient()
        with torch.no_grad(), linear_mode():
            try:
                y = run_to_layer(self.model, self.target, (x,))
            except RflensError:
                raise
            except Exception as exc:
                raise RflensError(f"the model fails on input {'x'.join(map(str, shape))} with uniform "
                                  f"weights and linear activations ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from exc
        if not isinstance(y, torch.Tensor) or y.dim() < 3:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise RflensError(f"layer '{self.layer}' outputs shape {got} with no spatial axes")
        return tuple(y.shape[2:])

    def gradient(self, shape: tuple[int, ...], unit: tuple[int, ...]) -> np.ndarray:
        """``sum_c |d y[c, unit] / d x|`` over the spatial grid of a zero input of ``shape``."""
        x = mark_input(torch.zeros((1, *shape), dtype=torch.float64, requires_grad=True))
        with torch.enable_grad():
            with linear_mode():
                y = run_to_layer(self.model, self.target, (x,))
            picked = y[(0, slice(None)) + tuple(unit)]
            self.left.update(left_nonlinear(picked))
            (grad,) = torch.autograd.grad(picked.sum(), x, allow_unused=True)
        if grad is None:
            return np.zeros(shape[1:])
        return grad[0].abs().sum(dim=0).numpy()


def graph_erf(model: nn.Module, layer: str | None, input_shape: tuple[int, ...], unit: Any,
              max_memory: int | None = None) -> GraphERF:
    """The analytic map of ``unit`` of ``layer`` (see the module docstring for what it covers)."""
    work = _Work(model, layer)
    unit_t = resolve_unit(unit, work.output_shape(input_shape), layer)
    field = unit_field(model, input_shape, layer, unit_t)
    spatial = tuple(input_shape[1:])
    whole = tuple((0, n - 1) for n in spatial)
    notes: list[str] = []
    if field.trf is None:
        notes.append(f"{field.reason}: the ERF/TRF ratio is unknown")
        grad = work.gradient(input_shape, unit_t)
        if _touches_border(grad):
            notes.append("without a TRF the input cannot be enlarged, and the map reaches its border: "
                         "paths through the border may be missing, so the mass outside is unknown")
        out = GraphERF(unit_t, whole, grad, _touches_border(grad), False, None, ())
        return _finish(out, work, model, layer, notes)
    trf = field.trf
    given: np.ndarray | None = None
    decided = not trf.is_global  # whether the linearised field is known to be local
    if trf.is_global:
        given = work.gradient(input_shape, unit_t)
        if (given[~_box_mask(trf.box, spatial)] > 0).any():
            return _finish(_global(unit_t, whole, given, trf, spatial), work, model, layer, notes)
        # no mass outside the local box here proves nothing (a global path may land inside it):
        # decide on an input with whole fields of room on each side of the box
    maps = _periodic_maps(model, input_shape, layer, field.maps)
    if maps is not None and maps is not field.maps:
        # on a grid of a few units the engine extrapolates the box of a unit reading padding; the
        # layer's periodic grid gives it exactly (the enlarged input's TRF confirms it below)
        box = tuple(m.interval(u) for m, u in zip(maps, unit_t))
        trf = TRFInfo(box=box, size=tuple(hi - lo + 1 for lo, hi in box),
                      center=tuple((lo + hi) / 2 for lo, hi in box), jump=trf.jump,
                      is_global=trf.is_global)
    margins = _period_margins(trf.box, maps, spatial, detect=not decided)
    why = None
    if margins is None:
        why = "the layer's grid has no period to enlarge the input by"
    elif not any(a or b for a, b, _ in margins):
        given = given if given is not None else work.gradient(input_shape, unit_t)
        if not (given[~_box_mask(trf.box, spatial)] > 0).any():
            return _finish(_local(unit_t, trf, given, [(0, 0, 0)] * len(spatial), notes),
                           work, model, layer, notes)
        why = "paths reach beyond the unit's TRF box"
    else:
        why, pooled = _enlargement_problem(work, model, layer, big_shape := _big(input_shape, margins),
                                           _moved(unit_t, margins), trf, margins, max_memory)
        if why is None and pooled and decided:
            # a pool over one unit here becomes a global pool on the enlarged input: harmless only
            # if no global path survives linearisation, which needs whole fields of room to show
            margins = _period_margins(trf.box, maps, spatial, detect=True)
            why, _ = _enlargement_problem(work, model, layer, big_shape := _big(input_shape, margins),
                                          _moved(unit_t, margins), trf, margins, max_memory)
        if why is None:
            grad = work.gradient(big_shape, _moved(unit_t, margins))
            beyond = (grad[~_box_mask(_shift(trf.box, margins), big_shape[1:])] > 0).any()
            if beyond and not decided:
                return _finish(_global(unit_t, whole, given, trf, spatial), work, model, layer, notes)
            if not beyond:
                return _finish(_local(unit_t, trf, grad, margins, notes), work, model, layer, notes)
            why = (f"on the enlarged input {'x'.join(map(str, big_shape))} paths reach beyond the "
                   "unit's TRF box" + (" (a pool over one unit becomes global)" if pooled else ""))
    if given is None:
        given = work.gradient(input_shape, unit_t)
    trf = field.trf  # the engine's own box: the periodic one was not confirmed
    if not decided:  # cannot tell local from global: the map on the input as given, flagged global
        return _finish(_global(unit_t, whole, given, trf, spatial), work, model, layer, notes)
    notes.append(f"{why}: the map is computed on the input as given, and paths through the border "
                 "are missing")
    out = GraphERF(unit_t, whole, given, not _fits(trf.box, spatial), False, trf, ())
    return _finish(out, work, model, layer, notes)


def _local(unit: tuple[int, ...], trf: TRFInfo, grad: np.ndarray, margins: list,
           notes: list[str]) -> GraphERF:
    if trf.is_global:
        notes.append("the TRF engine marks this field global, but no global path survives "
                      "linearisation (a multiplicative gate such as squeeze-and-excitation is a "
                      "constant, a normalisation keeps only its affine part): the analytic map is local")
    crop = tuple(slice(lo + a, hi + a + 1) for (lo, hi), (a, _, _) in zip(trf.box, margins))
    return GraphERF(unit, trf.box, grad[crop], False, False, trf, ())


def _global(unit: tuple[int, ...], whole: Box, given: np.ndarray, trf: TRFInfo,
            spatial: tuple[int, ...]) -> GraphERF:
    note = ("the unit's field is global (a branch pools over the whole map): the analytic map covers "
            "the whole input, computed on the input as given (enlarging it would change what the "
            "global branch averages); paths that end in zero padding are not counted, so the mass "
            "outside the input is unknown")
    return GraphERF(unit, whole, given, not _fits(trf.box, spatial), True, trf, (note,))


def _finish(out: GraphERF, work: _Work, model: nn.Module, layer: str | None,
            notes: list[str]) -> GraphERF:
    if not out.map.sum() > _EMPTY:
        custom = [f"{n} ({type(m).__name__})" for n, m in model.named_modules()
                  if isinstance(m, nn.modules.conv._ConvNd) and type(m).forward not in _STANDARD_CONV_FORWARDS]
        hint = (f"; {', '.join(custom[:4])} override(s) the convolution's forward (weight "
                "standardisation turns equal weights into zeros): use the gradient ERF") if custom else ""
        where = f"layer '{layer}'" if layer else "the model output"
        raise RflensError(f"the analytic ERF of {where} is empty (no path reaches the unit "
                          f"with equal weights and linear activations){hint}")
    extra = list(out.notes) + notes
    if work.left:
        extra.append("activations='linear' left these non-linear ops on the way to the unit; the "
                     f"analytic map uses their derivative at a zero input: {', '.join(sorted(work.left))}")
    return GraphERF(out.unit, out.box, out.map, out.clipped, out.is_global, out.trf, tuple(extra))


def _big(shape: tuple[int, ...], margins: list) -> tuple[int, ...]:
    return (shape[0],) + tuple(n + a + b for n, (a, b, _) in zip(shape[1:], margins))


def _moved(unit: tuple[int, ...], margins: list) -> tuple[int, ...]:
    return tuple(u + k for u, (_, _, k) in zip(unit, margins))


def _enlargement_problem(work: _Work, model: nn.Module, layer: str | None, big: tuple[int, ...],
                         big_unit: tuple[int, ...], trf: TRFInfo, margins: list,
                         max_memory: int | None) -> tuple[str | None, bool]:
    """Why the input cannot be enlarged to ``big`` (None when it can), and whether the unit's field
    becomes global there (a pool over one unit that now pools several)."""
    shown = "x".join(map(str, big))
    need = saved_bytes(work.model, work.target, big, torch.float64)
    if need is not None and 2 * need > memory_budget(torch.device("cpu"), max_memory):
        return f"enlarging the input to {shown} so the field fits exceeds the memory budget", False
    try:
        out = work.output_shape(big)
    except RflensError:
        return f"the model does not run on the enlarged input {shown}", False
    if len(out) != len(big_unit) or any(not 0 <= u < n for u, n in zip(big_unit, out)):
        return f"the enlarged input {shown} does not move the unit by whole periods", False
    moved = unit_field(model, big, layer, big_unit)
    if moved.trf is None or moved.trf.box != _shift(trf.box, margins):
        return (f"enlarging the input to {shown} changes the layer's geometry (size-dependent "
                "padding or crops)"), False
    return None, moved.trf.is_global and not trf.is_global


def _periodic_maps(model: nn.Module, shape: tuple[int, ...], layer: str | None,
                   maps: tuple[AxisMap, ...] | None) -> tuple[AxisMap, ...] | None:
    """The layer's per-axis maps with their true period: a grid of one or a few units (an input
    barely larger than the field) gives a map exact only for those units, whose shift is not the
    period; the TRF at a doubled input shows it (the enlargement is verified either way)."""
    if maps is None or all(m.exact_units is None for m in maps):
        return maps
    bigger = unit_field(model, (shape[0],) + tuple(2 * n for n in shape[1:]), layer,
                        (0,) * (len(shape) - 1))
    if bigger.maps is None or any(m.exact_units is not None for m in bigger.maps):
        return None
    return bigger.maps


def _period_margins(box: Box, maps: Sequence[AxisMap] | None, spatial: tuple[int, ...],
                    detect: bool = False) -> list[tuple[int, int, int]] | None:
    """Per axis ``(before, after, units)``: pixels to add before/after (whole periods ``D`` of the
    output grid) so ``box`` fits, and how many units the probed unit moves (``before / D * q``).
    ``detect``: leave room for a whole field plus a period on both sides of the box, so units whose
    fields lie entirely outside it exist (a global path through them shows outside the box). None
    when an axis that needs room has no period."""
    if maps is None:
        return None
    out = []
    for (lo, hi), m, n in zip(box, maps, spatial):
        room = (hi - lo + 1) + max(int(m.shift), 1) if detect else 0
        need_before = max(0, room - lo) if detect else max(0, -lo)
        need_after = max(0, hi + room - (n - 1)) if detect else max(0, hi - (n - 1))
        if not need_before and not need_after:
            out.append((0, 0, 0))
            continue
        period, shift = int(m.period), int(m.shift)
        if shift < 1:
            return None
        before = -(-need_before // shift) * shift
        after = -(-need_after // shift) * shift
        out.append((before, after, before // shift * period))
    return out


def _shift(box: Box, margins: list) -> Box:
    return tuple((lo + a, hi + a) for (lo, hi), (a, _, _) in zip(box, margins))


def _fits(box: Box, spatial: tuple[int, ...]) -> bool:
    return all(lo >= 0 and hi <= n - 1 for (lo, hi), n in zip(box, spatial))


def _box_mask(box: Box, spatial: tuple[int, ...]) -> np.ndarray:
    """True on the input pixels inside ``box`` (clipped to the grid)."""
    mask = np.zeros(spatial, dtype=bool)
    index = tuple(slice(max(lo, 0), max(min(hi, n - 1) + 1, 0)) for (lo, hi), n in zip(box, spatial))
    mask[index] = True
    return mask


def _touches_border(m: np.ndarray) -> bool:
    for ax in range(m.ndim):
        if np.take(m, 0, axis=ax).any() or np.take(m, m.shape[ax] - 1, axis=ax).any():
            return True
    return False
