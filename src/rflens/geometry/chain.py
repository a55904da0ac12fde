"""Layer chains and their exact integer path counts. Pure Python and numpy; knows nothing of torch.

A chain is a list of :class:`ChainLayer` from input to output. Along one axis, output unit ``o`` of a
layer reads input units ``o*s - p + j*d`` for ``0 <= j < k``; the number of paths from an input
pixel to a unit of the last layer is the self-convolution of the box kernels (with strides and
dilations): two 3-wide layers give ``1 2 3 2 1``. Counts are Python integers, exact at any depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from rflens.errors import RflensError

__all__ = ["ChainLayer", "path_counts_1d", "parse_chain", "exact_variance", "normalise_exact", "outer"]


@dataclass(frozen=True)
class ChainLayer:
    """One layer of a chain, per spatial axis: kernel ``k``, stride ``s``, dilation ``d`` and left
    padding ``p`` (right padding ``pr`` only changes how many units exist)."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[int, ...]
    padding_right: tuple[int, ...]
    ceil_mode: bool = False

    def output_size(self, axis: int, n: int) -> int:
        """Number of output units on ``axis`` for ``n`` input units (PyTorch's rule)."""
        k, s, d = self.kernel[axis], self.stride[axis], self.dilation[axis]
        span = n + self.padding[axis] + self.padding_right[axis] - d * (k - 1) - 1
        if span < 0:
            raise RflensError(f"input of {n} pixels is too small for a layer with kernel {k}, "
                              f"dilation {d}; use a larger input")
        if not self.ceil_mode:
            return span // s + 1
        out = -(-span // s) + 1
        return out - 1 if (out - 1) * s >= n + self.padding[axis] else out




def exact_variance(counts: Sequence[int]) -> Fraction:
    total = sum(counts)
    first = sum(i * c for i, c in enumerate(counts))
    second = sum(i * i * c for i, c in enumerate(counts))
    return Fraction(second, total) - Fraction(first, total) ** 2




def path_counts_1d(layers: Sequence[tuple[int, int, int, int]], unit: int = 0) -> tuple[int, list[int]]:
    """Exact path counts along one axis from unit ``unit`` of the last layer back to the input.

    ``layers`` lists ``(kernel, stride, dilation, left_padding)`` from input to output. Output unit
    ``o`` of a layer reads input units ``o*s - p + j*d`` for ``0 <= j < k``. Returns ``(lo, counts)``:
    ``counts[i]`` paths reach input pixel ``lo + i`` (unclipped: ``lo`` may be negative).
    """
    counts = np.array([1], dtype=object)
    lo = int(unit)
    for k, s, d, p in reversed(list(layers)):
        span = (len(counts) - 1) * s + 1
        new = np.zeros((len(counts) - 1) * s + (k - 1) * d + 1, dtype=object)
        for j in range(k):
            new[j * d: j * d + span: s] += counts
        counts = new
        lo = lo * s - p
    return lo, [int(c) for c in counts]


def parse_chain(spec: Sequence[Any], ndim: int = 2) -> list[ChainLayer]:
    """A chain from a list of layer specs, each one of: ``k`` (kernel ``k``, stride 1, dilation 1,
    padding ``(k-1)//2``), ``(k, s)``, ``(k, s, d)``, ``(k, s, d, p)`` or a dict with keys
    ``kernel`` (int or per-axis tuple), ``stride``, ``dilation``, ``padding`` (default
    ``d*(k-1)//2``). Every axis gets the same numbers unless a per-axis tuple is given."""
    layers = []
    for i, item in enumerate(spec):
        if isinstance(item, dict):
            unknown = set(item) - {"kernel", "stride", "dilation", "padding"}
            if unknown or "kernel" not in item:
                raise RflensError(f"chain layer {i} {item!r}: needs 'kernel' and only kernel, stride, "
                                  "dilation, padding")
            k, s, d = item["kernel"], item.get("stride", 1), item.get("dilation", 1)
            p = item.get("padding")
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            k, s, d, p = int(item), 1, 1, None
        elif isinstance(item, (tuple, list)) and 1 <= len(item) <= 4:
            k, s, d, p = list(item) + [None, 1, 1, None][len(item):]
        else:
            raise RflensError(f"chain layer {i} {item!r} is not understood; give k, (k, s), (k, s, d), "
                              "(k, s, d, p) or a dict")
        kernel, stride, dil = (_per_axis(v, ndim, f"chain layer {i}") for v in (k, s, d))
        pad = (tuple(di * (ki - 1) // 2 for ki, di in zip(kernel, dil)) if p is None
               else _per_axis(p, ndim, f"chain layer {i}", allow_zero=True))
        layers.append(ChainLayer(kernel, stride, dil, pad, pad))
    return layers


def _per_axis(value: Any, ndim: int, where: str, allow_zero: bool = False) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * ndim
    if len(values) != ndim or not all(isinstance(v, (int, np.integer)) for v in values):
        raise RflensError(f"{where}: {value!r} must be an int or {ndim} ints")
    if any(v < (0 if allow_zero else 1) for v in values):
        raise RflensError(f"{where}: {value!r} must be {'non-negative' if allow_zero else 'positive'}")
    return tuple(int(v) for v in values)



def normalise_exact(counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    total = sum(counts)
    probs = np.array([c / total for c in counts], dtype=np.float64)  # int/int: correctly rounded
    log_total = log10_int(total)
    logs = np.array([log10_int(c) - log_total if c else -np.inf for c in counts], dtype=np.float64)
    return probs, logs


def log10_int(n: int) -> float:
    return math.log10(n)  # exact-enough for Python ints of any size (no float conversion)


def outer(parts: Sequence[np.ndarray], op: np.ufunc) -> np.ndarray:
    out = parts[0]
    for p in parts[1:]:
        out = op.outer(out, p)
    return np.ascontiguousarray(out)

