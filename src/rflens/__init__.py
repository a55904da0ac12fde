"""rflens: exact theoretical and effective receptive fields of PyTorch models.

``rflens.receptive_field(model, input_shape=(3, 224, 224))`` gives the theoretical receptive field
(size, jump, effective padding, centre, per-unit boxes) of every layer. Definitions follow
``docs/receptive-fields.md``.
"""

from rflens.errors import InputTooSmallError, RflensError, UnsupportedOpError
from rflens.result import AxisField, LayerField, ReceptiveField
from rflens.trf import receptive_field

__all__ = ["receptive_field", "ReceptiveField", "LayerField", "AxisField", "RflensError",
           "UnsupportedOpError", "InputTooSmallError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # heavier parts load on first use
    if name in ("effective_receptive_field",):
        from rflens import erf
        return getattr(erf, name)
    if name == "analytic_erf":
        from rflens import analytic
        return analytic.analytic_erf
    raise AttributeError(f"module 'rflens' has no attribute {name!r}")
