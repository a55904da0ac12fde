"""Matrix products and attention. A product contracts one dimension of each operand: every
output unit depends on every unit along the contracted dimension, so the axes carried there are
mixed (:mod:`rflens.trf.rules.mixing`): a whole axis is a global dependency (token mixing,
attention over all tokens), the inner part of a split axis stays within its window (window
attention). The kept dimensions carry their operands' fields (a token-wise linear layer stays
local)."""

from __future__ import annotations

import numpy as np

from rflens.geometry.axis import union
from rflens.geometry.fields import Factor, TensorField, Tokens, axis_factors, flags_of
from rflens.trf.rules.axes import has_axis, merge_dims
from rflens.trf.rules.merge import broadcast_merge, merged_extra
from rflens.trf.rules.mixing import canonical, drop_dims, fold_extra, mix, replace_axis
from rflens.trf.rules.registry import Arg, OpCall, register


def _dims(a: Arg) -> tuple:
    return a.field.dims if a.field is not None else tuple((Factor(s),) for s in a.shape)


def _merge(call: OpCall, parts: list, n: int, what: str, lost: set):
    """The union of the contributions ``parts`` (dims of the operands that carry a field)."""
    if not parts:
        return (Factor(n),)
    merged = merge_dims(parts, n, 0, call, list(range(len(parts))))
    if merged is None:
        lost.add(f"{call.name}: the operands' {what} dimensions carry different axes")
        return (Factor(n),)
    return merged


def _contract(field: TensorField | None, d: int):
    """An operand mixed along its contracted dimension ``d`` (and that dimension dropped), with
    the mixed dimension itself kept for :func:`product`'s token-mixing case."""
    if field is None:
        return None, None
    mixed = mix(field, [d])
    return drop_dims(mixed, [d], keepdim=False, join_axes=False), mixed.dims[d]


def product(call: OpCall, a: Arg, b: Arg, shape) -> TensorField | None:
    """``out[..., i, j] = sum_k a[..., i, k] * b[..., k, j]`` (batch dimensions broadcast).

    Each operand is mixed along its contracted dimension ``k`` (every output unit reads all of it)
    and ``k`` is dropped; the rest meet on the layout ``(*batch, i, j)``. An axis along ``j`` that
    the output also carries along ``i`` or a batch dimension (``q @ kᵀ``: query and key tokens of
    one grid) is mixed too and ``j`` becomes plain: a unit is one position of the grid. A plain
    ``j`` as long as a ``k`` whose axes were mixed whole (a linear layer over all tokens,
    MLP-Mixer) takes ``k``'s grid: every output token depends on every input token, whichever
    position it is given."""
    live = [x.field for x in (a, b) if x.field is not None]
    if not live:
        return None
    nd, lost = len(shape), set()
    fa, ka = _contract(a.field, len(a.shape) - 1)
    fb, kb = _contract(b.field, len(b.shape) - 2) if len(b.shape) > 1 else _contract(b.field, 0)
    parts_b = list(fb.dims) if fb is not None else None
    batch = []
    for k in range(nd - 2):
        parts = []
        for x, f, rank in ((a, fa, len(a.shape) - 1), (b, fb, len(b.shape) - 1)):
            src = k - (nd - 2 - (rank - 1))
            if f is not None and src >= 0 and x.shape[src] == shape[k]:
                parts.append(f.dims[src])
        batch.append(_merge(call, parts, shape[k], "batch", lost))
    i = fa.dims[-1] if fa is not None and len(a.shape) > 1 else (Factor(shape[-2]),)
    j = parts_b[-1] if parts_b and len(b.shape) > 1 else (Factor(shape[-1]),)
    fields = [f for f in (fa, fb) if f is not None]
    flags = flags_of(fields)
    flags["lost"] = flags["lost"] | frozenset(lost)
    joint = unify_axes(TensorField((*batch, i, j), extra=merged_extra(fields, call), **flags), call)
    n = len(joint.dims)
    elsewhere = {f.axis for dim in joint.dims[:-1] for f in axis_factors(dim)}
    shared = {f.axis for f in axis_factors(j)} & elsewhere
    if shared:
        joint = mix(joint, [n - 1], axes=shared)
        joint = joint.with_dims([*joint.dims[:-1], _without_axes(joint.dims[-1], shared)])
    k_grid = next((k for k in (ka, kb) if k is not None and has_axis(k)), None)
    if k_grid is not None and not has_axis(joint.dims[-1]) and _size(k_grid) == shape[-1] \
            and not ({f.axis for f in axis_factors(k_grid)} & elsewhere):
        axes = {f.axis for f in axis_factors(k_grid)}
        joint = joint.with_dims([*joint.dims[:-1], k_grid],
                                extra=tuple(e for e in joint.extra if e.axis not in axes))
    return canonical(fold_extra(joint))


def unify_axes(field: TensorField, call: OpCall) -> TensorField:
    """Every factor of one axis must describe the same per-unit dependency: where a join left
    different hulls on the factors of an axis (sub-factors met from different operands), all of
    them get the union."""
    by_axis: dict[int, list[Factor]] = {}
    for dim in field.dims:
        for f in axis_factors(dim):
            by_axis.setdefault(f.axis, []).append(f)
    dims = list(field.dims)
    for axis, fs in by_axis.items():
        distinct = {id(f.lo): f for f in fs}
        if len(distinct) < 2 or len({f.units for f in fs}) > 1:
            continue
        parts = list(distinct.values())
        new = Factor(parts[0].units, axis, union([f.field for f in parts], parts[0].units),
                     np.concatenate([f.lo for f in parts]), np.concatenate([f.hi for f in parts]))
        dims = [replace_axis(dim, axis, new) for dim in dims]
    return field.with_dims(dims)


def _size(dim) -> int:
    n = 1
    for f in dim:
        n *= f.size
    return n


def _without_axes(dim, axes: set):
    """``dim`` with the factors of ``axes`` made plain (their units are no positions any more)."""
    if any(isinstance(f, Tokens) for f in dim) or any(f.axis in axes for f in dim):
        return (Factor(_size(dim)),)
    return dim


@register("mm", "bmm", "_int_mm")
def mm(call: OpCall) -> list:
    return [product(call, call.input, call.kw["mat2"], call.out_shapes[0])]


@register("addmm", "baddbmm", "addbmm")
def addmm(call: OpCall) -> list:
    """``self + a @ b`` (``self`` broadcast: usually a constant bias)."""
    kw = call.kw
    a, b = (kw["mat1"], kw["mat2"]) if "mat1" in kw else (kw["batch1"], kw["batch2"])
    shape = call.out_shapes[0]
    prod = product(call, a, b, shape)
    bias = call.input
    if bias.field is None:
        return [prod]
    parts = [bias] if prod is None else [bias, Arg(shape, prod)]
    return [broadcast_merge(call, shape, parts)]


@register("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
          "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention",
          "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps")
def attention(call: OpCall) -> list:
    """``softmax(q kᵀ) v``: each query token depends on every key/value token of its attention
    group — the products ``q kᵀ`` and ``(·) v`` of :func:`product` (whole axes: global; windows:
    each window). Masks and biases are data the meta tensors do not hold: a masked pair still
    counts as a dependency. Secondary outputs (log-sum-exp, seeds) depend on everything."""
    kw = call.kw
    q, k, v = kw["query"], kw["key"], kw["value"]
    live = [x.field for x in (q, k, v) if x.field is not None]
    if not live:
        return [None for _ in call.out_shapes]
    shape = call.out_shapes[0]
    kt_field = None
    if k.field is not None:
        dims = list(k.field.dims)
        dims[-1], dims[-2] = dims[-2], dims[-1]
        kt_field = k.field.with_dims(dims)
    kt = Arg((*k.shape[:-2], k.shape[-1], k.shape[-2]), kt_field)
    scores_shape = (*shape[:-1], k.shape[-2])
    scores = product(call, q, kt, scores_shape)
    main = product(call, Arg(scores_shape, scores), v, shape)
    flags = flags_of(live)
    flags["is_global"] = True
    rest = [TensorField(tuple((Factor(s),) for s in sh), **flags) for sh in call.out_shapes[1:]]
    return [main] + rest
