"""The data behind the explorer: per layer and axis the periodic field table and the exact clipped
hulls, and ERF contours — small enough for a resnet50 with every layer (see the README).

What the page's JavaScript reproduces from it (and the browser tests check against Python):

- ``rf.box(layer, unit)``: per axis ``lo(i) = lo[i mod period] + (i div period)·shift``, the same
  for ``hi`` (:class:`rflens.geometry.axis.AxisMap`; tables with ``exact`` are valid for units below
  it and extrapolated the same way beyond, as in Python); None when some axis is empty.
- ``rf.box(layer, unit, clip=True)`` and ``rf.units_seeing(layer, pixel)``: from the per-component
  hulls ``lo[k][i]``, ``hi[k][i]`` (:class:`rflens.geometry.fields.Factor`). An axis whose hull is
  one component equal to the geometric field clipped to ``[0, n-1]`` (empty where that is empty)
  stores ``hull: null`` instead of the arrays — the usual case, checked exactly here.

Coordinates are input pixels (0-based), axes in the input's order (rows, columns for images).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from rflens.erf.metrics import mass_levels

CONTOUR_FRACTIONS = (0.5, 0.9)


def _frac(value: Fraction | int) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _ints(values: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(values).ravel()]


def _axis(factor: Any, n_input: int) -> dict[str, Any]:
    fmap = factor.field
    units = np.arange(factor.size, dtype=np.int64)
    lo, hi = fmap.evaluate(units)
    clo, chi = np.maximum(lo, 0), np.minimum(hi, n_input - 1)
    out: dict[str, Any] = {"period": fmap.period, "shift": fmap.shift, "lo": list(fmap.lo_table),
                           "hi": list(fmap.hi_table), "exact": fmap.exact_units,
                           "jump": _frac(fmap.jump), "hull": None}
    sizes = np.maximum(hi - lo + 1, 0) if factor.size else np.zeros(1, dtype=np.int64)
    out["sizes"] = [int(sizes.min()), int(sizes.max())]
    hlo, hhi = np.asarray(factor.lo), np.asarray(factor.hi)
    if not _is_clipped_field(hlo, hhi, clo, chi):
        out["hull"] = {"lo": [_ints(row) for row in hlo], "hi": [_ints(row) for row in hhi]}
    return out


def _is_clipped_field(hlo: np.ndarray, hhi: np.ndarray, clo: np.ndarray, chi: np.ndarray) -> bool:
    """True when the exact hull is one component equal to the clipped geometric field: the same
    units empty, the same intervals elsewhere."""
    if hlo.shape != (1, clo.size):
        return False
    empty, hull_empty = clo > chi, hlo[0] > hhi[0]
    full = ~empty
    return bool(np.array_equal(empty, hull_empty) and np.array_equal(hlo[0][full], clo[full])
                and np.array_equal(hhi[0][full], chi[full]))


def layer_data(layer: Any) -> dict[str, Any]:
    """One layer of the explorer: name, op, output shape, grid, flags and per-axis tables."""
    factors = list(layer.factors)
    known = layer.known and factors and all(f is not None and f.field is not None for f in factors)
    out: dict[str, Any] = {"name": layer.name, "op": layer.op, "shape": list(layer.shape),
                           "grid": list(layer.grid), "flags": list(layer.flags),
                           "global": bool(layer.is_global), "aligned": bool(layer.aligned),
                           "exact_hull": bool(layer.exact_hull), "axes": None, "why": None}
    if not known:
        why = list(layer.unknown_ops) + list(layer.lost)
        out["why"] = ", ".join(why) if why else "its field could not be followed"
        return out
    if [f.axis for f in factors] != list(range(len(factors))):
        out["why"] = "its axes do not follow the input's order"
        return out
    out["uniform"] = bool(layer.uniform)
    out["axes"] = [_axis(f, n) for f, n in zip(factors, layer.input_spatial)]
    return out


# --- ERF contours ------------------------------------------------------------------------------

def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ``[start, stop)`` runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))


def outline(mask: np.ndarray) -> str:
    """The boundary of the pixels set in a 2-D ``mask`` as an SVG path along pixel edges (pixel
    ``(r, c)`` covers ``[c, c+1] × [r, r+1]``): every edge between a set and an unset pixel."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    parts = []
    for r in range(padded.shape[0] - 1):  # edge at y = r, between rows r-1 and r
        for a, b in _runs(padded[r, 1:-1] != padded[r + 1, 1:-1]):
            parts.append(f"M{a} {r}H{b}")
    for c in range(padded.shape[1] - 1):  # edge at x = c
        for a, b in _runs(padded[1:-1, c] != padded[1:-1, c + 1]):
            parts.append(f"M{c} {a}V{b}")
    return "".join(parts)


def erf_contours(raw: np.ndarray, fractions: Sequence[float] = CONTOUR_FRACTIONS) -> list[dict]:
    """Per mass fraction ``p``: the outline of the highest-density region holding ``p`` of the
    map's mass — the pixels at or above :func:`rflens.erf.metrics.mass_levels` — along pixel edges
    (an exact region, no interpolation); per slice of the leading axis for 3-D maps (key = slice
    index as text; ``"0"`` for 1-D maps, drawn as a one-row strip, and 2-D maps)."""
    m = np.asarray(raw, dtype=np.float64)
    out = []
    for level, p in zip(mass_levels(m, fractions), fractions):
        if not math.isfinite(level) or level <= 0 or m.ndim not in (1, 2, 3):
            continue
        region = m >= level
        if m.ndim == 1:
            slices = {"0": outline(region[None, :])}
        elif m.ndim == 2:
            slices = {"0": outline(region)}
        else:
            slices = {str(d): outline(region[d]) for d in range(m.shape[0]) if region[d].any()}
        out.append({"p": float(p), "slices": slices})
    return out


def erf_data(result: Any) -> dict[str, Any]:
    """An ERF result as the explorer draws it: the measured unit, its contours, how it was made."""
    settings = getattr(result, "settings", {}) or {}
    return {"unit": [int(u) for u in result.unit], "samples": int(result.samples),
            "method": str(result.method), "inputs": str(settings.get("inputs", "")),
            "levels": erf_contours(result.raw)}


def payload(rf: Any, picture: Any, erfs: Sequence[Any] = (), initial: str | None = None) -> dict:
    """Everything the page needs: model, input, picture, every layer, ERF contours by layer."""
    layers = [layer_data(layer) for layer in rf.layers]
    erf = {}
    for result in erfs:
        name = result.layer or "output"
        if name in rf and tuple(result.raw.shape) == tuple(rf.spatial_shape):
            erf[name] = erf_data(result)
    if initial is None or initial not in rf:
        initial = next(iter(erf), None) or _default_layer(rf)
    return {"model": rf.model, "input": list(rf.input_shape[1:]), "spatial": list(rf.spatial_shape),
            "picture": {"description": picture.description, "kind": picture.kind},
            "layers": layers, "erf": erf, "initial": rf.names.index(initial) if initial in rf else 0}


def _default_layer(rf: Any) -> str | None:
    """The deepest layer with a local, known field and more than one unit on some axis."""
    local = [layer.name for layer in rf.layers if layer.known and not layer.is_global
             and max(layer.grid, default=0) > 1]
    return local[-1] if local else (rf.names[0] if rf.names else None)


def to_script_json(data: dict) -> str:
    """Compact JSON safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` (which
    can only occur inside strings) are written as ``\\u`` escapes."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
