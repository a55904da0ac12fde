"""Layer spec files: a chain of convolutions, pools, resamplers and activations, written as YAML or
JSON, built into a real ``nn.Sequential`` whose children are named after the spec.

Example (YAML)::

    name: two-convs            # optional
    input: [1, 64, 64]         # [C, L] 1-D, [C, H, W] 2-D or [C, D, H, W] 3-D, no batch axis
    layers:
      - {op: conv, kernel: 3, stride: 2}
      - {op: conv, kernel: 2, channels: 8, name: head}

Conventions, all in input-pixel units of the layer's own input:

- ``kernel``, ``stride``, ``dilation`` and ``padding`` are an int (same on every spatial axis) or a list
  with one entry per spatial axis, in tensor order (D, H, W).
- ``padding`` (convs and pools; transposed convs take an int or per-axis list only) may also be
  per-axis ``[before, after]`` pairs, e.g. 2-D ``[[top, bottom], [left, right]]`` (tensor order, the
  reverse of ``F.pad``'s last-axis-first order; an axis entry may be a plain int), or ``same`` (stride
  1 only), which is resolved like PyTorch's: ``d*(k-1)`` in all, the odd pixel after. Symmetric
  padding goes into the layer itself; asymmetric padding, and pool padding beyond PyTorch's limit of
  half the kernel, becomes an explicit pad child named ``NAME_pad`` (zeros; ``-inf`` before a max
  pool) followed by the layer with padding 0.
- Pool ``stride`` defaults to ``kernel``; conv ``stride`` to 1. ``channels`` (convs only) defaults to
  the incoming channel count.
- Children are named by the layer's ``name`` or ``layer{i}_{op}``, with ``i`` the 0-based index in
  ``layers``; error messages point at ``layers[i]`` the same way.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from rflens.errors import RflensError

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
TOP_KEYS = ("input", "layers", "name")

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}

_COMMON = ("op", "name")
OP_KEYS: dict[str, tuple[str, ...]] = {
    "conv": _COMMON + ("kernel", "stride", "padding", "dilation", "channels", "groups"),
    "convtranspose": _COMMON
    + ("kernel", "stride", "padding", "output_padding", "dilation", "channels", "groups"),
    "maxpool": _COMMON + ("kernel", "stride", "padding", "dilation", "ceil_mode"),
    "avgpool": _COMMON + ("kernel", "stride", "padding", "ceil_mode"),
    "upsample": _COMMON + ("scale", "mode", "align_corners"),
    **{name: _COMMON for name in ACTIVATIONS},
}
UPSAMPLE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "bicubic")

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_PAD = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}

Pairs = tuple[tuple[int, int], ...]


def load_spec(path: str | Path) -> tuple[nn.Sequential, tuple[int, ...]]:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) spec file and build it (see
    :func:`build_spec`). Returns the model and the spec's input shape ``(C, *spatial)``."""
    return build_spec(read_spec(path), source=str(path))


def read_spec(path: str | Path) -> dict:
    """Parse a spec file into a dict without building it; raises RflensError for a missing,
    unreadable or malformed file, or one whose top level is not a mapping."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SPEC_SUFFIXES:
        raise RflensError(f"{path}: not a spec file (suffix '{path.suffix}'); use .yaml, .yml or .json")
    if not path.is_file():
        raise RflensError(f"{path}: spec file not found; check the path (cwd is {Path.cwd()})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RflensError(f"{path}: cannot read spec file: {_one_line(exc)}") from exc
    data = _parse_json(text, path) if suffix == ".json" else _parse_yaml(text, path)
    if not isinstance(data, dict):
        raise RflensError(f"{path}: top level must be a mapping with 'input' and 'layers', "
                          f"got {_kind(data)}")
    return data


def build_spec(data: dict, source: str = "spec") -> tuple[nn.Sequential, tuple[int, ...]]:
    """Build the chain described by ``data`` (the parsed spec) into an ``nn.Sequential`` in eval mode.

    Returns ``(model, input_shape)`` with ``input_shape = (C, *spatial)`` (no batch axis). ``source``
    names the spec (usually its file) in error messages. Every bad field raises a one-line
    RflensError naming ``source``, ``layers[i]`` and the field.
    """
    if not isinstance(data, dict):
        raise RflensError(f"{source}: spec must be a mapping with 'input' and 'layers', "
                          f"got {_kind(data)}")
    _check_keys(data, TOP_KEYS, f"{source}: top level")
    shape = _parse_input(data, source)
    layers = _parse_layer_list(data, source)
    model = nn.Sequential()
    channels = shape[0]
    for index, entry in enumerate(layers):
        children, channels = _build_layer(entry, index, len(shape) - 1, channels, source)
        for name, module in children:
            _add_child(model, name, module, f"{source}: layers[{index}]")
    return model.eval(), shape


def spec_name(data: dict, path: str | Path) -> str:
    """The spec's ``name`` field when it is a non-empty string, else the file's stem."""
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name.strip() else Path(path).stem


def _parse_yaml(text: str, path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise RflensError(f"{path}: malformed YAML{where}: {_one_line(problem)}; "
                          "fix the syntax") from exc


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RflensError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}; fix the syntax") from exc


def _parse_input(data: dict, source: str) -> tuple[int, ...]:
    expected = "a list [C, L] (1-D), [C, H, W] (2-D) or [C, D, H, W] (3-D) of positive integers"
    if "input" not in data:
        raise RflensError(f"{source}: missing field 'input'; add {expected}, e.g. input: [3, 64, 64]")
    value = data["input"]
    if (not isinstance(value, list) or not 2 <= len(value) <= 4
            or not all(_is_int(v) and v > 0 for v in value)):
        raise RflensError(f"{source}: field 'input' must be {expected}, got {_show(value)}")
    return tuple(value)


def _parse_layer_list(data: dict, source: str) -> list:
    if "layers" not in data:
        raise RflensError(f"{source}: missing field 'layers'; add a list like "
                          "layers: [{op: conv, kernel: 3}]")
    layers = data["layers"]
    if not isinstance(layers, list) or not layers:
        raise RflensError(f"{source}: field 'layers' must be a non-empty list of layer mappings "
                          f"like {{op: conv, kernel: 3}}, got {_show(layers)}")
    return layers


def _build_layer(entry: Any, index: int, ndim: int, channels: int,
                 source: str) -> tuple[list[tuple[str, nn.Module]], int]:
    where = f"{source}: layers[{index}]"
    if not isinstance(entry, dict):
        raise RflensError(f"{where}: must be a mapping like {{op: conv, kernel: 3}}, "
                          f"got {_show(entry)}")
    op = _parse_op(entry, where)
    name = _parse_name(entry, index, op, where)
    where = f"{source}: layers[{index}] '{name}'"
    _check_keys(entry, OP_KEYS[op], f"{where} (op {op})", op)
    field = _Fields(entry, ndim, where)
    if op in ("conv", "convtranspose"):
        return _build_conv(field, op, name, ndim, channels)
    if op in ("maxpool", "avgpool"):
        return _build_pool(field, op, name, ndim), channels
    if op == "upsample":
        return [(name, _build_upsample(field, ndim))], channels
    return [(name, ACTIVATIONS[op]())], channels


def _parse_op(entry: dict, where: str) -> str:
    known = ", ".join(OP_KEYS)
    if "op" not in entry:
        raise RflensError(f"{where}: missing field 'op'; set it to one of: {known}")
    op = entry["op"]
    if not isinstance(op, str):
        raise RflensError(f"{where}: field 'op' must be a string (one of: {known}), got {_show(op)}")
    key = op.strip().lower().replace("-", "_")
    if key not in OP_KEYS:
        raise RflensError(f"{where}: unknown op '{op}'{_did_you_mean(key, OP_KEYS)}; "
                          f"known ops: {known}")
    return key


def _parse_name(entry: dict, index: int, op: str, where: str) -> str:
    if "name" not in entry:
        return f"layer{index}_{op}"
    name = entry["name"]
    if not isinstance(name, str) or not name.strip() or "." in name:
        raise RflensError(f"{where}: field 'name' must be a non-empty string without '.', "
                          f"got {_show(name)}")
    return name.strip()


def _check_keys(entry: dict, allowed: tuple[str, ...], where: str, op: str | None = None) -> None:
    for key in entry:
        if key in allowed:
            continue
        text = str(key)
        owners = [o for o, keys in OP_KEYS.items() if text in keys] if op else []
        if owners:
            raise RflensError(f"{where}: key '{text}' does not apply to op {op} (it belongs to "
                              f"{', '.join(owners)}); allowed keys: {', '.join(allowed)}")
        raise RflensError(f"{where}: unknown key '{text}'{_did_you_mean(text, allowed)}; "
                          f"allowed keys: {', '.join(allowed)}")


class _Fields:
    """Typed access to one layer's fields, raising one-line errors that name the layer and field."""

    def __init__(self, entry: dict, ndim: int, where: str) -> None:
        self.entry, self.ndim, self.where = entry, ndim, where

    def fail(self, field: str, expected: str, hint: str = "") -> RflensError:
        got = _show(self.entry[field]) if field in self.entry else "nothing"
        tail = f"; {hint}" if hint else ""
        return RflensError(f"{self.where}: field '{field}' must be {expected}, got {got}{tail}")

    def ints(self, field: str, default: tuple[int, ...] | None, minimum: int) -> tuple[int, ...]:
        """An int or a per-axis list of ints, each >= ``minimum``; ``default`` when absent."""
        if field not in self.entry:
            if default is None:
                raise RflensError(f"{self.where}: missing field '{field}'; give "
                                  f"{self._int_form(minimum)}")
            return default
        value = self.entry[field]
        values = tuple(value) if isinstance(value, list) else (value,) * self.ndim
        if len(values) != self.ndim or not all(_is_int(v) and v >= minimum for v in values):
            raise self.fail(field, self._int_form(minimum))
        return values

    def _int_form(self, minimum: int) -> str:
        word = "positive integer" if minimum == 1 else "non-negative integer"
        return (f"a {word} or a list of {self.ndim} {word}s (one per spatial axis)"
                if self.ndim > 1 else f"a {word}")

    def positive_int(self, field: str, default: int) -> int:
        value = self.entry.get(field, default)
        if not _is_int(value) or value < 1:
            raise self.fail(field, "a positive integer")
        return value

    def boolean(self, field: str, default: bool) -> bool:
        value = self.entry.get(field, default)
        if not isinstance(value, bool):
            raise self.fail(field, "true or false")
        return value

    def padding(self) -> str | Pairs:
        """``'same'`` or per-axis ``(before, after)`` pairs in tensor order; default no padding."""
        value = self.entry.get("padding", 0)
        pairs = self._padding_pairs(value)
        if isinstance(value, str) and value.strip().lower() == "same":
            return "same"
        if pairs is None:
            raise self.fail("padding", self._padding_form())
        return pairs

    def _padding_pairs(self, value: Any) -> Pairs | None:
        if _is_int(value):
            return ((value, value),) * self.ndim if value >= 0 else None
        if not isinstance(value, list) or len(value) != self.ndim:
            return None
        pairs = []
        for axis in value:
            if _is_int(axis) and axis >= 0:
                pairs.append((axis, axis))
            elif (isinstance(axis, list) and len(axis) == 2
                  and all(_is_int(v) and v >= 0 for v in axis)):
                pairs.append((axis[0], axis[1]))
            else:
                return None
        return tuple(pairs)

    def _padding_form(self) -> str:
        example = " e.g. [[top, bottom], [left, right]]" if self.ndim == 2 else ""
        return (f"{self._int_form(0)}, or a list of {self.ndim} [before, after] pairs{example}, "
                "or 'same' (stride 1 only)")


def _build_conv(field: _Fields, op: str, name: str, ndim: int,
                channels: int) -> tuple[list[tuple[str, nn.Module]], int]:
    kernel = field.ints("kernel", None, 1)
    stride = field.ints("stride", (1,) * ndim, 1)
    dilation = field.ints("dilation", (1,) * ndim, 1)
    out = field.positive_int("channels", channels)
    groups = _groups(field, channels, out)
    if op == "convtranspose":
        padding = field.ints("padding", (0,) * ndim, 0)
        output_padding = field.ints("output_padding", (0,) * ndim, 0)
        if any(o >= max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
            raise field.fail("output_padding", "smaller than stride or dilation on every axis")
        conv = _CONVT[ndim](channels, out, kernel, stride, padding, output_padding, groups,
                            dilation=dilation)
        return [(name, conv)], out
    padding = _resolve_same(field, kernel, stride, dilation)
    native, pad = _split_padding(padding)
    conv = _CONV[ndim](channels, out, kernel, stride, native, dilation, groups)
    return _with_pad(name, pad, ndim, 0.0) + [(name, conv)], out


def _groups(field: _Fields, channels: int, out: int) -> int:
    groups = field.entry.get("groups", 1)
    if not _is_int(groups) or groups < 1 or channels % groups or out % groups:
        raise field.fail("groups", f"a positive integer dividing both the input channels ({channels}) "
                                   f"and the output channels ({out})")
    return groups


def _build_pool(field: _Fields, op: str, name: str, ndim: int) -> list[tuple[str, nn.Module]]:
    kernel = field.ints("kernel", None, 1)
    stride = field.ints("stride", kernel, 1)
    dilation = field.ints("dilation", (1,) * ndim, 1) if op == "maxpool" else (1,) * ndim
    ceil_mode = field.boolean("ceil_mode", False)
    padding = _resolve_same(field, kernel, stride, dilation)
    native, pad = _split_padding(padding, _pool_padding_limits(kernel))
    if op == "maxpool":
        pool = _MAXPOOL[ndim](kernel, stride, native, dilation, ceil_mode=ceil_mode)
        return _with_pad(name, pad, ndim, -math.inf) + [(name, pool)]
    pool = _AVGPOOL[ndim](kernel, stride, native, ceil_mode=ceil_mode)
    return _with_pad(name, pad, ndim, 0.0) + [(name, pool)]


def _pool_padding_limits(kernel: tuple[int, ...]) -> list[int]:
    """The most padding every PyTorch pool accepts itself: half the kernel (max_pool1d ignores
    dilation here, unlike max_pool2d)."""
    return [k // 2 for k in kernel]


def _resolve_same(field: _Fields, kernel: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...]) -> Pairs:
    """The layer's padding as pairs, ``'same'`` split like PyTorch's: total ``d*(k-1)``, the odd
    pixel after."""
    padding = field.padding()
    if padding != "same":
        return padding
    if any(s != 1 for s in stride):
        raise field.fail("padding", "explicit numbers when stride > 1", "'same' needs stride 1")
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return tuple((t // 2, t - t // 2) for t in totals)


def _split_padding(padding: Pairs, limits: list[int] | None = None
                   ) -> tuple[tuple[int, ...], Pairs | None]:
    """Native layer padding plus the pairs for an explicit pad layer: None when the padding is
    symmetric and within the layer's own ``limits``."""
    within = limits is None or all(a <= lim for (a, _), lim in zip(padding, limits))
    if within and all(a == b for a, b in padding):
        return tuple(a for a, _ in padding), None
    return (0,) * len(padding), padding


def _with_pad(name: str, pad: Pairs | None, ndim: int, value: float) -> list[tuple[str, nn.Module]]:
    if pad is None:
        return []
    flat = tuple(v for pair in reversed(pad) for v in pair)
    return [(f"{name}_pad", _PAD[ndim](flat, value))]


def _build_upsample(field: _Fields, ndim: int) -> nn.Module:
    if "scale" not in field.entry:
        raise RflensError(f"{field.where}: missing field 'scale'; give a positive number or a list "
                          f"of {ndim} (one per spatial axis), e.g. scale: 2")
    scale = field.entry["scale"]
    scales = scale if isinstance(scale, list) else [scale]
    if ((isinstance(scale, list) and len(scale) != ndim)
            or not all(_is_number(s) and s > 0 for s in scales)):
        raise field.fail("scale", f"a positive number or a list of {ndim} positive numbers")
    mode = _upsample_mode(field, ndim)
    corners = None
    if "align_corners" in field.entry:
        if mode.startswith("nearest"):
            raise field.fail("align_corners", "left out for mode nearest",
                             "it applies to bilinear/bicubic only")
        corners = field.boolean("align_corners", False)
    elif not mode.startswith("nearest"):
        corners = False
    factor = tuple(float(s) for s in scales) if isinstance(scale, list) else float(scale)
    return nn.Upsample(scale_factor=factor, mode=mode, align_corners=corners)


def _upsample_mode(field: _Fields, ndim: int) -> str:
    mode = field.entry.get("mode", "nearest")
    if not isinstance(mode, str) or mode.strip().lower() not in UPSAMPLE_MODES:
        raise field.fail("mode", "one of nearest, bilinear, bicubic")
    mode = mode.strip().lower()
    if mode in _LINEAR_MODE.values():
        return _LINEAR_MODE[ndim]
    if mode == "bicubic" and ndim != 2:
        raise field.fail("mode", f"nearest or bilinear for {ndim}-D input", "bicubic is 2-D only")
    return mode


def _add_child(model: nn.Sequential, name: str, module: nn.Module, where: str) -> None:
    if name in model._modules:
        raise RflensError(f"{where}: layer name '{name}' is already used; give each layer a unique "
                          "'name'")
    try:
        model.add_module(name, module)
    except (KeyError, TypeError) as exc:
        raise RflensError(f"{where}: layer name '{name}' cannot be used ({_one_line(exc)}); pick "
                          "another 'name'") from exc


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _kind(value: Any) -> str:
    return "an empty file" if value is None else f"a {type(value).__name__} ({_show(value)})"


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


__all__ = ["ACTIVATIONS", "OP_KEYS", "SPEC_SUFFIXES", "build_spec", "load_spec", "read_spec",
           "spec_name"]
