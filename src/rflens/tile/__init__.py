"""Tiled inference planned from exact receptive fields.

``rflens.tile.plan(model, input_shape, tile=...)`` derives, from the exact per-unit fields of the
model's output, the halo (per axis, before and after, in input pixels), the alignment (tile offsets
are multiples of the input period of the output grid), the smallest input the model runs on and a
tile grid whose stitched output equals the whole-input output; models with a global path are
refused by name (or planned from an ERF mass fraction with ``erf=``). ``rflens.tile.run(model, x,
plan)`` runs the tiles in batches and stitches them; ``rflens.tile.check(model, plan)`` compares
tiled and whole outputs. See docs/tiling.md.
"""

from rflens.tile.geometry import AxisSegment
from rflens.tile.plan import DEFAULT_TILE, plan
from rflens.tile.result import Tile, TileCheck, TilePlan
from rflens.tile.run import check, run, whole

__all__ = ["plan", "run", "check", "whole", "TilePlan", "TileCheck", "Tile", "AxisSegment",
           "DEFAULT_TILE"]
