"""What ``weights=`` does to a private copy of the model: ``"uniform"`` (:func:`uniformize`),
``"random"`` (:func:`redraw`) or a state-dict file (:func:`load_state_dict`).

Both rules cover *every* parameter of the model (docs/erf.md has the table):

- :func:`uniformize` sets each parameter to one value per tensor: biases 0, a (transposed)
  convolution or linear weight ``1/fan_in`` (``stride/fan_in`` transposed), a normalisation
  module's weight 1, any other parameter with two or more dimensions ``1/prod(shape[1:])`` (a conv or linear weight kept in a bare
  ``nn.Parameter``; a ``(C, 1, 1)`` layer scale gets 1), any other vector or scalar 1.
- :func:`redraw` calls every module's own initialiser (``reset_parameters``, or
  ``_reset_parameters`` as ``nn.MultiheadAttention`` has it) children first, as construction does;
  a parameter no initialiser owns is drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
  ``fan_in = prod(shape[1:])`` (PyTorch's default for conv and linear weights) when it has a fan-in
  above 1, and otherwise (vectors: layer scales, loose biases and norm weights, with no default
  anyone could know) kept as it is; :func:`redraw` returns the names kept.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from rflens.errors import RflensError


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _fan_in(p: torch.Tensor) -> int:
    return math.prod(p.shape[1:]) if p.dim() >= 2 else 1


@torch.no_grad()
def uniformize(model: nn.Module) -> nn.Module:
    """Set every parameter of ``model`` (in place) to one value per tensor (see the module
    docstring): each conv / linear output is the *mean* of its inputs, biases are 0, BatchNorm
    running statistics 0/1. Every layer then preserves mass, so a plain chain's ERF is the
    normalised path count and residual merges weigh both paths equally.

    Normalisations that divide by statistics of their input (Group/Layer/Instance/RMS norms,
    BatchNorm without running statistics) are not changed here: an ERF run with uniform weights
    runs under :func:`rflens.erf.linear.norms_mode`, which keeps only their (here identity) affine
    part."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.zero_()
            module.running_var.fill_(1.0 - module.eps)
        for name, p in module.named_parameters(recurse=False):
            if "bias" in name:
                p.zero_()
            elif isinstance(module, nn.modules.conv._ConvTransposeNd) and name == "weight":
                taps = math.prod(p.shape[2:]) / math.prod(module.stride)
                p.fill_(1.0 / (p.shape[0] / module.groups * taps))
            elif isinstance(module, _NORMS):
                p.fill_(1.0)
            else:
                p.fill_(1.0 / _fan_in(p))
    return model


def _initialiser(module: nn.Module):
    for attr in ("reset_parameters", "_reset_parameters"):
        fn = getattr(module, attr, None)
        if callable(fn):
            return fn
    return None


@torch.no_grad()
def redraw(model: nn.Module, seed: int) -> list[str]:
    """Redraw every parameter of ``model`` in place with the global RNG seeded by ``seed`` (the rule
    is in the module docstring). Returns the names of the parameters kept as they are."""
    modules = list(model.named_modules(remove_duplicate=True))
    owned: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _, module in reversed(modules):  # children first: a parent's initialiser has the last word
            init = _initialiser(module)
            if init is not None:
                init()
                owned.update(id(p) for p in module.parameters(recurse=False))
        kept: list[str] = []
        seen: set[int] = set()
        for prefix, module in modules:
            for name, p in module.named_parameters(recurse=False):
                if id(p) in owned or id(p) in seen:
                    continue
                seen.add(id(p))
                fan_in = _fan_in(p)
                if fan_in > 1:
                    bound = 1.0 / math.sqrt(fan_in)
                    p.uniform_(-bound, bound)
                else:
                    kept.append(f"{prefix}.{name}" if prefix else name)
    return kept


def load_state_dict(model: nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise RflensError(f"--weights '{path}' is neither as-is, random, uniform nor an existing "
                          "state-dict file")
    from rflens.sources.weights import read_state_dict  # model sources sit above the ERF layer

    state = read_state_dict(path)
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
