"""Walk a captured op graph and give every tensor its field: apply the per-op rules, merge paths,
and collect what must be reported (ops without a rule, non-aligned merges, rule failures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from rflens.geometry.axis import AxisMap
from rflens.geometry.fields import TensorField, compact, dim_size, flags_of, plain, spatial
from rflens.trf.capture import Capture, Node, TensorRef, tensor_refs
from rflens.trf.rules import Arg, OpCall, lookup


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
    applied: dict[str, int] = field(default_factory=dict)  # op name -> times a rule was applied
    value_reads: dict[tuple[str, str], int] = field(default_factory=dict)  # (op, module) -> count


# Ops that hand a tensor's value to Python (``.item()``, ``bool(t)``, ``torch.equal``): they make no
# tensor, so they need no rule, but the control flow after them depends on the data.
VALUE_READS = frozenset({"_local_scalar_dense", "is_nonzero", "equal"})


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
        return Arg(x.shape, fields.get(x.id) if x.id is not None else None, x.dtype)
    if isinstance(x, (list, tuple)) and any(isinstance(v, TensorRef) for v in x):
        return type(x)(Arg(v.shape, fields.get(v.id) if v.id is not None else None, v.dtype)
                       if isinstance(v, TensorRef) else v for v in x)
    return x


def _unknown_field(shape: tuple[int, ...], inputs: list[TensorField], name: str) -> TensorField:
    flags = flags_of(inputs)
    flags["unknown"] = flags["unknown"] | {name}
    return TensorField(tuple(plain(s) for s in shape), **flags)


def _consistent(f: TensorField | None, shape: tuple[int, ...]) -> bool:
    if f is None:
        return True
    return len(f.dims) == len(shape) and all(dim_size(d) == s for d, s in zip(f.dims, shape))


def analyse(cap: Capture, n_spatial: int, spatial: Sequence[int] | None = None) -> Analysis:
    """Give every captured tensor its field, in execution order. ``spatial``: which inputs (by
    position among the captured input tensors) carry the image grid (default all); the others are
    constants."""
    result = Analysis(fields={})
    fields = result.fields
    for k, ref in enumerate(cap.inputs):
        if spatial is None or k in spatial:
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
    if node.name in VALUE_READS and not node.outputs:
        if any(isinstance(a, TensorRef) and a.id in fields for a in tensor_refs(node.args)):
            key = (node.name, node.module)
            result.value_reads[key] = result.value_reads.get(key, 0) + 1
        return []
    args = tuple(_to_arg(a, fields) for a in node.args)
    kwargs = {k: _to_arg(v, fields) for k, v in node.kwargs.items()}
    call = OpCall(node.name, args, kwargs, [r.shape for r in node.outputs], node.tags, schema=node.schema)
    live = call.fields
    rule = lookup(node.name, node.tags)
    reason = "no receptive-field rule"
    outs = None
    if rule is not None:
        try:
            outs = [f if f is None or any(f is g for g in live) else compact(f) for f in rule(call)]
        except Exception as exc:  # a rule that cannot handle these arguments: report, never guess
            reason = f"its rule failed ({type(exc).__name__}: {exc})"
        else:
            if len(outs) != len(node.outputs) or not all(
                    _consistent(f, r.shape) for f, r in zip(outs, node.outputs)):
                reason, outs = "its rule returned fields that do not match the output shapes", None
    if outs is not None:
        result.applied[node.name] = result.applied.get(node.name, 0) + 1
    if outs is None:
        op = f"aten.{node.origin} (decomposed to aten.{node.name})" if node.origin else f"aten.{node.name}"
        key = (op, node.module, reason)
        unsupported[key] = unsupported.get(key, 0) + 1
        return [_unknown_field(r.shape, live, op) for r in node.outputs]
    for m in call.misalignments:
        refs = tensor_refs(node.args)
        paths = tuple((result.producers.get(refs[p].id, "constant") if p < len(refs) else f"#{p}", j, c)
                      for p, j, c in m.paths)
        result.alignment.append(AlignmentIssue(node.name, node.module, m.axis, paths))
    return outs


__all__ = ["analyse", "Analysis", "UnsupportedOp", "AlignmentIssue", "input_field"]
