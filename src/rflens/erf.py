"""Gradient effective receptive fields (Luo et al., NIPS 2016; Ding et al., CVPR 2022).

The ERF of a unit is the map ``|dy/dx|`` of how much each input pixel influences it (see
docs/receptive-fields.md, "Effective receptive field"). rflens computes, per input sample ``x``:

1. the chosen layer's output ``y`` (the forward stops at that layer);
2. the scalar ``s = sum_c y[c, unit]`` (``readout="sum"``, Luo: output gradient 1 at the unit, 0
   elsewhere) or ``sum_c relu(y[c, unit])`` (``readout="relu"``, RepLKNet's code);
3. ``g = ds/dx`` for every sample of a batch in one backward pass;
4. ``sum over input channels`` of ``|g|`` (``reduce="abs"``), ``relu(g)`` (``"relu"``, RepLKNet)
   or ``g**2`` (``"square"``), in float64;

and averages step 4 over the samples: that mean is ``ERFResult.raw`` (float64, input pixels).

Conventions: the *centre unit* is index ``n // 2`` on each spatial axis of the layer output (for even
``n`` the second of the two middle units, as RepLKNet's ``out_size // 2``). Coordinates are 0-based
input pixels. The layer is a module name from ``model.named_modules()``; its output is the output
of its *first* call in the forward pass. The model is evaluated in eval mode.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import difflib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from rflens.errors import RflensError
from rflens.inputs import InputSource, resolve_inputs, sample_seed
from rflens.metrics import ERFMetrics, compute_metrics

__all__ = ["effective_receptive_field", "ERFResult", "TRFInfo", "ERFWarning", "PRESETS",
           "find_layer", "trf_of_unit", "linear_mode", "uniformize"]

SCHEMA_VERSION = 1
WEIGHTS = ("as-is", "random", "uniform")
ACTIVATIONS = ("as-is", "linear")
REDUCE = ("abs", "relu", "square")
READOUT = ("sum", "relu")
OUTSIDE_WARN = 0.01

DEFAULTS: dict[str, Any] = {"inputs": "noise", "samples": 64, "batch_size": 16, "weights": "as-is",
                            "activations": "as-is", "reduce": "abs", "readout": "sum",
                            "input_shape": None}
PRESETS: dict[str, dict[str, Any]] = {
    # Luo et al. 2016: random inputs, random weights (a fresh draw per sample), the output gradient
    # set to 1 at the centre unit, |gradient|, averaged over 20 runs.
    "luo2016": {"inputs": "noise", "samples": 20, "weights": "random", "activations": "as-is",
                "reduce": "abs", "readout": "sum"},
    # Ding et al. 2022 (RepLKNet, erf/visualize_erf.py): 50 real images resized to 1024x1024, the
    # model's own weights, relu(output) summed at the centre, relu(gradient) summed over channels,
    # averaged per image; area ratios on log10(x + 1). rflens uses the bundled sample photos (or a
    # folder you pass) instead of ImageNet-val.
    "replknet2022": {"inputs": "samples", "samples": 50, "input_shape": (3, 1024, 1024),
                     "weights": "as-is", "activations": "as-is", "reduce": "relu", "readout": "relu",
                     "batch_size": 4},
}


class ERFWarning(UserWarning):
    """Something about an ERF measurement the user should know (input too small, samples capped)."""


# --- result ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TRFInfo:
    """The theoretical field of the probed unit, from the TRF engine (per axis, input pixels).

    ``box`` is inclusive and unclipped (may reach into padding); ``size`` is ``hi - lo + 1``;
    ``center`` is ``(lo + hi) / 2``; ``jump`` is the layer's effective stride.
    """

    box: tuple[tuple[int, int], ...]
    size: tuple[int, ...]
    center: tuple[float, ...]
    jump: tuple[float, ...]
    is_global: bool = False

    def to_dict(self) -> dict:
        return {"box": [list(b) for b in self.box], "size": list(self.size),
                "center": list(self.center), "jump": list(self.jump), "global": self.is_global}


@dataclass(frozen=True, eq=False)
class ERFResult:
    """An ERF measurement. ``raw`` is the per-sample mean of the reduced input gradient (float64,
    input pixels, unnormalised); ``normalized`` the same map scaled to sum 1; ``trf`` the theoretical
    field of the probed ``unit`` (None when the TRF engine could not give it)."""

    model: str
    layer: str | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    unit: tuple[int, ...]
    samples: int
    method: str
    settings: dict
    raw: np.ndarray
    trf: TRFInfo | None
    metrics: ERFMetrics
    warnings: tuple[str, ...] = ()
    samples_zero: int = 0
    samples_skipped: int = 0

    @property
    def normalized(self) -> np.ndarray:
        """``raw`` scaled to sum 1 (each pixel's share of the total influence)."""
        total = self.raw.sum()
        return self.raw / total if total > 0 else np.zeros_like(self.raw)

    def to_dict(self, include_map: bool = False) -> dict:
        """JSON-ready dict, ``schema_version`` 1; NaN metrics become None."""
        out = {"schema_version": SCHEMA_VERSION, "method": self.method, "model": self.model,
               "layer": self.layer, "input_shape": list(self.input_shape),
               "output_shape": list(self.output_shape), "unit": list(self.unit),
               "samples": self.samples, "samples_zero_gradient": self.samples_zero,
               "samples_skipped_nonfinite": self.samples_skipped, "settings": _jsonable(self.settings),
               "trf": self.trf.to_dict() if self.trf else None, "metrics": self.metrics.to_dict(),
               "warnings": list(self.warnings)}
        if include_map:
            out["raw"] = self.raw.tolist()
        return out

    def to_json(self, indent: int | None = 2, include_map: bool = False) -> str:
        return json.dumps(self.to_dict(include_map), indent=indent)

    def save(self, path: str | os.PathLike) -> None:
        """Save ``raw`` as a float64 ``.npy`` file."""
        np.save(path, self.raw)

    def plot(self, path: str | os.PathLike | io.BytesIO, log: bool = False) -> None:
        """Write the heat map of :func:`rflens.plot.erf_map` (TRF box drawn) to ``path``."""
        from rflens import plot

        plot.save(plot.erf_map(self, log=log), path)

    def summary_rows(self) -> list[tuple[str, str]]:
        m = self.metrics
        rows = [("model", self.model), ("layer", str(self.layer)),
                ("input", "x".join(map(str, self.input_shape))), ("unit", str(self.unit)),
                ("samples", str(self.samples)), ("method", self.method)]
        if self.trf:
            rows += [("TRF box (unclipped)", str(self.trf.box)), ("TRF size", _fmt_axes(self.trf.size))]
        rows += [("Gaussian sigma (px)", _fmt_axes(m.sigma)), ("Gaussian R^2", _fmt_axes(m.r2)),
                 ("std (px)", _fmt_axes(m.std))]
        rows += [(f"mass radius {p:.0%} (px)", _fmt(v)) for p, v in m.mass_radius.items()]
        rows += [("95% extent (px)", _fmt_axes(m.extent[0.95])),
                 ("ERF/TRF ratio (95% extent / TRF size)", _fmt_axes(m.erf_trf_ratio))]
        rows += [(f"area ratio t={t:.0%} raw / log10", f"{_fmt(m.hca_raw[t])} / {_fmt(m.hca_log10[t])}")
                 for t in m.hca_raw]
        rows += [(f"mass outside input ({m.outside_method})", _fmt(m.outside_fraction)),
                 ("TRF area outside input", _fmt(m.trf_outside_fraction))]
        return rows

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title="Effective receptive field", show_header=True)
        table.add_column("quantity")
        table.add_column("value")
        for key, value in self.summary_rows():
            table.add_row(key, value)
        return table

    def _repr_html_(self) -> str:
        import html

        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                       for k, v in self.summary_rows())
        buf = io.BytesIO()
        self.plot(buf)
        png = base64.b64encode(buf.getvalue()).decode("ascii")
        warn = "".join(f"<p>warning: {html.escape(w)}</p>" for w in self.warnings)
        return (f"<div><table>{rows}</table>{warn}"
                f"<img alt='ERF heat map' src='data:image/png;base64,{png}'/></div>")


def _fmt(v: float) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{v:.4g}"


def _fmt_axes(values: tuple) -> str:
    return " x ".join(_fmt(float(v)) for v in values)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value if not isinstance(value, float) or math.isfinite(value) else None
    return str(value)


# --- model preparation ----------------------------------------------------------------------------

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


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


@torch.no_grad()
def uniformize(model: nn.Module) -> nn.Module:
    """Set every weight of ``model`` (in place) to the same value within its layer: each conv / linear
    output is the *mean* of its inputs (weight ``1/fan_in``; a transposed conv ``stride/fan_in``),
    biases are 0, normalisation layers are the identity (BatchNorm statistics 0/1, affine 1/0), and
    any other parameter (layer scales, ...) is 1. Every layer then preserves mass, so a plain chain's
    ERF is the normalised path count and residual merges weigh both paths equally."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.running_mean.zero_()
            module.running_var.fill_(1.0 - module.eps)
        for name, p in module.named_parameters(recurse=False):
            if "bias" in name:
                p.zero_()
            elif isinstance(module, nn.modules.conv._ConvTransposeNd) and name == "weight":
                taps = math.prod(p.shape[2:]) / math.prod(module.stride)
                p.fill_(1.0 / (p.shape[0] / module.groups * taps))
            elif isinstance(module, nn.modules.conv._ConvNd) and name == "weight":
                p.fill_(1.0 / (p.shape[1] * math.prod(p.shape[2:])))
            elif isinstance(module, nn.Linear) and name == "weight":
                p.fill_(1.0 / p.shape[1])
            else:
                p.fill_(1.0)
    return model


@torch.no_grad()
def _redraw(model: nn.Module, seed: int) -> None:
    """Re-initialise every module that has ``reset_parameters`` with the global RNG seeded by
    ``seed`` (PyTorch's default initialisers)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def _load_state_dict(model: nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise RflensError(f"--weights '{path}' is neither as-is, random, uniform nor an existing "
                          "state-dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RflensError(f"cannot load weights from '{path}' with weights_only=True: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}; save a plain "
                          "state_dict (torch.save(model.state_dict(), path))") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise RflensError(f"'{path}' holds a {type(state).__name__}, not a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = _state_mismatch(model, state)
    if missing or unexpected:
        raise RflensError(f"weights '{path}' do not fit the model: {len(missing)} missing key(s) "
                          f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); "
                          "check that file and model match")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RflensError(f"weights '{path}' do not fit the model: {str(exc).splitlines()[-1][:200]}") from exc


def _state_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)


# --- layer capture ---------------------------------------------------------------------------------

class _Stop(Exception):
    def __init__(self, output: Any) -> None:
        super().__init__("layer reached")
        self.output = output


def find_layer(model: nn.Module, layer: str | None) -> nn.Module | None:
    """The module called ``layer`` (a name from ``named_modules()``); None means the model output."""
    if layer is None or layer == "":
        return None
    modules = dict(model.named_modules())
    if layer in modules:
        return modules[layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(layer, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    tops = ", ".join(n for n in names if "." not in n)[:200]
    raise RflensError(f"no layer '{layer}' in the model{hint} (top-level layers: {tops})")


def _first_tensor(output: Any, layer: str | None) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    if isinstance(output, dict):
        for item in output.values():
            if isinstance(item, torch.Tensor):
                return item
    raise RflensError(f"layer '{layer}' returns a {type(output).__name__} without tensors; pick a "
                      "layer that outputs a feature map")


def forward_to_layer(model: nn.Module, layer_module: nn.Module | None, x: torch.Tensor,
                     call: Callable | None = None) -> torch.Tensor:
    """Run ``model`` on ``x`` up to the first output of ``layer_module`` (the whole model if None)."""
    run = call or model
    if layer_module is None:
        return _first_tensor(run(x), None)

    def hook(module, args, output):
        raise _Stop(output)

    handle = layer_module.register_forward_hook(hook)
    try:
        run(x)
    except _Stop as stop:
        return _first_tensor(stop.output, None)
    finally:
        handle.remove()
    raise RflensError("the chosen layer is never called in the model's forward pass; pick another "
                      "layer (rflens trf lists them)")


# --- TRF of the probed unit -------------------------------------------------------------------------

def trf_of_unit(model: nn.Module, input_shape: tuple[int, ...], layer: str | None,
                unit: tuple[int, ...]) -> tuple[TRFInfo | None, str | None]:
    """Ask the TRF engine (``rflens.receptive_field``) for the probed unit's field.

    Returns ``(info, None)`` or ``(None, reason)`` when the engine is missing or cannot handle the
    model; the ERF is still measured, only TRF-relative numbers become NaN."""
    import rflens

    engine = getattr(rflens, "receptive_field", None)
    if engine is None:
        try:
            from rflens.trf import receptive_field as engine  # type: ignore[no-redef]
        except Exception:
            return None, "the TRF engine is not available; TRF-relative metrics are NaN"
    try:
        first = next((p for p in model.parameters() if p.is_floating_point()), None)
        if first is not None and first.dtype != torch.float32:  # the engine's default input is float32
            rf = engine(model, example_inputs=torch.empty((1, *input_shape), dtype=first.dtype,
                                                          device="meta"))
        else:
            rf = engine(model, input_shape=tuple(input_shape))
        name = layer if layer else list(rf.names)[-1]
        if name not in rf.names:
            return None, f"the TRF engine has no layer '{name}'; TRF-relative metrics are NaN"
        field_ = rf[name]
        if not getattr(field_, "known", True):
            return None, f"the TRF engine does not know the field of '{name}'; TRF-relative metrics are NaN"
        box = tuple((int(lo), int(hi)) for lo, hi in rf.box(name, tuple(unit), clip=False))
        jump = tuple(float(j) for j in _tuple(field_.jump))
        if len(jump) == 1 and len(box) > 1:
            jump = jump * len(box)
        return TRFInfo(box=box, size=tuple(hi - lo + 1 for lo, hi in box),
                       center=tuple((lo + hi) / 2 for lo, hi in box), jump=jump,
                       is_global=bool(getattr(field_, "is_global", False))), None
    except Exception as exc:  # the ERF does not depend on the TRF engine succeeding
        return None, f"TRF engine failed ({type(exc).__name__}: {str(exc)[:160]}); TRF-relative metrics are NaN"


# --- settings ---------------------------------------------------------------------------------------

@dataclass
class _Settings:
    inputs: Any
    samples: int
    batch_size: int
    weights: str
    activations: str
    reduce: str
    readout: str
    input_shape: Any
    preset: str | None


def _settings(preset: str | None, given: dict[str, Any]) -> _Settings:
    values = dict(DEFAULTS)
    if preset is not None:
        if preset not in PRESETS:
            raise RflensError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update({k: v for k, v in given.items() if v is not None})
    s = _Settings(preset=preset, **values)
    _check_choice("activations", s.activations, ACTIVATIONS)
    _check_choice("reduce", s.reduce, REDUCE)
    _check_choice("readout", s.readout, READOUT)
    if not isinstance(s.weights, (str, os.PathLike)):
        raise RflensError("weights must be 'as-is', 'random', 'uniform' or a state-dict file path")
    s.weights = os.fspath(s.weights)
    for name in ("samples", "batch_size"):
        value = getattr(s, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise RflensError(f"{name} must be a positive integer, not {value!r}")
    return s


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RflensError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _resolve_model(model: Any) -> tuple[nn.Module, dict, str]:
    if isinstance(model, nn.Module):
        return model, {}, type(model).__name__
    if isinstance(model, str):
        from rflens.models import load_model

        net, meta = load_model(model)
        return net, meta, model
    raise RflensError(f"model must be an nn.Module or a MODEL string, not {type(model).__name__}")


def resolve_input_shape(input_shape: Any, meta: dict, name: str) -> tuple[int, ...]:
    """``input_shape`` as a tuple ``(C, *spatial)``: given (tuple or ``"3x224x224"``), else the
    model's own, else rflens' default for that MODEL string."""
    if isinstance(input_shape, str):
        from rflens.models import parse_input

        return parse_input(input_shape)
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) < 2 or any(s < 1 for s in shape):
            raise RflensError(f"input_shape {input_shape!r} must be (C, *spatial) with positive sizes, "
                              "e.g. (3, 224, 224)")
        return shape
    if meta.get("input_shape"):
        return tuple(int(s) for s in meta["input_shape"])
    if meta:
        from rflens.models import default_input_shape

        return tuple(default_input_shape(name))
    raise RflensError("input_shape is needed for a plain nn.Module, e.g. input_shape=(3, 224, 224)")


def _resolve_dtype(dtype: Any, settings: _Settings) -> torch.dtype | None:
    """None means automatic: float64 for the uniform / linear (analytic-comparison) settings, float32
    otherwise with a switch to float64 when float32 gradients come near underflow."""
    if dtype is None or dtype == "auto":
        if settings.weights == "uniform" or settings.activations == "linear":
            return torch.float64
        return None
    table = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
             "bfloat16": torch.bfloat16}
    if isinstance(dtype, str):
        if dtype not in table:
            raise RflensError(f"dtype '{dtype}' is not one of auto, {', '.join(table)}")
        return table[dtype]
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise RflensError(f"dtype {dtype!r} is not a floating torch dtype")


# --- the measurement ------------------------------------------------------------------------------

class _Probe:
    """The model prepared for a run (a private copy whenever anything must change), and the step
    that turns a batch of inputs into a batch of reduced ERF maps with one backward pass."""

    def __init__(self, model: nn.Module, layer: str | None, settings: _Settings,
                 dtype: torch.dtype | None, device: torch.device, seed: int, unit: Any) -> None:
        self.original = model
        self.requested_unit = unit
        self.layer = layer
        self.settings = settings
        self.seed = seed
        self.device = device
        model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        self.dtype = dtype or (model_dtype if model_dtype in (torch.float32, torch.float64) else torch.float32)
        self.auto_dtype = dtype is None
        self.model: nn.Module | None = None
        self.notes: list[str] = []
        self.unit: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.use_vmap = settings.weights == "random"
        self._modes: dict[nn.Module, bool] = {}
        self._grads: dict[nn.Parameter, bool] = {}
        self._prepare()

    # model preparation --------------------------------------------------------------------------
    def _needs_copy(self) -> bool:
        s = self.settings
        on = next(iter(self.original.parameters()), None)
        same_place = on is None or (on.dtype == self.dtype and on.device == self.device)
        return s.weights != "as-is" or not same_place

    def _prepare(self) -> None:
        if self._needs_copy():
            model = copy.deepcopy(self.original).to(device=self.device, dtype=self.dtype)
        else:
            model = self.original
            self._modes = {m: m.training for m in model.modules()}
            self._grads = {p: p.requires_grad for p in model.parameters()}
        model.eval()
        for p in model.parameters():  # only input gradients are needed: save nothing for weights
            p.requires_grad_(False)
        weights = self.settings.weights
        if weights == "uniform":
            uniformize(model)
        elif weights == "random":
            _redraw(model, sample_seed(self.seed, 0, stream=1))
        elif weights != "as-is":
            _load_state_dict(model, weights)
        self.model = model
        self.layer_module = find_layer(model, self.layer)
        if weights == "random":
            self._template = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)

    def switch_to_float64(self, reason: str) -> None:
        self.restore()
        self.dtype = torch.float64
        self.auto_dtype = False
        self.notes.append(reason)
        self._prepare()

    def restore(self) -> None:
        """Give the user's model back its train/eval flags and requires_grad flags."""
        for module, mode in self._modes.items():
            module.train(mode)
        for p, flag in self._grads.items():
            p.requires_grad_(flag)
        self._modes, self._grads = {}, {}

    # one batch -----------------------------------------------------------------------------------
    def maps(self, x: torch.Tensor, first_index: int) -> torch.Tensor:
        """Reduced ERF maps ``(B, *spatial)`` in float64 on the CPU for the samples ``x``."""
        x = x.to(device=self.device, dtype=self.dtype).requires_grad_(True)
        context = linear_mode() if self.settings.activations == "linear" else contextlib.nullcontext()
        with context, torch.enable_grad():
            y = self._forward(x, first_index)
            self._check_output(y, x)
            picked = y[(slice(None), slice(None)) + self.unit]
            if self.settings.readout == "relu":
                picked = F.relu(picked)
            (grad,) = torch.autograd.grad(picked.sum(), x, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(x)
        maps = _reduce(grad.detach().to(torch.float64), self.settings.reduce)
        self.underflow_risk = (self.auto_dtype and grad.dtype == torch.float32
                               and _underflow_risk(maps, self.settings.reduce))
        return maps.cpu()

    def _forward(self, x: torch.Tensor, first_index: int) -> torch.Tensor:
        if self.settings.weights == "random" and not self.use_vmap:
            self._load_draw(first_index)
        if not self.use_vmap:
            return forward_to_layer(self.model, self.layer_module, x)
        try:
            return self._vmapped_forward(x, first_index)
        except RflensError:
            raise
        except Exception as exc:  # some ops do not vmap: draw the weights per sample instead
            self.use_vmap = False
            self.notes.append(f"per-sample random weights could not be batched ({type(exc).__name__}); "
                              "ran one sample at a time")
            raise _Retry from exc

    def _draw(self, index: int) -> dict[str, torch.Tensor]:
        """The parameters of random draw ``index`` (drawn on the CPU, so devices agree)."""
        _redraw(self._template, sample_seed(self.seed, index, stream=1))
        return {n: p.detach().clone() for n, p in self._template.named_parameters()}

    @torch.no_grad()
    def _load_draw(self, index: int) -> None:
        draw = self._draw(index)
        for n, p in self.model.named_parameters():
            p.copy_(draw[n])

    def _vmapped_forward(self, x: torch.Tensor, first_index: int) -> torch.Tensor:
        from torch.func import functional_call, vmap

        draws = [self._draw(first_index + i) for i in range(x.shape[0])]
        params = {n: torch.stack([d[n] for d in draws]).to(device=self.device, dtype=self.dtype)
                  for n in draws[0]}
        buffers = dict(self.model.named_buffers())

        def one(p: dict, sample: torch.Tensor) -> torch.Tensor:
            call = lambda inp: functional_call(self.model, (p, buffers), (inp,))  # noqa: E731
            return forward_to_layer(self.model, self.layer_module, sample.unsqueeze(0), call)[0]

        return vmap(one)(params, x)

    def _check_output(self, y: torch.Tensor, x: torch.Tensor) -> None:
        if y.dim() < 3:
            raise RflensError(f"layer '{self.layer}' outputs shape {tuple(y.shape)} with no spatial "
                              "axes; pick a convolutional layer before global pooling / flatten")
        shape = tuple(y.shape[1:])
        if self.output_shape is None:
            self.output_shape = shape
            self.unit = _resolve_unit(self.requested_unit, shape[1:], self.layer)
        if not y.requires_grad:
            raise RflensError(f"the output of layer '{self.layer}' does not depend on the input "
                              "through autograd (detached or computed under no_grad)")


class _Retry(Exception):
    """Recompute the current chunk (the probe changed how it runs)."""


def _reduce(grad: torch.Tensor, how: str) -> torch.Tensor:
    if how == "abs":
        return grad.abs().sum(dim=1)
    if how == "relu":
        return F.relu(grad).sum(dim=1)
    return (grad * grad).sum(dim=1)


def _resolve_unit(unit: Any, spatial: tuple[int, ...], layer: str | None) -> tuple[int, ...]:
    if unit is None or unit == "center" or unit == "centre":
        return tuple(n // 2 for n in spatial)
    if isinstance(unit, str):
        try:
            unit = tuple(int(v) for v in unit.replace("x", ",").split(","))
        except ValueError:
            raise RflensError(f"unit '{unit}' must be 'center' or indices like 3,4") from None
    unit = tuple(int(v) for v in _tuple(unit))
    if len(unit) != len(spatial) or any(not 0 <= u < n for u, n in zip(unit, spatial)):
        raise RflensError(f"unit {unit} is outside the output of layer '{layer}' (spatial "
                          f"{'x'.join(map(str, spatial))}); give {len(spatial)} indices in range or 'center'")
    return unit


def _underflow_risk(maps: torch.Tensor, reduce: str) -> bool:
    """True when a float32 run's reduced maps hold values within 2**10 of float32's smallest normal
    number (squared for ``reduce="square"``): deeper tails may have underflowed to 0. (An all-zero
    gradient is a dead unit, not underflow.)"""
    limit = torch.finfo(torch.float32).tiny * 2**10
    if reduce == "square":
        limit = limit * limit
    positive = maps[maps > 0]
    return positive.numel() > 0 and float(positive.min()) < limit


def memory_budget(device: torch.device, max_memory: int | None = None) -> int:
    """Bytes one backward pass may use: ``max_memory`` if given, else half the free GPU memory or
    30 % of the available RAM (at most 8 GiB)."""
    return _memory_budget(device, max_memory)


def _memory_budget(device: torch.device, max_memory: int | None) -> int:
    if max_memory:
        return int(max_memory)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    available = _available_ram()
    return int(min(8 * 2**30, 0.3 * available)) if available else 4 * 2**30


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def _count_saved_bytes(params: set[int]):
    """Count the bytes autograd saves for backward (activations; parameters excluded)."""
    seen: set[int] = set()
    counter = {"bytes": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in seen and ptr not in params:
                seen.add(ptr)
                counter["bytes"] += storage.nbytes()
        except Exception:
            counter["bytes"] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield counter


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@dataclass
class _Accumulator:
    total: np.ndarray | None = None
    used: int = 0
    zero: int = 0
    skipped: int = 0
    exhausted: bool = False
    largest_pass: int = 0
    bad_indices: list[int] = field(default_factory=list)

    def add(self, maps: torch.Tensor, first_index: int) -> None:
        self.largest_pass = max(self.largest_pass, int(maps.shape[0]))
        arr = maps.numpy()
        flat = arr.reshape(arr.shape[0], -1)
        finite = np.isfinite(flat).all(axis=1)
        for i in np.nonzero(~finite)[0]:
            self.bad_indices.append(first_index + int(i))
        good = arr[finite]
        self.skipped += int((~finite).sum())
        self.zero += int((flat[finite].max(axis=1, initial=0.0) == 0).sum())
        part = good.sum(axis=0)
        self.total = part if self.total is None else self.total + part
        self.used += int(good.shape[0])


def saved_bytes(model: nn.Module, layer_module: nn.Module | None, shape: tuple[int, ...],
                dtype: torch.dtype, batch: int = 1) -> float | None:
    """Bytes autograd would save for backward from the input to ``layer_module`` for ``batch``
    samples of ``shape``, from a shape-only (meta device) forward pass; None when the model cannot
    run on meta tensors."""
    from torch.func import functional_call

    try:
        state = {n: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
                 for n, t in list(model.named_parameters()) + list(model.named_buffers())}
        counter = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            counter[0] += t.numel() * t.element_size()
            return t

        x = torch.empty((batch, *shape), device="meta", dtype=dtype, requires_grad=True)
        call = lambda inp: functional_call(model, state, (inp,))  # noqa: E731
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            forward_to_layer(model, layer_module, x, call)
        return float(counter[0])
    except Exception:
        return None


def _estimate_sample_bytes(probe: _Probe, shape: tuple[int, ...]) -> float | None:
    """Bytes saved per sample: :func:`saved_bytes` at batch 2 minus batch 1 (parameters cancel)."""
    one = saved_bytes(probe.model, probe.layer_module, shape, probe.dtype, 1)
    two = saved_bytes(probe.model, probe.layer_module, shape, probe.dtype, 2)
    if one is None or two is None:
        return None
    return max(two - one, 1.0)


def _chunk_size(per_sample: float, budget: int, batch_size: int, probe: _Probe) -> int:
    """Samples per backward pass: the batch size, fewer when twice the saved activations (saved
    tensors plus the gradients flowing back) would exceed the memory budget."""
    if probe.settings.weights == "random" and not probe.use_vmap:
        return 1
    return int(max(1, min(batch_size, budget // (2 * per_sample))))


def _run(probe: _Probe, source: InputSource, shape: tuple[int, ...], samples: int, batch_size: int,
         progress: bool, nonfinite: str, max_memory: int | None) -> _Accumulator:
    acc = _Accumulator()
    stream = source.samples(shape)
    budget = _memory_budget(probe.device, max_memory)
    per_sample = _estimate_sample_bytes(probe, shape)
    # without an estimate, the first sample runs alone and its saved tensors are counted
    chunk = _chunk_size(per_sample, budget, batch_size, probe) if per_sample else 1
    done = 0
    pending: list[torch.Tensor] = []
    with _progress_bar(progress and samples > batch_size, samples) as advance:
        while done < samples:
            while len(pending) < min(chunk, samples - done) and not acc.exhausted:
                try:
                    pending.append(next(stream))
                except StopIteration:
                    acc.exhausted = True
            if not pending:
                break
            x = torch.stack(pending[:chunk])
            params = {p.untyped_storage().data_ptr() for p in probe.model.parameters()}
            try:
                with _count_saved_bytes(params) if per_sample is None else contextlib.nullcontext({}) as saved:
                    maps = probe.maps(x, done)
            except _Retry:
                chunk = 1
                continue
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                if chunk == 1:
                    raise RflensError(f"one sample of shape {'x'.join(map(str, shape))} does not fit in "
                                      "memory; use a smaller input") from exc
                chunk = max(1, chunk // 2)
                continue
            if probe.underflow_risk:
                probe.switch_to_float64(f"switched to float64 at sample {done}: float32 gradients "
                                        "came near underflow")
                continue
            acc.add(maps, done)
            done += x.shape[0]
            del pending[:x.shape[0]]
            advance(x.shape[0])
            if per_sample is None:
                per_sample = max(saved["bytes"] / x.shape[0], 1.0)
                chunk = _chunk_size(per_sample, budget, batch_size, probe)
    if acc.skipped and nonfinite == "raise":
        raise RflensError(f"{acc.skipped} of {acc.used + acc.skipped} sample(s) gave NaN/Inf input "
                          f"gradients at layer '{probe.layer}' (first: sample {acc.bad_indices[0]}); "
                          "try dtype='float64', check the model and inputs, or pass nonfinite='skip' "
                          "to leave them out")
    return acc


@contextlib.contextmanager
def _progress_bar(show: bool, total: int):
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("ERF"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("samples", total=total)
        yield lambda n: bar.advance(task, n)


def effective_receptive_field(model: nn.Module | str, layer: str | None = None,
                              input_shape: tuple[int, ...] | str | None = None, *,
                              inputs: Any = None, samples: int | None = None,
                              batch_size: int | None = None, weights: str | None = None,
                              activations: str | None = None, reduce: str | None = None,
                              readout: str | None = None, unit: Any = "center", dtype: Any = None,
                              seed: int = 0, progress: bool = True, device: Any = None,
                              preset: str | None = None, nonfinite: str = "raise",
                              max_memory: int | None = None) -> ERFResult:
    """Measure the gradient ERF of one unit of ``layer`` (see the module docstring for the procedure).

    - ``model``: an ``nn.Module`` or a MODEL string (``torchvision:NAME``, ``timm:NAME``,
      ``file.py:factory``, a spec file). ``layer``: a module name (None: the model output).
    - ``input_shape``: ``(C, *spatial)`` in pixels or ``"3x224x224"``; default the model's own.
    - ``inputs``: ``"noise"`` (default), ``"samples"``, a folder, a tensor or an iterable
      (:mod:`rflens.inputs`). ``samples`` (default 64) are averaged; ``batch_size`` (default 16) is
      the most samples per backward pass (fewer when the memory budget ``max_memory`` in bytes,
      default 30 % of free RAM up to 8 GiB or half of free GPU memory, says so).
    - ``weights``: ``"as-is"``, ``"random"`` (a fresh draw of PyTorch's default initialisation per
      sample, Luo's random-weight setting), ``"uniform"`` (:func:`uniformize`) or a state-dict file
      (loaded with ``weights_only=True``). ``activations``: ``"as-is"`` or ``"linear"``
      (:class:`_LinearMode`). ``reduce`` / ``readout``: see the module docstring.
    - ``unit``: ``"center"`` (index ``n // 2`` per axis) or a tuple of output indices.
    - ``dtype``: None/"auto" (float64 for uniform or linear runs; float32 otherwise, switching to
      float64 when gradients near float32 underflow), or a torch dtype / its name.
    - ``preset``: ``"luo2016"`` or ``"replknet2022"`` (:data:`PRESETS`); explicit arguments win.
    - ``nonfinite``: ``"raise"`` (default) or ``"skip"`` samples whose gradient has NaN/Inf; skipped
      samples are counted in the result and a warning, never averaged in.
    """
    settings = _settings(preset, {"inputs": inputs, "samples": samples, "batch_size": batch_size,
                                  "weights": weights, "activations": activations, "reduce": reduce,
                                  "readout": readout, "input_shape": input_shape})
    if nonfinite not in ("raise", "skip"):
        raise RflensError(f"nonfinite={nonfinite!r} is not one of raise, skip")
    net, meta, name = _resolve_model(model)
    shape = resolve_input_shape(settings.input_shape, meta, name)
    find_layer(net, layer)
    source = resolve_inputs(settings.inputs, shape, seed)
    notes: list[str] = []
    count = settings.samples
    if source.count is not None and source.count < count:
        if samples is not None or preset is not None:
            notes.append(f"asked for {count} samples but the inputs ({source.description}) hold "
                         f"{source.count}; used {source.count} (pass a folder with more images)")
        count = source.count
    dev = torch.device(device) if device is not None else _model_device(net)
    probe = _Probe(net, layer, settings, _resolve_dtype(dtype, settings), dev, seed, unit)
    try:
        acc = _run(probe, source, shape, count, settings.batch_size, progress, nonfinite, max_memory)
    finally:
        probe.restore()
    if acc.used + acc.skipped == 0:
        raise RflensError(f"the inputs ({source.description}) gave no samples")
    if acc.used == 0:
        raise RflensError(f"no usable samples: all {acc.skipped} gave NaN/Inf gradients")
    raw = acc.total / acc.used
    if acc.exhausted and samples is not None and acc.used + acc.skipped < samples:
        notes.append(f"asked for {samples} samples but the inputs ran out after "
                     f"{acc.used + acc.skipped}")
    notes += probe.notes
    if acc.skipped:
        notes.append(f"left out {acc.skipped} sample(s) with NaN/Inf gradients "
                     f"(first: sample {acc.bad_indices[0]})")
    if acc.zero:
        notes.append(f"{acc.zero} sample(s) had an all-zero gradient (dead unit for that input?)")
    trf, why = trf_of_unit(net, shape, layer, probe.unit)
    if why:
        notes.append(why)
    used_settings = {"inputs": source.description, "weights": settings.weights,
                     "activations": settings.activations, "reduce": settings.reduce,
                     "readout": settings.readout, "batch_size": settings.batch_size,
                     "largest_pass": acc.largest_pass,
                     "dtype": str(probe.dtype).removeprefix("torch."), "seed": seed,
                     "preset": preset, "device": str(dev)}
    return build_result(raw, model=name, layer=layer, input_shape=shape,
                        output_shape=probe.output_shape, unit=probe.unit, samples=acc.used,
                        method="gradient", settings=used_settings, trf=trf, notes=notes,
                        samples_zero=acc.zero, samples_skipped=acc.skipped)


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def build_result(raw: np.ndarray, *, model: str, layer: str | None, input_shape: tuple[int, ...],
                 output_shape: tuple[int, ...], unit: tuple[int, ...], samples: int, method: str,
                 settings: dict, trf: TRFInfo | None, notes: list[str],
                 outside_fraction: float | None = None, outside_method: str = "gaussian-tail estimate",
                 samples_zero: int = 0, samples_skipped: int = 0) -> ERFResult:
    """Compute the metrics of ``raw`` against ``trf`` and assemble an :class:`ERFResult`, emitting
    every note as an :class:`ERFWarning` (and an input-too-small warning when it applies)."""
    metrics = compute_metrics(raw, trf_size=trf.size if trf else None, trf_box=trf.box if trf else None,
                              center=trf.center if trf else None, outside_fraction=outside_fraction,
                              outside_method=outside_method)
    notes = list(notes)
    if metrics.outside_fraction > OUTSIDE_WARN:
        where = f"layer '{layer}'" if layer else "the model output"
        notes.append(f"the input {'x'.join(map(str, input_shape))} is too small for the field of "
                     f"{where}: about {metrics.outside_fraction:.1%} of the ERF mass falls outside it "
                     f"({metrics.outside_method}); use a larger input")
    for note in notes:
        warnings.warn(note, ERFWarning, stacklevel=3)
    return ERFResult(model=model, layer=layer, input_shape=tuple(input_shape),
                     output_shape=tuple(output_shape), unit=tuple(unit), samples=samples, method=method,
                     settings=settings, raw=np.asarray(raw, dtype=np.float64), trf=trf, metrics=metrics,
                     warnings=tuple(notes), samples_zero=samples_zero, samples_skipped=samples_skipped)
