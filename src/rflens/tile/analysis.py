"""What tiling needs to know about a model, read from the TRF engine's op graph
(:func:`rflens.trf.engine.trace`, meta tensors: nothing is computed).

- :func:`trace_at`: the op graph and fields at one input shape, and the layer that is tiled.
- :func:`inspect_graph`: over every op the tiled output depends on, the alignment (least common
  multiple of every tensor's input period, per axis), the first op that makes the output depend
  on a whole axis (global), the first op whose field is not periodic (size-dependent), the first
  op whose output has units that read no input pixel.
- :func:`same_geometry`: whether two traces at different sizes run the same ops with the same
  periodic fields (a model that pads, crops or resizes by amounts computed from the input size
  does not, and cannot be tiled exactly).
- :func:`min_sizes`: the smallest input the model runs on, per axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from rflens.errors import RflensError
from rflens.geometry.fields import TensorField
from rflens.trf.capture import Capture, Node, TensorRef, capture
from rflens.trf.engine import trace
from rflens.trf.graph import Analysis
from rflens.trf.instrument import ROOT, LayerRef


@dataclass
class Traced:
    """One trace of the model at ``shape`` (batch 1) and the tiled layer's output tensor in it."""

    shape: tuple[int, ...]
    cap: Capture
    analysis: Analysis
    out: TensorRef
    field: TensorField


def model_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def trace_at(model: nn.Module, shape: tuple[int, ...], ref: LayerRef) -> Traced:
    """Trace ``model`` on a meta input of ``shape`` (batch included) and find ``ref``'s output."""
    x = torch.empty(shape, dtype=model_dtype(model), device="meta")
    cap, analysis = trace(model, (x,), len(shape) - 2)
    out = _output_ref(cap, ref)
    field = analysis.fields.get(out.id) if out.id is not None else None
    if field is None:
        raise RflensError(f"the output of '{ref.name}' does not depend on the input; tile a layer "
                          "that does")
    return Traced(tuple(shape), cap, analysis, out, field)


def _output_ref(cap: Capture, ref: LayerRef) -> TensorRef:
    for event in cap.modules:
        if event.name == ref.module and event.call == ref.call - 1:
            for suffix, tref in event.outputs:
                if suffix == ref.key:
                    return tref
            raise RflensError(f"layer '{ref.name}' has no tensor output {ref.key or ''}; tiling "
                              "needs a layer that returns a feature map")
    raise RflensError(f"layer '{ref.name}' did not run in the forward pass")


def output_dims(t: Traced) -> tuple[int, ...]:
    """The output tensor dimension that carries each input axis (e.g. ``(2, 3)`` for B×C×H×W)."""
    n_spatial = len(t.shape) - 2
    dims: dict[int, int] = {}
    for d, dim in enumerate(t.field.dims):
        if len(dim) == 1 and dim[0].axis is not None:
            dims[dim[0].axis] = d
    missing = [k for k in range(n_spatial) if k not in dims]
    if missing:
        raise RflensError(f"output dimension for input axis {missing[0]} not found: the tiled layer "
                          f"must keep every spatial axis as its own dimension (shape {t.out.shape})")
    if t.out.shape[0] != 1 or 0 in dims.values():
        raise RflensError(f"the tiled output (shape {t.out.shape} for a batch of 1) has no leading "
                          "batch dimension; tiling stacks tiles along it")
    return tuple(dims[k] for k in range(n_spatial))


def _refs(value) -> list[TensorRef]:
    if isinstance(value, TensorRef):
        return [value]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    return []


def ancestors(t: Traced) -> list[Node]:
    """The ops the tiled output depends on, in execution order."""
    producer = {ref.id: node for node in t.cap.nodes for ref in node.outputs}
    todo, seen = [t.out.id], set()
    while todo:
        tid = todo.pop()
        node = producer.get(tid)
        if node is None or node.index in seen:
            continue
        seen.add(node.index)
        todo.extend(r.id for r in _refs(node.args) + _refs(node.kwargs) if r.id is not None)
    return [n for n in t.cap.nodes if n.index in seen]


def _spatial_factors(field: TensorField):
    for dim in field.dims:
        for f in dim:
            if f.axis is not None:
                yield f
    yield from field.extra


def describe_op(node: Node) -> str:
    op = f"aten.{node.origin}" if node.origin else f"aten.{node.name}"
    return f"{op} in '{node.module or ROOT}'"


@dataclass
class GraphFacts:
    align: tuple[int, ...]
    global_node: Node | None = None
    aperiodic_node: Node | None = None
    empty_node: Node | None = None


def inspect_graph(t: Traced) -> GraphFacts:
    n_spatial = len(t.shape) - 2
    align = [1] * n_spatial
    facts = GraphFacts(tuple(align))
    fields = t.analysis.fields
    for node in ancestors(t):
        inputs = [fields[r.id] for r in _refs(node.args) + _refs(node.kwargs) if r.id in fields]
        for ref in node.outputs:
            field = fields.get(ref.id)
            if field is None:
                continue
            if field.is_global and not any(f.is_global for f in inputs) and facts.global_node is None:
                facts.global_node = node
            for f in _spatial_factors(field):
                m = f.field
                if m is None:
                    continue
                if m.exact_units is not None:
                    facts.aperiodic_node = facts.aperiodic_node or node
                elif m.shift > 0:
                    align[f.axis] = math.lcm(align[f.axis], m.shift)
                    if not m.has_no_empty:
                        facts.empty_node = facts.empty_node or node
    facts.align = tuple(align)
    return facts


def _signature(t: Traced, node: Node) -> tuple:
    out = []
    for ref in node.outputs:
        field = t.analysis.fields.get(ref.id)
        # axes pooled to one unit (shift 0: global pooling) hold the hull of the whole map
        out.append(None if field is None else
                   tuple((f.axis, f.field) for f in _spatial_factors(field)
                         if f.field is None or f.field.shift != 0))
    return node.name, tuple(out)


def same_geometry(whole: Traced, tile: Traced) -> str | None:
    """None when both traces run the same ops with the same periodic fields, else why not."""
    a, b = whole.cap.nodes, tile.cap.nodes
    size = "x".join(map(str, tile.shape[2:]))
    if len(a) != len(b):
        return (f"the model runs {len(b)} ops on a {size} tile but {len(a)} on the whole input "
                "(its forward depends on the input size)")
    for na, nb in zip(a, b):
        if _signature(whole, na) != _signature(tile, nb):
            return (f"the field of {describe_op(nb)} on a {size} tile differs from the whole input's "
                    "(a pad, crop or resize computed from the input size)")
    return None


def _runs(model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
    try:
        capture(model, (torch.empty(shape, dtype=dtype, device="meta"),), device="meta")
        return True
    except Exception:  # noqa: BLE001 - any failure means "does not run at this size"
        return False


def min_sizes(model: nn.Module, shape: tuple[int, ...], align: tuple[int, ...]
              ) -> tuple[int | None, ...]:
    """Per axis (the others at their size in ``shape``), the smallest length the model runs on.

    The multiples of the alignment ``A`` are searched by bisection (a model that runs on ``jA``
    is taken to run on every larger multiple), then every length below the smallest one, up
    from the previous multiple: U-Nets run only on multiples of ``A``, plain strided networks on
    much less. None everywhere when the model does not run on meta tensors at all."""
    dtype = model_dtype(model)
    if not _runs(model, shape, dtype):
        return tuple(None for _ in align)
    out = []
    for k, a in enumerate(align):
        n = shape[2 + k]

        def runs(m: int, k=k) -> bool:
            return _runs(model, shape[:2 + k] + (m,) + shape[3 + k:], dtype)

        if runs(1):  # padded strided networks usually do
            out.append(1)
            continue
        top = n
        lo_j, hi_j = 1, n // a
        if hi_j >= 1 and runs(a):
            top = a
        elif hi_j >= 2 and runs(hi_j * a):  # runs(lo_j * a) is False, runs(hi_j * a) True
            while hi_j - lo_j > 1:
                mid = (lo_j + hi_j) // 2
                lo_j, hi_j = (lo_j, mid) if runs(mid * a) else (mid, hi_j)
            top = hi_j * a
        best = top
        for m in range(max(2, top - a + 1), top):
            if runs(m):
                best = m
                break
        out.append(best)
    return tuple(out)
