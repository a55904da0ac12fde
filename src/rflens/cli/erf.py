"""``rflens erf MODEL --layer NAME``: the effective receptive field of one unit, against its TRF."""

from __future__ import annotations

import argparse
import sys
import warnings

from rflens.cli.common import add_model_arguments, emit

FORMATS = ("table", "json")


def add_parser(sub) -> None:
    from rflens.erf import ACTIVATIONS, PRESETS, READOUT, REDUCE

    p = sub.add_parser("erf", help="effective receptive field of one unit (gradient or analytic)",
                       description="Effective receptive field (Luo et al. 2016) of the centre unit of a "
                                   "layer: heat map, Gaussian sigma, mass radii, ERF/TRF ratio and "
                                   "RepLKNet's high-contribution area ratios.")
    add_model_arguments(p, weights=False)  # its own --weights takes as-is|random|uniform|FILE
    p.add_argument("--layer", required=True, metavar="NAME",
                   help="module name, as in model.named_modules() (e.g. layer4, features.5)")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="inputs to average over (default 64, or the preset's)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="most samples per backward pass (default 16; fewer if memory is short)")
    p.add_argument("--inputs", default=None, metavar="noise|samples|DIR",
                   help="Gaussian noise (default), scikit-image's bundled photos, or a folder of images")
    p.add_argument("--weights", default=None, metavar="as-is|random|uniform|FILE",
                   help="the model's own (default), a fresh random draw per sample, all equal, or a "
                        "state-dict file (loaded with weights_only=True)")
    p.add_argument("--activations", choices=ACTIVATIONS, default=None,
                   help="as-is (default) or linear (identity activations, max pool -> avg pool)")
    p.add_argument("--reduce", choices=REDUCE, default=None,
                   help="per-pixel reduction of the gradient over input channels (default abs)")
    p.add_argument("--readout", choices=READOUT, default=None,
                   help="sum the unit's channels (default) or their relu (RepLKNet)")
    p.add_argument("--unit", default="center", metavar="center|I,J",
                   help="output unit to probe (default: index n//2 per axis)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="luo2016 or replknet2022 (explicit options win)")
    p.add_argument("--analytic", action="store_true",
                   help="the exact path-count ERF (uniform weights, linear) instead of gradients")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float64"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="e.g. cpu or cuda (default: where the model is)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--save", metavar="FILE.npy", help="save the raw map (float64) as .npy")
    p.add_argument("--plot", metavar="FILE.png", help="save a heat map with the TRF box")
    p.add_argument("-o", "--output", metavar="FILE", help="write the table/JSON to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _input_shape(args: argparse.Namespace, meta: dict) -> tuple[int, ...] | None:
    from rflens.erf import PRESETS
    from rflens.sources.models import default_input_shape, parse_input

    if args.input is not None:
        return tuple(parse_input(args.input))
    if args.preset and PRESETS[args.preset].get("input_shape"):
        return tuple(PRESETS[args.preset]["input_shape"])
    return tuple(meta.get("input_shape") or default_input_shape(args.model))


def _check_counts(args: argparse.Namespace) -> None:
    from rflens.errors import RflensError

    for flag, value in (("--samples", args.samples), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise RflensError(f"{flag} must be a positive integer, not {value}")


def measure(args: argparse.Namespace):
    """The ERFResult the arguments ask for."""
    from rflens.sources.models import load_model

    import torch

    _check_counts(args)
    torch.manual_seed(args.seed)  # untrained models (weights=None) are drawn reproducibly
    model, meta = load_model(args.model)
    name = meta.get("name") or args.model
    shape = _input_shape(args, meta)
    if args.analytic:
        from rflens.erf.analytic import analytic_result

        result = analytic_result(model, args.layer, shape, unit=args.unit)
    else:
        from rflens.erf import effective_receptive_field

        result = effective_receptive_field(
            model, args.layer, shape, inputs=args.inputs, samples=args.samples,
            batch_size=args.batch_size, weights=args.weights, activations=args.activations,
            reduce=args.reduce, readout=args.readout, unit=args.unit, dtype=args.dtype,
            seed=args.seed, progress=not args.quiet, device=args.device, preset=args.preset)
    return _renamed(result, name)


def _renamed(result, name: str):
    import dataclasses

    return dataclasses.replace(result, model=name)


def run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = measure(args)
    for w in caught:
        print(f"rflens: warning: {w.message}", file=sys.stderr)
    if args.format == "json":
        emit(result.to_json(), args.output)
    elif args.output:
        emit(_table_text(result), args.output)
    else:
        from rich.console import Console

        Console().print(result)
    if args.save:
        _write(result.save, args.save)
    if args.plot:
        from rflens import plot

        _write(lambda path: plot.save(plot.erf_map(result), path), args.plot)
    return 0


def _table_text(result) -> str:
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(result)
    return console.export_text()


def _write(write, path: str) -> None:
    """Call ``write(path)`` (saving the map or the plot); a path that cannot be written is bad input."""
    from rflens.errors import RflensError

    try:
        write(path)
    except OSError as exc:
        raise RflensError(f"cannot write {path}: {exc.strerror}") from exc
    print(f"wrote {path}", file=sys.stderr)
