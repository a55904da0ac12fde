"""Shift-and-stitch (OverFeat, FCN), truncation, and the comparison of both dense methods."""

from __future__ import annotations

import copy
import itertools
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rflens.errors import RflensError
from rflens.dense.geometry import DenseGeometry, analyze
from rflens.dense.modules import Ints, to_f_pad, tup
from rflens.dense.rarefy import rarefy_with_geometry, rarefy
from rflens.trf.instrument import LayerRef, run_to_layer


class Truncated(nn.Module):
    """``model`` cut after one of its layers: returns that layer's output (``layer`` is a row name as
    ``rflens trf`` prints it: ``layer2``, ``layer2#2`` for its second call, ``output``) and skips the
    rest of ``model.forward``. Works for any forward (chains, residual networks)."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.model, self.layer = model, LayerRef.parse(layer, model)

    def forward(self, *args: Any) -> Any:
        return run_to_layer(self.model, self.layer, args)


def truncate(model: nn.Module, layer: str | None) -> nn.Module:
    """A copy of ``model`` whose output is the output of layer ``layer`` (a row name of ``rflens trf``,
    e.g. ``features.16`` or ``layer2``); ``None`` returns ``model`` unchanged."""
    if not layer:
        return model
    LayerRef.parse(layer, model)
    return Truncated(copy.deepcopy(model), layer)


def shifted_input(x: Tensor, shift: Sequence[int]) -> Tensor:
    """``x`` seen from offset ``shift`` (per spatial axis): crop ``x[..., s0:, s1:]`` and zero-pad at
    the far end back to ``x``'s size."""
    cropped = x[(..., *[slice(s, None) for s in shift])]
    return F.pad(cropped, to_f_pad([(0, s) for s in shift]))


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
    return tup(jump, x.ndim - 2)


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
    rare, geometry = rarefy_with_geometry(net, x)
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
