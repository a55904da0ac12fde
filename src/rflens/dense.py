"""Dense prediction from a strided network: shift-and-stitch and filter rarefaction.

A network whose total stride (jump) on an axis is ``J`` gives one output per ``J`` input pixels. Two
ways to get an output at *every* pixel (docs/receptive-fields.md, "Dense prediction"):

* :func:`shift_and_stitch` (OverFeat, FCN) runs the network ``prod(J)`` times on shifted inputs and
  interleaves the outputs;
* :func:`rarefy` builds a new network with every stride set to 1 and every later kernel (convolution
  and pooling window) dilated by the product of the strides removed before it, which gives the same
  dense output in one pass.

Conventions (per spatial axis; inputs are batched ``(B, C, *spatial)`` with 1, 2 or 3 spatial axes)
--------------------------------------------------------------------------------------------------
* ``N`` input length, ``J`` total stride, shifts ``s = 0 .. J-1`` (``prod(J)`` shifted passes in all).
* Shift ``s`` means the network sees the input *starting at offset s*: the input is cropped to
  ``x[..., s:]`` and zero-padded **at the far end** back to length ``N``, so every shift gives the same
  number ``M`` of outputs. Output ``i`` of shift ``s`` lands at dense index ``n = J*i + s``; the
  stitched map has ``J*M`` positions.
* The rarefied network runs once on the unshifted input; its output index is the dense index ``n``
  directly. It has ``L`` positions (``L`` may differ from ``J*M`` by a few border positions).
* Dense unit ``n`` sees the input pixels ``[n + lo, n + hi]``, where ``[lo, hi]`` is the field of unit 0
  of the strided network (``lo = -P``, ``hi = R - 1 - P``; union over branches) — see
  :class:`DenseGeometry`.
* **Interior** (:func:`interior`): the dense positions where both methods agree exactly (up to float
  rounding) are those whose computation reads no padding in either method::

      n + lo >= n mod J      shift s = n mod J has real pixels only from offset s on (it pads
                             before); equivalently n >= J*ceil(-lo/J), the first multiple of J >= P
      n + hi <= N - 1        past the end one method reads zeros as data, the other as padding
      n < min(J*M, L)        the position exists in both outputs

  so the interior is one contiguous range per axis. Agreement is guaranteed there. Outside it (the
  borders) the two may legitimately differ: each method inserts its zero (or ``-inf``) padding at
  different places, and biases or pooling make that visible.

Layers rarefaction understands (anything else raises :class:`~rflens.errors.RflensError` naming the
module): ``Conv{1,2,3}d`` and stride-1 ``ConvTranspose{1,2,3}d``, ``MaxPool{1,2,3}d``,
``AvgPool{1,2,3}d``, padding modules (``ZeroPad2d``, ``ReflectionPad2d``, ...), and pointwise modules
(BatchNorm in eval mode, activations, dropout, channel softmax, LocalResponseNorm) and the Python glue between modules
(residual additions, channel concatenation, in-place ops) as long as it keeps spatial shapes.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from rflens.errors import RflensError

__all__ = ["DenseGeometry", "RarefiedAvgPool", "RarefiedMaxPool", "PadThen", "Truncated", "analyze",
           "rarefy", "truncate", "shifted_input", "stitch", "shift_and_stitch", "dense_output",
           "interior", "compare"]

Ints = tuple[int, ...]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_PAD = (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
        nn.modules.padding._ReplicationPadNd, nn.modules.padding._CircularPadNd)
_REWRITTEN = _CONV + _CONV_T + _MAXPOOL + _AVGPOOL + _PAD
# modules whose internal ops mix positions only along channels (their functional internals are trusted)
_CHANNEL_ONLY = (nn.LocalResponseNorm, nn.CrossMapLRN2d)
_KNOWN_FORWARDS = {cls.forward for cls in _REWRITTEN + _CHANNEL_ONLY}
_GLOBAL = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
           nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Linear, nn.Bilinear, nn.Flatten,
           nn.Unflatten, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
           nn.LayerNorm, nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoderLayer,
           nn.TransformerDecoderLayer, nn.TransformerEncoder, nn.TransformerDecoder)
_RESAMPLING = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.PixelShuffle,
               nn.PixelUnshuffle, nn.Fold, nn.Unfold, nn.FractionalMaxPool2d, nn.FractionalMaxPool3d,
               nn.LPPool1d, nn.LPPool2d, nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d)
# functional ops that mix spatial positions; outside a rewritten module rflens cannot rarefy them
_SPATIAL_FUNCS = ("conv", "pool", "unfold", "fold", "interpolate", "upsample", "grid_sample",
                  "pixel_shuffle", "pixel_unshuffle", "roll", "flip", "rot90", "fft", "cumsum",
                  "cumprod", "cummax", "cummin")
_CREATION_FUNCS = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"}


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Field:
    """Field of unit 0 of a tensor, per spatial axis: input pixels ``[lo, hi]``; unit ``i`` of the
    (strided) tensor sees ``[lo + i*jump, hi + i*jump]``."""

    lo: Ints
    hi: Ints
    jump: Ints

    @staticmethod
    def input(d: int) -> "_Field":
        return _Field((0,) * d, (0,) * d, (1,) * d)

    def through(self, kernel: Ints, stride: Ints, pad_left: Ints) -> "_Field":
        """After a window op reading units ``[i*s - p, i*s - p + k - 1]`` (``k`` effective size)."""
        lo = tuple(a - p * j for a, p, j in zip(self.lo, pad_left, self.jump))
        hi = tuple(b + (k - 1 - p) * j for b, k, p, j in zip(self.hi, kernel, pad_left, self.jump))
        return _Field(lo, hi, tuple(j * s for j, s in zip(self.jump, stride)))

    def union(self, other: "_Field") -> "_Field":
        return _Field(tuple(map(min, self.lo, other.lo)), tuple(map(max, self.hi, other.hi)),
                      self.jump)


@dataclass(frozen=True)
class DenseGeometry:
    """What rarefaction needs to know about a strided network, per spatial axis.

    ``jump``: total stride ``J``; ``lo``/``hi``: dense unit ``n`` sees input pixels ``[n+lo, n+hi]``
    (``lo = -P``, ``hi = R-1-P`` for the network's receptive field size ``R`` and effective padding
    ``P``); ``layers``: the accumulated stride each rewritten module runs at (its dilation factor);
    ``shifts``: ``prod(jump)``, the number of shifted passes shift-and-stitch needs.
    """

    jump: Ints
    lo: Ints
    hi: Ints
    layers: dict[str, Ints] = field(default_factory=dict)

    @property
    def shifts(self) -> int:
        return math.prod(self.jump)

    @property
    def min_input(self) -> Ints:
        """Smallest input length per axis with a non-empty :func:`interior`: the first interior
        index ``J*ceil(-lo/J)`` plus ``hi`` plus 1."""
        return tuple(j * -(lo // j) + hi + 1 for lo, hi, j in zip(self.lo, self.hi, self.jump))

    @property
    def size(self) -> Ints:
        """Receptive field size ``R`` per axis."""
        return tuple(h - l + 1 for l, h in zip(self.lo, self.hi))


def _tup(value: Any, d: int) -> Ints:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * d


def _pad_pairs(padding: Sequence[int], d: int) -> list[tuple[int, int]]:
    """``F.pad``-style padding (last axis first, pairs) as ``(left, right)`` per spatial axis."""
    flat = list(padding) + [0] * max(0, 2 * d - len(padding))
    return [(flat[2 * (d - 1 - a)], flat[2 * (d - 1 - a) + 1]) for a in range(d)]


def _to_f_pad(pairs: Sequence[tuple[int, int]]) -> list[int]:
    return [p for pair in reversed(pairs) for p in pair]


def _conv_pads(m: nn.Module, d: int) -> list[tuple[int, int]]:
    """``(left, right)`` padding per axis of a Conv module, with ``'same'``/``'valid'`` resolved the
    way PyTorch does it (odd total padding puts the extra pixel on the right)."""
    k, dil = _tup(m.kernel_size, d), _tup(m.dilation, d)
    if m.padding == "valid":
        return [(0, 0)] * d
    if m.padding == "same":
        return [(t // 2, t - t // 2) for t in (di * (ki - 1) for ki, di in zip(k, dil))]
    return [(p, p) for p in _tup(m.padding, d)]


def _window(m: nn.Module, d: int) -> tuple[Ints, Ints, Ints]:
    """``(effective kernel, stride, left padding)`` of a rewritable module, per axis."""
    if isinstance(m, _PAD):
        return (1,) * d, (1,) * d, tuple(l for l, _ in _pad_pairs(m.padding, d))
    k = _tup(m.kernel_size, d)
    dil = (1,) * d if isinstance(m, _AVGPOOL) else _tup(m.dilation, d)
    eff = tuple(di * (ki - 1) + 1 for ki, di in zip(k, dil))
    stride = _tup(m.stride if m.stride not in (None, (), []) else m.kernel_size, d)
    if isinstance(m, _CONV_T):  # stride 1 only: output n reads input [n + p - (k'-1), n + p]
        return eff, stride, tuple(e - 1 - p for e, p in zip(eff, _tup(m.padding, d)))
    if isinstance(m, _CONV):
        return eff, stride, tuple(l for l, _ in _conv_pads(m, d))
    return eff, stride, _tup(m.padding, d)


# ------------------------------------------------------------------------------------------------
# replacement modules
# ------------------------------------------------------------------------------------------------
class PadThen(nn.Module):
    """``F.pad`` (asymmetric, any mode/value) followed by ``inner``; used where a rarefied layer needs
    padding its own module cannot express."""

    def __init__(self, pads: Sequence[tuple[int, int]], inner: nn.Module, mode: str = "constant",
                 value: float = 0.0) -> None:
        super().__init__()
        self.pads, self.mode, self.value, self.inner = list(pads), mode, value, inner

    def forward(self, x: Tensor) -> Tensor:
        value = self.value if self.mode == "constant" else None
        return self.inner(F.pad(x, _to_f_pad(self.pads), mode=self.mode, value=value))

    def extra_repr(self) -> str:
        return f"pads={self.pads}, mode={self.mode!r}, value={self.value}"


class RarefiedMaxPool(nn.Module):
    """Stride-1 dilated max pooling with explicit ``-inf`` padding (PyTorch's pooling refuses padding
    larger than half the kernel, which rarefied padding ``p*F`` usually is)."""

    def __init__(self, kernel: Ints, dilation: Ints, pads: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.kernel, self.dilation, self.pads = tuple(kernel), tuple(dilation), list(pads)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, _to_f_pad(self.pads), value=-math.inf)
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


# ------------------------------------------------------------------------------------------------
# truncation
# ------------------------------------------------------------------------------------------------
class _Stop(Exception):
    def __init__(self, output: Any) -> None:
        super().__init__("truncated")
        self.output = output


def _stop_hook(module: nn.Module, args: Any, output: Any) -> None:
    raise _Stop(output)


class Truncated(nn.Module):
    """``model`` cut after its submodule ``layer``: returns that module's output from its first call
    and skips the rest of ``model.forward``. Works for any forward (chains, residual networks)."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.model, self.layer = model, layer
        self.model.get_submodule(layer).register_forward_hook(_stop_hook)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            self.model(*args, **kwargs)
        except _Stop as stop:
            return stop.output
        raise RflensError(f"module '{self.layer}' was never called by the model's forward; "
                          "pick a module on the path from input to output with --layer")


def truncate(model: nn.Module, layer: str | None) -> nn.Module:
    """A copy of ``model`` whose output is the output of submodule ``layer`` (``model.named_modules()``
    name, e.g. ``features.16`` or ``layer2``); ``None`` returns ``model`` unchanged."""
    if not layer:
        return model
    names = [n for n, _ in model.named_modules() if n]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(names[:4])}"
        raise RflensError(f"no module named '{layer}' in the model ({hint}); --layer takes a name "
                          "from model.named_modules()")
    return Truncated(copy.deepcopy(model), layer)


# ------------------------------------------------------------------------------------------------
# probing: which module runs at which accumulated stride
# ------------------------------------------------------------------------------------------------
def _display(name: str) -> str:
    return name or "<model>"


def _refuse(name: str, m: nn.Module, d: int) -> None:
    """Raise for modules that have no dense (rarefied) equivalent."""
    kind = type(m).__name__
    if isinstance(m, _GLOBAL):
        raise RflensError(f"cannot rarefy {_display(name)} ({kind}): global/dense layers have no "
                          "dense equivalent; truncate the model with --layer NAME before it "
                          "(rflens.dense.truncate in Python)")
    if isinstance(m, _RESAMPLING) or (isinstance(m, _CONV_T) and set(_tup(m.stride, d)) != {1}):
        raise RflensError(f"cannot rarefy {_display(name)} ({kind}): resampling layers are not "
                          "supported; truncate the model with --layer NAME before it")
    if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)) and m.dim not in (None, 1, -d - 1):
        raise RflensError(f"cannot rarefy {_display(name)} ({kind}): it normalises over a spatial "
                          f"axis (dim={m.dim}); truncate the model with --layer NAME before it")
    if isinstance(m, _MAXPOOL) and m.return_indices:
        raise RflensError(f"cannot rarefy {_display(name)} ({kind}): return_indices=True is not "
                          "supported; truncate the model with --layer NAME before it")
    if isinstance(m, _REWRITTEN + _CHANNEL_ONLY) and type(m).forward not in _KNOWN_FORWARDS:
        raise RflensError(f"cannot rarefy {_display(name)} ({kind}): it subclasses a layer rflens "
                          "knows but overrides forward(), so its geometry is unknown; truncate "
                          "the model with --layer NAME before it")
    if isinstance(m, _REWRITTEN) and not isinstance(m, _PAD):
        dims = len(m.kernel_size) if isinstance(m.kernel_size, tuple) else d
        if dims != d:
            raise RflensError(f"cannot rarefy {_display(name)} ({kind}): it has {dims} spatial "
                              f"axes but the input has {d}; check --input")


class _Probe:
    """Tracks the field (and so the accumulated stride) of every tensor during one forward pass.

    Module hooks handle rewritable modules (their output field is computed from their geometry);
    a ``TorchFunctionMode`` propagates fields through every other op and refuses ops that change
    spatial shapes or mix positions outside a module rflens can rewrite.
    """

    def __init__(self, d: int) -> None:
        self.d = d
        self.fields: dict[int, _Field] = {}
        self._alive: list[Tensor] = []  # keeps ids unique while probing
        self.stack: list[tuple[str, nn.Module]] = []
        self.layers: dict[str, Ints] = {}
        self._pending: dict[int, tuple[str, _Field]] = {}

    # bookkeeping --------------------------------------------------------------------------------
    def get(self, t: Any) -> _Field | None:
        return self.fields.get(id(t)) if isinstance(t, Tensor) else None

    def set(self, t: Tensor, f: _Field) -> None:
        self.fields[id(t)] = f
        self._alive.append(t)

    def where(self) -> str:
        return f"{_display(self.stack[-1][0])} ({type(self.stack[-1][1]).__name__})" \
            if self.stack else "the model's forward"

    # module hooks -------------------------------------------------------------------------------
    def pre_hook(self, name: str) -> Callable:
        def hook(m: nn.Module, args: tuple, kwargs: dict) -> None:
            self.stack.append((name, m))
            _refuse(name, m, self.d)
            f = next((self.get(t) for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)),
                     None)
            if isinstance(m, _REWRITTEN) and f is not None:
                seen = self.layers.setdefault(name, f.jump)
                if seen != f.jump:
                    raise RflensError(f"cannot rarefy {_display(name)} ({type(m).__name__}): it is "
                                      f"called at strides {seen} and {f.jump}, and one module "
                                      "cannot be dilated two ways; give each use its own module")
                self._pending[id(m)] = (name, f)
        return hook

    def post_hook(self, name: str) -> Callable:
        def hook(m: nn.Module, args: tuple, output: Any) -> None:
            while self.stack and self.stack.pop()[1] is not m:
                pass
            pending = self._pending.pop(id(m), None)
            if pending is not None and isinstance(output, Tensor):
                self.set(output, pending[1].through(*_window(m, self.d)))
        return hook

    # ops ----------------------------------------------------------------------------------------
    def on_op(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
        name = getattr(func, "__name__", str(func))
        ins = [t for t in tree_leaves((args, kwargs)) if self.get(t) is not None]
        outs = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        if not ins or not outs or name in _CREATION_FUNCS:
            return
        f = self._merge(name, ins)
        inside = bool(self.stack) and isinstance(self.stack[-1][1], _REWRITTEN + _CHANNEL_ONLY)
        if not inside:
            f = self._check(name, args, kwargs, ins, outs, f)
        for t in outs:
            self.set(t, f)

    def _merge(self, name: str, ins: list[Tensor]) -> _Field:
        fields = [self.fields[id(t)] for t in ins]
        merged = fields[0]
        for other in fields[1:]:
            if other.jump != merged.jump:
                raise RflensError(f"cannot rarefy: {name} in {self.where()} combines tensors at "
                                  f"strides {merged.jump} and {other.jump}; both paths must have "
                                  "the same total stride")
            merged = merged.union(other)
        return merged

    def _check(self, name: str, args: tuple, kwargs: dict, ins: list[Tensor], outs: list[Tensor],
               f: _Field) -> _Field:
        """Refuse functional spatial ops and shape changes outside rewritable modules; track F.pad."""
        lowered = name.lower()
        if any(key in lowered for key in _SPATIAL_FUNCS):
            raise RflensError(f"cannot rarefy: {self.where()} calls {name} directly; rflens only "
                              "rewrites nn.ConvNd/MaxPoolNd/AvgPoolNd/padding modules: wrap it in "
                              "one or truncate the model with --layer NAME before it")
        ref = next((t for t in ins if t.ndim == self.d + 2), ins[0])
        if all(t.ndim == ref.ndim and t.shape[2:] == ref.shape[2:] for t in outs):
            return f
        if name == "pad" and set(f.jump) == {1}:
            pairs = _pad_pairs(args[1] if len(args) > 1 else kwargs["pad"], self.d)
            return f.through((1,) * self.d, (1,) * self.d, tuple(l for l, _ in pairs))
        raise RflensError(f"cannot rarefy: {name} in {self.where()} changes the spatial shape "
                          f"{tuple(ref.shape)} -> {tuple(outs[0].shape)}; only nn padding, "
                          "convolution and pooling modules may change it (crop, flatten, "
                          "reshape or functional padding after a stride cannot be rarefied)")


class _Tracker(TorchFunctionMode):
    def __init__(self, probe: _Probe) -> None:
        super().__init__()
        self.probe = probe

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.probe.on_op(func, args, kwargs, out)
        return out


def _probe_once(model: nn.Module, x: Tensor) -> DenseGeometry:
    """Run ``model`` (a copy we own) on ``x`` with the probe attached; return the geometry."""
    d = x.ndim - 2
    probe = _Probe(d)
    probe.set(x, _Field.input(d))
    handles = []
    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(probe.pre_hook(name), prepend=True,
                                                   with_kwargs=True))
        handles.append(m.register_forward_hook(probe.post_hook(name), prepend=True))
    try:
        with torch.no_grad(), _Tracker(probe):
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    f = probe.get(out)
    if f is None or out.ndim != x.ndim:
        raise RflensError(f"the model's output must be one (B, C, *spatial) tensor with {d} spatial "
                          "axes computed from the input; truncate the model with --layer NAME")
    return DenseGeometry(f.jump, f.lo, f.hi, dict(probe.layers))


def _example_tensor(model: nn.Module, example: Tensor | Sequence[int] | None) -> Tensor:
    """A batched example input (only its shape and dtype matter)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if isinstance(example, Tensor):
        return example
    if example is None:
        conv = next((m for m in model.modules() if isinstance(m, _CONV)), None)
        if conv is None:
            raise RflensError("cannot guess the input shape (the model has no Conv module first); "
                              "pass example=(C, *spatial) or a tensor")
        d = len(conv.kernel_size)
        example = (conv.in_channels, *([224] * d if d < 3 else [64] * d))
    shape = tuple(int(s) for s in example)
    if len(shape) < 2:
        raise RflensError(f"example shape {shape} must be (C, *spatial) with 1 to 3 spatial axes")
    return torch.zeros((1, *shape), dtype=dtype)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are meta tensors (no data copied)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def analyze(model: nn.Module, example: Tensor | Sequence[int] | None = None) -> DenseGeometry:
    """Geometry of ``model`` for dense prediction (total stride, field of dense unit 0, the stride
    each rewritable module runs at), found by running a copy of it on ``example`` (a batched tensor,
    or a shape ``(C, *spatial)``; ``None`` guesses it from the first Conv). The copy runs on meta
    tensors when it can (no compute), else on real zeros. ``model`` itself is never touched."""
    if isinstance(model, torch.jit.ScriptModule):
        raise RflensError("cannot rarefy a TorchScript module: pass the eager nn.Module")
    x = _example_tensor(model, example)
    if not 3 <= x.ndim <= 5:
        raise RflensError(f"input shape {tuple(x.shape)} must be (B, C, *spatial) with 1 to 3 "
                          "spatial axes")
    try:
        return _probe_once(_meta_copy(model), torch.empty_like(x, device="meta"))
    except RflensError:
        raise
    except Exception:  # some models do not run on meta tensors: probe on real zeros instead
        pass
    try:
        return _probe_once(copy.deepcopy(model), torch.zeros_like(x))
    except RflensError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RflensError(f"the model fails on an input of shape {tuple(x.shape)} "
                          f"({type(exc).__name__}: {first}); check the input shape (too small, "
                          "wrong channel count?)") from exc


# ------------------------------------------------------------------------------------------------
# rarefaction
# ------------------------------------------------------------------------------------------------
def _rarefied_conv(m: nn.Module, f: Ints, d: int) -> nn.Module:
    dil = _tup(m.dilation, d)
    pairs = [(l * fi, r * fi) for (l, r), fi in zip(_conv_pads(m, d), f)]
    m.stride = (1,) * d
    m.dilation = tuple(di * fi for di, fi in zip(dil, f))
    if all(l == r for l, r in pairs):
        m.padding = tuple(l for l, _ in pairs)
        m._reversed_padding_repeated_twice = [p for p in reversed(m.padding) for _ in range(2)]
        return m
    mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
    m.padding, m.padding_mode = (0,) * d, "zeros"
    m._reversed_padding_repeated_twice = [0] * (2 * d)
    return PadThen(pairs, m, mode=mode)


def _rarefied_conv_t(m: nn.Module, f: Ints, d: int) -> nn.Module:
    m.dilation = tuple(di * fi for di, fi in zip(_tup(m.dilation, d), f))
    m.padding = tuple(p * fi for p, fi in zip(_tup(m.padding, d), f))
    return m


def _rarefied_pool(m: nn.Module, f: Ints, d: int) -> nn.Module:
    k = _tup(m.kernel_size, d)
    pads = [p * fi for p, fi in zip(_tup(m.padding, d), f)]
    if isinstance(m, _MAXPOOL):
        dil = tuple(di * fi for di, fi in zip(_tup(m.dilation, d), f))
        return RarefiedMaxPool(k, dil, [(p, p) for p in pads])
    return RarefiedAvgPool(k, f, tuple(pads), bool(m.count_include_pad),
                           getattr(m, "divisor_override", None))


def _rarefied(m: nn.Module, f: Ints, d: int) -> nn.Module:
    """The rarefied replacement of one module that runs at accumulated stride ``f``."""
    _, stride, _ = _window(m, d)
    if set(f) == {1} and set(stride) == {1}:
        return m  # nothing strided before or in it: unchanged
    if isinstance(m, _PAD):
        pairs = [(l * fi, r * fi) for (l, r), fi in zip(_pad_pairs(m.padding, d), f)]
        m.padding = tuple(_to_f_pad(pairs)) + tuple(m.padding[2 * d:])
        return m
    if isinstance(m, _CONV):
        return _rarefied_conv(m, f, d)
    if isinstance(m, _CONV_T):
        return _rarefied_conv_t(m, f, d)
    return _rarefied_pool(m, f, d)


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _carry_hooks(old: nn.Module, new: nn.Module) -> None:
    """Give a replacement module the forward hooks of the one it replaces (e.g. truncation's)."""
    if new is old or any(m is old for m in new.modules()):
        return  # same module, or a wrapper around it: its hooks still fire
    for attr in _HOOK_DICTS:
        if hasattr(old, attr):
            getattr(new, attr).update(getattr(old, attr))


def _replace(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    _carry_hooks(root.get_submodule(name), new)
    if not name:
        return new
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
    return root


def _rarefy(model: nn.Module, example: Tensor | Sequence[int] | None) \
        -> tuple[nn.Module, DenseGeometry]:
    geometry = analyze(model, example)
    d = len(geometry.jump)
    out = copy.deepcopy(model)
    for name, f in geometry.layers.items():
        out = _replace(out, name, _rarefied(out.get_submodule(name), f, d))
    return out, geometry


def rarefy(model: nn.Module, example: Tensor | Sequence[int] | None = None) -> nn.Module:
    """A new model giving the dense output of ``model`` in one pass (filter rarefaction).

    ``model`` is deep-copied, never modified. Each Conv/ConvTranspose/pooling/padding module that
    runs on a tensor at accumulated stride ``F`` (per axis: the product of the strides of the
    rewritten layers between the input and it, found by running a copy on ``example``, see
    :func:`analyze`) becomes, with its own kernel ``k``, stride ``s``, dilation ``d`` and padding
    ``p``: stride 1, dilation ``d*F``, padding ``p*F`` (both sides; ``'same'`` resolved first,
    ``ceil_mode`` dropped), and its output is at stride ``F*s``. Consequently:

    * ``MaxPoolNd`` becomes :class:`RarefiedMaxPool` (explicit ``-inf`` padding ``p*F``);
    * ``AvgPoolNd`` (no dilation in PyTorch) becomes :class:`RarefiedAvgPool`, which keeps
      ``count_include_pad`` and ``divisor_override``;
    * a conv whose rarefied padding is asymmetric is wrapped in :class:`PadThen`;
    * padding modules pad ``p*F``; modules at ``F = 1`` with stride 1 are left as they are.

    Branches are handled per tensor: in a residual block with a stride-2 downsample both branches
    lose their stride and meet again at the same ``F``. Output index ``n`` of the result is the dense
    index of :func:`shift_and_stitch`; they agree exactly on :func:`interior`.
    Raises :class:`RflensError` naming the module for layers with no dense equivalent (adaptive
    pooling, Linear, Flatten, norms over space, upsampling, functional strided ops).
    """
    return _rarefy(model, example)[0]


# ------------------------------------------------------------------------------------------------
# shift-and-stitch
# ------------------------------------------------------------------------------------------------
def shifted_input(x: Tensor, shift: Sequence[int]) -> Tensor:
    """``x`` seen from offset ``shift`` (per spatial axis): crop ``x[..., s0:, s1:]`` and zero-pad at
    the far end back to ``x``'s size."""
    cropped = x[(..., *[slice(s, None) for s in shift])]
    return F.pad(cropped, _to_f_pad([(0, s) for s in shift]))


def stitch(outputs: dict[Ints, Tensor], jump: Sequence[int]) -> Tensor:
    """Interleave per-shift outputs: output ``i`` of shift ``s`` goes to dense ``J*i + s``."""
    first = next(iter(outputs.values()))
    dense = first.new_empty((*first.shape[:2], *[j * m for j, m in zip(jump, first.shape[2:])]))
    for shift, out in outputs.items():
        dense[(..., *[slice(s, None, j) for s, j in zip(shift, jump)])] = out
    return dense


def _jump(model: nn.Module, x: Tensor, jump: int | Sequence[int] | None) -> Ints:
    if jump is None:
        return analyze(model, x).jump
    return _tup(jump, x.ndim - 2)


def shift_and_stitch(model: nn.Module, x: Tensor, jump: int | Sequence[int] | None = None,
                     shifts_per_pass: int = 1) -> Tensor:
    """Dense output of ``model`` on ``x`` from ``prod(J)`` shifted inputs (see the module docstring
    for the shift and placement conventions). ``jump`` defaults to the model's total stride.
    By default each shift is its own forward pass; ``shifts_per_pass > 1`` concatenates that many
    shifted copies along the batch axis per pass (faster on small inputs, more memory)."""
    jumps = _jump(model, x, jump)
    shifts = list(itertools.product(*map(range, jumps)))
    outputs: dict[Ints, Tensor] = {}
    with torch.no_grad():
        for start in range(0, len(shifts), max(1, shifts_per_pass)):
            chunk = shifts[start:start + max(1, shifts_per_pass)]
            ys = model(torch.cat([shifted_input(x, s) for s in chunk])).split(x.shape[0])
            outputs.update(zip(chunk, ys))
    return stitch(outputs, jumps)


def dense_output(model: nn.Module, x: Tensor, method: str = "rarefy") -> Tensor:
    """Dense output of ``model`` on ``x`` by ``method`` ``"rarefy"`` (one pass of :func:`rarefy`'s
    model) or ``"shift"`` (:func:`shift_and_stitch`)."""
    if method == "shift":
        return shift_and_stitch(model, x)
    if method != "rarefy":
        raise RflensError(f"unknown dense method {method!r}; use 'rarefy' or 'shift'")
    with torch.no_grad():
        return rarefy(model, x)(x)


def interior(geometry: DenseGeometry, input_size: Sequence[int], stitched_size: Sequence[int],
             rarefied_size: Sequence[int]) -> list[np.ndarray]:
    """Per axis, the dense indices ``n`` where shift-and-stitch and rarefaction must agree:
    ``n + lo >= n mod J`` (i.e. ``n >= J*ceil(-lo/J)``), ``n + hi <= N - 1`` and
    ``n < min(stitched, rarefied)``: a contiguous, possibly empty, range per axis."""
    masks = []
    for lo, hi, j, size, a, b in zip(geometry.lo, geometry.hi, geometry.jump, input_size,
                                     stitched_size, rarefied_size):
        n = np.arange(min(a, b))
        masks.append(n[(n + lo >= n % j) & (n + hi <= size - 1)])
    return masks


def _select(t: Tensor, index: list[np.ndarray]) -> Tensor:
    for axis, idx in enumerate(index):
        t = t.index_select(2 + axis, torch.as_tensor(idx, dtype=torch.long, device=t.device))
    return t


def _max_abs(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else math.nan


def _timed(fn: Callable[[], Tensor], repeat: int, warmup: bool,
           clock: Callable[[], float] = time.perf_counter) -> tuple[Tensor, float]:
    """Run ``fn`` (after one untimed call if ``warmup``) ``repeat`` times; best time in s."""
    if warmup:
        fn()
    best, out = math.inf, None
    for _ in range(max(1, repeat)):
        start = clock()
        out = fn()
        if out.is_cuda:
            torch.cuda.synchronize()
        best = min(best, clock() - start)
    return out, best


def compare(model: nn.Module, x: Tensor, layer: str | None = None, repeat: int = 1,
            warmup: bool = True, shifts_per_pass: int = 1,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Shift-and-stitch vs rarefaction on ``x`` (batched), optionally truncated at ``layer``.

    Both run on an ``eval()`` copy of ``model`` (BatchNorm batch statistics and dropout would make
    any dense comparison meaningless). Returns a JSON-ready dict: ``jump`` (J per axis), ``shifts``
    (passes shift-and-stitch runs), ``field_lo``/``field_hi`` (dense unit ``n`` sees
    ``[n+lo, n+hi]``), ``interior`` (per axis ``[first, last, count]`` of the compared indices, see
    :func:`interior`), ``compared`` (positions compared per channel/batch item), ``min_input_for_interior`` (the
    smallest input length per axis with a non-empty interior), ``max_abs_diff``
    (on the interior; NaN when it is empty), ``max_abs_diff_overlap`` (on every position both have,
    borders included, for information), ``time_shift_stitch_s`` (all passes plus stitching),
    ``time_rarefied_s`` (one pass), ``time_build_s`` (probing and building the rarefied copy),
    ``ratio`` (= time_shift_stitch_s / time_rarefied_s: how many times faster one rarefied pass is),
    ``passes`` (forward passes shift-and-stitch made: ``shifts / shifts_per_pass`` rounded up),
    shapes and dtype. Times are the best of ``repeat`` runs, after one untimed run if ``warmup``,
    measured with ``clock`` (wall time by default; ``time.process_time`` gives CPU time, steadier
    on a busy machine).
    """
    net = truncate(model, layer)
    net = (copy.deepcopy(model) if net is model else net).eval()
    start = time.perf_counter()
    rare, geometry = _rarefy(net, x)
    build = time.perf_counter() - start
    with torch.no_grad():
        stitched, t_shift = _timed(
            lambda: shift_and_stitch(net, x, geometry.jump, shifts_per_pass), repeat, warmup, clock)
        dense, t_rare = _timed(lambda: rare(x), repeat, warmup, clock)
    index = interior(geometry, x.shape[2:], stitched.shape[2:], dense.shape[2:])
    common = [np.arange(min(a, b)) for a, b in zip(stitched.shape[2:], dense.shape[2:])]
    return {
        "layer": layer, "input_shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", ""),
        "jump": list(geometry.jump), "shifts": geometry.shifts,
        "passes": -(-geometry.shifts // max(1, shifts_per_pass)),
        "field_lo": list(geometry.lo), "field_hi": list(geometry.hi),
        "stitched_shape": list(stitched.shape), "rarefied_shape": list(dense.shape),
        "interior": [[int(i[0]), int(i[-1]), len(i)] if len(i) else [None, None, 0] for i in index],
        "compared": math.prod(len(i) for i in index),
        "min_input_for_interior": list(geometry.min_input),
        "max_abs_diff": _max_abs(_select(stitched, index), _select(dense, index)),
        "max_abs_diff_overlap": _max_abs(_select(stitched, common), _select(dense, common)),
        "time_shift_stitch_s": t_shift, "time_rarefied_s": t_rare, "time_build_s": build,
        "ratio": t_shift / t_rare if t_rare > 0 else math.inf,
    }
