"""What dense prediction needs to know about a strided network, read from the TRF engine's op graph.

:func:`analyze` traces the model once with :func:`rflens.trf.engine.trace` (meta tensors: no compute)
and walks the captured ops in order:

- an op inside a module rarefaction rewrites (``Conv*d``, stride-1 ``ConvTranspose*d``,
  ``MaxPool*d``, ``AvgPool*d``, padding modules) gives that module's accumulated stride ``F``: the
  jump of its input's field (the same at every call, else refused);
- any other op must leave the geometry alone: every output unit reads the same-index unit of its
  inputs (pointwise ops, merges of paths at the same jump, views that keep the spatial axes), or it
  runs before any stride (input and output jump 1), where the rarefied network computes exactly
  what the original does. Anything else is refused naming the op and its module: ops that make a
  unit depend on a whole axis (global pooling, norms and softmax over space, attention, linear
  layers over space — the engine marks them ``global``), resampling, functional strided ops, merges
  of paths at different strides, ops without a receptive-field rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from rflens.errors import RflensError
from rflens.geometry.axis import AxisMap, union
from rflens.geometry.fields import TensorField
from rflens.dense.modules import CONV, REWRITTEN, Ints, check_rewritable, display
from rflens.trf.capture import Node, TensorRef, tensor_refs
from rflens.trf.engine import trace

TRUNCATE = "truncate the model with --layer NAME before it"


@dataclass(frozen=True)
class DenseGeometry:
    """What rarefaction needs to know about a strided network, per spatial axis.

    ``jump``: total stride ``J``; ``lo``/``hi``: dense unit ``n`` sees input pixels ``[n+lo, n+hi]``
    (``lo = -P``, ``hi = R-1-P`` for the network's receptive field size ``R`` and effective padding
    ``P``, the union over branches); ``layers``: the accumulated stride each rewritten module runs
    at (its dilation factor); ``shifts``: ``prod(jump)``, the shifted passes shift-and-stitch needs.
    """

    jump: Ints
    lo: Ints
    hi: Ints
    layers: dict[str, Ints] = field(default_factory=dict)

    @property
    def shifts(self) -> int:
        return math.prod(self.jump)

    @property
    def min_input(self) -> Ints:
        """Smallest input length per axis with a non-empty interior (see
        :func:`rflens.dense.stitch.interior`): the first interior index ``J*ceil(-lo/J)`` plus ``hi``
        plus 1."""
        return tuple(j * -(lo // j) + hi + 1 for lo, hi, j in zip(self.lo, self.hi, self.jump))

    @property
    def size(self) -> Ints:
        """Receptive field size ``R`` per axis."""
        return tuple(h - l + 1 for l, h in zip(self.lo, self.hi))


def example_tensor(model: nn.Module, example: Tensor | Sequence[int] | None) -> Tensor:
    """A batched example input (only its shape and dtype matter)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if isinstance(example, Tensor):
        return example
    if example is None:
        conv = next((m for m in model.modules() if isinstance(m, CONV)), None)
        if conv is None:
            raise RflensError("cannot guess the input shape (the model has no Conv module first); "
                              "pass example=(C, *spatial) or a tensor")
        d = len(conv.kernel_size)
        example = (conv.in_channels, *([224] * d if d < 3 else [64] * d))
    shape = tuple(int(s) for s in example)
    if len(shape) < 2:
        raise RflensError(f"example shape {shape} must be (C, *spatial) with 1 to 3 spatial axes")
    return torch.zeros((1, *shape), dtype=dtype)


def analyze(model: nn.Module, example: Tensor | Sequence[int] | None = None) -> DenseGeometry:
    """Geometry of ``model`` for dense prediction (total stride, field of dense unit 0, the stride
    each rewritable module runs at), from one traced forward pass on ``example`` (a batched tensor,
    or a shape ``(C, *spatial)``; ``None`` guesses it from the first Conv). Raises
    :class:`RflensError` naming the op and module where the network has no dense form (see the
    module docstring). ``model`` itself is never touched."""
    if isinstance(model, torch.jit.ScriptModule):
        raise RflensError("cannot rarefy a TorchScript module: pass the eager nn.Module")
    x = example_tensor(model, example)
    d = x.ndim - 2
    if not 1 <= d <= 3:
        raise RflensError(f"input shape {tuple(x.shape)} must be (B, C, *spatial) with 1 to 3 "
                          "spatial axes")
    modules = dict(model.named_modules())
    rewritable = {name: m for name, m in modules.items() if isinstance(m, REWRITTEN)}
    for name, m in rewritable.items():
        check_rewritable(name, m, d)
    geometry, single = _analyze_once(model, torch.empty_like(x, device="meta"), modules, rewritable)
    if single:
        # a map of one unit hides ops that mix the grid (a norm over one position is no norm), but
        # the rarefied network runs them on many: check them again on a larger input
        bigger = torch.empty((*x.shape[:2], *(4 * n for n in x.shape[2:])), dtype=x.dtype, device="meta")
        try:
            cap, analysis = trace(model, (bigger,), d)
        except Exception:
            return geometry  # the model does not run on a larger input: nothing more to learn
        _walk(cap, analysis, modules, rewritable, d)
    return geometry


def _analyze_once(model: nn.Module, x: Tensor, modules: dict[str, nn.Module],
                  rewritable: dict[str, nn.Module]) -> tuple[DenseGeometry, bool]:
    """The geometry from one trace on ``x``, and whether some map had a single unit on an axis."""
    d = x.ndim - 2
    cap, analysis = trace(model, (x,), d)
    walk = _walk(cap, analysis, modules, rewritable, d)
    out = _root_output(cap)
    field_ = analysis.fields.get(out.id) if out is not None and out.id is not None else None
    if field_ is not None and out.id in walk.folded:
        raise RflensError(f"cannot rarefy {walk.folded[out.id]} folds the spatial axes into other "
                          f"dimensions (flatten/reshape), which has no dense form; {TRUNCATE}")
    jump, lo, hi = _output_geometry(field_, out, d)
    return DenseGeometry(jump, lo, hi, walk.layers), walk.single


def _walk(cap, analysis, modules: dict[str, nn.Module], rewritable: dict[str, nn.Module],
          d: int) -> "_Walk":
    out = _root_output(cap)
    used = {r.id for node in cap.nodes for r in tensor_refs(tuple(node.args) + tuple(node.kwargs.values()))}
    used.add(out.id if out is not None else None)
    walk = _Walk(analysis.fields, modules, rewritable, d, used)
    for event in cap.modules:
        if event.name in rewritable:
            walk.record(event.name, _module_input(event, cap.nodes))
    for node in cap.nodes:
        walk.visit(node)
    return walk


class _Walk:
    """Checks every captured op and records the stride each rewritable module runs at."""

    def __init__(self, fields: dict[int, TensorField], modules: dict[str, nn.Module],
                 rewritable: dict[str, nn.Module], d: int, used: set) -> None:
        self.fields, self.modules, self.rewritable, self.d = fields, modules, rewritable, d
        self.used = used  # tensors some op reads, and the output: unused side outputs do not count
        self.single = False  # some local map has a single unit on a spatial axis
        self.layers: dict[str, Ints] = {}
        self.folded: dict[int, str] = {}  # tensor id -> the op that folded its spatial axes

    def where(self, node: Node) -> str:
        m = self.modules.get(node.module)
        return f"{display(node.module)} ({type(m).__name__ if m is not None else '?'})"

    def visit(self, node: Node) -> None:
        ins = [self.fields[r.id] for r in tensor_refs(node.args) if r.id is not None and r.id in self.fields]
        outs = [self.fields.get(r.id) for r in node.outputs if r.id is not None and r.id in self.used]
        outs = [f for f in outs if f is not None]
        if not ins or not outs:
            return
        if node.module not in self.rewritable:  # ops inside a rewritten module are rewritten with it
            self._check(node, ins, outs)
        self.single = self.single or any(
            not f.is_global and any(size == 1 for size, _ in (_spatial_maps(f, self.d) or ()))
            for f in outs)
        folded = next((self.folded[r.id] for r in tensor_refs(node.args) if r.id in self.folded), None)
        for r in node.outputs:
            f = self.fields.get(r.id) if r.id is not None else None
            if f is not None and _spatial_maps(f, self.d) is None and _axis_maps(f, self.d) is not None:
                self.folded[r.id] = folded or f"{self.where(node)}: aten.{node.name}"

    def record(self, name: str, ref: TensorRef | None) -> None:
        """The stride a rewritable module runs at: the jump of its input."""
        where = f"{display(name)} ({type(self.modules[name]).__name__})"
        field_ = self.fields.get(ref.id) if ref is not None and ref.id is not None else None
        if field_ is None:
            return  # a call on data that does not come from the input
        jumps = _jumps(field_, self.d)
        if jumps is None:
            raise RflensError(f"cannot rarefy {where}: its input has no integer stride on every "
                              f"spatial axis (after resampling or a flatten); {TRUNCATE}")
        seen = self.layers.setdefault(name, jumps)
        if seen != jumps:
            raise RflensError(f"cannot rarefy {where}: it is called at strides {seen} and "
                              f"{jumps}, and one module cannot be dilated two ways; give each use its "
                              "own module")

    def _check(self, node: Node, ins: list[TensorField], outs: list[TensorField]) -> None:
        op, where = f"aten.{node.origin or node.name}", self.where(node)
        for out in outs:
            if out.unknown:
                raise RflensError(f"cannot rarefy {where}: {sorted(out.unknown)[0]} has no "
                                  f"receptive-field rule, so its geometry is unknown; {TRUNCATE}")
            if out.lost:
                raise RflensError(f"cannot rarefy {where}: {sorted(out.lost)[0]}; {TRUNCATE}")
            if out.is_global and not any(f.is_global for f in ins):
                raise RflensError(f"cannot rarefy {where}: global/dense layers have no dense "
                                  f"equivalent ({op} makes every unit depend on a whole spatial axis: "
                                  "global pooling, a norm or softmax over space, a linear layer or "
                                  f"attention over positions); {TRUNCATE}")
        in_jumps = {j for f in ins if (j := _jumps(f, self.d)) is not None}
        if len(in_jumps) > 1:
            a, b = sorted(in_jumps)[-1], sorted(in_jumps)[0]
            raise RflensError(f"cannot rarefy: {op} in {where} combines tensors at strides {a} and "
                              f"{b}; both paths must have the same total stride")
        for out in outs:
            if not _keeps_geometry(out, ins, self.d):
                self._refuse_spatial(node, op, where, in_jumps, out)

    def _refuse_spatial(self, node: Node, op: str, where: str, in_jumps: set, out: TensorField) -> None:
        ones = (1,) * self.d
        before = next(iter(in_jumps), None)
        after = _all_jumps(out, self.d)
        if before == ones and after == ones:
            return  # before any stride the rarefied network runs this op unchanged
        if after is not None and before is not None and any(a < b for a, b in zip(after, before)):
            shown = "(" + ", ".join(str(j) for j in after) + ")"
            raise RflensError(f"cannot rarefy {where}: {op} changes the stride from {before} to "
                              f"{shown}: resampling has no dense form; {TRUNCATE}")
        raise RflensError(f"cannot rarefy {where} calls {op} directly at stride {before}: rflens only "
                          "rewrites nn.ConvNd/MaxPoolNd/AvgPoolNd/padding modules; wrap it in one "
                          f"or {TRUNCATE}")


def _module_input(event, nodes: list[Node]) -> TensorRef | None:
    """The tensor a module call received: its first positional tensor, else (keyword calls) the
    first tensor argument of the first op it ran."""
    if event.inputs:
        return event.inputs[0]
    for node in nodes[event.first_node:event.after_node]:
        refs = tensor_refs(node.args)
        if refs:
            return refs[0]
    return None


def _axis_maps(field_: TensorField, d: int) -> list[tuple[int, AxisMap]] | None:
    """``(size, map)`` of each spatial axis 0..d-1, wherever it sits (also inside a flattened
    dimension); None if an axis is gone."""
    by_axis = {k: (f.size, f.field) for k, (dim, f) in field_.axis_fields().items() if dim is not None}
    if sorted(by_axis) != list(range(d)):
        return None
    return [by_axis[k] for k in range(d)]


def _spatial_maps(field_: TensorField, d: int) -> list[tuple[int, AxisMap]] | None:
    """``(size, map)`` of each spatial axis 0..d-1 when each is exactly one tensor dimension."""
    by_axis = {}
    for dim in field_.dims:
        for f in dim:
            if f.axis is not None:
                if len(dim) > 1:
                    return None
                by_axis[f.axis] = (f.size, f.field)
    if sorted(by_axis) != list(range(d)):
        return None
    return [by_axis[k] for k in range(d)]


def _all_jumps(field_: TensorField, d: int) -> tuple | None:
    """The jump of each spatial axis (exact fractions; ints where whole), None without them."""
    maps = _spatial_maps(field_, d)
    if maps is None:
        return None
    return tuple(int(m.jump) if m.jump.denominator == 1 else m.jump for _, m in maps)


def _jumps(field_: TensorField, d: int) -> Ints | None:
    """The integer strides (>= 1) of the spatial axes, None if some axis has none."""
    jumps = _all_jumps(field_, d)
    if jumps is None or any(not isinstance(j, int) or j < 1 for j in jumps):
        return None
    return jumps


def _keeps_geometry(out: TensorField, ins: list[TensorField], d: int) -> bool:
    """True when every output unit reads the same-index unit of the inputs on each spatial axis:
    the output's map is the union of the inputs' maps of the same size."""
    out_maps = _axis_maps(out, d)
    if out_maps is None:
        return not any(f.axis is not None for dim in out.dims for f in dim)  # no spatial axes: no geometry
    in_maps = [m for m in (_axis_maps(f, d) for f in ins) if m is not None]
    for k, (size, fmap) in enumerate(out_maps):
        same = [maps[k][1] for maps in in_maps if maps[k][0] == size]
        if not same or union(same, size) != fmap:
            return False
    return True


def _root_output(cap) -> TensorRef | None:
    root = [e for e in cap.modules if e.name == ""]
    return root[-1].outputs[0][1] if root and root[-1].outputs else None


def _output_geometry(field_: TensorField | None, out: TensorRef | None, d: int) -> tuple[Ints, Ints, Ints]:
    maps = _spatial_maps(field_, d) if field_ is not None else None
    if maps is None or out is None or len(out.shape) != d + 2:
        raise RflensError(f"the model's output must be one (B, C, *spatial) tensor with {d} spatial "
                          "axes computed from the input; truncate the model with --layer NAME")
    jumps = _jumps(field_, d)
    if jumps is None:
        raise RflensError("the model's output has a fractional stride (it upsamples); dense prediction "
                          f"needs an integer stride on every axis; {TRUNCATE}")
    lo, hi = zip(*(m.interval(0) for _, m in maps))
    return jumps, tuple(lo), tuple(hi)
