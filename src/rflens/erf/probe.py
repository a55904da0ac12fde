"""The model prepared for an ERF run, and the step that turns a batch of inputs into a batch of
reduced input-gradient maps with one backward pass."""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rflens.errors import RflensError
from rflens.erf.inputs import sample_seed
from rflens.erf.linear import BatchStatsWatch, left_nonlinear, linear_mode, mark_input, norms_mode
from rflens.erf.settings import _Settings
from rflens.erf.weights import load_state_dict, redraw, uniformize
from rflens.trf.instrument import LayerRef, run_to_layers

_CONV_FORWARDS = {c.forward for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                                      nn.ConvTranspose2d, nn.ConvTranspose3d)}


class _Probe:
    """The model prepared for a run (a private copy whenever anything must change), and the step
    that turns a batch of inputs into a batch of reduced ERF maps with one backward pass."""

    def __init__(self, model: nn.Module, layer: str | None | list, settings: _Settings,
                 dtype: torch.dtype | None, device: torch.device, seed: int, unit: Any) -> None:
        self.original = model
        # several (layer, unit) targets share one forward pass: ``layer`` may be a list of layers,
        # ``unit`` a list of unit specs (each "center", indices or "grid:GxG") applied to each layer
        self.layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        self.unit_specs = list(unit) if _is_unit_list(unit) else [unit]
        self.requested_unit = self.unit_specs[0]
        self.layer = self.layers[0]
        self.settings = settings
        self.seed = seed
        self.device = device
        model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        self.dtype = dtype or (model_dtype if model_dtype in (torch.float32, torch.float64) else torch.float32)
        self.auto_dtype = dtype is None
        self.model: nn.Module | None = None
        self._notes: list[str] = []
        self.unit: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.output_shapes: list[tuple[int, ...]] | None = None
        self.targets: list[tuple[int, tuple[int, ...]]] | None = None  # (layer index, unit)
        self.rows: list = []  # the TRF engine's row of each layer (its layout), when known
        self.use_vmap = settings.weights == "random"
        self.largest_pass = 0
        self.underflow_risk = False
        self._modes: dict[nn.Module, bool] = {}
        self._grads: dict[nn.Parameter, bool] = {}
        self.per_sample = False  # batch statistics: every sample in its own forward
        self._watched = False
        self.left: set[str] = set()  # non-linear ops activations="linear" left (named in a note)
        self.underflow_where: str | None = None
        self._checked = 0  # batches whose intermediate gradients were checked for underflow
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
            custom = [f"{n} ({type(m).__name__})" for n, m in model.named_modules()
                      if isinstance(m, nn.modules.conv._ConvNd) and type(m).forward not in _CONV_FORWARDS]
            if custom:
                self._note(f"weights='uniform' set equal weights in {_names(custom)}, which override "
                           "the convolution's forward: what they compute from them need not be a mean "
                           "(weight standardisation turns equal weights into zeros)")
        elif weights == "random":
            kept = redraw(model, sample_seed(self.seed, 0, stream=1))
            if kept:
                self._note(f"weights='random' kept {len(kept)} parameter(s) that no module "
                           "initialiser owns and that have no fan-in (layer scales, loose biases or "
                           f"norm weights) as they are in every draw: {_names(kept)}")
        elif weights != "as-is":
            load_state_dict(model, weights)
        self.model = model
        self.refs = [LayerRef.parse(layer, model) for layer in self.layers]
        self.ref = self.refs[0]
        if weights == "random":
            self._template = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)

    def _note(self, note: str) -> None:
        if note not in self._notes:
            self._notes.append(note)

    def switch_to_float64(self, reason: str) -> None:
        if self.underflow_where:
            reason += f" (first in the backward of {self.underflow_where})"
        self.restore()
        self.dtype = torch.float64
        self.auto_dtype = False
        self._note(reason)
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
        """Reduced ERF maps ``(targets, B, *spatial)`` in float64 on the CPU for the samples ``x``
        (sample ``i`` of ``x`` has global index ``first_index + i``)."""
        if self.settings.weights == "random" and not self.use_vmap and x.shape[0] > 1:
            return torch.cat([self.maps(x[i:i + 1], first_index + i) for i in range(x.shape[0])], dim=1)
        self.largest_pass = max(self.largest_pass, int(x.shape[0]))
        x = x.to(device=self.device, dtype=self.dtype).requires_grad_(True)
        watch = BatchStatsWatch() if not self._watched and not self.per_sample else None
        out = []
        with torch.enable_grad():
            with watch or contextlib.nullcontext(), self._mode():
                ys = self._forward(x, first_index)
            if watch is not None:
                self._watched = True
                if self._batch_statistics(watch) and x.shape[0] > 1 and not self.use_vmap:
                    return self.maps(x.detach(), first_index)  # again, one sample per forward
            for y, layer in zip(ys, self.layers):
                self._check_output(y, layer)
                if self.settings.activations == "linear":
                    self.left.update(left_nonlinear(y))
            self._resolve_targets(ys)
            watch_float32 = self.auto_dtype and self.dtype == torch.float32
            # intermediate gradients: on the first batch, where the network's scale shows (checking
            # costs about 30 % of that batch's forward and backward; benchmarks/erf_underflow_check.py)
            inside = watch_float32 and self._checked < 1
            self._checked += inside
            risk, where = False, None
            for k, (layer_index, unit) in enumerate(self.targets):
                picked = self._pick(ys[layer_index], layer_index, unit)
                if self.settings.readout == "relu":
                    picked = F.relu(picked)
                scalar = picked.mean(dim=1).sum() if self.settings.readout == "mean" else picked.sum()
                minima = _watch_gradients(scalar) if inside and k == 0 else []
                last = k == len(self.targets) - 1
                (grad,) = torch.autograd.grad(scalar, x, allow_unused=True, retain_graph=not last)
                if grad is None:
                    grad = torch.zeros_like(x)
                maps = _reduce(grad.detach().to(torch.float64), self.settings.reduce)
                where = where or _underflow_inside(minima)
                risk = risk or (watch_float32 and _underflow_risk(maps, self.settings.reduce))
                out.append(maps.cpu())
        self.underflow_where = where
        self.underflow_risk = risk or where is not None
        return torch.stack(out)

    def _mode(self) -> contextlib.AbstractContextManager:
        if self.settings.activations == "linear":
            return linear_mode()
        if self.settings.weights == "uniform":
            return norms_mode()  # uniform weights: normalisations are the identity
        return contextlib.nullcontext()

    @property
    def notes(self) -> list[str]:
        """What the run should say: notes collected so far, and the non-linear ops left."""
        out = list(self._notes)
        if self.left:
            out.append("activations='linear' left these non-linear ops on the way to the unit, so the "
                       f"map is not that of a linear network: {', '.join(sorted(self.left))}")
        return out

    def _batch_statistics(self, watch: BatchStatsWatch) -> bool:
        """True (and a note) when the forward normalised by statistics of the whole batch."""
        if not watch.calls:
            return False
        self.per_sample = True
        names = [n or type(m).__name__ for n, m in self.model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None]
        where = f"module(s) {_names(names)}" if names else "a functional batch_norm in forward"
        self._note(f"BatchNorm uses batch statistics in eval mode ({where}): each sample ran in its "
                   "own forward pass, normalised by its own statistics, so the ERF does not depend on "
                   "the batch size")
        return True

    def _forward(self, x: torch.Tensor, first_index: int) -> list[torch.Tensor]:
        if self.settings.weights == "random" and not self.use_vmap:
            self._load_draw(first_index)
        if not self.use_vmap:
            if self.per_sample and x.shape[0] > 1:
                per = [run_to_layers(self.model, self.refs, (mark_input(x[i:i + 1]),))
                       for i in range(x.shape[0])]
                return [torch.cat(parts) for parts in zip(*per)]
            return run_to_layers(self.model, self.refs, (mark_input(x),))
        try:
            return self._vmapped_forward(x, first_index)
        except RflensError:
            raise
        except Exception as exc:  # some ops do not vmap: draw the weights per sample instead
            self.use_vmap = False
            self._note(f"per-sample random weights could not be batched ({type(exc).__name__}); "
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

    def _vmapped_forward(self, x: torch.Tensor, first_index: int) -> list[torch.Tensor]:
        from torch.func import functional_call, vmap

        draws = [self._draw(first_index + i) for i in range(x.shape[0])]
        params = {n: torch.stack([d[n] for d in draws]).to(device=self.device, dtype=self.dtype)
                  for n in draws[0]}
        del draws
        buffers = dict(self.model.named_buffers())

        def one(p: dict, sample: torch.Tensor) -> tuple[torch.Tensor, ...]:
            call = lambda inp: functional_call(self.model, (p, buffers), (inp,))  # noqa: E731
            ys = run_to_layers(self.model, self.refs, (mark_input(sample).unsqueeze(0),), call)
            if self.settings.activations == "linear":  # marks do not cross vmap's boundary
                for y in ys:
                    self.left.update(left_nonlinear(y))
            return tuple(y[0] for y in ys)

        return list(vmap(one)(params, x))

    def _row(self, layer_index: int, y: torch.Tensor):
        """The engine's row for a layer when it describes ``y`` (same layout, batch aside)."""
        row = self.rows[layer_index] if layer_index < len(self.rows) else None
        if row is None or not row.known or not row.layout or row.shape[1:] == ():
            return None
        if y.dim() != len(row.shape) or tuple(y.shape[1:]) != tuple(row.shape[1:]) \
                or y.shape[0] % row.shape[0]:
            return None
        return row

    def _pick(self, y: torch.Tensor, layer_index: int, unit) -> torch.Tensor:
        """The features of ``unit`` for every sample: ``(B, features)``. Where the engine knows
        the layer's layout, the unit is a grid position wherever it sits in the tensor (tokens
        ``(B, T, C)``, channels-last ``(B, H, W, C)``, windows folded into the batch); else the
        layout is read as ``(B, C, *spatial)``."""
        row = self._row(layer_index, y)
        if row is None:
            if isinstance(unit, str):
                raise RflensError(f"unit '{unit}' needs a token dimension the TRF engine can follow")
            return y[(slice(None), slice(None)) + unit].reshape(y.shape[0], -1)
        idx = row.locate(unit)
        per_sample = row.shape[0]
        batch = y.shape[0] // per_sample
        grids = np.ix_(np.arange(batch), idx[0], *idx[1:])
        first = torch.as_tensor(grids[0] * per_sample + grids[1], device=y.device)
        index = (first,) + tuple(torch.as_tensor(g, device=y.device) for g in grids[2:])
        return y[index].reshape(batch, -1)

    def _check_output(self, y: torch.Tensor, layer: str | None) -> None:
        if y.dim() < 3:
            raise RflensError(f"layer '{layer}' outputs shape {tuple(y.shape)} with no spatial "
                              "axes; pick a convolutional layer before global pooling / flatten")
        if not y.requires_grad:
            raise RflensError(f"the output of layer '{layer}' does not depend on the input "
                              "through autograd (detached or computed under no_grad)")

    def target_count(self, ndim: int) -> int:
        """How many (layer, unit) targets the specs name for ``ndim`` spatial axes."""
        return len(self.layers) * sum(math.prod(grid_counts(spec, ndim) or [1])
                                      for spec in self.unit_specs)

    def _resolve_targets(self, ys: list[torch.Tensor]) -> None:
        if self.targets is not None:
            return
        self.output_shapes = [tuple(y.shape[1:]) for y in ys]
        grids = [row.grid if (row := self._row(i, y)) is not None else tuple(y.shape[2:])
                 for i, y in enumerate(ys)]
        self.targets = [(i, u) for i, (layer, grid) in enumerate(zip(self.layers, grids))
                        for spec in self.unit_specs for u in resolve_units(spec, grid, layer)]
        self.output_shape = self.output_shapes[0]
        self.unit = self.targets[0][1]


class _Retry(Exception):
    """Recompute the current chunk (the probe changed how it runs)."""


def _reduce(grad: torch.Tensor, how: str) -> torch.Tensor:
    if how == "abs":
        return grad.abs().sum(dim=1)
    if how == "relu":
        return F.relu(grad).sum(dim=1)
    if how == "mean-relu":  # OpenERF: mean over input channels, then ReLU
        return F.relu(grad.mean(dim=1))
    return (grad * grad).sum(dim=1)


def _is_unit_list(unit: Any) -> bool:
    """A list of unit specs (not one unit given as indices)."""
    return isinstance(unit, list) and any(not isinstance(u, (int,)) for u in unit)


def grid_counts(spec: Any, ndim: int) -> list[int] | None:
    """The per-axis unit counts of a ``"grid:G"`` / ``"grid:GxH"`` spec (None for other specs)."""
    if not (isinstance(spec, str) and spec.strip().lower().startswith("grid:")):
        return None
    try:
        counts = [int(v) for v in spec.split(":", 1)[1].lower().replace(",", "x").split("x")]
    except ValueError:
        raise RflensError(f"unit '{spec}' must look like grid:3 or grid:3x4") from None
    return counts * ndim if len(counts) == 1 else counts


def resolve_units(spec: Any, spatial: tuple[int, ...], layer: str | None) -> list[tuple[int, ...]]:
    """The units one spec names: ``"grid:G"`` / ``"grid:GxH"`` is a grid of units, the centre unit
    of each of ``G`` (``H``) equal bands per axis (index ``floor((i + 1/2) n / G)``; ``grid:1`` is
    the centre unit); anything else is one unit (:func:`resolve_unit`)."""
    counts = grid_counts(spec, len(spatial))
    if counts is not None:
        if len(counts) != len(spatial) or any(not 1 <= g <= n for g, n in zip(counts, spatial)):
            raise RflensError(f"unit '{spec}' does not fit the output of layer '{layer}' (spatial "
                              f"{'x'.join(map(str, spatial))}); give one count per axis, each at "
                              "most that axis's size")
        axes = [[int((i + 0.5) * n / g) for i in range(g)] for g, n in zip(counts, spatial)]
        return [tuple(u) for u in itertools.product(*axes)]
    return [resolve_unit(spec, spatial, layer)]


def resolve_unit(unit: Any, spatial: tuple[int, ...], layer: str | None) -> tuple[int, ...] | str:
    """``"center"`` (index ``n // 2`` per axis of the layer's grid), indices, or ``"cls"`` /
    ``"token:K"`` (an extra token of a token dimension: the class token is ``token:0``)."""
    if unit is None or unit == "center" or unit == "centre":
        return tuple(n // 2 for n in spatial)
    if isinstance(unit, str) and (unit == "cls" or unit.startswith("token:")):
        return "token:0" if unit == "cls" else unit
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


def _names(names: list[str], shown: int = 6) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# Backward nodes whose gradients hold only values the node after them already computed (views,
# permutations, copies of a sum's gradient, the masks of ReLU and max pooling, slices and concats):
# nothing new can come near underflow there, so they are not checked.
_PASS_THROUGH = frozenset({"View", "ReshapeAlias", "UnsafeView", "Permute", "Transpose", "T",
                           "Unsqueeze", "Squeeze", "Slice", "Select", "Cat", "Split", "SplitWithSizes",
                           "Unbind", "Clone", "Alias", "Neg", "Add", "Sub", "Relu", "Threshold",
                           "MaxPool2DWithIndices", "MaxPool3DWithIndices", "MaxPool1DWithIndices"})


def _watch_gradients(root: torch.Tensor) -> list[tuple[str, list[torch.Tensor]]]:
    """Hooks on the nodes of ``root``'s autograd graph that compute new gradient values, keeping
    the smallest non-zero magnitude of each gradient (0-d tensors, read once after the backward:
    no sync)."""
    minima: list[tuple[str, list[torch.Tensor]]] = []
    seen: set = set()
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
        if re.sub(r"Backward\d*$", "", node.name()) in _PASS_THROUGH:
            continue
        record: list[torch.Tensor] = []
        minima.append((node.name(), record))

        def hook(grad_inputs, grad_outputs, record=record):
            for g in grad_inputs:
                if g is not None and g.dtype == torch.float32 and g.numel():
                    a = g.detach().abs()
                    record.append(a.masked_fill_(a == 0, torch.inf).amin())

        node.register_hook(hook)
    return minima


def _underflow_inside(minima: list[tuple[str, list[torch.Tensor]]]) -> str | None:
    """The first backward node (in graph order from the unit) whose float32 gradient came within
    2**10 of float32's smallest normal number, or None."""
    limit = torch.finfo(torch.float32).tiny * 2**10
    names = [name for name, record in minima for _ in record]
    values = [v for _, record in minima for v in record]
    if not values:
        return None
    low = (torch.stack(values) < limit).nonzero()
    return names[int(low[0])] if low.numel() else None


def _underflow_risk(maps: torch.Tensor, reduce: str) -> bool:
    """True when a float32 run's reduced maps hold values within 2**10 of float32's smallest normal
    number (squared for ``reduce="square"``): deeper tails may have underflowed to 0. (An all-zero
    gradient is a dead unit, not underflow.)"""
    limit = torch.finfo(torch.float32).tiny * 2**10
    if reduce == "square":
        limit = limit * limit
    positive = maps[maps > 0]
    return positive.numel() > 0 and float(positive.min()) < limit
