"""What rflens knows about one tensor: per tensor dimension, which input axis it carries and the
field of each unit along it. Pure Python; knows nothing of torch.

A tensor dimension is a tuple of *factors* (outer to inner). Most dimensions have one factor: a
plain batch/channel dimension (``axis is None``) or a spatial dimension that carries input axis
``axis`` with the periodic map ``field``. Flattening several dimensions into one (``flatten(2)``
before a token mixer, ``view(B*T, C)`` inside ``linear``) concatenates their factors, and a later
``view`` that splits the dimension at factor boundaries restores them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from rflens.geometry.axis import AxisMap


@dataclass(frozen=True, eq=False)
class Factor:
    """One factor of a tensor dimension.

    ``field`` is the *geometric* field (periodic, extends into padding: the unclipped box and the
    summary numbers R, J, P). ``lo``/``hi`` (int64, shape ``(components, size)``) hold the exact
    hull of the input pixels each unit depends on (clipped to the image; empty when ``lo > hi``),
    once per *component*: the field of a tensor is the union over components of the product of
    their per-axis hulls. Usually there is one component; paths that are empty (in padding) on
    different axes for the same unit need several, because such a union is not a product.
    """

    size: int
    axis: int | None = None       # input spatial axis carried, None for batch/channel/features
    field: AxisMap | None = None  # geometric per-unit input interval along ``axis``
    lo: np.ndarray | None = None  # exact dependency hull per unit (int64, length ``size``)
    hi: np.ndarray | None = None


Dim = tuple[Factor, ...]


def plain(size: int) -> Dim:
    return (Factor(size),)


def spatial(size: int, axis: int, fmap: AxisMap, lo: np.ndarray, hi: np.ndarray) -> Dim:
    return (Factor(size, axis, fmap, lo, hi),)


def dim_size(dim: Dim) -> int:
    n = 1
    for f in dim:
        n *= f.size
    return n


def single_spatial(dim: Dim) -> Factor | None:
    """The factor of a dimension that is exactly one spatial axis (else None)."""
    if len(dim) == 1 and dim[0].axis is not None:
        return dim[0]
    return None


@dataclass(frozen=True)
class TensorField:
    """Receptive-field state of one tensor.

    ``dims``: one :data:`Dim` per tensor dimension. ``is_global``: some path from the input reaches
    this tensor through an op that pools over a whole spatial axis (the geometric field in ``dims``
    then describes the local paths only). ``misaligned``: a non-aligned merge lies upstream.
    ``unknown``: names of ops without a rule upstream; geometry below them is not trusted.
    ``lost``: an op rflens understands moved spatial data in a way it cannot follow (e.g. a view
    that splits a spatial axis); the field is unknown from there on.
    """

    dims: tuple[Dim, ...]
    is_global: bool = False
    misaligned: bool = False
    unknown: frozenset[str] = field(default_factory=frozenset)
    lost: frozenset[str] = field(default_factory=frozenset)
    extra: tuple[Factor, ...] = ()  # axes reduced to one unit (squeezed/selected/pooled away)
    approximate: bool = False  # exact hulls were merged per axis somewhere upstream (supersets)

    def with_dims(self, dims: tuple[Dim, ...] | list[Dim], **changes) -> "TensorField":
        return replace(self, dims=tuple(dims), **changes)

    def axis_fields(self) -> dict[int, tuple[int | None, Factor]]:
        """input axis -> (tensor dim or None for a reduced axis, factor) for every axis whose field
        is known: spatial dimensions (also flattened ones) and axes reduced to one unit."""
        out: dict[int, tuple[int | None, Factor]] = {f.axis: (None, f) for f in self.extra}
        for d, dim in enumerate(self.dims):
            for f in dim:
                if f.axis is not None:
                    out[f.axis] = (d, f)
        return out


def flags_of(fields: list[TensorField]) -> dict:
    """Sticky flags a result inherits from all of its inputs."""
    return dict(
        is_global=any(f.is_global for f in fields),
        misaligned=any(f.misaligned for f in fields),
        approximate=any(f.approximate for f in fields),
        unknown=frozenset().union(*(f.unknown for f in fields)),
        lost=frozenset().union(*(f.lost for f in fields)),
    )


_BIG = np.int64(1) << 60
MAX_COMPONENTS = 64


def collapse(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis union of all components of one factor (one component; ignores empty entries)."""
    ok = lo <= hi
    mlo = np.where(ok, lo, _BIG).min(axis=0, keepdims=True)
    mhi = np.where(ok, hi, -_BIG).max(axis=0, keepdims=True)
    return mlo, mhi


def compact(field: TensorField) -> TensorField:
    """Merge components that are non-empty on exactly the same units on every axis (their union
    is then the per-axis union: exact), drop components empty on some whole axis, and collapse to
    one component if the factors disagree on the count or too many remain."""
    factors = [f for dim in field.dims for f in dim if f.axis is not None] + list(field.extra)
    if not factors:
        return field
    counts = {f.lo.shape[0] for f in factors}
    if counts == {1}:
        return field
    if len(counts) == 1:
        masks = [f.lo <= f.hi for f in factors]
        alive = np.all([m.any(axis=1) for m in masks], axis=0)
        groups: dict[bytes, list[int]] = {}
        for k in np.nonzero(alive)[0]:
            key = b"".join(np.packbits(m[k]).tobytes() + b"|" for m in masks)
            groups.setdefault(key, []).append(int(k))
        rows = list(groups.values()) or [[0]]
        if len(rows) <= MAX_COMPONENTS:
            return _rebuild(field, lambda f: _merge_rows(f, rows))
    # per-axis unions of several components: each unit's hull can only grow (flagged)
    return replace(_rebuild(field, lambda f: collapse(f.lo, f.hi)), approximate=True)


def _merge_rows(f: Factor, rows: list[list[int]]):
    parts = [collapse(f.lo[r], f.hi[r]) for r in rows]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _rebuild(field: TensorField, fn) -> TensorField:
    def fix(f: Factor) -> Factor:
        if f.axis is None:
            return f
        lo, hi = fn(f)
        return Factor(f.size, f.axis, f.field, lo, hi)

    dims = tuple(tuple(fix(f) for f in dim) for dim in field.dims)
    return replace(field, dims=dims, extra=tuple(fix(f) for f in field.extra))
