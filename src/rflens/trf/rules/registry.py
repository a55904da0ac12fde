"""The one registry of per-op receptive-field rules.

A rule is a small pure function ``rule(call: OpCall) -> list[TensorField | None]`` returning the
field of each tensor output (``None``: the output does not depend on the input). Rules are
registered by aten op name (the overload packet, e.g. ``"convolution"``, not
``"convolution.default"``) with :func:`register`, in the manner of
``torch.utils.flop_counter.register_flop_formula``. Ops tagged ``pointwise`` by PyTorch fall back
to the broadcasting merge rule. An op with no rule is never treated as identity: the graph layer
marks its outputs unknown and reports it by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from rflens.geometry.fields import TensorField

Rule = Callable[["OpCall"], list]

RULES: dict[str, Rule] = {}


@dataclass(frozen=True)
class Arg:
    """A tensor argument as rules see it: its shape and its field (None: a constant)."""

    shape: tuple[int, ...]
    field: TensorField | None


@dataclass(frozen=True)
class Misalignment:
    """A merge whose paths disagree on one axis. ``paths``: (argument position, jump, centre of
    unit 0) for each path that reaches the merge with a field on that axis."""

    axis: int
    paths: tuple[tuple[int, str, str], ...]


@dataclass
class OpCall:
    """One executed op. ``args``/``kwargs`` are the op's arguments with tensors replaced by
    :class:`Arg` (lists of tensors become lists of Args). ``out_shapes``: shapes of the tensor
    outputs in order. Rules append to ``misalignments`` when they find a non-aligned merge."""

    name: str
    args: tuple
    kwargs: dict
    out_shapes: list[tuple[int, ...]]
    tags: frozenset[str] = frozenset()
    misalignments: list[Misalignment] = field(default_factory=list)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)

    @property
    def tensor_args(self) -> list[Arg]:
        out = []
        for a in list(self.args) + list(self.kwargs.values()):
            if isinstance(a, Arg):
                out.append(a)
            elif isinstance(a, (list, tuple)):
                out.extend(x for x in a if isinstance(x, Arg))
        return out

    @property
    def fields(self) -> list[TensorField]:
        return [a.field for a in self.tensor_args if a.field is not None]


def register(*names: str) -> Callable[[Rule], Rule]:
    """Register a rule for one or more aten op names (overload packets)."""

    def wrap(fn: Rule) -> Rule:
        for n in names:
            if n in RULES:
                raise ValueError(f"two receptive-field rules for op {n!r}")
            RULES[n] = fn
        return fn

    return wrap


def lookup(name: str, tags: frozenset[str]) -> Rule | None:
    rule = RULES.get(name)
    if rule is None and "pointwise" in tags:
        rule = RULES.get("<pointwise>")
    return rule
