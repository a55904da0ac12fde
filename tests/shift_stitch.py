"""An own shift-and-stitch loop: the independent truth dense prediction is checked against
(imports nothing from rflens)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def own_shift_and_stitch(model: nn.Module, x: torch.Tensor, jump: int) -> torch.Tensor:
    """Shift (s, t) sees x[..., s:, t:] zero-padded at the far end; output i lands at J*i + s."""
    outs = {}
    with torch.no_grad():
        for s in range(jump):
            for t in range(jump):
                outs[s, t] = model(F.pad(x[..., s:, t:], (0, t, 0, s)))
    first = outs[0, 0]
    dense = torch.zeros((*first.shape[:2], jump * first.shape[2], jump * first.shape[3]), dtype=x.dtype)
    for (s, t), y in outs.items():
        dense[..., s::jump, t::jump] = y
    return dense
