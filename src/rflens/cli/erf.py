"""``rflens erf MODEL --layer NAME``: the effective receptive field of one unit, against its TRF."""

from __future__ import annotations

import argparse
import sys
import warnings

from rflens.cli.common import add_model_arguments, emit

FORMATS = ("table", "json")


def add_parser(sub) -> None:
    from rflens.erf import ACTIVATIONS, PRESETS, READOUT, REDUCE
    from rflens.erf.datasets import TRANSFORMS

    p = sub.add_parser("erf", help="effective receptive field of one unit (gradient or analytic)",
                       description="Effective receptive field (Luo et al. 2016) of the centre unit of a "
                                   "layer: heat map, Gaussian sigma, mass radii, ERF/TRF ratio and "
                                   "RepLKNet's high-contribution area ratios.")
    add_model_arguments(p, weights=False)  # its own --weights takes as-is|random|uniform|FILE
    p.add_argument("--layer", required=True, metavar="NAME", nargs="+",
                   help="layer name as `rflens trf` prints it (e.g. layer4, features.5, output); "
                        "several names share one forward pass per sample")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="inputs to average over (default 64, or the preset's)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="most samples per backward pass (default 16; fewer if memory is short)")
    p.add_argument("--inputs", default=None, metavar="noise|samples|DIR",
                   help="Gaussian noise (default), scikit-image's bundled photos, or a folder of images "
                        "(flat or one sub-folder per class)")
    p.add_argument("--transform", default=None, choices=TRANSFORMS,
                   help="image preprocessing: auto (default: the model's own timm config, else "
                        "resize-crop), timm, resize-crop (shorter side + centre crop), resize "
                        "(stretch to the input, RepLKNet)")
    p.add_argument("--mean", default=None, metavar="M[,M,M]", help="normalisation mean for images")
    p.add_argument("--std", default=None, metavar="S[,S,S]", help="normalisation std for images")
    p.add_argument("--loader-workers", type=int, default=None, metavar="N",
                   help="DataLoader processes reading images (default 2; 0: in the main process)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run on N processes (torch.distributed: gloo on CPU, nccl on CUDA); under "
                        "torchrun the launcher's processes are used")
    p.add_argument("--checkpoint", default=None, metavar="FILE.npz",
                   help="save partial sums to FILE; rerunning the same command continues from it")
    p.add_argument("--checkpoint-every", type=int, default=256, metavar="K",
                   help="samples between checkpoints (default 256)")
    p.add_argument("--weights", default=None, metavar="as-is|random|uniform|FILE",
                   help="the model's own (default), a fresh random draw per sample, all equal, or a "
                        "state-dict file (loaded with weights_only=True)")
    p.add_argument("--activations", choices=ACTIVATIONS, default=None,
                   help="as-is (default) or linear (identity activations, max pool -> avg pool)")
    p.add_argument("--reduce", choices=REDUCE, default=None,
                   help="per-pixel reduction of the gradient over input channels (default abs)")
    p.add_argument("--readout", choices=READOUT, default=None,
                   help="sum the unit's channels (default) or their relu (RepLKNet)")
    p.add_argument("--unit", default=["center"], metavar="center|I,J|grid:G", nargs="+",
                   help="output unit(s) to probe (default: index n//2 per axis); grid:3 is a 3x3 "
                        "grid of units, one pass per sample for all of them")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="luo2016, replknet2022 or openerf (explicit options win)")
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

    for flag, value in (("--samples", args.samples), ("--batch-size", args.batch_size),
                        ("--workers", args.workers), ("--checkpoint-every", args.checkpoint_every)):
        if value is not None and value < 1:
            raise RflensError(f"{flag} must be a positive integer, not {value}")
    if args.loader_workers is not None and args.loader_workers < 0:
        raise RflensError(f"--loader-workers must be 0 or more, not {args.loader_workers}")
    if args.analytic and (len(args.layer) > 1 or len(args.unit) > 1):
        raise RflensError("--analytic takes one --layer and one --unit")


def measure(args: argparse.Namespace) -> list:
    """The ERFResults the arguments ask for (one per layer and unit)."""
    from rflens.sources.models import load_model

    import torch

    _check_counts(args)
    torch.manual_seed(args.seed)  # untrained models (weights=None) are drawn reproducibly
    model, meta = load_model(args.model)
    name = meta.get("name") or args.model
    shape = _input_shape(args, meta)
    if args.analytic:
        from rflens.erf.analytic import analytic_result

        return [_renamed(analytic_result(model, args.layer[0], shape, unit=args.unit[0]), name)]
    from rflens.erf import effective_receptive_fields

    spawned = args.workers is not None and args.workers > 1
    # new processes rebuild a MODEL string themselves, with the same seed (checked by a checksum)
    source = args.model if spawned else model
    extra = {"model_seed": args.seed} if spawned else {}
    results = effective_receptive_fields(
        source, list(args.layer), shape, units=list(args.unit), inputs=args.inputs,
        samples=args.samples, batch_size=args.batch_size, weights=args.weights,
        activations=args.activations, reduce=args.reduce, readout=args.readout, dtype=args.dtype,
        seed=args.seed, progress=not args.quiet, device=args.device, preset=args.preset,
        workers=args.workers, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
        transform=args.transform, mean=args.mean, std=args.std,
        loader_workers=args.loader_workers, **extra)
    return [_renamed(r, name) for r in results]


def _renamed(result, name: str):
    import dataclasses

    return dataclasses.replace(result, model=name)


def run(args: argparse.Namespace) -> int:
    import os

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = measure(args)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return 0  # under torchrun only rank 0 reports
    seen = set()
    for w in caught:
        if str(w.message) not in seen:
            seen.add(str(w.message))
            print(f"rflens: warning: {w.message}", file=sys.stderr)
    if args.format == "json":
        import json

        text = results[0].to_json() if len(results) == 1 else json.dumps(
            [r.to_dict() for r in results], indent=2)
        emit(text, args.output)
    elif args.output:
        emit("\n".join(_table_text(r) for r in results), args.output)
    else:
        from rich.console import Console

        for r in results:
            Console().print(r)
    if args.save:
        import numpy as np

        save = results[0].save if len(results) == 1 else (
            lambda path: np.save(path, np.stack([r.raw for r in results])))
        _write(save, args.save)
    if args.plot:
        from rflens import plot

        for path, r in zip(_plot_paths(args.plot, results), results):
            _write(lambda p, r=r: plot.save(plot.erf_map(r), p), path)
    return 0


def _plot_paths(path: str, results: list) -> list[str]:
    """One picture per result: ``path`` itself for one, ``STEM-LAYER-UNIT.SUFFIX`` for several."""
    if len(results) == 1:
        return [path]
    from pathlib import Path

    p = Path(path)
    return [str(p.with_name(f"{p.stem}-{r.layer or 'output'}-{'_'.join(map(str, r.unit))}{p.suffix}"))
            for r in results]


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
