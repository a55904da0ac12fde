"""The modules filter rarefaction rewrites: which kinds, their window geometry, and the stride-1
replacements it builds (:class:`PadThen`, :class:`RarefiedMaxPool`, :class:`RarefiedAvgPool`)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rflens.errors import RflensError

Ints = tuple[int, ...]

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
PAD = (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
       nn.modules.padding._ReplicationPadNd, nn.modules.padding._CircularPadNd)
REWRITTEN = CONV + CONV_T + MAXPOOL + AVGPOOL + PAD
_KNOWN_FORWARDS = {cls.forward for cls in REWRITTEN}


def display(name: str) -> str:
    return name or "<model>"


def check_rewritable(name: str, m: nn.Module, d: int) -> None:
    """Refuse a module rarefaction would rewrite but cannot: subclasses with their own ``forward``,
    max pools returning indices, transposed convs with a stride, the wrong number of axes."""
    kind = f"cannot rarefy {display(name)} ({type(m).__name__})"
    if type(m).forward not in _KNOWN_FORWARDS:
        raise RflensError(f"{kind}: it subclasses a layer rflens knows but overrides forward(), so "
                          "rarefaction cannot rewrite it; truncate the model with --layer NAME before it")
    if isinstance(m, MAXPOOL) and m.return_indices:
        raise RflensError(f"{kind}: return_indices=True is not supported; truncate the model with "
                          "--layer NAME before it")
    if isinstance(m, CONV_T) and set(tup(m.stride, d)) != {1}:
        raise RflensError(f"{kind}: a strided transposed convolution upsamples (resampling), which "
                          "has no dense form; truncate the model with --layer NAME before it")
    if not isinstance(m, PAD):
        dims = len(m.kernel_size) if isinstance(m.kernel_size, tuple) else d
        if dims != d:
            raise RflensError(f"{kind}: it has {dims} spatial axes but the input has {d}; check --input")


def tup(value: Any, d: int) -> Ints:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * d


def pad_pairs(padding: Sequence[int], d: int) -> list[tuple[int, int]]:
    """``F.pad``-style padding (last axis first, pairs) as ``(left, right)`` per spatial axis."""
    flat = list(padding) + [0] * max(0, 2 * d - len(padding))
    return [(flat[2 * (d - 1 - a)], flat[2 * (d - 1 - a) + 1]) for a in range(d)]


def to_f_pad(pairs: Sequence[tuple[int, int]]) -> list[int]:
    return [p for pair in reversed(pairs) for p in pair]


def conv_pads(m: nn.Module, d: int) -> list[tuple[int, int]]:
    """``(left, right)`` padding per axis of a Conv module, with ``'same'``/``'valid'`` resolved the
    way PyTorch does it (odd total padding puts the extra pixel on the right)."""
    k, dil = tup(m.kernel_size, d), tup(m.dilation, d)
    if m.padding == "valid":
        return [(0, 0)] * d
    if m.padding == "same":
        return [(t // 2, t - t // 2) for t in (di * (ki - 1) for ki, di in zip(k, dil))]
    return [(p, p) for p in tup(m.padding, d)]


def stride_of(m: nn.Module, d: int) -> Ints:
    """The stride of a rewritable module per axis (1 for padding modules)."""
    if isinstance(m, PAD):
        return (1,) * d
    return tup(m.stride if m.stride not in (None, (), []) else m.kernel_size, d)


class PadThen(nn.Module):
    """``F.pad`` (asymmetric, any mode/value) followed by ``inner``; used where a rarefied layer needs
    padding its own module cannot express."""

    def __init__(self, pads: Sequence[tuple[int, int]], inner: nn.Module, mode: str = "constant",
                 value: float = 0.0) -> None:
        super().__init__()
        self.pads, self.mode, self.value, self.inner = list(pads), mode, value, inner

    def forward(self, x: Tensor) -> Tensor:
        value = self.value if self.mode == "constant" else None
        return self.inner(F.pad(x, to_f_pad(self.pads), mode=self.mode, value=value))

    def extra_repr(self) -> str:
        return f"pads={self.pads}, mode={self.mode!r}, value={self.value}"


class RarefiedMaxPool(nn.Module):
    """Stride-1 dilated max pooling with explicit ``-inf`` padding (PyTorch's pooling refuses padding
    larger than half the kernel, which rarefied padding ``p*F`` usually is)."""

    def __init__(self, kernel: Ints, dilation: Ints, pads: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.kernel, self.dilation, self.pads = tuple(kernel), tuple(dilation), list(pads)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, to_f_pad(self.pads), value=-math.inf)
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(self.kernel) - 1]
        return pool(x, self.kernel, stride=1, padding=0, dilation=self.dilation)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, dilation={self.dilation}, pads={self.pads}"


class RarefiedAvgPool(nn.Module):
    """Stride-1 average pooling with a dilated window (PyTorch's ``avg_pool`` has no dilation).

    Computed as a convolution of each channel with a ``1``-filled kernel, then divided by
    ``divisor_override`` if set, else by ``prod(kernel)`` when ``count_include_pad`` (zero padding
    counts), else by the number of non-padding pixels in the window — the same three rules as
    ``nn.AvgPoolNd``.
    """

    def __init__(self, kernel: Ints, dilation: Ints, padding: Ints, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel, self.dilation, self.padding = tuple(kernel), tuple(dilation), tuple(padding)
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def _window_sum(self, x: Tensor) -> Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[len(self.kernel) - 1]
        ones = torch.ones((1, 1, *self.kernel), dtype=x.dtype, device=x.device)
        return conv(x, ones, padding=self.padding, dilation=self.dilation)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        total = self._window_sum(x.reshape(b * c, 1, *spatial))
        if self.divisor_override:
            out = total / self.divisor_override
        elif self.count_include_pad:
            out = total / math.prod(self.kernel)
        else:
            out = total / self._window_sum(x.new_ones((1, 1, *spatial)))
        return out.reshape(b, c, *out.shape[2:])

    def extra_repr(self) -> str:
        return (f"kernel={self.kernel}, dilation={self.dilation}, padding={self.padding}, "
                f"count_include_pad={self.count_include_pad}, "
                f"divisor_override={self.divisor_override}")
