"""Check computed fields against the gradient-support probe (``rflens trf --verify``).

The probe observes a unit's field directly: on a float64 copy of the model with every activation
replaced by the identity, every max pool by a sum pool of the same geometry, every weight
positive (``U[0.5, 1.5] / fan_in``) and BatchNorm reduced to the identity, the gradient of one
unit (summed over channels) with respect to a positive input is non-zero exactly on the input
pixels the unit depends on. Slow (one backward pass per unit) but independent of the rules.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rflens.trf.instrument import LayerRef, run_to_layer
from rflens.trf.result import ReceptiveField

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus,
                nn.PReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


class _SumPool(nn.Module):
    """A max pool's geometry with every tap counted (a depthwise conv of ones, zero padding)."""

    def __init__(self, pool: nn.Module, n: int) -> None:
        super().__init__()
        as_tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * n  # noqa: E731
        self.n = n
        self.kernel = as_tuple(pool.kernel_size)
        self.stride = as_tuple(pool.stride if pool.stride is not None else pool.kernel_size)
        self.padding = as_tuple(pool.padding)
        self.dilation = as_tuple(getattr(pool, "dilation", 1))
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.pool(x.detach().float()).shape[2:]
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[self.n]
        c = x.shape[1]
        weight = torch.ones((c, 1, *self.kernel), dtype=x.dtype)
        pads = []
        for k in reversed(range(self.n)):  # ceil_mode: extra zeros on the right so sizes match
            span = self.dilation[k] * (self.kernel[k] - 1) + 1
            need = (target[k] - 1) * self.stride[k] + span - (x.shape[2 + k] + 2 * self.padding[k])
            pads += [self.padding[k], self.padding[k] + max(need, 0)]
        y = conv(F.pad(x, pads), weight, stride=self.stride, dilation=self.dilation, groups=c)
        return y[(...,) + tuple(slice(0, t) for t in target)]


def probe_model(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` whose input gradients have exactly the theoretical support."""
    probe = copy.deepcopy(model).double().eval()
    gen = torch.Generator().manual_seed(0)
    for name, mod in list(probe.named_modules()):
        for child_name, child in list(mod.named_children()):
            n = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}.get(type(child))
            if n:
                setattr(mod, child_name, _SumPool(child, n))
            elif isinstance(child, _ACTIVATIONS):
                setattr(mod, child_name, nn.Identity())
    with torch.no_grad():
        for mod in probe.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                if mod.running_var is not None:
                    mod.running_var.fill_(1.0)
                    mod.running_mean.zero_()
                if mod.affine:
                    mod.weight.fill_(1.0)
                    mod.bias.zero_()
                mod.eps = 0.0
                continue
            for pname, p in mod.named_parameters(recurse=False):
                if pname == "bias":
                    p.zero_()
                elif p.dim() >= 2:
                    fan_in = p[0].numel()
                    p.copy_((torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5) / fan_in)
                else:
                    p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
    return probe


def support_hull(probe: nn.Module, name: str, input_shape, unit) -> tuple[tuple[int, int], ...] | None:
    """Per-axis hull of the input pixels with a non-zero gradient for ``unit`` of layer ``name``."""
    x = (torch.rand((1, *input_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
         + 0.5).requires_grad_(True)
    out = run_to_layer(probe, LayerRef.parse(name, probe), (x,))
    n = len(input_shape) - 1
    index = (0, slice(None)) + tuple(unit) if out.dim() == n + 2 else (0,) + tuple(unit)
    out[index].sum().backward()
    g = x.grad[0].abs().sum(dim=0)
    hull = []
    for axis in range(n):
        other = tuple(a for a in range(n) if a != axis)
        nz = torch.nonzero(g.sum(dim=other) if other else g).flatten()
        if nz.numel() == 0:
            return None
        hull.append((int(nz.min()), int(nz.max())))
    return tuple(hull)


@dataclass(frozen=True)
class Mismatch:
    layer: str
    unit: tuple[int, ...]
    expected: object
    probed: object

    def describe(self) -> str:
        return f"{self.layer} unit {self.unit}: rflens {self.expected} vs gradient support {self.probed}"


def verify(model: nn.Module, rf: ReceptiveField, layers: list[str]) -> list[Mismatch]:
    """Compare ``rf.box(layer, unit, clip=True)`` with the probe for the first, centre and last
    unit of each layer whose output keeps its spatial axes. Returns the disagreements."""
    probe = probe_model(model)
    shape = rf.input_shape[1:]
    out = []
    for name in layers:
        layer = rf[name]
        if not layer.known or len(layer.shape) != len(shape) + 1 or layer.is_global:
            continue
        grid = layer.shape[2:]
        if tuple(grid) != layer.grid:
            continue
        units = {tuple(0 for _ in grid), tuple(g // 2 for g in grid), tuple(g - 1 for g in grid)}
        for unit in sorted(units):
            expected = layer.box(unit, clip=True)
            probed = support_hull(probe, name, shape, unit)
            if expected != probed:
                out.append(Mismatch(name, unit, expected, probed))
    return out
