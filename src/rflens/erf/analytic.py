"""Analytic ERF: the gradient ERF a network would have with all weights equal and linear activations.

With every kernel uniform and no non-linearity, the influence of input pixel ``x`` on a unit is the
number of paths from ``x`` to it (each layer weighted equally), so the ERF needs no sampling:

- **Chains** (``nn.Sequential`` of convolutions, pooling and pointwise layers, or a list of layer
  specs): per axis, the exact integer path counts, i.e. the self-convolution of the box kernels
  (with strides and dilations). Two 3x3 layers give ``1 2 3 2 1`` per axis. Counts are Python
  integers, exact at any depth; the 2-D map is the outer product of the per-axis counts.
  ``log10_map`` is computed from the exact integers, so a 200-layer stack neither overflows nor
  underflows there; ``map`` (float64, sums to 1) may underflow to 0 only in tails below 1e-308.
  Only modules whose ``forward`` is PyTorch's own count as chain layers: a subclass that overrides
  it (timm's ``Conv2dSame``, weight-standardised convs, a ``Sequential`` with its own forward) is
  followed as a graph instead.
- **Any other graph**: every weight set by :func:`rflens.erf.uniformize` (each layer averages its
  inputs, so merges weigh their paths equally), activations made linear
  (:func:`rflens.erf.linear_mode`: max pooling becomes average pooling, a gate becomes the constant
  1), and one float64 backward pass from the unit to a zero input
  (:mod:`rflens.erf.analytic_graph`: the input is enlarged by whole periods of the output grid so
  the unit's local field fits and keeps its phase; a global field is computed on the input as
  given and covers all of it; without a TRF the ERF/TRF ratio is unknown). Exact up to float64
  rounding.

For a plain chain both give the same normalised map; a layer's weights only matter through their
equality (a constant factor per layer). Coordinates are 0-based input pixels; ``box`` gives the
inclusive input interval per axis that ``map`` covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from rflens.errors import RflensError
from rflens.erf.analytic_graph import graph_erf
from rflens.erf.probe import resolve_unit
from rflens.erf.result import TRFInfo, build_result
from rflens.erf.settings import _resolve_model, resolve_input_shape
from rflens.geometry.chain import ChainLayer, exact_variance, normalise_exact, outer, parse_chain, path_counts_1d
from rflens.trf.instrument import LayerRef, eval_mode, run_to_layer

__all__ = ["analytic_erf", "AnalyticERF", "ChainLayer", "parse_chain", "chain_of", "path_counts_1d",
           "analytic_result"]


@dataclass(frozen=True, eq=False)
class AnalyticERF:
    """An analytic ERF (see the module docstring).

    ``map``: float64 over ``box`` (per axis inclusive input-pixel interval), sums to 1.
    ``log10_map``: ``log10`` of ``map`` (``-inf`` where no path), computed without under/overflow.
    ``axis_counts``: exact per-axis integer path counts (chains only; the map is their outer
    product, normalised). ``unit``: the probed unit (``None`` for a chain without an input shape:
    then the unit is 0 and ``box`` starts at ``-P``). ``clipped``: part of the field lies outside
    an input that could not be enlarged (the map then misses those paths). ``is_global``: some path
    pools over a whole axis; the map covers the whole input as given. ``trf``: the unit's TRF
    (None when unknown; for a chain its path-count box). ``notes``: what the map leaves out, and why.
    """

    layer: str | None
    method: str
    input_shape: tuple[int, ...] | None
    unit: tuple[int, ...] | None
    box: tuple[tuple[int, int], ...]
    map: np.ndarray
    log10_map: np.ndarray
    axis_counts: tuple[tuple[int, ...], ...] | None
    exact: bool
    clipped: bool = False
    jump: tuple[float, ...] | None = None
    is_global: bool = False
    trf: TRFInfo | None = None
    notes: tuple[str, ...] = ()

    @property
    def counts(self) -> np.ndarray | None:
        """Exact N-D path counts (object array of Python ints) for chains, else None."""
        if self.axis_counts is None:
            return None
        out = np.array(self.axis_counts[0], dtype=object)
        for axis in self.axis_counts[1:]:
            out = np.multiply.outer(out, np.array(axis, dtype=object))
        return out

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(hi - lo + 1 for lo, hi in self.box)

    def variance(self) -> tuple[Fraction | float, ...]:
        """Per-axis variance of the map in pixels^2 (exact fractions for chains)."""
        if self.axis_counts is not None:
            return tuple(exact_variance(c) for c in self.axis_counts)
        out = []
        for ax, y in enumerate(_marginals(self.map)):
            x = np.arange(y.size, dtype=np.float64)
            mu = (x * y).sum() / y.sum()
            out.append(float(((x - mu) ** 2 * y).sum() / y.sum()))
        return tuple(out)

    def on_input(self, input_shape: Sequence[int] | None = None) -> np.ndarray:
        """The map placed on the input's spatial grid (float64; mass outside the input dropped)."""
        spatial = _spatial(input_shape or self.input_shape)
        out = np.zeros(spatial, dtype=np.float64)
        src, dst = [], []
        for (lo, hi), n in zip(self.box, spatial):
            a, b = max(lo, 0), min(hi, n - 1)
            if a > b:
                return out
            src.append(slice(a - lo, b - lo + 1))
            dst.append(slice(a, b + 1))
        out[tuple(dst)] = self.map[tuple(src)]
        return out

    def outside_fraction(self, input_shape: Sequence[int] | None = None) -> float:
        """Share of the map's mass outside the input (exact rational arithmetic for chains); NaN
        when it is unknown (a clipped map misses the paths through the border, a global map those
        that end in padding)."""
        spatial = _spatial(input_shape or self.input_shape)
        if self.clipped or self.is_global:
            return math.nan
        if self.axis_counts is not None:
            inside = Fraction(1)
            for counts, (lo, _), n in zip(self.axis_counts, self.box, spatial):
                a, b = max(0, -lo), min(len(counts), n - lo)
                inside *= Fraction(sum(counts[a:b]) if b > a else 0, sum(counts))
            return float(1 - inside)
        return float(max(0.0, 1.0 - self.on_input(input_shape).sum()))


def _spatial(shape: Sequence[int] | None) -> tuple[int, ...]:
    if shape is None:
        raise RflensError("an input shape is needed to place the analytic ERF on the input")
    return tuple(int(s) for s in shape)[1:]


def _marginals(m: np.ndarray) -> list[np.ndarray]:
    return [m.sum(axis=tuple(a for a in range(m.ndim) if a != ax)) for ax in range(m.ndim)]


# --- chains ---------------------------------------------------------------------------------------

_POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.SELU,
              nn.CELU, nn.Tanh, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
              nn.Softsign, nn.Tanhshrink, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
              nn.Dropout3d, nn.AlphaDropout, nn.modules.batchnorm._BatchNorm)


_CHAIN_FORWARDS = frozenset(cls.forward for cls in (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AvgPool3d, nn.Sequential) + _POINTWISE)


def _standard(module: nn.Module) -> bool:
    """True when ``module`` runs PyTorch's own forward (a subclass may compute something else)."""
    return type(module).forward in _CHAIN_FORWARDS


def chain_of(model: nn.Module, layer: str | None = None) -> list[ChainLayer] | None:
    """The chain of ``model`` up to and including ``layer`` when ``model`` is a (nested)
    ``nn.Sequential`` of convolutions, max/average pooling and pointwise layers, each running
    PyTorch's own ``forward``; else None."""
    if not isinstance(model, nn.Sequential) or not _standard(model):
        return None
    leaves = _leaves(model, "")
    if leaves is None:
        return None
    if layer:
        names = [n for n, _ in leaves]
        hits = [i for i, n in enumerate(names) if n == layer or n.startswith(layer + ".")]
        if not hits:
            return None
        leaves = leaves[:hits[-1] + 1]
    layers = []
    for _, module in leaves:
        geometry = _geometry(module)
        if geometry is False:
            return None
        if geometry is not None:
            layers.append(geometry)
    return layers


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]] | None:
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if not _standard(child):
            return None
        if isinstance(child, nn.Sequential):
            inner = _leaves(child, full + ".")
            if inner is None:
                return None
            out += inner if inner else [(full, child)]
        elif len(list(child.children())) and not isinstance(child, _POINTWISE):
            return None
        else:
            out.append((full, child))
    return out


def _geometry(module: nn.Module) -> ChainLayer | None | bool:
    """The chain geometry of one module; None for pointwise modules; False when unsupported."""
    if isinstance(module, _POINTWISE) or (isinstance(module, nn.Sequential) and not len(module)):
        return None
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        k, s, d = module.kernel_size, module.stride, module.dilation
        if isinstance(module.padding, str):
            total = [di * (ki - 1) for ki, di in zip(k, d)] if module.padding == "same" else [0] * len(k)
            left = tuple(t // 2 for t in total)
            return ChainLayer(k, s, d, left, tuple(t - lt for t, lt in zip(total, left)))
        return ChainLayer(k, s, d, module.padding, module.padding)
    pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
    if isinstance(module, pools):
        n = int(type(module).__name__[-2])
        k = _expand(module.kernel_size, n)
        s = _expand(module.stride if module.stride not in (None, ()) else module.kernel_size, n)
        d = _expand(getattr(module, "dilation", 1), n)
        p = _expand(module.padding, n)
        return ChainLayer(k, s, d, p, p, bool(module.ceil_mode))
    return False


def _expand(value: Any, n: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * n


def _chain_erf(layers: list[ChainLayer], ndim: int, input_shape: tuple[int, ...] | None,
               unit: Any, layer: str | None) -> AnalyticERF:
    if input_shape is not None:
        spatial = input_shape[1:]
        out = []
        for axis, n in enumerate(spatial):
            for chain_layer in layers:
                n = chain_layer.output_size(axis, n)
            out.append(n)
        unit_t = resolve_unit(unit, tuple(out), layer)
    else:
        if unit not in (None, "center", "centre"):
            unit_t = tuple(int(u) for u in unit)
        else:
            unit_t = None
    boxes, counts = [], []
    for axis in range(ndim):
        geometry = [(c.kernel[axis], c.stride[axis], c.dilation[axis], c.padding[axis]) for c in layers]
        lo, cnt = path_counts_1d(geometry, unit_t[axis] if unit_t else 0)
        boxes.append((lo, lo + len(cnt) - 1))
        counts.append(tuple(cnt))
    probs, logs = zip(*(normalise_exact(c) for c in counts))
    jump = tuple(float(math.prod(c.stride[a] for c in layers)) for a in range(ndim))
    box = tuple(boxes)
    trf = TRFInfo(box=box, size=tuple(hi - lo + 1 for lo, hi in box),
                  center=tuple((lo + hi) / 2 for lo, hi in box), jump=jump)
    return AnalyticERF(layer=layer, method="chain: exact integer path counts", input_shape=input_shape,
                       unit=unit_t, box=box, map=outer(probs, np.multiply),
                       log10_map=outer(logs, np.add), axis_counts=tuple(counts), exact=True, jump=jump,
                       trf=trf)



# --- entry points ---------------------------------------------------------------------------------

def analytic_erf(model_or_spec: nn.Module | str | Sequence[Any], layer: str | None = None,
                 input_shape: Sequence[int] | str | None = None, unit: Any = "center",
                 ndim: int = 2, max_memory: int | None = None) -> AnalyticERF:
    """The analytic (path-count) ERF of a unit of ``layer``.

    ``model_or_spec``: a chain spec list (see :func:`parse_chain`; ``ndim`` spatial axes), an
    ``nn.Module`` or a MODEL string. Chains (also ``nn.Sequential`` chains) give exact integer path
    counts; other graphs need ``input_shape`` ``(C, *spatial)`` and are computed in float64 (see the
    module docstring). ``unit``: ``"center"`` (index ``n // 2`` per output axis, needs an input
    shape for chains; without one the unit is 0) or a tuple of indices. ``max_memory`` (bytes,
    default as :func:`rflens.erf.memory_budget`) bounds the enlarged input of a graph; beyond it
    the field is computed on the given input and ``clipped`` says whether the border cut paths.
    """
    meta: dict = {}
    if isinstance(model_or_spec, str):
        from rflens.sources.models import load_model

        model_or_spec, meta = load_model(model_or_spec)
    shape = _shape(input_shape, meta)
    if isinstance(model_or_spec, (list, tuple)):
        if layer is not None:
            raise RflensError("a chain spec has no layer names; leave layer=None (the last layer)")
        dims = len(shape) - 1 if shape else ndim
        return _chain_erf(parse_chain(model_or_spec, dims), dims, shape, unit, None)
    if not isinstance(model_or_spec, nn.Module):
        raise RflensError(f"analytic_erf needs a chain spec, an nn.Module or a MODEL string, not "
                          f"{type(model_or_spec).__name__}")
    LayerRef.parse(layer, model_or_spec)
    chain = chain_of(model_or_spec, layer)
    if chain:
        dims = len(shape) - 1 if shape else len(chain[0].kernel)
        return _chain_erf(chain, dims, shape, unit, layer)
    if shape is None:
        raise RflensError("the analytic ERF of a non-chain model needs input_shape, e.g. (3, 224, 224)")
    graph = graph_erf(model_or_spec, layer, shape, unit, max_memory)
    total = graph.map.sum()
    m = graph.map / total
    with np.errstate(divide="ignore"):
        logs = np.log10(m)
    return AnalyticERF(layer=layer, method="graph: float64 backward, uniform weights, linear",
                       input_shape=tuple(shape), unit=graph.unit, box=graph.box, map=m, log10_map=logs,
                       axis_counts=None, exact=False, clipped=graph.clipped,
                       jump=graph.trf.jump if graph.trf else None, is_global=graph.is_global,
                       trf=graph.trf, notes=graph.notes)


def _shape(input_shape: Any, meta: dict) -> tuple[int, ...] | None:
    if isinstance(input_shape, str):
        from rflens.sources.models import parse_input

        return tuple(parse_input(input_shape))
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    if meta.get("input_shape"):
        return tuple(int(s) for s in meta["input_shape"])
    return None


def analytic_result(model: nn.Module | str, layer: str | None, input_shape: Sequence[int] | str | None,
                    unit: Any = "center") -> Any:
    """The analytic ERF placed on the input, as an :class:`rflens.erf.ERFResult` (method
    ``"analytic"``) with every metric; its outside fraction is exact, not estimated."""
    net, meta, name = _resolve_model(model)
    shape = resolve_input_shape(input_shape, meta, name)
    result = analytic_erf(net, layer, shape, unit)
    trf = result.trf
    notes = list(result.notes)
    if result.is_global and trf is not None:  # the TRF of a global unit is the whole input
        whole = tuple((0, n - 1) for n in shape[1:])
        trf = TRFInfo(box=whole, size=tuple(shape[1:]), center=trf.center, jump=trf.jump,
                      is_global=True)
        notes.append("the TRF of a global unit is the whole input: the ERF/TRF ratio is taken "
                     "against it (radii and squares stay centred on the local field's centre)")
    if result.clipped and not result.notes:
        notes.append("the field reaches past an input that could not be enlarged; paths through the "
                     "border are missing")
    output_shape = _output_shape(net, layer, shape)
    outside = result.outside_fraction(shape)
    how = "exact (analytic map)" if math.isfinite(outside) else "unknown (analytic map: see warnings)"
    return build_result(result.on_input(shape), model=name, layer=layer, input_shape=shape,
                        output_shape=output_shape, unit=result.unit, samples=0, method="analytic",
                        settings={"weights": "uniform", "activations": "linear",
                                  "computation": result.method, "exact": result.exact},
                        trf=trf, notes=notes, outside_fraction=outside, outside_method=how)


def _output_shape(model: nn.Module, layer: str | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    first = next(iter(model.parameters()), None)
    x = torch.zeros((1, *shape), dtype=first.dtype if first is not None else torch.float32,
                    device=first.device if first is not None else "cpu")
    with torch.no_grad(), eval_mode(model):
        y = run_to_layer(model, LayerRef.parse(layer, model), (x,))
    return tuple(y.shape[1:])
