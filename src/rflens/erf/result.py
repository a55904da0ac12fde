"""The result of an ERF measurement: a frozen dataclass that renders itself (``to_json``,
``_repr_html_`` with a thumbnail of the map, ``__rich__``), and :func:`build_result`, which adds the
metrics and turns every note into an :class:`ERFWarning`."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from rflens.erf.gaussian import GAUSSIAN_R2
from rflens.erf.metrics import ERFMetrics, compute_metrics

SCHEMA_VERSION = 1

OUTSIDE_WARN = 0.01

class ERFWarning(UserWarning):
    """Something about an ERF measurement the user should know (input too small, samples capped)."""


# --- result ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TRFInfo:
    """The theoretical field of the probed unit, from the TRF engine (per axis, input pixels).

    ``box`` is inclusive and unclipped (may reach into padding); ``size`` is ``hi - lo + 1``;
    ``center`` is ``(lo + hi) / 2``; ``jump`` is the layer's effective stride.
    """

    box: tuple[tuple[int, int], ...]
    size: tuple[int, ...]
    center: tuple[float, ...]
    jump: tuple[float, ...]
    is_global: bool = False

    def to_dict(self) -> dict:
        return {"box": [list(b) for b in self.box], "size": list(self.size),
                "center": list(self.center), "jump": list(self.jump), "global": self.is_global}


@dataclass(frozen=True, eq=False)
class ERFResult:
    """An ERF measurement. ``raw`` is the per-sample mean of the reduced input gradient (float64,
    input pixels, unnormalised); ``normalized`` the same map scaled to sum 1; ``trf`` the theoretical
    field of the probed ``unit`` (None when the TRF engine could not give it)."""

    model: str
    layer: str | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    unit: tuple[int, ...]
    samples: int
    method: str
    settings: dict
    raw: np.ndarray
    trf: TRFInfo | None
    metrics: ERFMetrics
    warnings: tuple[str, ...] = ()
    samples_zero: int = 0
    samples_skipped: int = 0

    @property
    def normalized(self) -> np.ndarray:
        """``raw`` scaled to sum 1 (each pixel's share of the total influence)."""
        total = self.raw.sum()
        return self.raw / total if total > 0 else np.zeros_like(self.raw)

    def to_dict(self, include_map: bool = False) -> dict:
        """JSON-ready dict, ``schema_version`` 1; NaN metrics become None."""
        out = {"schema_version": SCHEMA_VERSION, "method": self.method, "model": self.model,
               "layer": self.layer, "input_shape": list(self.input_shape),
               "output_shape": list(self.output_shape), "unit": list(self.unit),
               "samples": self.samples, "samples_zero_gradient": self.samples_zero,
               "samples_skipped_nonfinite": self.samples_skipped, "settings": _jsonable(self.settings),
               "trf": self.trf.to_dict() if self.trf else None, "metrics": self.metrics.to_dict(),
               "warnings": list(self.warnings)}
        if include_map:
            out["raw"] = self.raw.tolist()
        return out

    def to_json(self, indent: int | None = 2, include_map: bool = False) -> str:
        return json.dumps(self.to_dict(include_map), indent=indent)

    def save(self, path: str | os.PathLike) -> None:
        """Save ``raw`` as a float64 ``.npy`` file."""
        np.save(path, self.raw)

    def summary_rows(self) -> list[tuple[str, str]]:
        m = self.metrics
        rows = [("model", self.model), ("layer", str(self.layer)),
                ("input", "x".join(map(str, self.input_shape))), ("unit", str(self.unit)),
                ("samples", str(self.samples)), ("method", self.method)]
        if self.trf:
            rows += [("TRF box (unclipped)", str(self.trf.box)), ("TRF size", _fmt_axes(self.trf.size))]
        if m.gaussian:
            rows += [("Gaussian sigma (px)", _fmt_axes(m.sigma)), ("Gaussian R^2", _fmt_axes(m.r2))]
        else:
            rows += [("Gaussian sigma (px)", f"not Gaussian (marginal fit R^2 {_fmt_axes(m.r2)} < "
                                             f"{GAUSSIAN_R2:g})")]
        rows += [("joint Gaussian fit R^2", _fmt(m.joint_r2)),
                 ("Gaussian-shaped", ("yes: " if m.gaussian_shaped else "no: ") + m.shape_reason),
                 ("std (px)", _fmt_axes(m.std)), ("centre of mass (px)", _fmt_axes(m.mean))]
        if m.center_offset:
            rows.append(("centre used / offset from input centre (px)",
                         f"{_fmt_axes(m.radius_center)} / {_fmt_axes(m.center_offset)} "
                         f"(distance {_fmt(m.center_distance)})"))
        rows += [(f"mass radius {p:.0%} (px)", _fmt(v)) for p, v in m.mass_radius.items()]
        if m.radial_mass:
            rows.append(("mass within r px (r: share)",
                         ", ".join(f"{r:g}: {_fmt(v)}" for r, v in m.radial_mass.items())))
        rows += [("95% extent (px)", _fmt_axes(m.extent[0.95])),
                 ("ERF/TRF ratio (95% extent / TRF size)", _fmt_axes(m.erf_trf_ratio))]
        rows += [(f"area ratio t={t:.0%} raw / log10", f"{_fmt(m.hca_raw[t])} / {_fmt(m.hca_log10[t])}")
                 for t in m.hca_raw]
        rows += [(f"RepLKNet r(t={t:g}): side / area ratio",
                  "never reached inside the input" if side is None else f"{side} / {_fmt(ratio)}")
                 for t, (side, ratio) in m.replknet.items()]
        outside = (_fmt(m.outside_fraction) if math.isfinite(m.outside_fraction) else m.outside_method)
        rows += [(f"mass outside input ({m.outside_method.split(' (')[0]})"
                  if math.isfinite(m.outside_fraction) else "mass outside input", outside),
                 ("TRF area outside input", _fmt(m.trf_outside_fraction))]
        return rows

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title="Effective receptive field", show_header=True)
        table.add_column("quantity")
        table.add_column("value")
        for key, value in self.summary_rows():
            table.add_row(key, value)
        return table

    def _repr_html_(self) -> str:
        import html

        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                       for k, v in self.summary_rows())
        png = base64.b64encode(_thumbnail(self.raw)).decode("ascii")
        warn = "".join(f"<p>warning: {html.escape(w)}</p>" for w in self.warnings)
        return (f"<div><table>{rows}</table>{warn}"
                f"<img alt='ERF heat map' src='data:image/png;base64,{png}'/></div>")


def _fmt(v: float) -> str:
    return "nan" if v is None or not math.isfinite(v) else f"{v:.4g}"


def _fmt_axes(values: tuple) -> str:
    return " x ".join(_fmt(float(v)) for v in values)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value if not isinstance(value, float) or math.isfinite(value) else None
    return str(value)


def build_result(raw: np.ndarray, *, model: str, layer: str | None, input_shape: tuple[int, ...],
                 output_shape: tuple[int, ...], unit: tuple[int, ...], samples: int, method: str,
                 settings: dict, trf: TRFInfo | None, notes: list[str],
                 outside_fraction: float | None = None, outside_method: str = "gaussian-tail estimate",
                 samples_zero: int = 0, samples_skipped: int = 0) -> ERFResult:
    """Compute the metrics of ``raw`` against ``trf`` and assemble an :class:`ERFResult`, emitting
    every note as an :class:`ERFWarning` (and an input-too-small warning when it applies)."""
    metrics = compute_metrics(raw, trf_size=trf.size if trf else None, trf_box=trf.box if trf else None,
                              center=trf.center if trf else None, outside_fraction=outside_fraction,
                              outside_method=outside_method)
    notes = list(notes)
    if metrics.outside_fraction > OUTSIDE_WARN:
        where = f"layer '{layer}'" if layer else "the model output"
        notes.append(f"the input {'x'.join(map(str, input_shape))} is too small for the field of "
                     f"{where}: about {metrics.outside_fraction:.1%} of the ERF mass falls outside it "
                     f"({metrics.outside_method}); use a larger input")
    for note in notes:
        warnings.warn(note, ERFWarning, stacklevel=3)
    return ERFResult(model=model, layer=layer, input_shape=tuple(input_shape),
                     output_shape=tuple(output_shape), unit=tuple(unit), samples=samples, method=method,
                     settings=settings, raw=np.asarray(raw, dtype=np.float64), trf=trf, metrics=metrics,
                     warnings=tuple(notes), samples_zero=samples_zero, samples_skipped=samples_skipped)


def _thumbnail(raw: np.ndarray) -> bytes:
    """A PNG of the map alone (no axes; 2-D maps as they are, other ranks reduced to their first two
    axes or drawn as a strip) for notebooks; ``rflens.plot.erf_map`` draws the full figure."""
    from matplotlib.image import imsave

    m = np.asarray(raw, dtype=np.float64)
    while m.ndim > 2:
        m = m.sum(axis=0)
    if m.ndim == 1:
        m = np.repeat(m[None, :], max(1, m.size // 8), axis=0)
    buf = io.BytesIO()
    imsave(buf, m, cmap="viridis", format="png")
    return buf.getvalue()
