"""Pieces every subcommand shares: the MODEL argument, ``--input``, ``--weights``, output to a file
or stdout."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rflens.errors import RflensError

MODEL_HELP = ("torchvision:NAME[@WEIGHTS] (e.g. resnet50@IMAGENET1K_V2, read from the torch hub "
              "cache), timm:NAME[@TAG], path/file.py:factory (runs that file), a layer spec file "
              "(.yaml/.json) or an ONNX file (.onnx)")


def add_model_arguments(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    """MODEL and ``--input``; ``--weights FILE`` too unless the command has its own ``--weights``."""
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--input", metavar="CxHxW", default=None,
                        help="input shape without batch, e.g. 3x224x224 (default: the model's own, "
                             "e.g. an ONNX graph's static input, else 3x224x224)")
    if weights:
        parser.add_argument("--weights", metavar="FILE", default=None,
                            help="load a state dict (torch.save file, read with weights_only=True) "
                                 "or a .safetensors file into the model")


@dataclass(frozen=True)
class Resolved:
    """A resolved MODEL: the module, its display name, the input shape ``(C, *spatial)`` and the
    metadata of :func:`rflens.sources.load_model` (``meta["weights"]`` says which weights)."""

    model: Any
    name: str
    shape: tuple[int, ...]
    meta: dict


def resolve_model(args: argparse.Namespace) -> Resolved:
    """MODEL, ``--input`` and ``--weights`` resolved; the shape is checked against the sizes the
    model fixes (an ONNX graph's static input)."""
    from rflens.sources.models import check_input_shape, default_input_shape, load_model, parse_input

    model, meta = load_model(args.model, weights=getattr(args, "weights", None))
    if args.input is not None:
        shape = parse_input(args.input)
    else:
        shape = meta.get("input_shape") or default_input_shape(args.model)
    check_input_shape(meta, tuple(shape))
    return Resolved(model, meta.get("name") or args.model, tuple(shape), meta)


def resolve(args: argparse.Namespace):
    """(model, display name, input shape) from the MODEL, --input and --weights arguments."""
    r = resolve_model(args)
    return r.model, r.name, r.shape


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
