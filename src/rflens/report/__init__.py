"""A self-contained HTML report of a model's receptive fields: one file to send to a colleague.

The file holds the model and input, the summary, the warnings (non-aligned merges, global
dependencies, ops without a rule, layers whose field exceeds the input), the explorer (pick a layer,
point at a unit to see its exact field on the input, click a pixel to see every unit that sees it;
:mod:`rflens.report.explorer`), the growth plot, ERF heat maps (linear and log) and profiles with
their metrics for the chosen layers, and the per-layer TRF table. CSS, JavaScript and data are
inline and every image is a ``data:`` PNG: the file requests nothing from anywhere. Every name that
comes from the model is HTML-escaped (and JSON-escaped in the explorer's data).

Units follow ``docs/receptive-fields.md``: sizes, paddings and boxes in input pixels, jumps in input
pixels per unit, centres in input pixel coordinates (0-based).

Typical use::

    from rflens.report import build_report, write_report
    write_report("resnet18.html", build_report(torchvision.models.resnet18(), (3, 224, 224),
                                               erf_layers=["layer1", "layer2", "layer3"]))

In Jupyter, ``explore(rf, image=None, erf=None)`` shows the same explorer for a TRF result.
"""

from rflens.report.build import (AUTO_ERF_LAYERS, ERF_SAMPLES, ERFEntry, auto_erf_layers, build_report,
                                 check_layers, compute_erfs, write_report)
from rflens.report.explorer import Explorer, explore
from rflens.report.html import render_html
from rflens.report.images import picture

__all__ = ["ERF_SAMPLES", "AUTO_ERF_LAYERS", "ERFEntry", "auto_erf_layers", "check_layers",
           "compute_erfs", "render_html", "build_report", "write_report", "explore", "Explorer",
           "picture"]
