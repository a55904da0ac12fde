"""Text renderings of TRF results: flat rows (CSV, DataFrame), rich table, Markdown, HTML.

Functions take a :class:`rflens.trf.result.ReceptiveField` (read by attribute; this module imports
nothing from the result module, which imports it)."""

from __future__ import annotations

import csv
import html
import io
from fractions import Fraction
from typing import Any


def exact(value: Fraction | int | None) -> int | str | None:
    """JSON form of an exact number: an int when whole, else a string like ``"1/2"``."""
    if value is None:
        return None
    value = Fraction(value)
    return int(value) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _axes(values) -> str:
    """Per-axis values as text: one value when all axes agree, else ``a×b``."""
    if values is None:
        return "?"
    texts = ["—" if v is None else str(exact(v)) for v in values]
    return texts[0] if len(set(texts)) == 1 else "×".join(texts)


def _flags(layer) -> str:
    return ", ".join("> input" if f == "exceeds-input" else f for f in layer.flags)


def flat_rows(rf: Any) -> list[dict]:
    """One flat dict per layer, per-axis columns suffixed ``_0, _1, ...``."""
    rows = []
    n = len(rf.input_shape) - 2
    for layer in rf.layers:
        d = layer.to_dict()
        row = {"name": d["name"], "op": d["op"], "shape": "x".join(map(str, d["shape"]))}
        for key in ("size", "jump", "padding", "center"):
            for k in range(n):
                row[f"{key}_{k}"] = d[key][k] if d[key] is not None else None
        row.update(aligned=d["aligned"], uniform=d["uniform"], **{"global": d["global"]},
                   unknown=d["unknown"])
        rows.append(row)
    return rows


def to_csv(rf: Any) -> str:
    rows = flat_rows(rf)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["name"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


COLUMNS = ("layer", "op", "output", "size", "jump", "padding", "center", "notes")


def cells(layer) -> tuple[str, ...]:
    return (layer.name, layer.op, "×".join(map(str, layer.shape[1:])), _axes(layer.size),
            _axes(layer.jump), _axes(layer.padding), _axes(layer.center), _flags(layer))


def to_markdown(rf: Any) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for layer in rf.layers:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(layer)) + " |")
    lines.extend(f"\n> {w}" for w in rf.warnings)
    return "\n".join(lines) + "\n"


def rich_table(rf: Any):
    from rich.table import Table

    title = f"Receptive fields of {rf.model} at input {'×'.join(map(str, rf.input_shape[1:]))}"
    table = Table(title=title, caption="\n".join(rf.warnings) or None, caption_justify="left")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("size", "jump", "padding", "center") else "left",
                         overflow="fold")
    for layer in rf.layers:
        style = "red" if not layer.known else ("yellow" if not layer.aligned else None)
        table.add_row(*cells(layer), style=style)
    return table


def html_table(rf: Any) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(layer)) + "</tr>"
                   for layer in rf.layers)
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in rf.warnings)
    caption = html.escape(f"Receptive fields of {rf.model} at input "
                          f"{'×'.join(map(str, rf.input_shape[1:]))}")
    return (f"<div class='rflens-trf'><table class='rflens'><caption>{caption}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            + (f"<ul class='rflens-warnings'>{warn}</ul>" if warn else "") + "</div>")
