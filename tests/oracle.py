"""An independent gradient-support oracle for theoretical receptive fields (TRF).

This module deliberately imports nothing from rflens: it observes the TRF instead of computing it
(docs/receptive-fields.md, "How rflens must check itself").

Method. The model is deep-copied and made *monotone*:

- every activation module becomes ``nn.Identity``;
- every max pool becomes an average pool of the same geometry (kernel, stride, padding,
  ``ceil_mode``); a *dilated* max pool (average pooling has no dilation) and any 3-D max pool
  (``avg_pool3d`` on CPU rejects an input smaller than the kernel even when padding makes up for
  it, which ``max_pool3d`` accepts) becomes a depthwise convolution with all-ones weights over
  the same windows; adaptive max pools become adaptive average pools;
- every parameter called ``*bias`` is set to 0, every other parameter to uniform ``[0.5, 1.5]``;
- the copy runs in float64, in eval mode.

A positive random input is fed (uniform ``[0.5, 1.5]``), so every value and every partial product is
positive and no two paths can cancel. The gradient of ``sum over channels`` of one unit of one
layer's output with respect to the input is then non-zero exactly on the pixels that have a path of
non-zero weight to that unit. A pixel is in the support when its float64 gradient is ``> 0`` — no
tolerance: with positive weights the only exact zeros come from weights that are exactly zero
(e.g. a bilinear neighbour whose interpolation weight is 0 because the source position is an exact
integer). Callers must keep such resampling ratios exactly representable in binary (scale 2 or 4,
``align_corners=True`` with ``(in-1)/(out-1)`` a dyadic fraction); otherwise float rounding can turn
a mathematically-zero weight into ``1e-17`` and the support is that of the rounded computation.

Conventions (same as rflens):

- coordinates are 0-based input pixel indices per spatial axis; a *unit* is a tuple of indices over
  the spatial axes of the chosen layer's output (batch and channel axes excluded);
- a *hull* is a tuple with one inclusive ``(lo, hi)`` pair per *input* spatial axis: the smallest
  box containing the support. ``None`` means the unit depends on no input pixel at all (e.g. an
  output unit of a transposed conv whose kernel is smaller than its stride, or a unit whose whole
  window lies in zero padding);
- the layer is a module path from ``named_modules()``; ``"output"`` (or ``""``) is the model's
  output. If the module returns a tuple/list the first tensor is used. A module that runs more than
  once per forward is rejected (its "output" would be ambiguous).

What the oracle sees is the field *inside the image*: a unit near the border has its field clipped
(the hull touches pixel 0 or ``size-1``), and zero padding contributes nothing. To observe the full,
unclipped field choose units in the interior of a big enough input; :func:`interior_units` filters
units whose hull keeps a caller-chosen margin from every border (see its docstring for what margin
is sufficient).

Limitations: functional non-linearities/max pools called inside ``forward`` (``F.relu``,
``F.max_pool2d``) are not replaced. With positive weights, positive inputs and zero biases the
ReLU family is the identity anyway, but a functional max pool would hide pixels. The batched mode
(the default) runs several units as separate batch samples; it requires a model that treats
samples independently, which eval mode guarantees for standard layers (pass ``batched=False``
otherwise).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OUTPUT", "Hull", "Unit", "GradientOracle", "oracle_copy", "interior_units",
           "touches_border"]

OUTPUT = "output"
Unit = tuple[int, ...]
Hull = tuple[tuple[int, int], ...]

_ACTIVATION_NAMES = (
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
    "Hardswish", "Hardsigmoid", "Hardtanh", "Sigmoid", "Tanh", "Softplus", "Softsign", "LogSigmoid",
    "Tanhshrink", "Hardshrink", "Softshrink", "Threshold",
)
_ACTIVATIONS = tuple(getattr(nn, n) for n in _ACTIVATION_NAMES if hasattr(nn, n))
_MAX_POOLS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
_AVG_POOLS = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE_MAX = {nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                 nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d}
_MAX_POOL_FN = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _tuple(value: int | Sequence[int] | None, dims: int, default: Sequence[int] | None = None
           ) -> tuple[int, ...]:
    if value is None:
        assert default is not None
        return tuple(default)
    if isinstance(value, int):
        return (value,) * dims
    value = tuple(int(v) for v in value)
    return value * dims if len(value) == 1 else value


class DilatedPoolAsConv(nn.Module):
    """Replacement of a dilated (or 3-D) max pool: all-ones depthwise conv over the same windows.

    Window ``o`` covers input positions ``o*s - p + j*d`` (``0 <= j < k``), exactly like the pool.
    The number of output units (which depends on ``ceil_mode``) is taken from the original max pool
    run on the same input, so no output-size formula is re-implemented here.
    """

    def __init__(self, pool: nn.Module, dims: int) -> None:
        super().__init__()
        self.dims = dims
        self.kernel = _tuple(pool.kernel_size, dims)
        self.stride = _tuple(pool.stride or pool.kernel_size, dims)
        self.padding = _tuple(pool.padding, dims)
        self.dilation = _tuple(pool.dilation, dims)
        self.ceil_mode = bool(pool.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = _MAX_POOL_FN[self.dims](x.detach(), self.kernel, self.stride, self.padding,
                                         self.dilation, self.ceil_mode)
        pads: list[int] = []
        for k, s, p, d in reversed(list(zip(self.kernel, self.stride, self.padding, self.dilation))):
            pads += [p, p + s + d * (k - 1)]  # generous right padding; cropped below
        y = F.pad(x, pads)
        channels = x.shape[1]
        weight = torch.ones((channels, 1, *self.kernel), dtype=x.dtype, device=x.device)
        y = _CONV_FN[self.dims](y, weight, None, self.stride, 0, self.dilation, channels)
        return y[(slice(None), slice(None)) + tuple(slice(0, n) for n in ref.shape[2:])]


def _replacement(module: nn.Module) -> nn.Module | None:
    """The monotone stand-in of one module, or None to keep it."""
    if isinstance(module, _ACTIVATIONS):
        return nn.Identity()
    dims = _MAX_POOLS.get(type(module))
    if dims is not None:
        if getattr(module, "return_indices", False):
            raise ValueError("max pools with return_indices=True are not supported by the oracle")
        if dims == 3 or any(d != 1 for d in _tuple(module.dilation, dims)):
            return DilatedPoolAsConv(module, dims)
        return _AVG_POOLS[dims](module.kernel_size, module.stride, module.padding,
                                ceil_mode=module.ceil_mode, count_include_pad=True)
    adaptive = _ADAPTIVE_MAX.get(type(module))
    if adaptive is not None:
        return adaptive(module.output_size)
    return None


def _swap_modules(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        new = _replacement(child)
        if new is not None:
            setattr(module, name, new)
        else:
            _swap_modules(child)


def oracle_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deep copy of ``model`` made monotone (see module docstring); the original is untouched."""
    if _replacement(model) is not None:
        model = nn.Sequential(model)  # let the root itself be swapped
    copy_ = copy.deepcopy(model)
    _swap_modules(copy_)
    copy_ = copy_.to(torch.float64).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in copy_.named_parameters():
            if name.rsplit(".", 1)[-1].endswith("bias"):
                param.zero_()
            else:
                param.copy_(0.5 + torch.rand(param.shape, generator=gen, dtype=torch.float64))
            param.requires_grad_(False)
    return copy_


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch ops on one thread: the oracle's tensors are small, and intra-op threads on a
    busy machine (or next to pytest-xdist workers) made it 10-100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Stop(Exception):
    """Raised by the forward hook to stop the forward pass once the layer output is known."""


def first_tensor(value: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    if isinstance(value, dict):
        return first_tensor(list(value.values()))
    raise TypeError(f"layer output holds no tensor: {type(value).__name__}")


def _layer_output(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Output of ``layer`` (module path, or "output"/"" for the model) for the input ``x``."""
    if layer in (OUTPUT, ""):
        return first_tensor(model(x))
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"no module named {layer!r}")
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        captured.append(first_tensor(output))
        raise _Stop

    handle = modules[layer].register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"module {layer!r} did not run in the forward pass")
    return captured[0]


def _hull_of(grad: torch.Tensor) -> Hull | None:
    """Per-axis inclusive hull of the non-zero entries of ``grad`` (channels, *spatial)."""
    magnitude = grad.abs().sum(dim=0)
    if not bool((magnitude > 0).any()):
        return None
    hull = []
    for axis in range(magnitude.dim()):
        others = [a for a in range(magnitude.dim()) if a != axis]
        marginal = magnitude.sum(dim=others) if others else magnitude
        nz = torch.nonzero(marginal > 0).flatten()
        hull.append((int(nz.min()), int(nz.max())))
    return tuple(hull)


class GradientOracle:
    """Observed TRF of units of a model for one input shape ``(C, *spatial)`` (batch 1 implied)."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], *, seed: int = 0,
                 batched: bool = True, chunk: int = 128) -> None:
        self.input_shape = tuple(int(v) for v in input_shape)
        self.spatial = self.input_shape[1:]
        self.model = oracle_copy(model, seed)
        self.batched = batched
        self.chunk = chunk
        gen = torch.Generator().manual_seed(seed + 1)
        self.x = 0.5 + torch.rand((1, *self.input_shape), generator=gen, dtype=torch.float64)
        self._shapes: dict[str, tuple[int, ...]] = {}

    def output_shape(self, layer: str) -> tuple[int, ...]:
        """Shape of the layer's output, batch axis included (batch 1)."""
        if layer not in self._shapes:
            with torch.no_grad(), _single_thread():
                self._shapes[layer] = tuple(_layer_output(self.model, self.x, layer).shape)
        return self._shapes[layer]

    def units(self, layer: str) -> list[Unit]:
        """Every unit of the layer, in row-major order."""
        return list(itertools.product(*(range(n) for n in self.output_shape(layer)[2:])))

    def _check_unit(self, layer: str, unit: Unit) -> None:
        sizes = self.output_shape(layer)[2:]
        if len(unit) != len(sizes) or any(not 0 <= u < n for u, n in zip(unit, sizes)):
            raise IndexError(f"unit {unit} outside {layer!r} of spatial shape {sizes}")

    def gradients(self, layer: str, units: Sequence[Unit]) -> torch.Tensor:
        """``d(sum_c y[c, unit]) / dx`` for each unit: a tensor ``(len(units), C, *spatial)``."""
        units = [tuple(int(v) for v in u) for u in units]
        for unit in units:
            self._check_unit(layer, unit)
        step = self.chunk if self.batched else 1
        out = []
        with _single_thread():
            for start in range(0, len(units), step):
                out.append(self._gradients_batch(layer, units[start:start + step]))
        return torch.cat(out) if out else torch.zeros((0, *self.input_shape), dtype=torch.float64)

    def _gradients_batch(self, layer: str, units: list[Unit]) -> torch.Tensor:
        x = self.x.expand(len(units), *self.input_shape).clone().requires_grad_(True)
        y = _layer_output(self.model, x, layer)
        if y.shape[0] != len(units):
            raise ValueError(f"layer {layer!r} output has batch {y.shape[0]}, expected {len(units)}")
        picked = torch.stack([y[(b, slice(None)) + unit].sum() for b, unit in enumerate(units)])
        (grad,) = torch.autograd.grad(picked.sum(), x)
        return grad

    def hulls(self, layer: str, units: Sequence[Unit]) -> list[Hull | None]:
        """Per-axis inclusive hull of the input support of each unit (None: no support)."""
        grads = self.gradients(layer, units)
        return [_hull_of(g) for g in grads]

    def hull(self, layer: str, unit: Unit) -> Hull | None:
        return self.hulls(layer, [unit])[0]

    def support(self, layer: str, unit: Unit) -> torch.Tensor:
        """Boolean mask over the input's spatial axes: pixels with a non-zero gradient."""
        return self.gradients(layer, [unit])[0].abs().sum(dim=0) > 0


def touches_border(hull: Hull | None, spatial: Sequence[int]) -> tuple[bool, ...]:
    """Per axis: does the hull reach the first or last pixel (its field may be clipped)?"""
    if hull is None:
        return tuple(False for _ in spatial)
    return tuple(lo <= 0 or hi >= n - 1 for (lo, hi), n in zip(hull, spatial))


def interior_units(oracle: GradientOracle, layer: str, margin: int | Sequence[int],
                   candidates: Iterable[Unit] | None = None) -> list[tuple[Unit, Hull]]:
    """Units (with their hulls) whose hull keeps ``margin`` pixels from every image border.

    A hull well inside the image is the *unclipped* field only if no path of the unit reaches zero
    padding or a resampling clamp at any intermediate layer. A sufficient margin for chains and
    merges of local layers is ``2*R + |P| + 2*J`` per axis with upper bounds ``R``, ``|P|``, ``J``
    of the network's size, effective padding and jump: a padding unit's field starts within that
    distance of the border, and a unit that reads it has an unclipped field containing it. The
    caller supplies that bound; the input must be big enough for some units to qualify.
    """
    margins = _tuple(margin, len(oracle.spatial))
    pool = list(candidates) if candidates is not None else oracle.units(layer)
    keep = []
    for unit, hull in zip(pool, oracle.hulls(layer, pool)):
        if hull is None:
            continue
        if all(m <= lo and hi <= n - 1 - m for (lo, hi), n, m in zip(hull, oracle.spatial, margins)):
            keep.append((unit, hull))
    return keep
