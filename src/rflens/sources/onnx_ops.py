"""rflens' own conversions of the ONNX ops whose geometry onnx2torch gets wrong or refuses.

Each converter takes an onnx2torch ``(OnnxNode, OnnxGraph)`` pair and returns the module that
stands for the node and the ONNX values its ``forward`` takes. They exist for the ops whose window
placement matters to a receptive field:

- ``Conv``, ``MaxPool``, ``AveragePool``: ``auto_pad`` ``SAME_UPPER``/``SAME_LOWER`` (the extra
  pixel of an odd total padding at the end resp. the start) and asymmetric ``pads``. Symmetric
  explicit padding converts to the plain ``nn.ConvNd``/``nn.MaxPoolNd``/``nn.AvgPoolNd``; otherwise
  a :class:`Padded` module holds a ``pad`` child (``nn.ConstantPadNd``, or :class:`SamePad` when the
  amount depends on the input size: ``SAME`` with a stride) and the plain layer as ``op``.
- ``ConvTranspose``: ``pads`` (also asymmetric), ``output_padding``, ``output_shape`` and
  ``auto_pad``: the plain transposed convolution without padding, then the ONNX crop (or zero
  extension) of its output per axis.
- ``Reshape`` with ``allowzero`` and shapes known when the graph is read.

Padding conventions follow the ONNX operator specification: ``pads`` lists all begins, then all
ends, in input pixels; ``SAME`` pads so that ``out = ceil(in / stride)``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
CONST_PAD = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}


class ConversionError(Exception):
    """A node rflens cannot convert faithfully; the message says why (one line)."""


def attributes(node: Any) -> dict[str, Any]:
    """The node's attributes as plain Python values (lists for repeated fields)."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.proto.attribute}


def text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def constant(graph: Any, name: str) -> np.ndarray | None:
    """The value of an ONNX input known when the graph is read (an initializer), else None."""
    if name and name in graph.initializers:
        return graph.initializers[name].to_numpy()
    return None


def to_f_pad(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX per-axis begins/ends (first spatial axis first) as ``F.pad``'s list (last axis first)."""
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        out += [int(b), int(e)]
    return out


def same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """ONNX ``SAME_UPPER``/``SAME_LOWER`` padding of one axis: output ``ceil(size/stride)``."""
    span = dilation * (kernel - 1) + 1
    total = max(0, (math.ceil(size / stride) - 1) * stride + span - size)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


class SamePad(nn.Module):
    """ONNX ``auto_pad`` ``SAME_UPPER``/``SAME_LOWER`` for a strided window: the padding depends on
    the input size, so it is computed per call (``value``: the fill, -inf for max pooling)."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                 upper: bool, value: float = 0.0) -> None:
        super().__init__()
        self.kernel, self.stride, self.dilation = tuple(kernel), tuple(stride), tuple(dilation)
        self.upper, self.value = upper, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.kernel)
        pairs = [same_pads(x.shape[-n + k], self.kernel[k], self.stride[k], self.dilation[k],
                           self.upper) for k in range(n)]
        return F.pad(x, to_f_pad([p[0] for p in pairs], [p[1] for p in pairs]), value=self.value)

    def extra_repr(self) -> str:
        return f"{'SAME_UPPER' if self.upper else 'SAME_LOWER'}, kernel={self.kernel}, stride={self.stride}"


class Padded(nn.Module):
    """An ONNX window op with padding PyTorch's layer cannot express: ``pad`` (a module) runs first,
    then ``op`` (the plain PyTorch layer, unpadded); ``after`` (``F.pad`` order, negative values
    crop) is applied to the result — ConvTranspose's ``pads``/``output_padding``."""

    def __init__(self, op: nn.Module, pad: nn.Module | None = None,
                 after: Sequence[int] | None = None) -> None:
        super().__init__()
        if pad is not None:
            self.pad = pad
        self.op = op
        self.after = tuple(int(v) for v in after) if after and any(after) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "pad" in self._modules:
            x = self.pad(x)
        y = self.op(x)
        return pad_output(y, list(self.after), getattr(self.op, "bias", None)) if self.after else y


def pad_output(y: torch.Tensor, pads: list[int], bias: torch.Tensor | None) -> torch.Tensor:
    """Crop (negative) or extend (positive) a transposed convolution's output; extended units
    receive no input, so they hold the bias alone, as in ONNX."""
    if bias is None or all(p <= 0 for p in pads):
        return F.pad(y, pads)
    b = bias.reshape((1, -1) + (1,) * (y.dim() - 2))
    return F.pad(y - b, pads) + b


class AvgPoolExcludingPad(nn.Module):
    """ONNX ``AveragePool`` with ``count_include_pad=0`` and padding PyTorch cannot express: the
    window sum over the zero-padded input divided by the number of real pixels in the window."""

    def __init__(self, pad: nn.Module, op: nn.Module) -> None:
        super().__init__()
        self.pad, self.op = pad, op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.op(self.pad(x))
        ones = torch.ones_like(x[:1, :1])
        share = self.op(self.pad(ones))  # real pixels / window size, per output unit
        return total / share


def _window_geometry(node: Any, attrs: dict, n: int) -> tuple[list, list, list, list]:
    kernel = list(attrs.get("kernel_shape") or [])
    if len(kernel) != n:
        raise ConversionError(f"kernel_shape {kernel} does not have {n} spatial axes")
    stride = list(attrs.get("strides") or [1] * n)
    dilation = list(attrs.get("dilations") or [1] * n)
    pads = list(attrs.get("pads") or [0] * (2 * n))
    return kernel, stride, dilation, pads


def _pad_module(auto_pad: str, pads: list, kernel: list, stride: list, dilation: list, n: int,
                value: float = 0.0) -> tuple[Any, nn.Module | None]:
    """``(symmetric padding or None, pad module or None)`` for a Conv/pool node."""
    if auto_pad == "VALID":
        return [0] * n, None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        upper = auto_pad == "SAME_UPPER"
        if all(s == 1 for s in stride):  # stride 1: the amount does not depend on the input size
            pairs = [same_pads(1, kernel[k], 1, dilation[k], upper) for k in range(n)]
            pads = [p[0] for p in pairs] + [p[1] for p in pairs]
        else:
            return None, SamePad(kernel, stride, dilation, upper, value)
    elif auto_pad not in ("NOTSET", ""):
        raise ConversionError(f"auto_pad '{auto_pad}' is not an ONNX padding mode")
    begins, ends = pads[:n], pads[n:]
    if begins == ends:
        return begins, None
    return None, CONST_PAD[n](to_f_pad(begins, ends), value)


def _spatial_rank(node: Any, graph: Any, weight: np.ndarray | None = None) -> int:
    if weight is not None:
        return weight.ndim - 2
    info = graph.value_info.get(node.input_values[0])
    dims = info.type.tensor_type.shape.dim if info is not None else []
    if not dims:
        kernel = attributes(node).get("kernel_shape")
        if kernel:
            return len(kernel)
        raise ConversionError("the input rank is unknown (no shape information in the graph)")
    return len(dims) - 2


def convert_conv(node: Any, graph: Any) -> tuple[nn.Module, tuple[str, ...]]:
    attrs = attributes(node)
    weight = constant(graph, node.input_values[1])
    if weight is None:
        raise ConversionError("its weight is computed in the graph, not stored; rflens converts "
                              "convolutions with stored weights only")
    bias = constant(graph, node.input_values[2]) if len(node.input_values) > 2 and node.input_values[2] else None
    n = weight.ndim - 2
    if n not in CONV:
        raise ConversionError(f"{n} spatial axes (PyTorch has 1-D to 3-D convolutions)")
    attrs.setdefault("kernel_shape", list(weight.shape[2:]))
    kernel, stride, dilation, pads = _window_geometry(node, attrs, n)
    groups = int(attrs.get("group", 1))
    padding, pad = _pad_module(text(attrs.get("auto_pad", "NOTSET")), pads, kernel, stride, dilation, n)
    conv = CONV[n](weight.shape[1] * groups, weight.shape[0], kernel, stride=stride,
                   padding=padding if padding is not None else 0, dilation=dilation, groups=groups,
                   bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias))
    return (conv if pad is None else Padded(conv, pad)), (node.input_values[0],)


def convert_conv_transpose(node: Any, graph: Any) -> tuple[nn.Module, tuple[str, ...]]:
    attrs = attributes(node)
    weight = constant(graph, node.input_values[1])
    if weight is None:
        raise ConversionError("its weight is computed in the graph, not stored")
    bias = constant(graph, node.input_values[2]) if len(node.input_values) > 2 and node.input_values[2] else None
    n = weight.ndim - 2
    if n not in CONV_T:
        raise ConversionError(f"{n} spatial axes (PyTorch has 1-D to 3-D transposed convolutions)")
    attrs.setdefault("kernel_shape", list(weight.shape[2:]))
    kernel, stride, dilation, pads = _window_geometry(node, attrs, n)
    groups = int(attrs.get("group", 1))
    out_pad = list(attrs.get("output_padding") or [0] * n)
    auto_pad = text(attrs.get("auto_pad", "NOTSET"))
    out_shape = list(attrs.get("output_shape") or [])
    conv = CONV_T[n](weight.shape[0], weight.shape[1] * groups, kernel, stride=stride,
                     dilation=dilation, groups=groups, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias))
    spans = [dilation[k] * (kernel[k] - 1) + 1 for k in range(n)]
    if out_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        module = ConvTransposeToShape(conv, spans, stride, out_pad, out_shape[-n:] if out_shape else None,
                                      auto_pad == "SAME_UPPER")
        return module, (node.input_values[0],)
    if auto_pad not in ("NOTSET", "", "VALID"):
        raise ConversionError(f"auto_pad '{auto_pad}' is not an ONNX padding mode")
    if auto_pad == "VALID":
        pads = [0] * (2 * n)
    begins, ends = pads[:n], pads[n:]
    if begins == ends and all(o < max(s, d) for o, s, d in zip(out_pad, stride, dilation)):
        conv.padding, conv.output_padding = tuple(begins), tuple(out_pad)
        return conv, (node.input_values[0],)
    after = to_f_pad([-b for b in begins], [o - e for o, e in zip(out_pad, ends)])
    return Padded(conv, after=after), (node.input_values[0],)


class ConvTransposeToShape(nn.Module):
    """ONNX ConvTranspose with ``output_shape`` or ``auto_pad`` SAME: the unpadded transposed
    convolution (``full = stride*(in-1) + span`` units per axis), then the ONNX split of
    ``total = full + output_padding - out`` between start and end (``out``: ``output_shape``, or
    ``in*stride`` for SAME; the larger half at the start unless SAME_UPPER). A negative total (an
    output larger than the full one) is 0, and the output is extended at the end, as onnxruntime
    does."""

    def __init__(self, op: nn.Module, spans: Sequence[int], stride: Sequence[int],
                 output_padding: Sequence[int], output_shape: Sequence[int] | None,
                 upper: bool) -> None:
        super().__init__()
        self.op = op
        self.spans, self.stride = tuple(spans), tuple(stride)
        self.output_padding = tuple(output_padding)
        self.output_shape = tuple(output_shape) if output_shape else None
        self.upper = upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.spans)
        begins, ends = [], []
        for k in range(n):
            size = x.shape[-n + k]
            out = self.output_shape[k] if self.output_shape else size * self.stride[k]
            full = self.stride[k] * (size - 1) + self.spans[k]
            total = max(0, full + self.output_padding[k] - out)
            small = total // 2
            b, e = (small, total - small) if self.upper else (total - small, small)
            begins.append(-b)
            ends.append(out - (full - b))  # the end crop (negative) or extension (positive)
        return pad_output(self.op(x), to_f_pad(begins, ends), self.op.bias)


def convert_pool(node: Any, graph: Any) -> tuple[nn.Module, tuple[str, ...]]:
    attrs = attributes(node)
    n = _spatial_rank(node, graph)
    if n not in MAXPOOL:
        raise ConversionError(f"{n} spatial axes (PyTorch pools 1-D to 3-D)")
    kernel, stride, dilation, pads = _window_geometry(node, attrs, n)
    ceil = bool(attrs.get("ceil_mode", 0))
    is_max = node.operation_type == "MaxPool"
    if is_max and int(attrs.get("storage_order", 0)) != 0:
        raise ConversionError("storage_order=1 (column-major indices) is not supported")
    if is_max and len(node.output_values) > 1 and node.output_values[1]:
        raise ConversionError("its Indices output is used; rflens converts MaxPool's values only")
    if not is_max and any(d != 1 for d in dilation):
        raise ConversionError("dilated average pooling has no PyTorch counterpart")
    include = bool(attrs.get("count_include_pad", 0))
    padding, pad = _pad_module(text(attrs.get("auto_pad", "NOTSET")), pads, kernel, stride, dilation, n,
                               value=-math.inf if is_max else 0.0)
    sym = padding if padding is not None else [0] * n
    if is_max:
        op = MAXPOOL[n](kernel, stride, sym, dilation=dilation, ceil_mode=ceil)
    else:
        if any(2 * p > k for p, k in zip(sym, kernel)):  # PyTorch caps padding at half the kernel
            pad, sym = CONST_PAD[n](to_f_pad(sym, sym), 0.0), [0] * n
        op = AVGPOOL[n](kernel, stride, sym, ceil_mode=ceil, count_include_pad=include)
        if pad is not None and not include:
            return AvgPoolExcludingPad(pad, AVGPOOL[n](kernel, stride, 0, ceil_mode=ceil,
                                                       count_include_pad=True)), (node.input_values[0],)
    return (op if pad is None else Padded(op, pad)), (node.input_values[0],)


class Reshape(nn.Module):
    """ONNX Reshape with a shape known when the graph is read: ``0`` copies the input's size on
    that axis (unless ``allowzero``), ``-1`` takes the rest."""

    def __init__(self, shape: Sequence[int], allowzero: bool) -> None:
        super().__init__()
        self.shape, self.allowzero = tuple(int(s) for s in shape), allowzero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = self.shape if self.allowzero else tuple(
            x.shape[i] if s == 0 else s for i, s in enumerate(self.shape))
        return x.reshape(shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class DynamicReshape(nn.Module):
    """ONNX Reshape whose shape is computed in the graph (read at run time)."""

    def __init__(self, allowzero: bool) -> None:
        super().__init__()
        self.allowzero = allowzero

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return Reshape(shape.tolist(), self.allowzero)(x)


def convert_reshape(node: Any, graph: Any) -> tuple[nn.Module, tuple[str, ...]]:
    allowzero = bool(attributes(node).get("allowzero", 0))
    shape = constant(graph, node.input_values[1])
    if shape is not None:
        return Reshape(shape.tolist(), allowzero), (node.input_values[0],)
    return DynamicReshape(allowzero), tuple(node.input_values[:2])


CONVERTERS = {
    "Conv": convert_conv,
    "ConvTranspose": convert_conv_transpose,
    "MaxPool": convert_pool,
    "AveragePool": convert_pool,
    "Reshape": convert_reshape,
}


class Shape(nn.Module):
    """ONNX Shape (``start``/``end``): the sizes as a CPU int64 tensor, also for meta inputs, so
    that shape arithmetic in the graph runs on real numbers."""

    def __init__(self, start: int, end: int | None) -> None:
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(tuple(x.shape)[self.start:self.end], dtype=torch.int64)


def convert_shape(node: Any, graph: Any) -> tuple[nn.Module, tuple[str, ...]]:
    attrs = attributes(node)
    return Shape(int(attrs.get("start", 0)), attrs.get("end")), (node.input_values[0],)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


class Pad(nn.Module):
    """ONNX Pad: ``pads`` (all begins, then all ends, over the padded ``axes``), negative values
    crop; ``constant``/``reflect``/``edge``/``wrap`` as ``F.pad``'s constant/reflect/replicate/
    circular. Values computed in the graph are read at run time."""

    def __init__(self, mode: str, pads: Sequence[int] | None, value: float | None,
                 axes: Sequence[int] | None) -> None:
        super().__init__()
        self.mode = mode
        self.pads = tuple(int(p) for p in pads) if pads is not None else None
        self.value = value
        self.axes = tuple(int(a) for a in axes) if axes is not None else None

    def forward(self, x: torch.Tensor, *dynamic: torch.Tensor) -> torch.Tensor:
        pads = self.pads if self.pads is not None else tuple(int(v) for v in dynamic[0].tolist())
        value = self.value
        if value is None:
            value = float(dynamic[-1].item()) if len(dynamic) > (self.pads is None) else 0.0
        rank = x.dim()
        axes = [a % rank for a in self.axes] if self.axes is not None else list(range(rank))
        begins, ends = [0] * rank, [0] * rank
        for i, a in enumerate(axes):
            begins[a], ends[a] = pads[i], pads[len(axes) + i]
        first = next((a for a in range(rank) if begins[a] or ends[a]), rank)
        if first == rank:
            return x
        if self.mode != "constant" and (first < 2 or rank - first > 3):
            raise ValueError(f"{self.mode} padding of axis {first} of a rank-{rank} tensor has no "
                             "PyTorch counterpart (spatial axes only)")
        flat = to_f_pad(begins[first:], ends[first:])
        if self.mode == "constant":
            return F.pad(x, flat, value=value)
        return F.pad(x, flat + [0, 0] * (rank - 2 - (rank - first)), mode=self.mode)


def convert_pad(node: Any, graph: Any) -> tuple[nn.Module, tuple[str, ...]]:
    attrs = attributes(node)
    mode = text(attrs.get("mode", "constant"))
    if mode not in _PAD_MODES:
        raise ConversionError(f"mode '{mode}' is not an ONNX padding mode")
    inputs = list(node.input_values) + [""] * (4 - len(node.input_values))
    if "pads" in attrs:  # Pad-2: attributes
        return Pad(_PAD_MODES[mode], attrs["pads"], float(attrs.get("value", 0.0)), None), (inputs[0],)
    pads, value, axes = (constant(graph, inputs[i]) for i in (1, 2, 3))
    if inputs[3] and axes is None:
        raise ConversionError("its axes are computed in the graph")
    dynamic = [inputs[1]] if pads is None else []
    if inputs[2] and value is None:
        dynamic.append(inputs[2])
    fill = float(value.reshape(-1)[0]) if value is not None and value.size else (None if inputs[2] else 0.0)
    module = Pad(_PAD_MODES[mode], pads.tolist() if pads is not None else None, fill,
                 axes.tolist() if axes is not None else None)
    return module, (inputs[0], *dynamic)


CONVERTERS.update({"Shape": convert_shape, "Pad": convert_pad})


class ConstantOfShape(nn.Module):
    """ONNX ConstantOfShape: a tensor of the given shape filled with the node's value, on the shape
    tensor's device (shapes live on the CPU, see :class:`Shape`)."""

    def __init__(self, value: float | int, dtype: torch.dtype) -> None:
        super().__init__()
        self.value, self.dtype = value, dtype

    def forward(self, shape: torch.Tensor) -> torch.Tensor:
        return torch.full(tuple(int(s) for s in shape.tolist()), self.value, dtype=self.dtype,
                          device=shape.device)


def convert_constant_of_shape(node: Any, graph: Any) -> tuple[nn.Module, tuple[str, ...]]:
    value = attributes(node).get("value")
    array = onnx.numpy_helper.to_array(value) if value is not None else np.zeros(1, dtype=np.float32)
    tensor = torch.from_numpy(array.copy()).reshape(-1)
    return ConstantOfShape(tensor[0].item(), tensor.dtype), (node.input_values[0],)


CONVERTERS["ConstantOfShape"] = convert_constant_of_shape
