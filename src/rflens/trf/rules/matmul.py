"""Matrix products and attention. A product contracts one dimension of each operand: if that
dimension is spatial (tokens), every output unit depends on the whole axis (``global``); the
kept dimensions carry their operands' fields (a token-wise linear layer stays local)."""

from __future__ import annotations

from rflens.geometry.fields import Factor, TensorField, flags_of
from rflens.trf.rules.axes import merge_dims, reduce_dim
from rflens.trf.rules.merge import broadcast_merge
from rflens.trf.rules.registry import Arg, OpCall, register


def _dims(a: Arg) -> tuple:
    return a.field.dims if a.field is not None else tuple((Factor(s),) for s in a.shape)


def _spatial(dim) -> bool:
    return any(f.axis is not None and f.size > 1 for f in dim)


def product(call: OpCall, a: Arg, b: Arg, shape) -> TensorField | None:
    """``out[..., i, j] = sum_k a[..., i, k] * b[..., k, j]`` (batch dims broadcast)."""
    live = [x.field for x in (a, b) if x.field is not None]
    if not live:
        return None
    da, db = _dims(a), _dims(b)
    contracted = (a.field is not None and _spatial(da[-1])) or (b.field is not None and _spatial(db[-2]))
    nd = len(shape)
    dims = []
    for k in range(nd - 2):
        contributions, positions = [], []
        for pos, (x, dx) in enumerate(((a, da), (b, db))):
            src = k - (nd - len(x.shape))
            if x.field is not None and src >= 0 and x.shape[src] == shape[k]:
                contributions.append(dx[src])
                positions.append(pos)
        merged = merge_dims(contributions, shape[k], k, call, positions) or (Factor(shape[k]),)
        dims.append(merged)
    dims.append(da[-2] if a.field is not None else (Factor(shape[-2]),))
    dims.append(db[-1] if b.field is not None else (Factor(shape[-1]),))
    flags = flags_of(live)
    flags["is_global"] = flags["is_global"] or contracted
    extra = [f for x in live for f in x.extra]
    if a.field is not None:
        extra.extend(reduce_dim(da[-1]))
    if b.field is not None:
        extra.extend(reduce_dim(db[-2]))
    return TensorField(tuple(dims), extra=_unique_axes(extra, call), **flags)


def _unique_axes(extra: list, call: OpCall) -> tuple:
    """One reduced factor per axis: paths that reduced the same axis are merged."""
    by_axis: dict = {}
    for f in extra:
        by_axis.setdefault(f.axis, []).append((f,))
    return tuple(merge_dims(dims, 1, axis, call, list(range(len(dims))))[0]
                 for axis, dims in sorted(by_axis.items()))


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
    """Each query token mixes every key/value token: global along the token axis; the output
    keeps the query's fields (its own token's local path)."""
    kw = call.kw
    q, k, v = kw["query"], kw["key"], kw["value"]
    live = [x.field for x in (q, k, v) if x.field is not None]
    if not live:
        return [None for _ in call.out_shapes]
    qd = _dims(q)
    shape = call.out_shapes[0]
    dims = list(qd[:-1]) + [(Factor(shape[-1]),)]
    flags = flags_of(live)
    flags["is_global"] = True
    main = TensorField(tuple(dims), **flags)
    rest = [TensorField(tuple((Factor(s),) for s in sh), **flags) for sh in call.out_shapes[1:]]
    return [main] + rest
