"""Pieces every subcommand shares: the MODEL argument, ``--input``, output to a file or stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rflens.errors import RflensError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="torchvision:NAME, timm:NAME, path/file.py:factory (runs that file), "
                             "or a layer spec file (.yaml/.json)")
    parser.add_argument("--input", metavar="CxHxW", default=None,
                        help="input shape without batch, e.g. 3x224x224 (default: the model's own, "
                             "else 3x224x224)")


def resolve(args: argparse.Namespace):
    """(model, display name, input shape) from the MODEL and --input arguments."""
    from rflens.sources.models import default_input_shape, load_model, parse_input

    model, meta = load_model(args.model)
    if args.input is not None:
        shape = parse_input(args.input)
    else:
        shape = meta.get("input_shape") or default_input_shape(args.model)
    return model, meta.get("name") or args.model, tuple(shape)


def emit(text: str, output: str | None) -> None:
    """Write ``text`` to ``output`` (a path) or to stdout."""
    if output:
        try:
            Path(output).write_text(text)
        except OSError as exc:
            raise RflensError(f"cannot write {output}: {exc.strerror}") from exc
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
