"""Pictures of receptive fields. Every function returns a :class:`matplotlib.figure.Figure`.

Figures are built without ``pyplot``: nothing is registered with a GUI backend, nothing needs
closing, and they render with Agg (PNG) whatever backend is configured. In Jupyter they display
themselves (``_repr_png_``). Pass ``ax=`` (or ``axes=``) to draw into axes of your own, e.g. from
``plt.subplots()``, to show them interactively. :func:`save` writes PNG, SVG or PDF by suffix.

Conventions (see ``docs/receptive-fields.md``): coordinates are 0-based input pixels; pixel ``j``
covers ``[j - 0.5, j + 0.5]`` in data coordinates, so a box ``(lo, hi)`` (inclusive) is drawn from
``lo - 0.5`` to ``hi + 0.5``. Images and maps are indexed ``[row, column]`` (axis 0 is drawn
vertically, top to bottom; axis 1 horizontally). Boxes drawn on images are clipped to the input.

Artists tests and users may look for carry a ``gid``: ``"trf-box"`` (TRF rectangle),
``"erf-contour"``, ``"trf-size"`` / ``"trf-size-axis{k}"``, ``"erf-size"``, ``"input-size"``,
``"exceeds-input"``, ``"global"``, ``"unknown"``, ``"erf-marginal"``, ``"gaussian-fit"``,
``"trf-bound"``, ``"count"``, ``"tile-window"``, ``"tile-keep"``.
"""

from rflens.plot.common import (BOX_COLOR, DPI, IMAGE_BOX_COLOR, RFFigure, clip_box, data_uri, save,
                                to_png)
from rflens.plot.growth import growth
from rflens.plot.maps import erf_map, erf_profiles
from rflens.plot.overlay import overlay
from rflens.plot.paths import path_counts
from rflens.plot.tiling import tile_plan

__all__ = ["erf_map", "erf_profiles", "growth", "overlay", "path_counts", "tile_plan", "save", "to_png",
           "data_uri", "RFFigure", "DPI", "BOX_COLOR", "IMAGE_BOX_COLOR", "clip_box"]
