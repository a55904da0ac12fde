"""Per-op receptive-field rules, one registry (see :mod:`rflens.rules.registry`)."""

from rflens.rules import matmul, merge, pad, reduce, resample, shape, window  # noqa: F401 (register)
from rflens.rules.registry import RULES, Arg, Misalignment, OpCall, lookup, register

__all__ = ["RULES", "Arg", "Misalignment", "OpCall", "lookup", "register"]
