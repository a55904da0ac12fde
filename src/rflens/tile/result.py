"""Results of tiling: the plan and the stitching check, frozen dataclasses that render themselves.

Units: halos, multiples, sizes and tile windows are input pixels; ``keep``/``local`` ranges are
output units. Every range of a tile is half-open ``[start, stop)`` (a Python slice), every
per-axis tuple is ordered like the input's spatial axes.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from rflens.tile.geometry import AxisSegment

SCHEMA_VERSION = 1


def _x(values) -> str:
    return "?" if values is None else "×".join("?" if v is None else str(v) for v in values)


@dataclass(frozen=True)
class Tile:
    """One tile: ``window`` (input pixels it reads), ``keep`` (the output units of the whole
    output it provides), ``local`` (the same units in the tile's own output), per axis."""

    index: tuple[int, ...]
    window: tuple[tuple[int, int], ...]
    keep: tuple[tuple[int, int], ...]
    local: tuple[tuple[int, int], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in self.window)

    def to_dict(self) -> dict:
        return {"index": list(self.index), "input": [list(w) for w in self.window],
                "keep": [list(k) for k in self.keep], "local": [list(k) for k in self.local]}


@dataclass(frozen=True)
class TileCheck:
    """Tiled vs whole output on the same input: the largest absolute difference, the largest
    absolute output value (its scale), the dtype both ran in, and both wall times (seconds)."""

    max_abs_diff: float
    max_abs_output: float
    dtype: str
    tiles: int
    seconds_tiled: float
    seconds_whole: float

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.max_abs_output if self.max_abs_output > 0 else math.nan

    def to_dict(self) -> dict:
        rel = self.relative
        return {"max_abs_diff": self.max_abs_diff, "max_abs_output": self.max_abs_output,
                "relative": None if math.isnan(rel) else rel, "dtype": self.dtype,
                "tiles": self.tiles, "seconds_tiled": self.seconds_tiled,
                "seconds_whole": self.seconds_whole}


@dataclass(frozen=True)
class TilePlan:
    """How to cut an input into tiles whose stitched outputs equal the whole-input output.

    - ``halo``: per axis ``(before, after)``, how far output fields reach before/after the
      input block they belong to (None when it cannot be computed: unknown ops, or a global path
      without ``erf=``); ``halo_source``: ``"trf"`` (exact) or ``"erf"`` (a mass fraction).
    - ``multiple``: tile offsets are multiples of it (the input period of every tensor the output
      depends on); ``units_per_block``: output units per ``multiple`` input pixels.
    - ``min_size``: the smallest input length the model runs on (None: unknown).
    - ``exact``: the stitched output equals the whole output; else ``reason`` says why not and
      ``global_module`` names where a global path starts.
    - ``useful_input``: ``(smallest, largest)`` per axis (docs/tiling.md); ``unproductive``: layers
      whose field exceeds the input.
    - ``tile``: the nominal tile window; ``axes``: the tiles along each axis (the grid is their
      product); None when there is no halo to plan with.
    """

    model: str
    layer: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    output_dims: tuple[int, ...]
    exact: bool
    reason: str | None
    global_module: str | None
    halo: tuple[tuple[int, int], ...] | None
    halo_source: str | None
    multiple: tuple[int, ...]
    units_per_block: tuple[int, ...]
    min_size: tuple[int | None, ...]
    useful_input: tuple[tuple[int, ...], tuple[int, ...]]
    unproductive: tuple[str, ...]
    tile: tuple[int, ...] | None
    axes: tuple[tuple[AxisSegment, ...], ...] | None
    notes: tuple[str, ...] = ()
    erf_mass: float | None = None
    erf_box_mass: float | None = None
    check: TileCheck | None = field(default=None, compare=False)

    # access -------------------------------------------------------------------------------
    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.input_shape[1:])

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes) if self.axes else ()

    @property
    def n_tiles(self) -> int:
        return math.prod(self.grid) if self.axes else 0

    def tiles(self) -> Iterator[Tile]:
        """Every tile, in row-major order of the grid."""
        if not self.axes:
            return iter(())
        return (Tile(tuple(i for i, _ in combo), tuple((s.start, s.stop) for _, s in combo),
                     tuple(s.keep for _, s in combo), tuple(s.local for _, s in combo))
                for combo in itertools.product(*(list(enumerate(a)) for a in self.axes)))

    @property
    def overhead(self) -> float | None:
        """Input pixels read by all tiles over the image's pixels, minus 1 (0 for one tile)."""
        if not self.axes:
            return None
        read = math.prod(sum(s.size for s in a) for a in self.axes)
        return read / math.prod(self.spatial) - 1.0

    def with_check(self, check: TileCheck) -> "TilePlan":
        return replace(self, check=check)

    # serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        plan = None
        if self.axes:
            plan = {"tile": list(self.tile), "grid": list(self.grid), "count": self.n_tiles,
                    "overhead": self.overhead,
                    "axes": [[s.to_dict() for s in a] for a in self.axes],
                    "tiles": [t.to_dict() for t in self.tiles()]}
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "layer": self.layer,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape[1:]),
            "halo": [list(h) for h in self.halo] if self.halo is not None else None,
            "halo_source": self.halo_source,
            "multiple": list(self.multiple),
            "units_per_block": list(self.units_per_block),
            "min_size": list(self.min_size),
            "exact": self.exact,
            "reason": self.reason,
            "global_module": self.global_module,
            "useful_input": {"smallest": list(self.useful_input[0]),
                             "largest": list(self.useful_input[1])},
            "unproductive": list(self.unproductive),
            "erf": None if self.erf_mass is None else {"mass": self.erf_mass,
                                                       "box_mass": self.erf_box_mass},
            "plan": plan,
            "check": self.check.to_dict() if self.check is not None else None,
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    # human forms --------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs of the human table."""
        halo = "?" if self.halo is None else " × ".join(f"{b}/{a}" for b, a in self.halo)
        src = {"trf": " (exact, before/after)", "erf": f" (holds {self.erf_box_mass:.4g} of the "
               f"ERF mass; asked {self.erf_mass:g})" if self.erf_box_mass is not None else ""}
        rows = [("model", self.model), ("layer", self.layer),
                ("input", _x(self.input_shape)), ("output", _x(self.output_shape[1:])),
                ("exact", "yes" if self.exact else f"no: {self.reason}"),
                ("halo", halo + src.get(self.halo_source or "", "")),
                ("multiple", _x(self.multiple) + " (tile offsets and sizes)"),
                ("min size", _x(self.min_size) + " (smallest input the model runs on)"),
                ("smallest useful", f"{_x(self.useful_input[0])} (the smallest input in which "
                                    "some output unit sees no padding)"),
                ("largest useful", f"{_x(self.useful_input[1])} (the largest field of any layer: "
                                   "beyond it no unit sees the whole input)")]
        if self.unproductive:
            more = f" and {len(self.unproductive) - 1} more" if len(self.unproductive) > 1 else ""
            rows.append(("field > input", f"{self.unproductive[0]}{more}"))
        if self.axes:
            rows.append(("tile", f"{_x(self.tile)}, grid {_x(self.grid)} = {self.n_tiles} tiles, "
                                 f"overhead {100 * self.overhead:.1f} % (the tiles read "
                                 f"{1 + self.overhead:.2f}× the input's pixels)"))
            for k, segs in enumerate(self.axes):
                cuts = ", ".join(f"{s.start}..{s.stop}→{s.keep[0]}..{s.keep[1]}" for s in segs[:6])
                rows.append((f"axis {k} tiles", cuts + (", ..." if len(segs) > 6 else "")))
        if self.check is not None:
            c = self.check
            rows.append(("check", f"max |tiled - whole| = {c.max_abs_diff:.3g} ({c.dtype}, "
                                  f"relative {c.relative:.3g}); tiled {c.seconds_tiled:.3f} s, "
                                  f"whole {c.seconds_whole:.3f} s"))
        rows.extend(("note", n) for n in self.notes)
        return rows

    def format_table(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def __rich__(self):
        from rich.table import Table

        table = Table(title=f"Tiling plan for {self.model}", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value", overflow="fold")
        for k, v in self.rows():
            table.add_row(k, v, style=None if self.exact or k != "exact" else "yellow")
        return table

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in self.rows())
        return f"<table class='rflens rflens-tile'><tbody>{body}</tbody></table>"
