"""The explorer: point at a unit, see its exact field on the input; click a pixel, see every unit
that sees it. One HTML component, used by the report (``rflens report``) and in Jupyter::

    import rflens
    from rflens.report import explore

    rf = rflens.receptive_field(model, (3, 224, 224))
    explore(rf)                                   # in a notebook cell: the interactive view
    explore(rf, image="cat.jpg", erf=erf)         # your picture, ERF contours of erf's layer
    explore(rf).save("resnet18-explorer.html")    # the view alone, as a self-contained page

The component is inline HTML, CSS and JavaScript with its data (see
:mod:`rflens.report.explorer_data`); it fetches nothing and works from ``file://`` offline.
Drawn boxes are ``rf.box(layer, unit)`` (dashed, may reach into padding) and
``rf.box(layer, unit, clip=True)`` (solid); the pixel query is ``rf.units_seeing(layer, pixel)``
with the exact set of units behind that range highlighted.
"""

from __future__ import annotations

import html
import os
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from rflens.errors import RflensError
from rflens.report.explorer_data import payload, to_script_json
from rflens.report.images import Picture, picture

def asset(name: str) -> str:
    """Text of a file shipped in ``rflens/report/assets`` (package data)."""
    return resources.files("rflens.report").joinpath("assets", name).read_text(encoding="utf-8")


HELP = ("Hover or click a unit on the right (arrow keys move it, Shift+arrows by 8, PageUp/PageDown "
        "change the layer); click a pixel of the input to see every unit of the layer whose field "
        "holds it (Esc clears).")
LEGEND = ("<p class='rfx-legend'><span><i class='lfull'></i>field, unclipped (may reach into "
          "padding)</span><span><i class='lclip'></i>field clipped to the input</span>"
          "<span><i class='lpix'></i>clicked pixel and the units that see it</span>"
          "<span><i class='lerf'></i>ERF contours: 50 % / 90 % of the mass</span></p>")


def component(rf: Any, pic: Picture, erfs: Sequence[Any] = (), *, initial: str | None = None,
              uid: str | None = None, with_assets: bool = True) -> str:
    """The explorer's HTML for the TRF result ``rf`` over ``pic``, with contours of ``erfs``
    (``ERFResult`` objects of layers of ``rf``). ``with_assets=False`` leaves out the CSS and
    the script (for a page that includes them once)."""
    ndim = len(rf.spatial_shape)
    if ndim not in (1, 2, 3):
        raise RflensError(f"the explorer draws 1-D, 2-D and 3-D inputs; {rf.model} has {ndim} "
                          "spatial axes")
    uid = uid or f"rfx-{uuid.uuid4().hex[:12]}"  # unique even across notebook kernels
    data = to_script_json(payload(rf, pic, erfs, initial))
    width, height = (rf.spatial_shape[-1], 1) if ndim == 1 else (rf.spatial_shape[-1], rf.spatial_shape[-2])
    slices = "<span class='rfx-slices'></span>" if ndim == 3 else ""
    caption = (f"Input {html.escape('×'.join(map(str, rf.spatial_shape)))}"
               + (" (a slice at the chosen depth)" if ndim == 3 else "")
               + f": {html.escape(pic.description)}. <span class='rfx-hoverpx'></span>")
    parts = [
        f"<div class='rfx' id='{uid}' data-rfx-state='pending'>",
        f"<script type='application/json' class='rfx-data'>{data}</script>",
        "<div class='rfx-bar'><label>Layer <select class='rfx-layer' aria-label='layer'></select></label>"
        "<button type='button' class='rfx-prev' title='previous layer (PageUp)'>&#9664;</button>"
        "<button type='button' class='rfx-next' title='next layer (PageDown)'>&#9654;</button>"
        "<label><input type='checkbox' class='rfx-pad'> whole field, padding included</label>"
        f"<label><input type='checkbox' class='rfx-showgrid' checked> unit grid</label>{slices}</div>",
        "<div class='rfx-body'>",
        "<figure class='rfx-in'><svg class='rfx-img' tabindex='0' role='img' aria-label='the input'>"
        f"<image class='rfx-pic' x='0' y='0' width='{width}' height='{height}' preserveAspectRatio='none' "
        f"href='{pic.uri}'></image></svg><figcaption>{caption}</figcaption></figure>",
        "<figure class='rfx-fm'><svg class='rfx-units' tabindex='0' role='img' aria-label='units'></svg>"
        "<figcaption>The layer's units (one cell per unit; the red dot marks the unit whose ERF was "
        "measured).</figcaption></figure>",
        "<div class='rfx-info' aria-live='polite'><p>Starting the explorer… If this stays, its "
        "script did not run (JavaScript off, or an untrusted notebook: run the cell again, or "
        "save the view with <code>explore(rf).save(path)</code>).</p></div>",
        "</div>",
        f"{LEGEND}<p class='rfx-help'>{html.escape(HELP)}</p>",
        "<noscript><p>The explorer needs JavaScript; the tables below hold the same numbers.</p></noscript>",
        "</div>",
    ]
    if with_assets:
        parts.append(assets())
    return "".join(parts)


def assets() -> str:
    """The explorer's inline ``<style>`` and ``<script>`` (once per page is enough)."""
    script, css = asset("explorer.js"), asset("explorer.css")
    assert "</" not in script and "</" not in css  # they are inlined as they are
    return f"<style>{css}</style><script>{script}</script>"


@dataclass(frozen=True, eq=False)
class Explorer:
    """The interactive view of one TRF result; displays itself in Jupyter (``_repr_html_``)."""

    rf: Any
    picture: Picture
    erfs: tuple = ()
    layer: str | None = None

    def to_html(self) -> str:
        """The component alone (inline CSS, script and data)."""
        return component(self.rf, self.picture, self.erfs, initial=self.layer)

    def _repr_html_(self) -> str:
        return self.to_html()

    def page(self) -> str:
        """A complete, self-contained HTML page holding the view."""
        title = html.escape(f"Receptive fields of {self.rf.model}")
        return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{title}</title></head><body style='margin:1em 1.4em'><h1 style='font:600 "
                f"1.3em system-ui,sans-serif;overflow-wrap:anywhere'>{title}</h1>{self.to_html()}"
                "</body></html>")

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`page` to ``path`` (parent folders created); returns the absolute path."""
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.page(), encoding="utf-8")
        except OSError as exc:
            raise RflensError(f"cannot write {target}: {exc.strerror or exc}") from exc
        return target.resolve()


def explore(rf: Any, image: Any = None, erf: Any = None, *, layer: str | None = None) -> Explorer:
    """The interactive receptive-field view of ``rf`` (a :class:`rflens.ReceptiveField`).

    ``image``: a file path, an ``H×W(×3)`` array or a ``C×H×W`` tensor, resized and centre-cropped
    to the input (default: scikit-image's bundled photo for 1- or 3-channel 2-D inputs, else a
    grid). ``erf``: one ``ERFResult`` or a list of them (from
    :func:`rflens.effective_receptive_field` on this model and input) to draw their contours.
    ``layer``: the layer shown first (a row name of ``rf``).
    """
    if layer is not None and layer not in rf:
        rf[layer]  # raises with close names
    results = () if erf is None else tuple(erf) if isinstance(erf, (list, tuple)) else (erf,)
    for result in results:
        name = result.layer or "output"
        if name not in rf:
            raise RflensError(f"the ERF is of layer {name!r}, which {rf.model} does not have; "
                              "measure it on the same model")
        if tuple(result.raw.shape) != tuple(rf.spatial_shape):
            raise RflensError(f"the ERF of {name} was measured at input "
                              f"{'×'.join(map(str, result.raw.shape))}, the field at "
                              f"{'×'.join(map(str, rf.spatial_shape))}; use the same input shape")
    return Explorer(rf, picture(rf.input_shape[1:], image), results, layer)
