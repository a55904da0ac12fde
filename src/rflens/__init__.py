"""rflens: exact theoretical and effective receptive fields of PyTorch models.

``rflens.receptive_field(model, input_shape=(3, 224, 224))`` gives the theoretical receptive field
(size, jump, effective padding, centre, per-unit boxes) of every layer;
``rflens.effective_receptive_field(model, layer, ...)`` the measured ERF of one unit and
``rflens.analytic_erf(...)`` its exact path-count form. Definitions follow
``docs/receptive-fields.md``; ``docs/architecture.md`` shows how the packages are layered.
"""

from rflens.errors import InputTooSmallError, RflensError, UnsupportedOpError
from rflens.trf import AxisField, LayerField, ReceptiveField, receptive_field

__all__ = ["receptive_field", "effective_receptive_field", "analytic_erf", "load_model",
           "ReceptiveField", "LayerField", "AxisField", "RflensError", "UnsupportedOpError",
           "InputTooSmallError"]
__version__ = "0.1.0"

_LAZY = {"effective_receptive_field": "rflens.erf", "analytic_erf": "rflens.erf",
         "load_model": "rflens.sources"}


_SUBPACKAGES = {"erf", "dense", "tile", "plot", "report", "sources", "experiments", "geometry"}


def __getattr__(name: str):
    # heavier parts load on first use
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"rflens.{name}")
    raise AttributeError(f"module 'rflens' has no attribute {name!r}")
