"""A self-contained HTML report of a model's receptive fields: one file to send to a colleague.

The file holds the model and input, the summary, the warnings (non-aligned merges, global
dependencies, ops without a rule, layers whose field exceeds the input), the growth plot, ERF heat
maps (linear and log) and profiles with their metrics for the chosen layers, and the per-layer TRF
table. CSS is inline and every image is a ``data:`` PNG: the file requests nothing from anywhere.
Every name that comes from the model is HTML-escaped.

Units follow ``docs/receptive-fields.md``: sizes, paddings and boxes in input pixels, jumps in input
pixels per unit, centres in input pixel coordinates (0-based).

Typical use::

    from rflens.report import build_report, write_report
    write_report("resnet18.html", build_report(torchvision.models.resnet18(), (3, 224, 224),
                                               erf_layers=["layer1", "layer2", "layer3"]))
"""

from rflens.report.build import (AUTO_ERF_LAYERS, ERF_SAMPLES, ERFEntry, auto_erf_layers, build_report,
                                 check_layers, compute_erfs, write_report)
from rflens.report.html import render_html

__all__ = ["ERF_SAMPLES", "AUTO_ERF_LAYERS", "ERFEntry", "auto_erf_layers", "check_layers",
           "compute_erfs", "render_html", "build_report", "write_report"]
