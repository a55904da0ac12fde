"""Which elements of one view a write through another view of the same storage changes.

PyTorch views share storage: an in-place write through ``w`` (``x[..., 1:-1] = y``, ``out=w``,
``w.copy_(y)``) changes every tensor ``t`` that shares ``w``'s storage — the base and any view
taken earlier. Both are strided views of the storage's root tensor; capture reads their sizes,
strides and storage offsets and this module places ``w``'s elements inside ``t``.

A placement is ``(dims, selects)``: ``dims`` has one entry per dimension of ``t``, ``(w dim or
None, which)`` where ``which[j]`` is the index along that ``w`` dimension of ``t``'s unit ``j``
(``-1``: not written), or, for ``w dim None``, a boolean mask of the ``t`` indices written (``w``
holds that position fixed); ``selects`` lists ``(w dim, index)`` for the ``w`` dimensions that
``t`` holds at one position (only that slice of ``w`` lands in ``t``). Views
that do not lie on the root's grid (overlapping strides, a stride that wraps across rows) give
``None``: the write is then reported as not followed, never guessed.
"""

from __future__ import annotations

import numpy as np
import torch

Layout = tuple[tuple[int, ...], tuple[int, ...], int]  # sizes, strides, storage offset


def layout(t: torch.Tensor) -> Layout:
    return tuple(t.shape), tuple(t.stride()), int(t.storage_offset())


def _root_coords(view: Layout, root: Layout) -> list | None:
    """Per root dimension, the view's progression ``(view dim or None, start, step, count)``."""
    sizes, strides, offset = view
    r_sizes, r_strides, r_offset = root
    order = sorted(range(len(r_sizes)), key=lambda e: -r_strides[e])
    rel = offset - r_offset
    start = [0] * len(r_sizes)
    for e in order:  # the view's first element in root coordinates
        if r_strides[e] <= 0:
            return None
        start[e], rel = divmod(rel, r_strides[e]) if r_sizes[e] > 1 else (0, rel)
    if rel != 0 or any(not 0 <= s < n for s, n in zip(start, r_sizes)):
        return None
    place: list = [[None, s, 0, 1] for s in start]
    for d, (n, st) in enumerate(zip(sizes, strides)):
        if n == 1:
            continue
        e = next((e for e in order if r_sizes[e] > 1 and st % r_strides[e] == 0 and st > 0), None)
        if e is None or place[e][0] is not None:
            return None
        k = st // r_strides[e]
        if start[e] + (n - 1) * k >= r_sizes[e]:
            return None  # it wraps into the next row: not a box on the root's grid
        place[e] = [d, start[e], k, n]
    for d, (n, st) in enumerate(zip(sizes, strides)):
        # a single unit of a root dimension (x[..., 0:1]): slicing keeps the root's stride there
        e = next((e for e in order if n == 1 and r_sizes[e] > 1 and st == r_strides[e]
                  and place[e][0] is None), None)
        if e is not None:
            place[e] = [d, start[e], 1, 1]
    # single units left (a strided slice of one unit, h[..., ::2] of a 2-wide map): a slice keeps
    # the root's dimensions in order, so with as many dimensions the same index is the same axis;
    # else they pair in order with the root dimensions of several units not yet placed
    used = {p[0] for p in place if p[0] is not None}
    lone = [d for d, n in enumerate(sizes) if n == 1 and d not in used]
    free = [e for e in range(len(r_sizes)) if r_sizes[e] > 1 and place[e][0] is None]
    if len(sizes) == len(r_sizes):  # root dimensions of one unit too: they may carry an axis
        pairs = [(e, e) for e in range(len(r_sizes)) if place[e][0] is None and e in lone]
    else:
        pairs = list(zip(lone, free)) if lone and len(lone) == len(free) else []
    for d, e in pairs:
        place[e] = [d, start[e], 1, 1]
    return place


def placement(written: Layout, target: Layout, root: Layout) -> tuple | None:
    """Where the elements of ``written`` fall inside ``target`` (see the module docstring); None
    when either is not a box on the root's grid, ``()`` when they share no element."""
    w, t = _root_coords(written, root), _root_coords(target, root)
    if w is None or t is None:
        return None
    out: list = [None] * len(target[0])
    selects: list = []
    for (wd, ws, wk, wn), (td, ts, tk, tn) in zip(w, t):
        if td is None:  # the target holds this root position fixed
            if wd is None:
                if ws != ts:
                    return ()
                continue
            i = ts - ws
            if i % wk or not 0 <= i // wk < wn:
                return ()
            selects.append((wd, i // wk))
            continue
        j = np.arange(tn, dtype=np.int64)
        coord = ts + j * tk
        if wd is None:
            mask = coord == ws
            if not mask.any():
                return ()
            out[td] = (None, mask)
            continue
        rel = coord - ws
        inside = (rel % wk == 0) & (rel // wk >= 0) & (rel // wk < wn)
        if not inside.any():
            return ()
        out[td] = (wd, np.where(inside, rel // wk, -1))
    n = len(target[0])
    for d in range(n):
        if out[d] is None:  # a size-1 target dimension on a position both hold: written
            out[d] = (None, np.ones(target[0][d], dtype=bool))
    return out, selects


__all__ = ["layout", "placement"]
