"""Theoretical receptive fields: capture a model's op graph, give every tensor its exact field.

``receptive_field(model, input_shape=(3, 224, 224))`` is the entry point (:mod:`.engine`). The
pieces, bottom up: :mod:`.instrument` (everything around a user's forward pass), :mod:`.capture`
(the op graph, on meta tensors), :mod:`.rules` (one small rule per aten op family, one registry),
:mod:`.graph` (applies the rules in order), :mod:`.result` and :mod:`.render` (frozen results that
render themselves), :mod:`.verify` (the gradient-support probe behind ``--verify``).
"""

from rflens.trf.engine import receptive_field
from rflens.trf.instrument import LayerRef, run_to_layer
from rflens.trf.result import AxisField, LayerField, ReceptiveField

__all__ = ["receptive_field", "ReceptiveField", "LayerField", "AxisField", "LayerRef", "run_to_layer"]
