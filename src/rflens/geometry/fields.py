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

from rflens.geometry.axis import AxisMap, compose, explicit_reads


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
    lo: np.ndarray | None = None  # exact dependency hull per unit (int64, length ``units``)
    hi: np.ndarray | None = None
    step: int = 1                 # axis units one step of this factor moves (see below)
    whole: int = 0                # units of the whole axis (0: ``size``)

    # A spatial axis split by a view (Swin's window partition: 56 -> 8 windows x 7) is carried by
    # *sub-factors*: the outer one (size 8, step 7) and the inner one (size 7, step 1), often in
    # different tensor dimensions. Axis unit ``u = sum(index_k * step_k)`` over the axis's
    # sub-factors; ``field``, ``lo`` and ``hi`` always describe the whole axis (``whole`` units).

    @property
    def units(self) -> int:
        """Units of the whole axis (the length of ``lo``/``hi``)."""
        return self.whole or self.size

    @property
    def full(self) -> bool:
        """The factor is the whole axis (not a sub-factor of a split axis)."""
        return self.step == 1 and self.units == self.size


@dataclass(frozen=True, eq=False)
class Tokens:
    """A token dimension: a flattened grid (``grid``, a tuple of factors as in a :data:`Dim`) with
    ``before`` and ``after`` extra tokens around it (class, distillation and register tokens,
    learned queries) that are no unit of the grid. ``mixed``: the extra tokens have attended to the
    grid (they then depend on all of it); else they depend on no pixel at all.

    Rules that do not know tokens see ``axis = TOKENS``: they treat the dimension as spatial and fail
    on it (the op is then reported, never guessed)."""

    grid: tuple[Factor, ...]
    before: int = 0
    after: int = 0
    mixed: bool = False
    axis: int = -1  # TOKENS

    @property
    def size(self) -> int:
        n = self.before + self.after
        return n + dim_size(self.grid)


TOKENS = -1
Dim = tuple  # of Factor (and at most one Tokens)


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
    """The factor of a dimension that is exactly one whole spatial axis (else None)."""
    if len(dim) == 1 and isinstance(dim[0], Factor) and dim[0].axis is not None and dim[0].full:
        return dim[0]
    return None


def axis_factors(dim: Dim):
    """The spatial factors of a dimension, a token dimension's grid included."""
    for f in dim:
        if isinstance(f, Tokens):
            yield from (g for g in f.grid if g.axis is not None)
        elif f.axis is not None:
            yield f


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
        is known: spatial dimensions (also flattened ones, token grids and split axes, whose
        sub-factors are put back together into one factor over the units present) and axes
        reduced to one unit. A split axis spread over several dimensions reports the first."""
        out: dict[int, tuple[int | None, Factor]] = {f.axis: (None, f) for f in self.extra}
        parts: dict[int, list[tuple[int, Factor]]] = {}
        for d, dim in enumerate(self.dims):
            for f in axis_factors(dim):
                parts.setdefault(f.axis, []).append((d, f))
        for axis, found in parts.items():
            whole = join(tuple(f for _, f in found))
            if whole is not None:
                out[axis] = (found[0][0], whole)
        return out


def enumerate_units(parts: tuple[Factor, ...]) -> np.ndarray:
    """The axis units that the sub-factors ``parts`` of one axis enumerate, increasing."""
    idx = np.zeros(1, dtype=np.int64)
    for f in sorted(parts, key=lambda f: -f.step):
        idx = (idx[:, None] + f.step * np.arange(f.size, dtype=np.int64)[None, :]).ravel()
    return np.sort(idx)


def join(parts: tuple[Factor, ...]) -> Factor | None:
    """One factor over the axis units that ``parts`` (the sub-factors of one axis) enumerate, in
    increasing order: the whole axis when they cover it, else the units present (a strided or
    explicit selection). None when the units are not a clean enumeration."""
    if len(parts) == 1 and parts[0].full:
        return parts[0]
    f0 = parts[0]
    idx = enumerate_units(parts)
    if len(np.unique(idx)) != len(idx) or idx[-1] >= f0.units:
        return None
    if len(idx) == f0.units:
        return Factor(f0.units, f0.axis, f0.field, f0.lo, f0.hi)
    if len(idx) > 1 and np.all(np.diff(idx) == idx[1] - idx[0]):
        reads = AxisMap(1, int(idx[1] - idx[0]), (int(idx[0]),), (int(idx[0]),))
        fmap = compose(f0.field, reads)
    else:
        fmap = compose(f0.field, explicit_reads(idx, idx), len(idx))
    return Factor(len(idx), f0.axis, fmap, f0.lo[:, idx], f0.hi[:, idx])


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
    factors = [f for dim in field.dims for f in axis_factors(dim)] + list(field.extra)
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
    def fix(f):
        if isinstance(f, Tokens):
            return replace(f, grid=tuple(fix(g) for g in f.grid))
        if f.axis is None:
            return f
        lo, hi = fn(f)
        return replace(f, lo=lo, hi=hi)

    dims = tuple(tuple(fix(f) for f in dim) for dim in field.dims)
    return replace(field, dims=dims, extra=tuple(fix(f) for f in field.extra))
