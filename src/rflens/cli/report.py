"""``rflens report MODEL -o report.html``: one self-contained HTML file about a model's fields."""

from __future__ import annotations

import argparse
import sys

from rflens.cli.common import add_model_arguments, resolve_model


def add_parser(sub) -> None:
    from rflens.report import AUTO_ERF_LAYERS, ERF_SAMPLES

    p = sub.add_parser("report", help="self-contained HTML report: TRF table, warnings, plots, ERFs",
                       description="Write one self-contained HTML file (inline CSS, JavaScript and "
                                   "images, no external request) with the model and input, an "
                                   "interactive explorer (point at a unit to see its exact field on "
                                   "the input, click a pixel to see the units that see it), the "
                                   "per-layer TRF table, warnings, the growth plot and ERF heat maps "
                                   "with metrics.")
    add_model_arguments(p)
    p.add_argument("--erf-layers", nargs="+", metavar="NAME", default=["auto"],
                   help="module names to measure the ERF of; 'auto' (default): the last "
                        f"{AUTO_ERF_LAYERS} top-level stages whose field fits the input; 'none': no "
                        "ERF section")
    p.add_argument("--samples", type=int, default=ERF_SAMPLES, metavar="N",
                   help=f"ERF samples per layer (default {ERF_SAMPLES})")
    p.add_argument("--inputs", default="noise", metavar="noise|samples|DIR",
                   help="ERF inputs: Gaussian noise (default), scikit-image's photos, or a folder")
    p.add_argument("--seed", type=int, default=0, help="seed for untrained weights and noise inputs")
    p.add_argument("--image", metavar="FILE", default=None,
                   help="picture under the explorer, resized and centre-cropped to the input "
                        "(default: scikit-image's bundled photo for 2-D inputs with 1 or 3 "
                        "channels, else a grid)")
    p.add_argument("--no-explorer", action="store_true",
                   help="leave the interactive explorer out (a static page)")
    p.add_argument("-o", "--output", metavar="FILE", default="report.html",
                   help="the HTML file to write (default report.html)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def _erf_layers(values: list[str]) -> list[str] | str:
    from rflens.errors import RflensError

    lowered = [v.lower() for v in values]
    if lowered == ["auto"]:
        return "auto"
    if lowered == ["none"]:
        return []
    if "auto" in lowered or "none" in lowered:
        raise RflensError("--erf-layers takes 'auto', 'none' or module names, not a mix")
    return values


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from rflens.errors import RflensError
    from rflens.report import build_report, write_report

    if args.samples < 1:
        raise RflensError(f"--samples must be a positive integer, not {args.samples}")
    if args.image is not None and args.no_explorer:
        raise RflensError("--image is drawn under the explorer; drop --no-explorer or --image")
    if not str(args.output).lower().endswith((".html", ".htm")):
        raise RflensError(f"-o {args.output}: the report is HTML; give a .html file")
    start = time.perf_counter()
    torch.manual_seed(args.seed)  # untrained models (weights=None) are drawn reproducibly
    resolved = resolve_model(args)
    model, name, shape, meta = resolved.model, resolved.name, resolved.shape, resolved.meta
    log = None if args.quiet else (lambda text: print(f"rflens: {text}", file=sys.stderr))
    text = build_report(model, shape, name=name, erf_layers=_erf_layers(args.erf_layers),
                        samples=args.samples, inputs=args.inputs, seed=args.seed, image=args.image,
                        explorer=not args.no_explorer, weights=meta.get("weights"), log=log)
    path = write_report(args.output, text)
    size = path.stat().st_size / 1024
    print(f"wrote {path} ({size:.0f} KiB, {time.perf_counter() - start:.1f} s); open {path.as_uri()}")
    return 0
