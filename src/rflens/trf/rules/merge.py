"""Pointwise ops and merges: every op whose output unit reads the same-index unit of each input
(with broadcasting). Several inputs with fields are several paths: their union, with an alignment
check. A size-1 dimension of a *global* input broadcast over a spatial dimension (an SE gate) is
treated as a constant for the geometric field; its global dependency is still propagated."""

from __future__ import annotations

from rflens.geometry.fields import Factor, TensorField, flags_of
from rflens.trf.rules.axes import broadcast_factor, merge_dims
from rflens.trf.rules.mixing import fold_extra
from rflens.trf.rules.registry import Arg, OpCall, register


def merged_extra(fields: list[TensorField], call: OpCall) -> tuple[Factor, ...]:
    by_axis: dict[int, list] = {}
    for f in fields:
        for e in f.extra:
            by_axis.setdefault(e.axis, []).append((e,))
    out = []
    for axis, dims in sorted(by_axis.items()):
        merged = merge_dims(dims, 1, axis, call, list(range(len(dims))))
        if merged is not None:
            out.append(merged[0])
    return tuple(out)


def broadcast_merge(call: OpCall, shape: tuple[int, ...], inputs: list | None = None) -> TensorField | None:
    """Field of an output of ``shape`` whose unit reads the same-index unit of every input (the
    call's tensor arguments, or ``inputs``: a list of :class:`Arg`)."""
    args = [(pos, a) for pos, a in enumerate(call.tensor_args if inputs is None else inputs)
            if a.field is not None]
    if not args:
        return None
    if len(args) == 1 and tuple(args[0][1].shape) == tuple(shape):
        return args[0][1].field  # one path, same shape: every unit reads its own unit
    nd = len(shape)
    dims, lost = [], set()
    for d in range(nd):
        contributions, positions, globals_ = [], [], []
        for pos, a in args:
            k = d - (nd - len(a.shape))
            if k < 0:
                continue
            dim = a.field.dims[k]
            if a.shape[k] == shape[d]:
                contributions.append(dim)
            elif a.shape[k] == 1:
                if a.field.is_global and not any(f.axis is not None for f in dim):
                    continue
                # a pooled axis broadcast back (x * x.mean(W, keepdim=True)): a context path, in
                # every unit's exact hull but not in the geometric field (see merge_dims)
                contributions.append(tuple(broadcast_factor(f, shape[d]) for f in dim))
            else:
                lost.add(f"{call.name}: shapes {a.shape} and {shape} do not broadcast")
                continue
            positions.append(pos)
            globals_.append(a.field.is_global)
        merged = merge_dims(contributions, shape[d], d, call, positions, globals_)
        if merged is None:
            lost.add(f"{call.name} merges tensors whose dimension {d} carries different axes")
            merged = (Factor(shape[d]),)
        dims.append(merged)
    fields = [a.field for _, a in args]
    flags = flags_of(fields)
    flags["misaligned"] = flags["misaligned"] or bool(call.misalignments)
    flags["lost"] = flags["lost"] | frozenset(lost)
    out = TensorField(tuple(dims), extra=merged_extra(fields, call), **flags)
    # a gate pooled over every axis (squeeze-and-excitation) met the map it gates: its pooled
    # path joins every unit's exact hull
    return fold_extra(out) if out.is_global and out.extra else out


@register("<pointwise>", "_to_copy", "clone", "detach", "alias", "lift_fresh", "lift_fresh_copy",
          "native_dropout", "_conj", "_masked_scale", "expand", "expand_copy",
          "clamp_min", "clamp_max", "hardtanh", "_prelu_kernel")
def pointwise(call: OpCall) -> list:
    return [broadcast_merge(call, s) for s in call.out_shapes]


@register("where", "masked_fill", "masked_fill_")
def select_by_mask(call: OpCall) -> list:
    """``where(mask, a, b)``, ``a.masked_fill(mask, v)``: the union of the branches, flagged as a
    possible superset (``exact_hull`` False) when the mask is a constant tensor — each unit takes
    one branch by the mask's value, which capture (on meta tensors) does not read. A mask computed
    from the input is a path of its own and merged in."""
    out = pointwise(call)
    mask = call.kw.get("condition" if call.name == "where" else "mask")
    if isinstance(mask, Arg) and mask.field is None:
        out = [f if f is None else f.with_dims(f.dims, approximate=True) for f in out]
    return out


@register("mul", "mul_")
def multiply(call: OpCall) -> list:
    """Pointwise, except that a product with the number 0 depends on nothing (``y.mul_(0)``
    clears a buffer before it is refilled)."""
    if any(isinstance(a, (int, float)) and not isinstance(a, bool) and a == 0
           for a in (call.kw.get("self"), call.kw.get("other"))):
        return [None for _ in call.out_shapes]
    out = pointwise(call)
    if call.context_over_empty:
        # a unit that reads nothing on its local path may hold 0 (a zero pad, a fresh buffer):
        # its product with the pooled context is then 0 too, and rflens cannot tell from fields
        out = [f if f is None else f.with_dims(f.dims, approximate=True) for f in out]
    return out


@register("copy", "copy_")
def copy(call: OpCall) -> list:
    """``dst.copy_(src)``: the destination now holds ``src`` (broadcast); its old content is gone."""
    return [broadcast_merge(call, call.out_shapes[0], [call.kw["src"]])]


@register("bernoulli", "bernoulli_", "uniform_", "normal_", "exponential_", "geometric_",
          "log_normal_", "cauchy_", "random_")
def random(call: OpCall) -> list:
    """Random draws. Filling ``self`` (``bernoulli_(self, p)``, ``uniform_``, ...) or drawing with a
    fixed probability (``bernoulli(self, p)``) ignores the values of ``self``: no dependency.
    ``bernoulli(self)`` draws with the probabilities ``self`` holds: pointwise."""
    if call.name == "bernoulli" and not isinstance(call.kw.get("p"), (int, float)):
        return pointwise(call)
    return [None for _ in call.out_shapes]


@register("zeros_like", "empty_like", "ones_like", "full_like", "rand_like", "randn_like",
          "randint_like", "new_zeros", "new_empty", "new_ones", "new_full", "new_empty_strided",
          "zero", "zero_")
def constant(call: OpCall) -> list:
    """Ops whose output does not depend on the values of their tensor inputs."""
    return [None for _ in call.out_shapes]


@register("fill", "fill_")
def fill(call: OpCall) -> list:
    """``fill(self, value)``: the output holds ``value`` (a scalar, or a 0-d tensor) everywhere."""
    value = call.kw["value"]
    if getattr(value, "field", None) is None:
        return [None for _ in call.out_shapes]
    return [broadcast_merge(call, call.out_shapes[0], [value])]
