"""Reductions and whole-axis normalisations: mean/sum/max/var... over dimensions, softmax,
Group/Layer/Instance norm, BatchNorm in training mode. Reducing or normalising over a spatial
dimension makes the result depend on the whole axis: ``global``; the geometric field of the
reduced axis becomes one unit that covers every unit it pooled."""

from __future__ import annotations

from rflens.geometry.fields import Factor, TensorField
from rflens.trf.rules.axes import reduce_dim
from rflens.trf.rules.merge import broadcast_merge
from rflens.trf.rules.registry import OpCall, register


def _dims_arg(value, n: int) -> list[int]:
    if value is None or value == []:
        return list(range(n))
    if isinstance(value, int):
        value = [value]
    return sorted({v + n if v < 0 else v for v in value})


def reduce_over(field: TensorField, shape_in, shape_out, dims: list[int]) -> TensorField:
    keep = len(shape_out) == len(shape_in)
    new_dims, extra = [], list(field.extra)
    spatial_reduced = False
    for d, dim in enumerate(field.dims):
        if d not in dims:
            new_dims.append(dim)
            continue
        reduced = reduce_dim(dim)
        spatial_reduced |= any(f.size > 1 for f in dim if f.axis is not None)
        if keep and len(reduced) == 1 and len(dim) == 1:
            new_dims.append((reduced[0],))
        else:
            extra.extend(reduced)
            if keep:
                new_dims.append((Factor(1),))
    return field.with_dims(new_dims, is_global=field.is_global or spatial_reduced, extra=tuple(extra))


@register("mean", "sum", "nansum", "amax", "amin", "max", "min", "argmax", "argmin", "prod",
          "var", "std", "var_mean", "std_mean", "logsumexp", "norm", "linalg_vector_norm",
          "any", "all", "count_nonzero", "aminmax")
def reduction(call: OpCall) -> list:
    x = call.arg(0, "self")
    if x.field is None:
        return [None for _ in call.out_shapes]
    n = len(x.shape)
    if call.name in ("max", "min") and len(call.args) + len(call.kwargs) == 1:
        dims = list(range(n))
    elif call.name in ("norm",):
        dims = _dims_arg(call.arg(2, "dim"), n)
    elif call.name in ("linalg_vector_norm",):
        dims = _dims_arg(call.arg(2, "dim"), n)
    elif call.name in ("max", "min", "argmax", "argmin") and call.arg(1, "dim") is not None:
        dims = _dims_arg(call.arg(1, "dim"), n)
    elif call.name == "prod" and len(call.args) > 1 and isinstance(call.args[1], int):
        dims = _dims_arg(call.args[1], n)
    else:
        dims = _dims_arg(call.arg(1, "dim"), n)
    out = []
    for shape in call.out_shapes:
        if len(shape) == n or len(shape) == n - len(dims) or len(dims) == n:
            out.append(reduce_over(x.field, x.shape, shape, dims))
        else:
            out.append(reduce_over(x.field, x.shape, shape, list(range(n))))
    return out


def normalise_over(call: OpCall, x, dims: list[int]) -> list:
    """Output keeps ``x``'s geometry; it is global if any normalised dimension is spatial."""
    merged = broadcast_merge(OpCall(call.name, (x,), {}, [x.shape]), x.shape)
    spatial = any(f.axis is not None and f.size > 1 for d in dims for f in x.field.dims[d])
    main = merged.with_dims(merged.dims, is_global=merged.is_global or spatial)
    stats = TensorField(tuple((Factor(s),) for s in call.out_shapes[1]), is_global=True) \
        if len(call.out_shapes) > 1 else None
    return [main] + [stats if s != tuple(x.shape) else main for s in call.out_shapes[1:]]


@register("_softmax", "softmax", "_log_softmax", "log_softmax", "cumsum", "cumprod", "logcumsumexp",
          "cummax", "cummin", "sort", "argsort")
def along_dim(call: OpCall) -> list:
    x = call.arg(0, "self")
    if x.field is None:
        return [None for _ in call.out_shapes]
    d = call.arg(1, "dim", -1)
    d = d + len(x.shape) if d < 0 else d
    return normalise_over(call, x, [d])[: len(call.out_shapes)]


@register("native_group_norm")
def group_norm(call: OpCall) -> list:
    x = call.arg(0, "input")
    if x.field is None:
        return [None for _ in call.out_shapes]
    return normalise_over(call, x, list(range(1, len(x.shape))))


@register("native_layer_norm", "rms_norm", "_fused_rms_norm")
def layer_norm(call: OpCall) -> list:
    x = call.arg(0, "input")
    if x.field is None:
        return [None for _ in call.out_shapes]
    k = len(call.arg(1, "normalized_shape"))
    n = len(x.shape)
    return normalise_over(call, x, list(range(n - k, n)))


def _batch_norm(call: OpCall, training: bool) -> list:
    x = call.arg(0, "input")
    if x.field is None:
        return [None for _ in call.out_shapes]
    if not training:
        merged = broadcast_merge(OpCall(call.name, tuple(
            a for a in call.args if hasattr(a, "field")), {}, [x.shape]), x.shape)
        return [merged] + [None] * (len(call.out_shapes) - 1)
    n = len(x.shape)
    return normalise_over(call, x, [0] + list(range(2, n)))


@register("native_batch_norm", "_native_batch_norm_legit", "batch_norm", "_batch_norm_impl_index",
          "cudnn_batch_norm", "miopen_batch_norm")
def batch_norm(call: OpCall) -> list:
    if call.name == "_native_batch_norm_legit" and len(call.args) == 7 and call.args[3] is not None \
            and not isinstance(call.args[3], bool):
        training = bool(call.arg(5, "training"))
    else:
        training = bool(next((a for a in call.args if isinstance(a, bool)), False))
    return _batch_norm(call, training)


@register("_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional")
def batch_norm_eval(call: OpCall) -> list:
    return _batch_norm(call, call.name != "_native_batch_norm_legit_no_training")
