"""Lookups: a table indexed by a tensor of indices (``embedding``, ``table[labels]``).

When the table is a constant (a weight) and the indices carry the grid — an embedding of a label
map — each output unit reads the index at its own position: pointwise along the grid, the table's
own dimensions plain. When the table itself carries the grid, which units are read depends on the
index values: that selection is not followed, and the rule says so by name."""

from __future__ import annotations

import torch

from rflens.geometry.fields import plain
from rflens.trf.rules.merge import broadcast_merge
from rflens.trf.rules.registry import Arg, OpCall, register


@register("index")
def index(call: OpCall) -> list:
    """``self[indices]`` (advanced indexing): the index tensors' broadcast shape replaces the
    indexed dimensions — in place when they are adjacent, else in front (NumPy's rule)."""
    table, indices = call.kw["self"], list(call.kw["indices"])
    if table.field is not None:
        raise NotImplementedError("the indexed tensor depends on the input, and which of its units "
                                  "are read depends on the index values (value-dependent selection)")
    used = [d for d, a in enumerate(indices) if isinstance(a, Arg)]
    tensors = [indices[d] for d in used]
    if not any(a.field is not None for a in tensors):
        return [None]
    shape = tuple(torch.broadcast_shapes(*(tuple(a.shape) for a in tensors)))
    merged = broadcast_merge(call, shape, [a for a in tensors if a.field is not None])
    adjacent = used == list(range(used[0], used[-1] + 1))
    before = table.shape[:used[0]] if adjacent else ()
    after = table.shape[used[-1] + 1:] if adjacent else tuple(
        n for d, n in enumerate(table.shape) if d not in used)
    return [merged.with_dims([plain(n) for n in before] + list(merged.dims) + [plain(n) for n in after])]
