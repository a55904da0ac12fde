"""Effective receptive fields: measured from gradients (:func:`effective_receptive_field`), or exact
path counts (:func:`analytic_erf`), and their metrics (:mod:`.metrics`, pure numpy).

Modules: :mod:`.api` (the entry point), :mod:`.settings` (choices, presets), :mod:`.inputs` (input
sources), :mod:`.weights` and :mod:`.linear` (what ``weights=`` and ``activations=`` change),
:mod:`.probe` (one batch → maps), :mod:`.memory` (batch sizes from a memory budget), :mod:`.run`
(the sample loop), :mod:`.datasets` (random-access inputs, image folders, transforms),
:mod:`.distributed` (several processes), :mod:`.checkpoint`, :mod:`.result`, :mod:`.metrics`,
:mod:`.gaussian` (fits and the Gaussian tests), :mod:`.protocols` (published read-outs),
:mod:`.analytic`.
"""

from rflens.erf.analytic import AnalyticERF, analytic_erf, analytic_result
from rflens.erf.api import effective_receptive_field, effective_receptive_fields, trf_of_unit
from rflens.erf.linear import linear_mode
from rflens.erf.memory import memory_budget, saved_bytes
from rflens.erf.result import ERFResult, ERFWarning, TRFInfo, build_result
from rflens.erf.settings import ACTIVATIONS, PRESETS, READOUT, REDUCE, WEIGHTS, resolve_input_shape
from rflens.erf.weights import uniformize

__all__ = ["effective_receptive_field", "effective_receptive_fields", "analytic_erf", "analytic_result", "AnalyticERF",
           "ERFResult", "ERFWarning", "TRFInfo", "build_result", "trf_of_unit", "linear_mode",
           "uniformize", "memory_budget", "saved_bytes", "PRESETS", "ACTIVATIONS", "READOUT",
           "REDUCE", "WEIGHTS", "resolve_input_shape"]
