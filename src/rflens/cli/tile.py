"""``rflens tile MODEL --input CxHxW [--tile T | HxW] [--check] [--erf-halo P]``: a tiling plan
(halo, alignment, smallest input, tile grid) from the exact receptive fields, and optionally the
measured difference between the stitched and the whole-input output."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rflens.cli.common import add_model_arguments, emit
from rflens.errors import RflensError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "tile", help="tiled inference plan: exact halo, alignment, tile grid, stitching check",
        description="Plan tiled inference from the model's exact receptive fields: the halo per "
                    "axis (before/after, input pixels), the multiple tile offsets must be, the "
                    "smallest input the model runs on, the tile grid for the given input and the "
                    "output region each tile keeps. Models with a global path (GroupNorm over "
                    "space, attention, SE gates, global pooling) cannot be tiled exactly: the "
                    "first global module is named; --erf-halo plans from the ERF instead and "
                    "measures the error.")
    add_model_arguments(p)
    p.add_argument("--tile", metavar="T|HxW", default=None,
                   help="tile window in input pixels, one size for every axis or one per axis "
                        "(rounded down to the alignment, then shrunk to the smallest size that "
                        "needs no more tiles; default 512 per axis for 2-D, 128 for "
                        "3-D, 16384 for 1-D, at most the input)")
    p.add_argument("--layer", metavar="NAME", default=None,
                   help="tile the model up to this layer (a row name of 'rflens trf'; default "
                        "the model's output)")
    p.add_argument("--check", action="store_true",
                   help="run tiled and whole on random input (float64) and report the largest "
                        "absolute difference")
    p.add_argument("--erf-halo", type=float, metavar="P", default=None,
                   help="plan with the halo holding the fraction P (e.g. 0.99) of the output "
                        "centre unit's ERF mass instead of the exact field; runs the check")
    p.add_argument("--samples", type=int, default=8, metavar="N",
                   help="inputs averaged for --erf-halo (default 8)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="dtype of the --check runs (default float64)")
    p.add_argument("--batch-size", type=int, default=None, metavar="K",
                   help="tiles per forward pass in the check (default: by size)")
    p.add_argument("--device", default=None, help="torch device for the check, e.g. cuda (cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (0)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--plot", metavar="FILE.png", help="draw the plan (2-D: over a grey canvas)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the table/JSON to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def parse_tile(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise RflensError(f"--tile {text!r} is not a size: give T or HxW in pixels, e.g. 512 or "
                          "512x384")
    return values


def _check_options(args: argparse.Namespace) -> None:
    if args.erf_halo is not None and not 0 < args.erf_halo < 1:
        raise RflensError(f"--erf-halo {args.erf_halo} must be a mass fraction between 0 and 1, "
                          "e.g. 0.99")
    for flag, value in (("--samples", args.samples), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise RflensError(f"{flag} must be a positive integer, not {value}")


def run(args: argparse.Namespace) -> int:
    import torch

    from rflens import tile
    from rflens.cli.common import resolve

    _check_options(args)
    model, name, shape = resolve(args)
    if len(shape) < 2:
        raise RflensError(f"--input {args.input} has no spatial axis; give CxHxW, e.g. 3x512x512")
    size = parse_tile(args.tile)
    plan = tile.plan(model, shape, size, layer=args.layer, name=name)
    erf = None
    if args.erf_halo is not None:
        import rflens

        # the plan's layer name is resolved (a dict output's first tensor: output[out])
        erf = rflens.effective_receptive_field(model, plan.layer, shape, samples=args.samples,
                                               progress=not args.quiet, seed=args.seed)
        plan = tile.plan(model, shape, size, layer=plan.layer, erf=erf, erf_mass=args.erf_halo,
                         name=name)
    if (args.check or erf is not None) and plan.axes:
        if args.device:
            try:
                model = model.to(torch.device(args.device))
            except (RuntimeError, AssertionError) as exc:
                raise RflensError(f"cannot use --device {args.device}: "
                                  f"{str(exc).splitlines()[0]}") from None
        check = tile.check(model, plan, dtype=args.dtype, seed=args.seed,
                           batch_size=args.batch_size, progress=not args.quiet and None)
        plan = plan.with_check(check)
    elif args.check:
        print(f"rflens: nothing to check: {plan.reason}", file=sys.stderr)
    if args.plot and not plan.axes:
        print(f"rflens: no plan to draw: {plan.reason}", file=sys.stderr)
    elif args.plot:
        from rflens import plot

        plot.save(plot.tile_plan(plan), args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    emit(plan.to_json() if args.format == "json" else plan.format_table(), args.output)
    return 0
