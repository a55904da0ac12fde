"""Output tensors of ops from their shapes alone, for capture on meta tensors.

PyTorch's meta kernels for several common ops (batch/layer/group norm, convolution, matrix
products, GELU, broadcasting arithmetic, concatenation, mean) are Python functions that check far
more than capture needs, and they dominate the time of a plain meta-tensor forward pass. For the
cases below, where the result is simple to state, capture builds the output meta tensors directly:
same shape, strides and dtype as the real kernel gives (``tests/test_shapes.py`` compares every
shortcut with the real kernel). Anything outside those cases (other dtypes, unusual strides,
broadcasting between permuted tensors) returns ``NotImplemented`` and the real kernel runs.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

aten = torch.ops.aten
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _empty(shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype or like.dtype, device="meta")


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _layout(x: torch.Tensor) -> tuple[int, ...] | None:
    """The strides ``empty_like`` gives ``x`` when they are certain: ``x`` laid out exactly as a
    fresh contiguous or channels-last tensor, or densely permuted without size-1 dimensions
    (whose strides the kernels choose in ways not worth mirroring: the real kernel runs)."""
    stride, shape = x.stride(), tuple(x.shape)
    if stride == _contiguous_strides(shape):
        return stride
    if x.dim() == 4:
        n, c, h, w = shape
        cl = _contiguous_strides((n, h, w, c))
        if stride == (cl[0], cl[3], cl[1], cl[2]) and 1 not in shape[1:]:
            return stride
    if 1 not in shape and not x.is_contiguous() and _is_permuted_contiguous(x):
        return stride
    return None


def _same_layout(x: torch.Tensor, dtype: torch.dtype | None = None):
    stride = _layout(x)
    if stride is None:
        return NotImplemented
    return torch.empty_strided(x.shape, stride, dtype=dtype or x.dtype, device="meta")


def _dense(x: torch.Tensor) -> bool:
    return _layout(x) is not None


def _floating(*ts) -> bool:
    return all(isinstance(t, torch.Tensor) and t.dtype in _FLOATS and t.device.type == "meta" for t in ts)


def _unary(x, *args, **kwargs):
    if not _floating(x) or not _dense(x):
        return NotImplemented
    return _same_layout(x)


def _is_permuted_contiguous(x: torch.Tensor) -> bool:
    order = sorted(range(x.dim()), key=lambda d: x.stride(d))
    expected = 1
    for d in order:
        if x.size(d) != 1 and x.stride(d) != expected:
            return False
        expected *= x.size(d)
    return True


def _binary(a, b, *args, **kwargs):
    """Broadcasting arithmetic between a floating tensor and a same-dtype tensor or a number."""
    if not _floating(a):
        return NotImplemented
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return _same_layout(a) if _dense(a) else NotImplemented
    if not _floating(b) or b.dtype != a.dtype:
        return NotImplemented
    if a.shape == b.shape:
        return _same_layout(a) if a.stride() == b.stride() and _dense(a) else NotImplemented
    shape = torch.broadcast_shapes(a.shape, b.shape)
    full = [t for t in (a, b) if tuple(t.shape) == tuple(shape)]
    if len(full) != 1:
        return NotImplemented
    big = full[0]
    small = b if big is a else a
    if big.stride() == _contiguous_strides(shape):
        return _empty(shape, a)
    # a vector broadcast along one dimension (a per-channel scale) cannot reorder the output's
    # dimensions: its expanded strides are zero wherever they would be compared, so the output
    # takes the full operand's layout
    if _dense(big) and sum(n != 1 for n in small.shape) <= 1:
        return _same_layout(big)
    return NotImplemented


def _conv_size(n: int, k: int, s: int, p: int, d: int, transposed: bool, op: int) -> int:
    if transposed:
        return (n - 1) * s - 2 * p + d * (k - 1) + op + 1
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _convolution(x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    # the meta kernel returns a contiguous output whatever the (dense) layouts of input and weight
    if not _floating(x, w) or not (_dense(x) and _dense(w)) or x.dim() != w.dim():
        return NotImplemented
    channels_in = w.shape[0] if transposed else w.shape[1] * groups
    if x.shape[1] != channels_in:  # the meta kernel lets this pass for transposed convolutions
        raise RuntimeError(f"{'transposed ' if transposed else ''}convolution with weight of size "
                           f"{list(w.shape)} and groups={groups} expects input with {channels_in} "
                           f"channels, got input of size {list(x.shape)}")
    if w.shape[0] % groups or x.dtype != w.dtype or (
            bias is not None and tuple(bias.shape) != (w.shape[1] * groups if transposed else w.shape[0],)):
        return NotImplemented  # let the real kernel raise its own error
    n = x.dim() - 2
    per = lambda v: list(v) * n if len(v) == 1 else list(v)  # noqa: E731
    stride, padding, dilation, output_padding = map(per, (stride, padding, dilation, output_padding))
    spatial = [_conv_size(x.shape[2 + k], w.shape[2 + k], stride[k], padding[k], dilation[k],
                          transposed, output_padding[k]) for k in range(n)]
    if any(s <= 0 for s in spatial):
        return NotImplemented  # let the real kernel raise its own error
    channels = w.shape[1] * groups if transposed else w.shape[0]
    return _empty((x.shape[0], channels, *spatial), x)


def _batch_norm_eval(x, weight, bias, mean, var, *rest):
    """Eval-mode batch norm (``native_batch_norm`` with ``training=False`` and the export form)."""
    training = rest[0] if rest and isinstance(rest[0], bool) else False
    if training or not _floating(x) or not _dense(x):
        return NotImplemented
    c = x.shape[1] if x.dim() > 1 else 0
    if any(t is not None and tuple(t.shape) != (c,) for t in (weight, bias, mean, var)):
        return NotImplemented
    return (_same_layout(x), _empty((c,), x), _empty((c,), x))


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    if not _floating(x) or not _is_permuted_contiguous(x):
        return NotImplemented
    if tuple(x.shape[x.dim() - len(normalized_shape):]) != tuple(normalized_shape) or any(
            t is not None and tuple(t.shape) != tuple(normalized_shape) for t in (weight, bias)):
        return NotImplemented
    stat = tuple(x.shape[: x.dim() - len(normalized_shape)]) + (1,) * len(normalized_shape)
    # the kernel runs on x.contiguous(): a canonical copy, or x itself when PyTorch already counts
    # it contiguous (then odd strides on its size-1 dimensions decide: left to the real kernel)
    if x.is_contiguous() and x.stride() != _contiguous_strides(x.shape):
        return NotImplemented
    return (_empty(x.shape, x), _empty(stat, x), _empty(stat, x))


def _group_norm(x, weight, bias, n, c, hxw, group, eps):
    if not _floating(x) or not x.is_contiguous():
        return NotImplemented
    return (_empty(x.shape, x), _empty((n, group), x), _empty((n, group), x))


def _mm(a, b):
    if not _floating(a, b) or a.dtype != b.dtype:
        return NotImplemented
    return _empty((*a.shape[:-1], b.shape[-1]), a)


def _addmm(bias, a, b, *, beta=1, alpha=1):
    if not _floating(bias, a, b) or len({bias.dtype, a.dtype, b.dtype}) > 1:
        return NotImplemented
    return _empty((a.shape[0], b.shape[1]), a)


def _cat(tensors, dim=0):
    ts = [t for t in tensors if not (t.dim() == 1 and t.shape[0] == 0)]
    if not ts or not _floating(*ts) or len({t.dtype for t in ts}) > 1 or \
            not all(t.is_contiguous() for t in ts) or len({t.dim() for t in ts}) > 1:
        return NotImplemented
    d = dim + ts[0].dim() if dim < 0 else dim
    shape = list(ts[0].shape)
    shape[d] = sum(t.shape[d] for t in ts)
    return _empty(shape, ts[0])


def _mean(x, dim, keepdim=False, *, dtype=None):
    if not _floating(x) or not _dense(x) or dtype is not None:
        return NotImplemented
    dims = {d % x.dim() for d in (dim if dim else range(x.dim()))}
    shape = [1 if k in dims else n for k, n in enumerate(x.shape) if keepdim or k not in dims]
    return _empty(shape, x)


def _softmax(x, dim, half_to_float):
    if half_to_float or not _floating(x) or not x.is_contiguous():
        return NotImplemented
    return _empty(x.shape, x)


def _inplace(x, *args, **kwargs):
    """In-place pointwise ops return their ``self``."""
    return x if _floating(x) else NotImplemented


SHORTCUTS: dict[Any, Callable] = {
    aten.convolution.default: _convolution,
    aten.native_batch_norm.default: _batch_norm_eval,
    aten._native_batch_norm_legit_no_training.default: _batch_norm_eval,
    aten.native_layer_norm.default: _layer_norm,
    aten.native_group_norm.default: _group_norm,
    aten.addmm.default: _addmm,
    aten.mm.default: _mm,
    aten.bmm.default: _mm,
    aten.cat.default: _cat,
    aten.mean.dim: _mean,
    aten._softmax.default: _softmax,
    **{getattr(aten, name).default: _unary for name in (
        "gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "tanh", "relu", "elu", "mish")},
    **{getattr(aten, name).default: _inplace for name in (
        "relu_", "silu_", "hardswish_", "hardsigmoid_", "sigmoid_", "tanh_")},
    **{getattr(aten, name).Tensor: _inplace for name in ("add_", "sub_", "mul_", "div_")},
    **{getattr(aten, name).Tensor: _binary for name in ("add", "sub", "mul", "div")},
    **{getattr(aten, name).Scalar: _binary for name in ("add", "sub", "mul", "div")},
}


def shortcut(func) -> Callable | None:
    """The shape-only replacement for the meta kernel of ``func``, if there is one."""
    return SHORTCUTS.get(func)


__all__ = ["shortcut", "SHORTCUTS"]
