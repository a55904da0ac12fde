"""What ``weights=`` does to a private copy of the model: ``"uniform"`` (:func:`uniformize`),
``"random"`` (:func:`redraw`) or a state-dict file (:func:`load_state_dict`)."""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from rflens.errors import RflensError

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
def redraw(model: nn.Module, seed: int) -> None:
    """Re-initialise every module that has ``reset_parameters`` with the global RNG seeded by
    ``seed`` (PyTorch's default initialisers)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def load_state_dict(model: nn.Module, path: str) -> None:
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
