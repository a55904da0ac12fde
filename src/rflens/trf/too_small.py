"""Explaining an input that is too small for a model: the failing layer and the minimum size."""

from __future__ import annotations

import re

import torch

from rflens.errors import InputTooSmallError, RflensError
from rflens.trf.capture import capture
from rflens.trf.instrument import ModuleTracker, eval_mode, meta_state


_TOO_SMALL = re.compile(r"too small|smaller than|greater than|Output size is|negative|"
                        r"non-positive|Kernel size can't be|invalid|empty", re.I)


def explain_too_small(model, inputs: tuple, exc: RflensError) -> None:
    """If the model fails because the input is too small, name the layer and the minimum size."""
    if not _TOO_SMALL.search(str(exc)):
        return
    shape = tuple(inputs[0].shape)
    failing = _failing_module(model, shape)
    big = max(shape[2:])
    while not _runs(model, shape[:2] + (big,) * (len(shape) - 2)):
        big *= 2
        if big > 1 << 14:
            return
    minimum = []
    for k in range(len(shape) - 2):  # smallest size along axis k, the others large enough
        lo, hi = 0, big
        while hi - lo > 1:
            mid = (lo + hi) // 2
            probe = shape[:2] + tuple(mid if a == k else big for a in range(len(shape) - 2))
            lo, hi = (lo, mid) if _runs(model, probe) else (mid, hi)
        minimum.append(max(hi, shape[2 + k]))
    where = f" at layer {failing}" if failing else ""
    raise InputTooSmallError(
        f"input {'x'.join(map(str, shape[1:]))} is too small for the model{where}: it needs at least "
        f"{'x'.join(map(str, [shape[1], *minimum]))}; use a larger --input") from exc


def _runs(model, shape) -> bool:
    probe = (torch.empty(shape, device="meta"),)
    try:
        capture(model, probe, device="meta")
        return True
    except Exception:  # noqa: BLE001 - any failure means "does not run at this size"
        return False


def _failing_module(model, shape) -> str | None:
    """The innermost module that was running when the model failed on meta."""
    tracker = ModuleTracker(model)
    try:
        with eval_mode(model), tracker:
            torch.func.functional_call(model, meta_state(model), (torch.empty(shape, device="meta"),),
                                       strict=False, tie_weights=True)
    except Exception:  # noqa: BLE001 - the failure is what we are looking for
        return next((s for s in reversed(tracker.stack) if s), None)
    return None
