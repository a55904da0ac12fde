"""The one registry of per-op receptive-field rules.

A rule is a small pure function ``rule(call: OpCall) -> list[TensorField | None]`` returning the
field of each tensor output (``None``: the output does not depend on the input). Rules are
registered by aten op name (the overload packet, e.g. ``"convolution"``, not
``"convolution.default"``) with :func:`register`, in the manner of
``torch.utils.flop_counter.register_flop_formula``, and read their arguments by the names of the
op's schema (``call.kw["stride"]``), so every overload of a packet — whatever its argument order —
is read right. Pseudo-ops that capture records itself (not aten ops) declare their argument names
when they are registered. Ops tagged ``pointwise`` by PyTorch fall back
to the broadcasting merge rule. An op with no rule is never treated as identity: the graph layer
marks its outputs unknown and reports it by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

from rflens.geometry.fields import TensorField

Rule = Callable[["OpCall"], list]

RULES: dict[str, Rule] = {}
SCHEMAS: dict[str, tuple[str, ...]] = {}  # argument names of the pseudo-ops capture records


@dataclass(frozen=True)
class Arg:
    """A tensor argument as rules see it: its shape and its field (None: a constant)."""

    shape: tuple[int, ...]
    field: TensorField | None
    dtype: Any = None  # torch dtype of the tensor (None when not recorded)


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
    schema: tuple[tuple[str, Any], ...] = ()  # (name, default) of every argument, in schema order
    # a pooled context path met units that read nothing on a local path (see merge_dims)
    context_over_empty: bool = False

    @cached_property
    def kw(self) -> dict[str, Any]:
        """Every argument by its schema name: positional ones, keyword ones, and the schema's
        defaults for those not passed (``None`` where the schema has no default)."""
        out = {name: default for name, default in self.schema}
        out.update(zip((name for name, _ in self.schema), self.args))
        out.update(self.kwargs)
        return out

    @property
    def input(self) -> Any:
        """The op's first argument (``self`` / ``input`` in aten schemas)."""
        return self.args[0] if self.args else next(iter(self.kwargs.values()), None)

    @cached_property
    def tensor_args(self) -> list[Arg]:
        out = []
        for a in list(self.args) + list(self.kwargs.values()):
            if isinstance(a, Arg):
                out.append(a)
            elif isinstance(a, (list, tuple)):
                out.extend(x for x in a if isinstance(x, Arg))
        return out

    @cached_property
    def fields(self) -> list[TensorField]:
        return [a.field for a in self.tensor_args if a.field is not None]


def register(*names: str, schema: tuple[str, ...] | None = None) -> Callable[[Rule], Rule]:
    """Register a rule for one or more aten op names (overload packets). ``schema``: the argument
    names of a pseudo-op that capture records itself (aten ops bring their own schema)."""

    def wrap(fn: Rule) -> Rule:
        for n in names:
            if n in RULES:
                raise ValueError(f"two receptive-field rules for op {n!r}")
            RULES[n] = fn
            if schema is not None:
                SCHEMAS[n] = schema
        return fn

    return wrap


def lookup(name: str, tags: frozenset[str]) -> Rule | None:
    rule = RULES.get(name)
    if rule is None and "pointwise" in tags:
        rule = RULES.get("<pointwise>")
    return rule
