"""``rflens dense MODEL --input CxHxW [--layer NAME]``: shift-and-stitch vs filter rarefaction.

Runs the model's ``prod(J)`` shifted passes and its rarefied copy once on the same random input and
prints the total stride ``J``, the number of shifts, the largest difference between the two dense
outputs on the interior where they must agree (see :mod:`rflens.dense`), both times and their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from rflens.errors import RflensError

_DTYPES = ("float32", "float64")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dense", help="dense output: shift-and-stitch vs rarefied network (difference, time)",
        description="Compare the two ways of getting a dense output from a strided network: "
                    "prod(J) shifted passes interleaved (shift-and-stitch) and one pass of the "
                    "rarefied network (strides removed, later kernels dilated). Reports the max "
                    "absolute difference on the interior where both must agree and the time ratio.")
    p.add_argument("model", metavar="MODEL",
                   help="torchvision:NAME[@WEIGHTS], timm:NAME[@TAG], file.py:factory, a spec file "
                        "or an ONNX file (.onnx)")
    p.add_argument("--input", metavar="SHAPE",
                   help="input shape without batch, e.g. 3x112x112 (default: the model's own)")
    p.add_argument("--layer", metavar="NAME",
                   help="use the output of this module (model.named_modules() name, e.g. "
                        "features.16 or layer2) and drop the rest; needed for models ending in "
                        "global pooling or Linear layers")
    p.add_argument("--batch", type=int, default=1, help="batch size of the random input (1)")
    p.add_argument("--dtype", choices=_DTYPES, default="float32", help="float32 (default) or float64")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (cpu)")
    p.add_argument("--repeat", type=int, default=1, help="time each method this many times, keep "
                                                           "the best (1)")
    p.add_argument("--shifts-per-pass", type=int, default=1, metavar="K",
                   help="batch K shifted inputs per forward pass of shift-and-stitch (1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (0)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run)
    return p


def _input_shape(args: argparse.Namespace, meta: dict, parse_input: Any) -> tuple[int, ...]:
    if args.input:
        return tuple(parse_input(args.input))
    shape = (meta or {}).get("input_shape")
    if not shape:
        raise RflensError(f"no input shape known for {args.model}; give --input, e.g. 3x112x112")
    return tuple(shape)


def _check_options(args: argparse.Namespace) -> None:
    for name in ("batch", "repeat", "shifts_per_pass"):
        if getattr(args, name) < 1:
            raise RflensError(f"--{name.replace('_', '-')} must be at least 1, got "
                              f"{getattr(args, name)}")


def _fmt_float(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.3g}"


def _interior_text(result: dict) -> str:
    if not result["compared"]:
        need = "x".join(map(str, result["min_input_for_interior"]))
        return f"empty: the input is too small for this field, use at least {need}"
    axes = " x ".join(f"{a}..{b}" for a, b, _ in result["interior"])
    return f"{axes} ({result['compared']} positions)"


def format_table(result: dict) -> str:
    """The short human table ``rflens dense`` prints."""
    jump = "x".join(map(str, result["jump"]))
    rows = [
        ("model", result.get("model", "")),
        ("layer", result["layer"] or "(whole model)"),
        ("input", "x".join(map(str, result["input_shape"])) + f" {result['dtype']}"),
        ("J (total stride)", jump),
        ("shifts", f"{result['shifts']} ({result['passes']} pass"
                   f"{'es' if result['passes'] != 1 else ''})"),
        ("interior compared", _interior_text(result)),
        ("max |diff| interior", _fmt_float(result["max_abs_diff"])),
        ("time shift-and-stitch", f"{result['time_shift_stitch_s']:.4f} s"),
        ("time rarefied", f"{result['time_rarefied_s']:.4f} s (1 pass)"),
        ("ratio", f"{result['ratio']:.2f}x (shift-and-stitch / rarefied)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _json_ready(result: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in result.items()}


def run(args: argparse.Namespace) -> int:
    import torch

    from rflens.dense import compare
    from rflens.sources.models import load_model, parse_input

    _check_options(args)
    model, meta = load_model(args.model)
    shape = _input_shape(args, meta, parse_input)
    try:
        device = torch.device(args.device)
        model = model.to(device=device, dtype=getattr(torch, args.dtype))
    except (RuntimeError, AssertionError) as exc:
        raise RflensError(f"cannot use --device {args.device}: {str(exc).splitlines()[0]}") from None
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn((args.batch, *shape), generator=gen, dtype=getattr(torch, args.dtype))
    result = compare(model, x.to(device), layer=args.layer, repeat=args.repeat,
                     shifts_per_pass=args.shifts_per_pass)
    result = {"model": args.model, **result}
    if args.format == "json":
        print(json.dumps(_json_ready(result), indent=2))
    else:
        print(format_table(result))
    return 0
