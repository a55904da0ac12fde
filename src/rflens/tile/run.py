"""Tiled inference: ``rflens.tile.run(model, x, plan)`` and the stitching check
``rflens.tile.check(model, plan)``.

Tiles of the same window shape are stacked along the batch axis (``batch_size`` tiles per forward
pass), run on the model's device, and the units each tile keeps are copied into the stitched
output, which lives on ``x``'s device. The model runs in eval mode (its flags are restored) under
``torch.no_grad()``; it is never modified (``check`` converts a deep copy).
"""

from __future__ import annotations

import copy
import sys
import time
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from rflens.errors import RflensError
from rflens.tile.result import Tile, TileCheck, TilePlan
from rflens.trf.instrument import LayerRef, eval_mode, run_to_layer

# default number of input elements (batch × channels × tile pixels) per forward pass
PASS_ELEMENTS = 1 << 20


def _device(model: nn.Module, x: torch.Tensor) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else x.device


def _check_input(x: torch.Tensor, plan: TilePlan) -> tuple[torch.Tensor, bool]:
    if plan.axes is None:
        raise RflensError(f"this plan has no tiles ({plan.reason}); nothing to run")
    unbatched = x.dim() == len(plan.input_shape)
    if unbatched:
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != tuple(plan.input_shape):
        raise RflensError(f"x has shape {tuple(x.shape)} but the plan is for inputs "
                          f"(B, {', '.join(map(str, plan.input_shape))})")
    return x, unbatched


def _slices(dims: tuple[int, ...], ranges, ndim: int) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    for d, (a, b) in zip(dims, ranges):
        index[d] = slice(a, b)
    return tuple(index)


def run(model: nn.Module, x: torch.Tensor, plan: TilePlan, *, batch_size: int | None = None,
        progress: bool | None = None) -> torch.Tensor:
    """Run ``model`` (up to ``plan.layer``) tile by tile on ``x`` (``(B, C, *spatial)`` or
    ``(C, *spatial)``, the plan's input shape) and stitch the kept units into one output shaped
    like the whole-input output. ``batch_size``: tiles per forward pass (default: as many as fit
    in :data:`PASS_ELEMENTS` input elements and in a quarter of ``x``, at least 1).
    ``progress``: a rich progress bar on stderr (default: when stderr is a terminal and there
    are at least 16 tiles)."""
    x, unbatched = _check_input(x, plan)
    batch = x.shape[0]
    ref = LayerRef.parse(plan.layer, model)
    tiles = list(plan.tiles())
    groups: dict[tuple[int, ...], list[Tile]] = defaultdict(list)
    for t in tiles:
        groups[t.shape].append(t)
    device = _device(model, x)
    in_dims = tuple(range(2, x.dim()))
    out: torch.Tensor | None = None
    show = (sys.stderr.isatty() and len(tiles) >= 16) if progress is None else progress
    bar = _Progress(len(tiles), show)
    with eval_mode(model), torch.no_grad(), bar:
        for shape, members in groups.items():
            budget = min(PASS_ELEMENTS, x.numel() // 4)
            per_pass = batch_size or max(1, budget // (batch * x.shape[1] * _prod(shape)))
            for i in range(0, len(members), per_pass):
                chunk = members[i:i + per_pass]
                xs = torch.cat([x[_slices(in_dims, t.window, x.dim())] for t in chunk]).to(device)
                y = run_to_layer(model, ref, (xs,))
                if out is None:
                    out = _allocate(y, plan, batch, x.device)
                for j, t in enumerate(chunk):
                    part = y[j * batch:(j + 1) * batch][_slices(plan.output_dims, t.local, y.dim())]
                    out[_slices(plan.output_dims, t.keep, out.dim())] = part.to(out.device)
                bar.advance(len(chunk))
    return out[0] if unbatched else out


def _allocate(y: torch.Tensor, plan: TilePlan, batch: int, device) -> torch.Tensor:
    shape = list(plan.output_shape)
    shape[0] = batch
    for d in range(len(shape)):
        if d not in plan.output_dims and d != 0 and y.shape[d] != shape[d]:
            raise RflensError(f"a tile's output has {y.shape[d]} entries along dimension {d}, the "
                              f"whole output {shape[d]}: the model's output does not tile")
    return torch.empty(shape, dtype=y.dtype, device=device)


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, total: int, show: bool):
        self.total, self.show, self.bar, self.task = total, show, None, None

    def __enter__(self):
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress("tiles", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("tiles", total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


def whole(model: nn.Module, x: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """The untiled output of ``plan.layer`` on ``x`` (eval mode, no grad)."""
    ref = LayerRef.parse(plan.layer, model)
    with eval_mode(model), torch.no_grad():
        return run_to_layer(model, ref, (x.to(_device(model, x)),))


def check(model: nn.Module, plan: TilePlan, x: torch.Tensor | None = None, *,
          dtype: Any = torch.float64, seed: int = 0, batch_size: int | None = None,
          progress: bool | None = None) -> TileCheck:
    """Run ``plan`` tiled and the whole input once each on the same input and compare.

    ``x``: the input (default: standard normal noise of the plan's shape, batch 1, from
    ``seed``). ``dtype``: both runs use a deep copy of the model in this dtype (default float64,
    so that float rounding stays far below any stitching error); None runs the model as it is.
    One tile runs first, untimed, so that one-time costs of the first forward pass are not
    charged to either method."""
    net = model
    if dtype is not None:
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        net = copy.deepcopy(model).to(dtype)
    if x is None:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((1, *plan.input_shape), generator=gen,
                        dtype=dtype or torch.float32)
    elif dtype is not None:
        x = x.to(dtype)
    x, _ = _check_input(x, plan)
    first = next(plan.tiles())  # warm-up on one tile: first calls pay one-time costs
    whole(net, x[_slices(tuple(range(2, x.dim())), first.window, x.dim())], plan)
    start = time.perf_counter()
    tiled = run(net, x, plan, batch_size=batch_size, progress=progress)
    mid = time.perf_counter()
    ref = whole(net, x, plan).to(tiled.device)
    end = time.perf_counter()
    if ref.shape != tiled.shape:
        raise RflensError(f"the tiled output has shape {tuple(tiled.shape)}, the whole output "
                          f"{tuple(ref.shape)}")
    diff = float((tiled - ref).abs().max()) if ref.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return TileCheck(diff, scale, str(tiled.dtype).removeprefix("torch."), plan.n_tiles,
                     mid - start, end - mid)
