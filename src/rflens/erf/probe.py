"""The model prepared for an ERF run, and the step that turns a batch of inputs into a batch of
reduced input-gradient maps with one backward pass."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rflens.errors import RflensError
from rflens.erf.inputs import sample_seed
from rflens.erf.linear import linear_mode
from rflens.erf.settings import _Settings
from rflens.erf.weights import load_state_dict, redraw, uniformize
from rflens.trf.instrument import LayerRef, run_to_layer

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
            redraw(model, sample_seed(self.seed, 0, stream=1))
        elif weights != "as-is":
            load_state_dict(model, weights)
        self.model = model
        self.ref = LayerRef.parse(self.layer, model)
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
            return run_to_layer(self.model, self.ref, (x,))
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
        redraw(self._template, sample_seed(self.seed, index, stream=1))
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
            return run_to_layer(self.model, self.ref, (sample.unsqueeze(0),), call)[0]

        return vmap(one)(params, x)

    def _check_output(self, y: torch.Tensor, x: torch.Tensor) -> None:
        if y.dim() < 3:
            raise RflensError(f"layer '{self.layer}' outputs shape {tuple(y.shape)} with no spatial "
                              "axes; pick a convolutional layer before global pooling / flatten")
        shape = tuple(y.shape[1:])
        if self.output_shape is None:
            self.output_shape = shape
            self.unit = resolve_unit(self.requested_unit, shape[1:], self.layer)
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


def resolve_unit(unit: Any, spatial: tuple[int, ...], layer: str | None) -> tuple[int, ...]:
    if unit is None or unit == "center" or unit == "centre":
        return tuple(n // 2 for n in spatial)
    if isinstance(unit, str):
        try:
            unit = tuple(int(v) for v in unit.replace("x", ",").split(","))
        except ValueError:
            raise RflensError(f"unit '{unit}' must be 'center' or indices like 3,4") from None
    unit = tuple(int(v) for v in (unit if isinstance(unit, (tuple, list)) else (unit,)))
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
