"""The report's HTML: summary, warnings, growth plot, ERF section and the per-layer table, with
inline CSS and ``data:`` images (nothing is fetched). Every name from the model is escaped."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from rflens import plot
from rflens.report.explorer import component
from rflens.report.images import Picture, picture
from rflens.trf.render import COLUMNS, cells

_LIST_LIMIT = 12


@dataclass
class ERFEntry:
    """One layer of the report's ERF section: the result, or why there is none."""

    layer: str
    result: Any = None
    error: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in shape)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
 color:#1d2329;background:#fff}
main{max-width:1180px;margin:0 auto;padding:1.2em 1.6em 3em}
h1{font-size:1.6em;margin:.2em 0;overflow-wrap:anywhere}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #dde2e7;
 padding-bottom:.2em}h3{font-size:1.05em;margin:1.2em 0 .4em;font-family:ui-monospace,Menlo,Consolas,monospace}
.meta{color:#57606a;margin:.2em 0 1em}nav a{margin-right:1em;color:#0b5cad;text-decoration:none}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:.2em 1.2em;margin:.6em 0}
dl.summary dt{color:#57606a}dl.summary dd{margin:0;font-variant-numeric:tabular-nums;min-width:0;
 overflow-wrap:anywhere}
.meta,.warn li{overflow-wrap:anywhere}
.warn h3{font-family:inherit}.warn ul{margin:.2em 0 .6em}.warn .none{color:#2d7a3a}
.count{display:inline-block;min-width:1.6em;text-align:center;border-radius:.8em;background:#eef1f4;
 margin-left:.4em;font-size:.85em}.count.bad{background:#fde2e1;color:#a1231a}
img{max-width:100%;height:auto;border:1px solid #eef1f4}
.figs{display:flex;flex-wrap:wrap;gap:.8em;align-items:flex-start}.figs img{flex:0 1 auto}
.erf{border-top:1px dashed #dde2e7;padding-top:.4em}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #eef1f4;padding:.18em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}
td.num{text-align:right}td.name{font-family:ui-monospace,Menlo,Consolas,monospace}
tr.exceeds td{background:#fdf0ef}tr.global td{background:#f3eefa}tr.unknown td{background:#eeeeee;color:#6e7781}
tr.nonaligned td{background:#fff6d6}
.legend span{display:inline-block;padding:0 .5em;margin-right:.5em;border-radius:3px}
.legend .exceeds{background:#fdf0ef}.legend .global{background:#f3eefa}.legend .unknown{background:#eeeeee}
.legend .nonaligned{background:#fff6d6}
.top{display:grid;grid-template-columns:minmax(260px,1fr) 2fr;gap:0 2.4em}.top>*{min-width:0}
td.name{overflow-wrap:anywhere;min-width:12em}
tr.rfx-link{cursor:pointer}tr.rfx-link:hover td{box-shadow:inset 0 -1px #0b5cad}
@media (max-width:900px){.top{grid-template-columns:1fr}}
.metrics{margin-top:.4em}.error{color:#a1231a}footer{color:#6e7781;margin-top:3em;font-size:.9em}
"""


def render_html(rf: Any, erfs: Sequence[ERFEntry | Any] = (), *, samples: int | None = None,
                parameters: int | None = None, erf_choice: str = "",
                image: Picture | None = None, explorer: bool = True, weights: str | None = None) -> str:
    """The report for a TRF result ``rf`` and ERF entries (``ERFEntry`` or ``ERFResult``).

    ``image``: the picture under the explorer (:func:`rflens.report.images.picture`; default the
    bundled photo or a grid); ``explorer=False`` leaves the interactive section out."""
    import rflens

    entries = [e if isinstance(e, ERFEntry) else ERFEntry(e.layer or "output", result=e) for e in erfs]
    title = f"Receptive fields of {rf.model}"
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>input {_e(_shape(rf.input_shape[1:]))} (C×spatial, batch 1)"
        + (f" · {parameters / 1e6:.2f} M parameters" if parameters is not None else "")
        + f" · {len(rf.layers)} layers · rflens {_e(rflens.__version__)}</p>"
        + (f"<p class='meta weights'>weights: {_e(weights)}</p>" if weights else ""),
        "<nav><a href='#summary'>Summary</a><a href='#warnings'>Warnings</a>"
        + ("<a href='#explore'>Explore</a>" if explorer else "")
        + "<a href='#growth'>Growth</a><a href='#erf'>Effective fields</a><a href='#layers'>Layer "
        "table</a></nav>",
        "<div class='top'>", _summary(rf), _warnings(rf), "</div>",
        _explore(rf, entries, image) if explorer else "",
        _growth(rf, entries), _erf_section(entries, samples, erf_choice), _layer_table(rf),
        "<footer>Generated by rflens. Definitions: docs/receptive-fields.md in the rflens "
        "repository. Sizes, paddings and boxes are in input pixels; jumps in input pixels per "
        "unit; centres are 0-based input pixel coordinates.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _explore(rf: Any, entries: list[ERFEntry], image: Picture | None) -> str:
    if len(rf.spatial_shape) not in (1, 2, 3) or not rf.layers:
        return ("<section id='explore'><h2>Explore</h2><p>The explorer draws 1-D, 2-D and 3-D "
                "inputs only.</p></section>")
    pic = image if image is not None else picture(rf.input_shape[1:])
    results = [e.result for e in entries if e.result is not None]
    return ("<section id='explore'><h2>Explore: point at a unit, see what it sees</h2>"
            + component(rf, pic, results, uid="rfx-report") + "</section>")


def _summary(rf: Any) -> str:
    local = [layer for layer in rf.layers if layer.known and not layer.is_global and layer.grid]
    last = local[-1] if local else None
    first_big = next((layer for layer in rf.layers if layer.exceeds_input and not layer.is_global), None)
    rows = [("model", rf.model), ("input", f"{_shape(rf.input_shape[1:])} (C×spatial)"),
            ("layers", str(len(rf.layers)))]
    if last is not None:
        rows += [("deepest local layer", last.name),
                 ("its TRF size", _shape(last.size) + " px"),
                 ("its jump (total stride)", "×".join("—" if j is None else str(j) for j in last.jump) + " px")]
    rows.append(("field exceeds the input from", first_big.name if first_big else "never"))
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f"<section id='summary'><h2>Summary</h2><dl class='summary'>{cells}</dl></section>"


def _listing(items: list[str], empty: str) -> str:
    if not items:
        return f"<p class='none'>{_e(empty)}</p>"
    shown = "".join(f"<li>{_e(i)}</li>" for i in items[:_LIST_LIMIT])
    more = f"<li>… and {len(items) - _LIST_LIMIT} more</li>" if len(items) > _LIST_LIMIT else ""
    return f"<ul>{shown}{more}</ul>"


def _warning_groups(rf: Any) -> list[tuple[str, str, list[str], str]]:
    """(id, heading, items, text when empty) per kind of warning."""
    aligned = [issue.describe() for issue in rf.alignment_issues]
    global_ = [layer.name for layer in rf.layers if layer.is_global]
    unknown = [f"{u.op} in {u.module or '(root)'} ({u.count}×): {u.reason}" for u in rf.unsupported_ops]
    big = [f"{layer.name}: {_shape(layer.size)} px > input {_shape(rf.spatial_shape)}"
           for layer in rf.layers if layer.exceeds_input and not layer.is_global]
    covered = set(aligned)
    notes = [w for w in rf.warnings if w not in covered and not w.startswith("op ")
             and "have a field larger than the input" not in w]
    unknown_layers = [layer.name for layer in rf.layers if not layer.known]
    if unknown_layers:
        unknown.append(f"{len(unknown_layers)} layer(s) with an unknown field: "
                       + ", ".join(unknown_layers[:_LIST_LIMIT]) + (" …" if len(unknown_layers) > _LIST_LIMIT else ""))
    return [
        ("non-aligned", "Non-aligned merges", aligned, "none: every merge is aligned"),
        ("global", "Global dependencies (units that depend on every input pixel; their geometric "
                   "field is shown)", global_, "none"),
        ("unknown", "Ops without a receptive-field rule", unknown, "none: every op is understood"),
        ("exceeds", "Layers whose field exceeds the input (extra depth adds no new pixels)", big, "none"),
        ("notes", "Other notes", notes, "none"),
    ]


def _warnings(rf: Any) -> str:
    out = ["<section id='warnings' class='warn'><h2>Warnings</h2>"]
    for gid, heading, items, empty in _warning_groups(rf):
        bad = " bad" if items and gid != "notes" else ""
        out.append(f"<div id='warn-{gid}'><h3>{_e(heading)}<span class='count{bad}'>{len(items)}</span>"
                   f"</h3>{_listing(items, empty)}</div>")
    out.append("</section>")
    return "".join(out)


def _img(fig: Any, alt: str, cls: str) -> str:

    return f"<img class='{cls}' alt='{_e(alt)}' src='{plot.data_uri(fig)}'>"


def _erf_size(result: Any) -> float | None:
    extent = result.metrics.extent.get(0.95)
    if not extent or not all(math.isfinite(v) for v in extent):
        return None
    return float(sum(extent) / len(extent))


def _growth(rf: Any, entries: list[ERFEntry]) -> str:

    sizes = {e.layer: s for e in entries if e.result is not None and e.layer in rf
             and (s := _erf_size(e.result)) is not None}
    fig = plot.growth(rf, sizes or None)
    caption = ("TRF size per layer in execution order; red bands: the field exceeds the input; "
               "dotted line: the input size")
    if sizes:
        caption += "; orange points: ERF 95 % mass extent (mean over axes) of the layers below"
    return (f"<section id='growth'><h2>Receptive-field growth over depth</h2>"
            f"{_img(fig, 'receptive-field growth plot', 'growth')}<p>{_e(caption)}.</p></section>")


def _settings_text(entries: list[ERFEntry], samples: int | None) -> str:
    result = next((e.result for e in entries if e.result is not None), None)
    if result is None:
        return f"Gradient ERFs with {samples} samples." if samples else ""
    s = result.settings
    return (f"Gradient ERF (Luo et al. 2016) of each layer's centre unit (index n//2 per axis): the "
            f"input gradient of the sum of the unit's channels ({s.get('readout')} readout), reduced "
            f"over input channels with {s.get('reduce')}, averaged over {result.samples} samples of "
            f"{s.get('inputs')}; weights {s.get('weights')} (see the weights line at the top), activations {s.get('activations')}, {s.get('dtype')} on "
            f"{s.get('device')}. Heat maps are divided by their maximum; the log map shows "
            f"log10(map / max) down to 1e-4. White box: the unit's TRF, clipped to the input.")


def _erf_section(entries: list[ERFEntry], samples: int | None, choice: str) -> str:
    out = ["<section id='erf'><h2>Effective receptive fields</h2>"]
    if not entries:
        out.append("<p>No ERF was computed (pass <code>--erf-layers NAME …</code> or "
                   "<code>erf_layers=[…]</code>).</p></section>")
        return "".join(out)
    layers = ", ".join(e.layer for e in entries)
    out.append(f"<p>Layers {_e(layers)}{(' — ' + _e(choice)) if choice else ''}. "
               f"{_e(_settings_text(entries, samples))}</p>")
    for entry in entries:
        out.append(_erf_entry(entry))
    out.append("</section>")
    return "".join(out)


def _erf_entry(entry: ERFEntry) -> str:

    head = f"<article class='erf' data-layer='{_e(entry.layer)}'><h3>{_e(entry.layer)}</h3>"
    if entry.result is None:
        return head + f"<p class='error'>no ERF: {_e(entry.error)}</p></article>"
    r = entry.result
    figs = [_img(plot.erf_map(r, zoom=True), f"ERF heat map of {entry.layer}", "erf-map")]
    if r.raw.ndim >= 2:
        figs.append(_img(plot.erf_map(r, log=True, zoom=True),
                         f"ERF heat map of {entry.layer}, log scale", "erf-map-log"))
    if r.raw.sum() > 0:
        figs.append(_img(plot.erf_profiles(r, zoom=True), f"ERF profiles of {entry.layer}",
                         "erf-profiles"))
    rows = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_e(v)}</td></tr>" for k, v in r.summary_rows())
    notes = list(r.warnings) + entry.notes
    warn = "".join(f"<p class='error'>warning: {_e(w)}</p>" for w in notes)
    return (head + f"{warn}<div class='figs'>{''.join(figs)}"
            f"<table class='metrics'><tbody>{rows}</tbody></table></div>"
            f"<p class='meta'>computed in {entry.seconds:.1f} s</p></article>")


_ROW_CLASSES = {"unknown": "unknown", "global": "global", "non-aligned": "nonaligned",
                "exceeds-input": "exceeds"}


def _row_class(layer: Any) -> str:
    flags = set(layer.flags)
    if "global" in flags:
        flags.discard("exceeds-input")  # a global unit sees everything anyway
    return " ".join(_ROW_CLASSES[f] for f in layer.flags if f in flags and f in _ROW_CLASSES)


def _layer_table(rf: Any) -> str:
    numeric = {"size", "jump", "padding", "center"}
    head = "".join(f"<th>{_e(c)}</th>" for c in COLUMNS)
    body = []
    for layer in rf.layers:
        row = "".join(
            f"<td class='{'name' if col == 'layer' else 'num' if col in numeric else ''}'>{_e(text)}</td>"
            for col, text in zip(COLUMNS, cells(layer)))
        body.append(f"<tr class='{_row_class(layer)}' data-layer='{_e(layer.name)}'>{row}</tr>")
    legend = ("<p class='legend'><span class='exceeds'>field exceeds the input</span>"
              "<span class='global'>global</span><span class='nonaligned'>non-aligned merge</span>"
              "<span class='unknown'>unknown field</span></p>")
    return (f"<section id='layers'><h2>Theoretical receptive field of every layer</h2>{legend}"
            f"<table class='trf'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "<p class='meta'>size: field size; jump: input pixels between neighbouring units; "
            "padding: effective padding P (unit 0's field starts at -P); center: centre of unit "
            "0's field. One value when all axes agree, else per axis (a×b). Click a row to explore "
            "that layer above.</p></section>")
