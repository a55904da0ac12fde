"""Results of a theoretical-receptive-field analysis: frozen dataclasses that render themselves.

Units: sizes, paddings and boxes are in input pixels; jumps are input pixels per unit (exact
fractions below 1 after upsampling); centres are input pixel coordinates (0-based, may be .5).
Every per-axis tuple is ordered like the input's spatial axes (H, W for images).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator

import numpy as np

from rflens.errors import RflensError
from rflens.geometry.fields import Factor
from rflens.trf.render import exact, flat_rows, html_table, rich_table

SCHEMA_VERSION = 1


class LayerNotFoundError(RflensError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class AxisField:
    """The field along one input axis. For a non-uniform axis (upsampling, adaptive pooling,
    concatenation along the axis) ``size`` is the largest size over units and ``padding``/``center``
    describe unit 0. A summary that no single number describes is None, and ``note`` says why:
    ``jump`` when the units are not evenly spaced (a concatenation along the axis, a roll, a
    write into part of the axis), ``padding``/``center`` when unit 0 reads no pixel."""

    size: int
    jump: Fraction | None
    padding: int | None
    center: Fraction | None
    uniform: bool
    note: str | None = None


@dataclass(frozen=True)
class LayerField:
    """One row: the field of every unit of one module's (or op's) output."""

    name: str
    op: str
    shape: tuple[int, ...]
    axes: tuple[AxisField | None, ...]
    aligned: bool
    is_global: bool
    unknown_ops: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    input_spatial: tuple[int, ...] = ()
    exact_hull: bool = True  # False: box(clip=True) may be a superset (see docs)
    factors: tuple[Factor | None, ...] = field(default=(), repr=False, compare=False)
    # (per tensor dimension its parts: ("plain", size) / ("axis", size, axis, step) / ("tokens",
    # before, after, parts of the grid); per axis the whole-axis units the row's units stand for,
    # None when they are the same): where each unit sits in the tensor
    layout: tuple = field(default=(), repr=False, compare=False)

    # per-axis summaries -------------------------------------------------------------------
    @property
    def known(self) -> bool:
        """False when an unknown op (or an untracked reshape) lies between input and this layer."""
        return not self.unknown_ops and not self.lost and all(a is not None for a in self.axes)

    def _per_axis(self, attr: str) -> tuple | None:
        if not self.known:
            return None
        return tuple(getattr(a, attr) for a in self.axes)

    @property
    def size(self) -> tuple[int, ...] | None:
        return self._per_axis("size")

    @property
    def jump(self) -> tuple[Fraction, ...] | None:
        return self._per_axis("jump")

    @property
    def padding(self) -> tuple[int, ...] | None:
        return self._per_axis("padding")

    @property
    def center(self) -> tuple[Fraction, ...] | None:
        return self._per_axis("center")

    @property
    def uniform(self) -> bool:
        return self.known and all(a.uniform for a in self.axes)

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of units along each input axis (1 for an axis pooled away)."""
        return tuple(f.size if f is not None else 0 for f in self.factors)

    @property
    def flags(self) -> tuple[str, ...]:
        """What to tell about this row: ``unknown``, ``global``, ``non-aligned``, ``non-uniform``,
        ``exceeds-input`` (the field is larger than the input)."""
        checks = (("unknown", not self.known), ("global", self.is_global),
                  ("non-aligned", not self.aligned), ("non-uniform", self.known and not self.uniform),
                  ("exceeds-input", self.exceeds_input))
        return tuple(name for name, on in checks if on)

    @property
    def exceeds_input(self) -> bool:
        """True when the field is larger than the input along some axis."""
        return self.known and any(a.size > n for a, n in zip(self.axes, self.input_spatial))

    # boxes --------------------------------------------------------------------------------
    def _check_unit(self, unit) -> tuple[int, ...]:
        unit = (unit,) if isinstance(unit, (int, np.integer)) else tuple(unit)
        if not self.known:
            raise RflensError(f"the field of layer {self.name!r} is unknown ("
                              f"{', '.join(self.unknown_ops + self.lost)}): no boxes")
        if len(unit) != len(self.factors):
            raise RflensError(f"unit {unit} of layer {self.name!r} needs {len(self.factors)} "
                              f"indices, one per spatial axis (grid {self.grid})")
        for u, n in zip(unit, self.grid):
            if not 0 <= u < n:
                raise RflensError(f"unit {unit} is outside layer {self.name!r}'s grid {self.grid}")
        return unit

    def box(self, unit, clip: bool = False) -> tuple[tuple[int, int], ...] | None:
        """Inclusive input interval ``(lo, hi)`` per axis seen by ``unit`` (one index per axis).

        ``clip=False``: the geometric field, which may reach into padding (negative or past the
        border); None for a unit that reads nothing (a transposed convolution's gaps). ``clip=True``: the exact hull of the real input pixels the unit depends on (None
        when it depends on none, e.g. a unit computed from padding only). When ``exact_hull`` is
        False (more than 64 paths empty on different axes met upstream) it may be a superset."""
        unit = self._check_unit(unit)
        if not clip:
            box = tuple(f.field.interval(u) for u, f in zip(unit, self.factors))
            return None if any(lo > hi for lo, hi in box) else box
        los = [f.lo[:, u] for u, f in zip(unit, self.factors)]
        his = [f.hi[:, u] for u, f in zip(unit, self.factors)]
        present = np.all([lo <= hi for lo, hi in zip(los, his)], axis=0)
        if not present.any():
            return None
        return tuple((int(lo[present].min()), int(hi[present].max())) for lo, hi in zip(los, his))

    def locate(self, unit) -> tuple[np.ndarray, ...]:
        """Where ``unit`` (one index per input axis, as in :meth:`box`) sits in the layer's output
        tensor: per tensor dimension, the indices that belong to it (every index of a plain
        dimension such as batch or channels; the one token or position of the unit along a
        dimension that carries an axis). ``y[np.ix_(*layer.locate(unit))]`` holds the unit's
        features — in ``(B, C, H, W)``, ``(B, H, W, C)`` and token layouts ``(B, 1 + H*W, C)``
        alike. ``unit`` may also be ``"token:K"``: the K-th extra token of a token dimension (the
        class token is ``token:0``)."""
        if isinstance(unit, str) and unit.startswith("token:"):
            return self._locate_token(int(unit.split(":", 1)[1]))
        unit = self._check_unit(unit)
        if not self.layout:
            raise RflensError(f"layer {self.name!r} has no recorded layout")
        dims, axis_units = self.layout
        whole = tuple(u if units is None else units[u] for u, units in zip(unit, axis_units))
        return tuple(_dim_indices(parts, whole) for parts in dims)

    def _locate_token(self, k: int) -> tuple[np.ndarray, ...]:
        dims, _ = self.layout if self.layout else ((), ())
        out, found = [], False
        for parts in dims:
            idx = np.zeros(1, dtype=np.int64)
            for part in parts:
                if part[0] == "tokens":
                    _, before, after, grid = part
                    grid_size = int(np.prod([p[1] for p in grid]))
                    if not 0 <= k < before + after:
                        raise RflensError(f"layer {self.name!r} has {before + after} extra token(s); "
                                          f"token:{k} is not one of them")
                    own, size, found = np.array([k if k < before else grid_size + k]), before + after + grid_size, True
                elif part[0] == "plain":
                    own, size = np.arange(part[1]), part[1]
                else:
                    raise RflensError(f"layer {self.name!r} carries an axis outside its token dimension")
                idx = (idx[:, None] * size + own[None, :]).ravel()
            out.append(idx)
        if not found:
            raise RflensError(f"layer {self.name!r} has no token dimension with extra tokens")
        return tuple(out)

    def units_seeing(self, pixel) -> tuple[tuple[int, int], ...] | None:
        """Per axis, the inclusive range of units whose (exact) field contains ``pixel`` (the
        bounding box of those units); None if no unit sees it."""
        pixel = (pixel,) if isinstance(pixel, (int, np.integer)) else tuple(pixel)
        if not self.known:
            raise RflensError(f"the field of layer {self.name!r} is unknown: no inverse map")
        if len(pixel) != len(self.factors):
            raise RflensError(f"pixel {pixel} needs {len(self.factors)} coordinates")
        hits = [(f.lo <= p) & (p <= f.hi) for p, f in zip(pixel, self.factors)]  # (components, units)
        seeing = np.all([h.any(axis=1) for h in hits], axis=0)  # components that see it on every axis
        if not seeing.any():
            return None
        out = []
        for h in hits:
            units = np.nonzero(h[seeing].any(axis=0))[0]
            out.append((int(units[0]), int(units[-1])))
        return tuple(out)

    # serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        known = self.known
        return {
            "name": self.name,
            "op": self.op,
            "shape": list(self.shape),
            "size": [a.size for a in self.axes] if known else None,
            "jump": [exact(a.jump) for a in self.axes] if known else None,
            "padding": [a.padding for a in self.axes] if known else None,
            "center": [exact(a.center) for a in self.axes] if known else None,
            "aligned": self.aligned,
            "uniform": self.uniform if known else None,
            "global": self.is_global,
            "unknown": not known,
            "exact_hull": self.exact_hull,
            "notes": [a.note for a in self.axes if a is not None and a.note],
        }


@dataclass(frozen=True)
class ReceptiveField:
    """Theoretical receptive field of every layer of a model, in execution order."""

    model: str
    input_shape: tuple[int, ...]
    layers: tuple[LayerField, ...]
    alignment_issues: tuple = ()
    unsupported_ops: tuple = ()
    warnings: tuple[str, ...] = ()
    capture_path: str = "meta"

    # access -------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.layers[0].input_spatial if self.layers else ()

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[LayerField]:
        return iter(self.layers)

    def __contains__(self, name: object) -> bool:
        return any(layer.name == name for layer in self.layers)

    def __getitem__(self, name: str) -> LayerField:
        for layer in self.layers:
            if layer.name == name:
                return layer
        close = difflib.get_close_matches(str(name), self.names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see .names for all layers"
        raise LayerNotFoundError(f"no layer named {name!r} in {self.model}{hint}")

    def box(self, name: str, unit, clip: bool = False):
        """See :meth:`LayerField.box`."""
        return self[name].box(unit, clip=clip)

    def units_seeing(self, name: str, pixel):
        """See :meth:`LayerField.units_seeing`."""
        return self[name].units_seeing(pixel)

    def select(self, patterns: list[str] | None) -> "ReceptiveField":
        """A copy holding only layers whose names match one of the glob ``patterns``."""
        import fnmatch
        from dataclasses import replace

        if not patterns:
            return self
        keep = tuple(layer for layer in self.layers
                     if any(fnmatch.fnmatchcase(layer.name, p) for p in patterns))
        if not keep:
            raise RflensError(f"no layer of {self.model} matches {' '.join(patterns)} "
                              f"(layers look like {', '.join(self.names[:3])}, ...)")
        return replace(self, layers=keep)

    # serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "input": {"shape": list(self.input_shape)},
            "capture": self.capture_path,
            "layers": [layer.to_dict() for layer in self.layers],
            "alignment_issues": [issue.describe() for issue in self.alignment_issues],
            "unsupported_ops": [{"op": u.op, "module": u.module, "count": u.count, "reason": u.reason}
                                for u in self.unsupported_ops],
            "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_dataframe(self):
        """One row per layer; per-axis columns ``size_0, size_1, ...`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise RflensError("to_dataframe needs pandas: pip install pandas") from exc
        return pd.DataFrame(flat_rows(self))

    def _repr_html_(self) -> str:
        return html_table(self)

    def __rich__(self):
        return rich_table(self)


def _dim_indices(parts: tuple, unit: tuple[int, ...]) -> np.ndarray:
    """The indices of one tensor dimension (its ``parts`` from ``LayerField.layout``) that belong
    to ``unit``: a mixed-radix number over its parts, plain parts taking every value."""
    idx = np.zeros(1, dtype=np.int64)
    for part in parts:
        if part[0] == "tokens":
            _, before, after, grid = part
            inner = _dim_indices(grid, unit)
            total = before + after + int(np.prod([p[1] for p in grid]))
            idx = (idx[:, None] * total + (before + inner)[None, :]).ravel()
            continue
        size = part[1]
        if part[0] == "plain":
            own = np.arange(size, dtype=np.int64)
        else:
            _, _, axis, step = part
            own = np.array([(unit[axis] // step) % size], dtype=np.int64)
        idx = (idx[:, None] * size + own[None, :]).ravel()
    return idx
