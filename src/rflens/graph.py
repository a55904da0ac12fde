"""Walk a captured op graph and give every tensor its field: apply the per-op rules, merge paths,
and collect what must be reported (ops without a rule, non-aligned merges, rule failures)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rflens.arithmetic import AxisMap
from rflens.capture import _INPLACE_WRITEBACK, Capture, Node, TensorRef
from rflens.fields import Factor, TensorField, compact, dim_size, flags_of, plain, spatial
from rflens.arithmetic import explicit_reads
from rflens.rules import Arg, OpCall, lookup
from rflens.rules._axis import apply_reads
from rflens.rules.merge import broadcast_merge


@dataclass(frozen=True)
class UnsupportedOp:
    """An op rflens has no rule for: its outputs (and everything computed from them) are unknown."""

    op: str
    module: str
    count: int = 1
    reason: str = "no receptive-field rule"


@dataclass(frozen=True)
class AlignmentIssue:
    """A merge whose paths have different jumps or centres on ``axis``.

    ``paths``: (producer, jump, centre of unit 0) for each path."""

    op: str
    module: str
    axis: int
    paths: tuple[tuple[str, str, str], ...]

    def describe(self) -> str:
        where = self.module or "the model"
        paths = "; ".join(f"{p} (jump {j}, centre {c})" for p, j, c in self.paths)
        return f"non-aligned {self.op} in {where} on axis {self.axis}: {paths}"


@dataclass
class Analysis:
    fields: dict[int, TensorField]
    unsupported: list[UnsupportedOp] = field(default_factory=list)
    alignment: list[AlignmentIssue] = field(default_factory=list)
    producers: dict[int, str] = field(default_factory=dict)


def input_field(shape: tuple[int, ...], n_spatial: int) -> TensorField:
    """The input: batch and channel dimensions plain, the last ``n_spatial`` carry axes 0..n-1."""
    lead = len(shape) - n_spatial
    dims = [plain(s) for s in shape[:lead]]
    for k, n in enumerate(shape[lead:]):
        idx = np.arange(n, dtype=np.int64)[None, :]
        dims.append(spatial(n, k, AxisMap.identity(), idx, idx.copy()))
    return TensorField(tuple(dims))


def _to_arg(x, fields: dict[int, TensorField]):
    if isinstance(x, TensorRef):
        return Arg(x.shape, fields.get(x.id) if x.id is not None else None)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_arg(v, fields) for v in x)
    return x


def _unknown_field(shape: tuple[int, ...], inputs: list[TensorField], name: str) -> TensorField:
    flags = flags_of(inputs)
    flags["unknown"] = flags["unknown"] | {name}
    return TensorField(tuple(plain(s) for s in shape), **flags)


def _consistent(f: TensorField | None, shape: tuple[int, ...]) -> bool:
    if f is None:
        return True
    return len(f.dims) == len(shape) and all(dim_size(d) == s for d, s in zip(f.dims, shape))


def writeback(call: OpCall) -> list:
    """A base after an in-place write into one of its views. The view is followed back to the base
    through its chain of slices/selects: each base unit the view covers gets the view's new field
    as a component beside the base's old field (a union: exact when the written region held no
    input-derived data before, as in circular padding; otherwise it may keep overwritten paths).
    Writes through other kinds of view lose the geometry (reported)."""
    base, view = call.args
    if view.field is None:
        return [base.field]
    placement = _slice_placement(call.kwargs.get("chain"), base.shape)
    if placement is None:
        live = [a.field for a in (base, view) if a.field is not None]
        flags = flags_of(live)
        flags["lost"] = flags["lost"] | {"an in-place write through a view rflens cannot follow"}
        return [TensorField(tuple(plain(s) for s in base.shape), **flags)]
    widened = Arg(base.shape, _place(view.field, placement, base.shape))
    parts = (base, widened) if base.field is not None else (widened,)
    # the two parts cover different units: comparing their centres says nothing about alignment
    merged = broadcast_merge(OpCall(call.name, parts, {}, call.out_shapes, call.tags), base.shape)
    return [merged.with_dims(merged.dims, misaligned=any(p.field.misaligned for p in parts))]


def _slice_placement(chain, shape) -> list | None:
    """For each base dimension, ``(view dim or None, start, step, count)`` of the view inside it."""
    if chain is None:
        return None
    place = [[d, 0, 1, n] for d, n in enumerate(shape)]
    for name, args in chain:
        live = [p for p in place if p[0] is not None]
        if name in ("slice", "narrow"):
            vd = args[0] if args else 0
            vd = vd + len(live) if vd < 0 else vd
            p = live[vd]
            start = args[1] if len(args) > 1 and args[1] is not None else 0
            start = start + p[3] if start < 0 else min(max(start, 0), p[3])
            if name == "narrow":
                end, step = start + args[2], 1
            else:
                end = args[2] if len(args) > 2 and args[2] is not None else p[3]
                end = end + p[3] if end < 0 else min(end, p[3])
                step = args[3] if len(args) > 3 else 1
            count = max(0, -(-(end - start) // step))
            p[1], p[2], p[3] = p[1] + start * p[2], p[2] * step, count
        elif name == "select":
            vd, index = args[0], args[1]
            vd = vd + len(live) if vd < 0 else vd
            p = live[vd]
            index = index + p[3] if index < 0 else index
            p[0], p[1], p[3] = None, p[1] + index * p[2], 1
        elif name in ("alias", "detach"):
            continue
        else:
            return None
        k = 0
        for q in place:
            if q[0] is not None:
                q[0] = k
                k += 1
    return place


def _place(field: TensorField, placement, shape) -> TensorField:
    """The view's field spread onto the base's units: covered units carry it, others are empty."""
    dims = []
    for (vd, start, step, count), n in zip(placement, shape):
        src = field.dims[vd] if vd is not None else (plain(1)[0],)
        f = src[0] if len(src) == 1 else None
        if f is None or f.axis is None:
            if f is None and any(g.axis is not None for g in src):
                return field.with_dims([plain(s) for s in shape],
                                       lost=field.lost | {"an in-place write into a flattened view"})
            dims.append(plain(n))
            continue
        units = np.arange(n, dtype=np.int64)
        offset = units - start
        inside = (offset >= 0) & (offset % step == 0) & (offset // step < count)
        which = np.where(inside, offset // step, -1)
        reads = explicit_reads(np.where(inside, which, 1), np.where(inside, which, 0))
        taps = which[:, None]
        dims.append((apply_reads(f, reads, n, taps),))
    return field.with_dims(dims)


def analyse(cap: Capture, n_spatial: int) -> Analysis:
    """Give every captured tensor its field, in execution order."""
    result = Analysis(fields={})
    fields = result.fields
    for ref in cap.inputs:
        fields[ref.id] = input_field(ref.shape, n_spatial)
        result.producers[ref.id] = "input"
    unsupported: dict[tuple[str, str, str], int] = {}
    for node in cap.nodes:
        outs = _apply(node, fields, unsupported, result)
        label = f"{node.module or 'model'}:{node.name}"
        for ref, f in zip(node.outputs, outs):
            if f is not None:
                fields[ref.id] = f
            result.producers[ref.id] = label
    result.unsupported = [UnsupportedOp(op, module, n, reason)
                          for (op, module, reason), n in unsupported.items()]
    return result


def _apply(node: Node, fields, unsupported, result: Analysis) -> list:
    args = _to_arg(node.args, fields)
    kwargs = {k: _to_arg(v, fields) for k, v in node.kwargs.items()}
    call = OpCall(node.name, args, kwargs, [r.shape for r in node.outputs], node.tags)
    live = call.fields
    rule = writeback if node.name == _INPLACE_WRITEBACK else lookup(node.name, node.tags)
    reason = "no receptive-field rule"
    outs = None
    if rule is not None:
        try:
            outs = [compact(f) if f is not None else None for f in rule(call)]
        except Exception as exc:  # a rule that cannot handle these arguments: report, never guess
            reason = f"its rule failed ({type(exc).__name__}: {exc})"
        else:
            if len(outs) != len(node.outputs) or not all(
                    _consistent(f, r.shape) for f, r in zip(outs, node.outputs)):
                reason, outs = "its rule returned fields that do not match the output shapes", None
    if outs is None:
        op = f"aten.{node.origin} (decomposed to aten.{node.name})" if node.origin else f"aten.{node.name}"
        key = (op, node.module, reason)
        unsupported[key] = unsupported.get(key, 0) + 1
        return [_unknown_field(r.shape, live, op) for r in node.outputs]
    for m in call.misalignments:
        refs = _flat_refs(node.args)
        paths = tuple((result.producers.get(refs[p].id, "constant") if p < len(refs) else f"#{p}", j, c)
                      for p, j, c in m.paths)
        result.alignment.append(AlignmentIssue(node.name, node.module, m.axis, paths))
    return outs


def _flat_refs(args) -> list[TensorRef]:
    out = []
    for a in args:
        if isinstance(a, TensorRef):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, TensorRef))
    return out


__all__ = ["analyse", "Analysis", "UnsupportedOp", "AlignmentIssue", "input_field", "Factor"]
