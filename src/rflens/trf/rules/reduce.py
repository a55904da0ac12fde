"""Reductions and whole-axis normalisations: mean/sum/max/var... over dimensions, softmax,
Group/Layer/Instance norm, BatchNorm in training mode. Reducing or normalising over a spatial
dimension makes the result depend on the whole axis: ``global``; the geometric field of the
reduced axis becomes one unit that covers every unit it pooled. Over part of a split axis (the
tokens of a window) they stay within the window (:mod:`rflens.trf.rules.mixing`)."""

from __future__ import annotations

from rflens.geometry.fields import Factor, TensorField
from rflens.trf.rules.mixing import drop_dims, mix
from rflens.trf.rules.merge import broadcast_merge
from rflens.trf.rules.registry import OpCall, register


def _dims_arg(value, n: int) -> list[int]:
    if value is None or value == []:
        return list(range(n))
    if isinstance(value, int):
        value = [value]
    return sorted({v + n if v < 0 else v for v in value})


def reduce_over(field: TensorField, shape_in, shape_out, dims: list[int]) -> TensorField:
    """Reduction over ``dims``: each remaining unit holds the union of what it pooled; an axis
    pooled whole is a global dependency."""
    return drop_dims(mix(field, dims), dims, keepdim=len(shape_out) == len(shape_in))


@register("mean", "sum", "nansum", "amax", "amin", "max", "min", "argmax", "argmin", "prod",
          "var", "std", "var_mean", "std_mean", "logsumexp", "linalg_vector_norm",
          "any", "all", "count_nonzero", "aminmax")
def reduction(call: OpCall) -> list:
    """Reductions over ``dim`` (all dimensions when the overload has none, or it is None/[]).
    ``max``/``min`` with a tensor ``other`` are elementwise, not reductions."""
    x = call.input
    kw = call.kw
    if "other" in kw:
        return [broadcast_merge(call, s) for s in call.out_shapes]
    if x.field is None:
        return [None for _ in call.out_shapes]
    n = len(x.shape)
    dims = _dims_arg(kw.get("dim"), n)
    out = []
    for shape in call.out_shapes:
        if len(shape) == n or len(shape) == n - len(dims) or len(dims) == n:
            out.append(reduce_over(x.field, x.shape, shape, dims))
        else:
            out.append(reduce_over(x.field, x.shape, shape, list(range(n))))
    return out


def normalise_over(call: OpCall, x, dims: list[int]) -> list:
    """Output keeps ``x``'s shape; every unit depends on the units it is normalised with (global when
    a whole axis is normalised, window-local for a split axis)."""
    main = mix(broadcast_merge(call, x.shape, [x]), dims)
    stats = TensorField(tuple((Factor(s),) for s in call.out_shapes[1]), is_global=True) \
        if len(call.out_shapes) > 1 else None
    return [main] + [stats if s != tuple(x.shape) else main for s in call.out_shapes[1:]]


@register("_softmax", "_log_softmax", "cumsum", "cumprod", "logcumsumexp", "cummax", "cummin", "sort")
def along_dim(call: OpCall) -> list:
    x = call.input
    if x.field is None:
        return [None for _ in call.out_shapes]
    d = call.kw["dim"]
    d = d + len(x.shape) if d < 0 else d
    return normalise_over(call, x, [d])[: len(call.out_shapes)]


@register("native_group_norm")
def group_norm(call: OpCall) -> list:
    x = call.input
    if x.field is None:
        return [None for _ in call.out_shapes]
    return normalise_over(call, x, list(range(1, len(x.shape))))


@register("native_layer_norm")
def layer_norm(call: OpCall) -> list:
    x = call.input
    if x.field is None:
        return [None for _ in call.out_shapes]
    k = len(call.kw["normalized_shape"])
    n = len(x.shape)
    return normalise_over(call, x, list(range(n - k, n)))


@register("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
          "_native_batch_norm_legit_functional", "cudnn_batch_norm", "miopen_batch_norm")
def batch_norm(call: OpCall) -> list:
    """With running statistics (eval): an affine map per channel, pointwise. With batch statistics
    (``training``, also in eval mode when the module keeps no running statistics): a normalisation
    over the batch and every spatial axis — global."""
    x = call.input
    if x.field is None:
        return [None for _ in call.out_shapes]
    if not call.kw.get("training", False):
        merged = broadcast_merge(call, x.shape)
        return [merged] + [None] * (len(call.out_shapes) - 1)
    n = len(x.shape)
    return normalise_over(call, x, [0] + list(range(2, n)))
