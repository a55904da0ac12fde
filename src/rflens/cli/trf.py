"""``rflens trf MODEL``: the theoretical receptive field of every layer."""

from __future__ import annotations

import argparse
import sys

from rflens.cli.common import add_model_arguments, emit, resolve

FORMATS = ("table", "json", "csv", "markdown")


def add_parser(sub) -> None:
    p = sub.add_parser("trf", help="theoretical receptive field of every layer",
                       description="Exact theoretical receptive field (size, jump, effective padding, "
                                   "centre) of every layer of a model.")
    add_model_arguments(p)
    p.add_argument("--layers", nargs="+", metavar="GLOB", help="only layers matching these globs")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--ops", action="store_true", help="add one row per aten op")
    p.add_argument("--strict", action="store_true", help="fail if any op has no receptive-field rule")
    p.add_argument("--verify", action="store_true",
                   help="check the (selected) layers with the gradient-support probe (ONNX models: "
                        "with onnxruntime's difference probe of the original graph); slow")
    p.add_argument("--plot", metavar="FILE", help="also save the growth plot (PNG/SVG/PDF)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def render(rf, fmt: str) -> str:
    from rflens.trf import render as r

    if fmt == "json":
        return rf.to_json()
    if fmt == "csv":
        return r.to_csv(rf)
    if fmt == "markdown":
        return r.to_markdown(rf)
    from rich.console import Console

    console = Console(record=True, width=160, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(rf)
    return console.export_text()


def run(args: argparse.Namespace) -> int:
    import rflens
    from rflens.errors import RflensError

    model, name, shape = resolve(args)
    rf = rflens.receptive_field(model, shape, ops=args.ops, strict=args.strict, name=name)
    full = rf
    rf = rf.select(args.layers)
    if args.format == "table" and not args.output:
        from rich.console import Console

        console = Console(soft_wrap=False)
        if not console.is_terminal:
            console.width = 200
        console.print(rf)
    else:
        emit(render(rf, args.format), args.output)
    if args.plot:
        from rflens import plot

        plot.save(plot.growth(full), args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.verify:
        if getattr(model, "rflens_onnx", None) is not None:
            _verify_onnx(model.rflens_onnx, rf)
            return 0
        from rflens.trf.verify import verify

        mismatches = verify(model, rf, rf.names)
        if mismatches:
            lines = "; ".join(m.describe() for m in mismatches[:5])
            raise RflensError(f"--verify: {len(mismatches)} unit(s) disagree with the gradient-support "
                              f"probe: {lines}")
        print(f"verified {len(rf.names)} layer(s) against the gradient-support probe: all agree",
              file=sys.stderr)
    return 0


def _verify_onnx(source, rf, most_units: int = 4096) -> None:
    """Compare the clipped boxes of the selected rows that stand for an ONNX value with
    onnxruntime's difference probe of the original graph (every unit, or an even sample of
    ``most_units`` of a larger layer, first and last included)."""
    import itertools
    from pathlib import Path

    from rflens.errors import RflensError
    from rflens.sources.onnx_probe import hull_of, probe_hulls

    spatial = rf.input_shape[2:]
    layers = [layer for layer in rf if layer.known and not layer.is_global
              and len(layer.shape) == len(spatial) + 2 and tuple(layer.grid) == tuple(layer.shape[2:])
              and source.value_of(layer.name)]
    hulls = probe_hulls(source.path, [source.value_of(layer.name) for layer in layers], rf.input_shape[1:])
    wrong, units, checked = [], 0, 0
    for layer in layers:
        probed = hulls.get(source.value_of(layer.name))
        if probed is None:
            continue
        checked += 1
        every = list(itertools.product(*(range(g) for g in layer.grid)))
        step = max(1, len(every) // most_units)
        for unit in every[::step] + [every[-1]]:
            units += 1
            ours, theirs = layer.box(unit, clip=True), hull_of(probed, unit)
            if ours != theirs:
                wrong.append(f"{layer.name} unit {unit}: rflens {ours} vs onnxruntime {theirs}")
    name = Path(source.path).name
    if wrong:
        raise RflensError(f"--verify: {len(wrong)} unit(s) disagree with onnxruntime's difference probe "
                          f"of {name}: {'; '.join(wrong[:5])}")
    print(f"verified {checked} layer(s), {units} unit(s), against onnxruntime's difference probe of "
          f"{name}: all agree", file=sys.stderr)
