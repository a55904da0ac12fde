"""Per-op receptive-field rules, one registry (see :mod:`rflens.trf.rules.registry`)."""

from rflens.trf.rules import fold, lookup, matmul, merge, pad, reduce, resample, shape, window, writeback  # noqa: F401 (register)
from rflens.trf.rules.registry import RULES, Arg, Misalignment, OpCall, lookup, register

__all__ = ["RULES", "Arg", "Misalignment", "OpCall", "lookup", "register"]
