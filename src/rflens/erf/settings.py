"""ERF settings: the choices, their defaults, the published presets, and the resolution of the
model, input shape and dtype a run uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rflens.errors import RflensError

WEIGHTS = ("as-is", "random", "uniform")
ACTIVATIONS = ("as-is", "linear")
REDUCE = ("abs", "relu", "square", "mean-relu")
READOUT = ("sum", "relu", "mean")
OUTSIDE_WARN = 0.01

DEFAULTS: dict[str, Any] = {"inputs": "noise", "samples": 64, "batch_size": 16, "weights": "as-is",
                            "activations": "as-is", "reduce": "abs", "readout": "sum",
                            "input_shape": None, "transform": "auto"}
PRESETS: dict[str, dict[str, Any]] = {
    # Luo et al. 2016: random inputs, random weights (a fresh draw per sample), the output gradient
    # set to 1 at the centre unit, |gradient|, averaged over 20 runs.
    "luo2016": {"inputs": "noise", "samples": 20, "weights": "random", "activations": "as-is",
                "reduce": "abs", "readout": "sum"},
    # Ding et al. 2022 (RepLKNet, erf/visualize_erf.py and analyze_erf.py): 50 real images resized
    # (not cropped) to 1024x1024, bicubic, ImageNet mean/std; the model's own weights; relu(output)
    # summed at the centre unit; relu(gradient) summed over channels; the per-image maps averaged
    # (NaN images skipped); area ratios on A = log10(mean + 1) / max (ERFMetrics.replknet). rflens
    # uses the bundled sample photos (or a folder you pass) instead of ImageNet-val.
    "replknet2022": {"inputs": "samples", "samples": 50, "input_shape": (3, 1024, 1024),
                     "weights": "as-is", "activations": "as-is", "reduce": "relu", "readout": "relu",
                     "batch_size": 4, "transform": "resize"},
    # OpenERF (Kim et al.; BMVC 2023 protocol): the model's own timm preprocessing, the mean of the
    # unit's channels, the gradient averaged over input channels then ReLU, 1000 images.
    "openerf": {"inputs": "samples", "samples": 1000, "weights": "as-is", "activations": "as-is",
                "reduce": "mean-relu", "readout": "mean", "transform": "auto"},
}



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
    transform: Any = "auto"


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
        from rflens.sources.models import load_model

        net, meta = load_model(model)
        return net, meta, model
    raise RflensError(f"model must be an nn.Module or a MODEL string, not {type(model).__name__}")


def resolve_input_shape(input_shape: Any, meta: dict, name: str) -> tuple[int, ...]:
    """``input_shape`` as a tuple ``(C, *spatial)``: given (tuple or ``"3x224x224"``), else the
    model's own, else rflens' default for that MODEL string."""
    if isinstance(input_shape, str):
        from rflens.sources.models import parse_input

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
        from rflens.sources.models import default_input_shape

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
