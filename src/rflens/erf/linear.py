"""``activations="linear"``: a forward pass made linear in its input (see :class:`_LinearMode`)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from rflens.errors import RflensError

_POINTWISE_NAMES = ("relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "gelu", "silu", "mish",
                    "elu", "elu_", "selu", "selu_", "celu", "celu_", "hardswish", "hardtanh",
                    "hardtanh_", "softplus", "tanh", "tanh_", "sigmoid", "sigmoid_", "hardsigmoid",
                    "prelu", "rrelu", "rrelu_", "softsign", "logsigmoid", "threshold", "threshold_",
                    "tanhshrink", "hardshrink", "softshrink", "glu")


def _pointwise_functions() -> set:
    funcs = set()
    for owner in (F, torch, torch.Tensor, torch.nn.functional):
        for name in _POINTWISE_NAMES:
            fn = getattr(owner, name, None)
            if fn is not None:
                funcs.add(fn)
    funcs.discard(getattr(F, "glu", None))  # glu halves the channels: not pointwise, keep it
    return funcs


class _LinearMode(TorchFunctionMode):
    """Makes a forward pass linear in its input: pointwise non-linearities become the identity, max
    pooling becomes average pooling over the same window (zero padding counted), and normalisations
    that divide by statistics of the input (LayerNorm, GroupNorm, InstanceNorm, RMSNorm) keep only
    their affine part. BatchNorm in eval mode is already affine."""

    def __init__(self) -> None:
        super().__init__()
        self.pointwise = _pointwise_functions()
        self.table: dict[Callable, Callable] = {
            F.max_pool1d: _avg_for(F.avg_pool1d), F.max_pool2d: _avg_for(F.avg_pool2d),
            F.max_pool3d: _avg_for(F.avg_pool3d), torch.max_pool1d: _avg_for(F.avg_pool1d),
            torch.max_pool2d: _avg_for(F.avg_pool2d), torch.max_pool3d: _avg_for(F.avg_pool3d),
            F.adaptive_max_pool1d: _adaptive_avg(F.adaptive_avg_pool1d),
            F.adaptive_max_pool2d: _adaptive_avg(F.adaptive_avg_pool2d),
            F.adaptive_max_pool3d: _adaptive_avg(F.adaptive_avg_pool3d),
            F.layer_norm: _affine_layer_norm, F.group_norm: _affine_channel_norm(2),
            F.instance_norm: _affine_instance_norm,
        }
        if hasattr(F, "rms_norm"):
            self.table[F.rms_norm] = _affine_layer_norm

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.pointwise:
            return args[0] if args else next(iter(kwargs.values()))
        replacement = self.table.get(func)
        if replacement is not None:
            return replacement(*args, **kwargs)
        return func(*args, **kwargs)


def _avg_for(avg: Callable) -> Callable:
    def pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
             return_indices=False):
        if any(d != 1 for d in _tuple(dilation)):
            raise RflensError("activations='linear' cannot turn a dilated max pool into an average "
                              "pool; use activations='as-is'")
        if return_indices:
            raise RflensError("activations='linear' cannot replace a max pool that returns indices; "
                              "use activations='as-is'")
        stride = kernel_size if stride is None or _tuple(stride) == () else stride
        return avg(input, kernel_size, stride, padding, ceil_mode, True)
    return pool


def _adaptive_avg(avg: Callable) -> Callable:
    def pool(input, output_size, return_indices=False):
        return avg(input, output_size)
    return pool


def _affine_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    out = input if weight is None else input * weight
    return out if bias is None else out + bias


def _affine_channel_norm(weight_pos: int) -> Callable:
    def norm(input, num_groups, weight=None, bias=None, eps=1e-5):
        shape = (1, -1) + (1,) * (input.dim() - 2)
        out = input if weight is None else input * weight.reshape(shape)
        return out if bias is None else out + bias.reshape(shape)
    return norm


def _affine_instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                          use_input_stats=True, momentum=0.1, eps=1e-5):
    return _affine_channel_norm(2)(input, 1, weight, bias)


def _tuple(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def linear_mode() -> contextlib.AbstractContextManager:
    """Context manager: while active, forward passes are linear (see :class:`_LinearMode`)."""
    return _LinearMode()
