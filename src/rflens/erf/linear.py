"""``activations="linear"`` (:func:`linear_mode`) and the normalisation-free forward that
``weights="uniform"`` runs under (:func:`norms_mode`).

Both are ``TorchFunctionMode``\\ s: they see every torch function a forward pass calls (in modules and
written directly in ``forward``) and replace some of them. Which tensors *depend on the input* is
followed op by op: a tensor passed to :func:`mark_input` (or a leaf that requires grad and is not a
parameter) depends on it, and so does the output of any op with such an argument (an in-place op
marks the tensor it writes). Constants (weights, buffers, masks built from them) never do, and are
never changed.

``linear_mode`` changes, when their input depends on the model input (docs/erf.md has the table):

- pointwise non-linearities (``relu``, ``gelu``, ``silu``, ``sigmoid``, ``tanh``, ... as functions,
  tensor methods or modules) and ``clamp``/``clip``: the identity;
- ``maximum``/``minimum``/``fmax``/``fmin`` and two-tensor ``max``/``min``: the operand that depends
  on the input (both: their mean); max/min over dimensions (``max(dim)``, ``amax``, ``amin``): the
  mean over the same dimensions (indices as computed); max pooling: average pooling over the same
  window (zero padding counted), adaptive max pooling: adaptive average pooling;
- ``where(mask, a, b)`` and ``masked_fill(x, mask, v)`` with a mask computed from the input: the
  branch that depends on the input (both: ``a``), ``x``;
- a product of two input-dependent tensors (``x * sigmoid(x)``, a squeeze-and-excitation gate
  ``x * g``): the larger factor (the first when equal in size) — the other, the gate, is the
  constant 1; a division by an input-dependent tensor (``x / norm``, ``F.normalize``): the dividend;
- normalisations that divide by statistics of their input (Layer/Group/Instance/RMS norm, BatchNorm
  with batch statistics): their affine part only. BatchNorm with running statistics is affine already.

Any other non-linear op whose result reaches the unit (``exp``, ``pow``, ``abs``, ``softmax``, a
matrix product of two input-dependent tensors as in attention, ...) is left as it is and *named*:
:func:`left_nonlinear` gives the names, and the ERF runs report them as warnings.

``norms_mode`` applies the normalisation rule only (with uniform weights the affine part is the
identity, so normalisations vanish) and changes nothing else.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from rflens.errors import RflensError

__all__ = ["linear_mode", "norms_mode", "mark_input", "left_nonlinear", "BatchStatsWatch"]

_DEP = "_rflens_dep"  # attribute: the tensor depends on the model input
_NL = "_rflens_nl"    # attribute: names of non-linear ops left on the way to this tensor

_POINTWISE = ("relu", "relu6", "leaky_relu", "gelu", "silu", "mish", "elu", "selu", "celu",
              "hardswish", "hardtanh", "softplus", "tanh", "sigmoid", "hardsigmoid", "prelu", "rrelu",
              "softsign", "logsigmoid", "threshold", "tanhshrink", "hardshrink", "softshrink",
              "clamp", "clip", "clamp_min", "clamp_max")
_LEFT = ("exp", "exp2", "expm1", "log", "log1p", "log2", "log10", "sqrt", "rsqrt", "pow", "float_power",
         "square", "abs", "absolute", "reciprocal", "sin", "cos", "tan", "sinh", "cosh", "asin",
         "acos", "atan", "atan2", "erf", "erfc", "erfinv", "sign", "sgn", "floor", "ceil", "round",
         "trunc", "frac", "fmod", "remainder", "softmax", "log_softmax", "logsumexp", "norm", "std",
         "var", "std_mean", "var_mean", "sort", "topk", "kthvalue", "median", "nanmedian", "cumprod",
         "prod", "logcumsumexp", "cummax", "cummin", "__pow__", "__rpow__", "__rdiv__",
         "__rtruediv__", "__abs__", "__mod__", "__floordiv__", "__rfloordiv__", "floor_divide")
_LEFT_F = ("softmax", "softmin", "log_softmax", "gumbel_softmax", "local_response_norm",
           "cosine_similarity", "pairwise_distance", "scaled_dot_product_attention",
           "multi_head_attention_forward", "glu")
_PRODUCTS = ("matmul", "mm", "bmm", "einsum", "baddbmm", "addmm", "addbmm", "linear", "bilinear",
             "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
             "grid_sample", "__matmul__", "__rmatmul__")


def mark_input(x: Tensor) -> Tensor:
    """Mark ``x`` as the model input (what :func:`linear_mode` follows); returns ``x``."""
    setattr(x, _DEP, True)
    return x


def left_nonlinear(t: Any) -> tuple[str, ...]:
    """Names of the non-linear ops :func:`linear_mode` left on the way to ``t`` (sorted)."""
    return tuple(sorted(getattr(t, _NL, ()))) if isinstance(t, Tensor) else ()


def _dep(t: Any) -> bool:
    if not isinstance(t, Tensor):
        return False
    if getattr(t, _DEP, False):
        return True
    return t.requires_grad and t.is_leaf and not isinstance(t, nn.Parameter)


def _signal(t: Any) -> bool:
    """A floating tensor that depends on the input (integer indices are never linearised)."""
    return _dep(t) and t.is_floating_point()


def _tensors(args: tuple, kwargs: dict) -> list[Tensor]:
    out = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, Tensor))
    return out


def _mark(out: Any, sources: list[Tensor], extra: frozenset = frozenset()) -> None:
    dep = any(_dep(t) for t in sources)
    if not dep:
        return
    names = frozenset(extra).union(*(getattr(t, _NL, frozenset()) for t in sources))
    for t in (out if isinstance(out, (list, tuple)) else (out,)):
        if isinstance(t, Tensor):
            try:
                setattr(t, _DEP, True)
                if names:
                    setattr(t, _NL, names | getattr(t, _NL, frozenset()))
            except (AttributeError, RuntimeError):  # some wrappers take no attributes
                pass


def _inplace(func: Callable, args: tuple, kwargs: dict) -> bool:
    name = getattr(func, "__name__", "")
    if (name.endswith("_") and not name.endswith("__")) or name.startswith("__i"):
        return True
    return bool(kwargs.get("inplace")) or any(a is True for a in args[1:])


def _fresh(t: Tensor, shape: torch.Size | None = None) -> Tensor:
    """A new tensor equal to ``t`` broadcast to ``shape`` (never an alias of ``t``)."""
    return (t.expand(shape) if shape is not None and t.shape != shape else t).clone()


def _first(args: tuple, kwargs: dict, key: str = "input") -> Any:
    return args[0] if args else kwargs.get(key, next(iter(kwargs.values()), None))


# --- handlers: each returns (output, the tensors whose dependence it carries) ---------------------

def _identity(func, args, kwargs):
    x = _first(args, kwargs)
    if not _signal(x):
        return func(*args, **kwargs), _tensors(args, kwargs)
    return (x if _inplace(func, args, kwargs) else _fresh(x)), [x]


def _binary_extreme(func, args, kwargs):
    """maximum/minimum/fmax/fmin and the two-tensor forms of max/min."""
    a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
    if not isinstance(b, Tensor):
        return _reduce_extreme(func, args, kwargs)
    da, db = _signal(a), _signal(b)
    if not (da or db):
        return func(*args, **kwargs), [a, b]
    shape = torch.broadcast_shapes(a.shape, b.shape)
    if da and db:
        return (a + b).expand(shape) / 2, [a, b]
    keep = a if da else b
    return _fresh(keep, shape), [keep]


def _reduce_extreme(func, args, kwargs):
    """max/min over a dimension or all: the mean over the same dimensions."""
    x = args[0]
    if not _signal(x):
        return func(*args, **kwargs), [x]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if dim is None:
        return x.mean(), [x]
    out = func(*args, **kwargs)
    values = x.mean(dim, keepdim=keepdim)
    return type(out)((values, out[1])), [x]


def _amax(func, args, kwargs):
    x = args[0]
    if not _signal(x):
        return func(*args, **kwargs), [x]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", ())
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    dims = tuple(range(x.dim())) if dim in ((), [], None) else dim
    return x.mean(dims, keepdim=keepdim), [x]


def _where(func, args, kwargs):
    if len(args) + len(kwargs) < 2:
        return func(*args, **kwargs), _tensors(args, kwargs)
    if func is Tensor.where:  # self.where(condition, other) == where(condition, self, other)
        cond, a, b = args[1], args[0], args[2] if len(args) > 2 else kwargs.get("other")
    else:
        cond, a = args[0], args[1] if len(args) > 1 else kwargs.get("input")
        b = args[2] if len(args) > 2 else kwargs.get("other")
    if not _dep(cond):
        return func(*args, **kwargs), _tensors(args, kwargs)
    keep = a if _signal(a) or not _signal(b) else b
    if not _signal(keep):
        out = func(*args, **kwargs)
        return out, []  # a choice between constants: no path to the input
    shape = torch.broadcast_shapes(*(t.shape for t in (cond, a, b) if isinstance(t, Tensor)))
    return _fresh(keep, shape), [keep]


def _masked_fill(func, args, kwargs):
    x, mask = args[0], args[1] if len(args) > 1 else kwargs.get("mask")
    if not _dep(mask) or not _signal(x):
        return func(*args, **kwargs), _tensors(args, kwargs)
    return (x if _inplace(func, args, kwargs) else _fresh(x)), [x]


def _mul(func, args, kwargs):
    a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
    if not (_signal(a) and _signal(b)):
        return func(*args, **kwargs), _tensors(args, kwargs)
    if _inplace(func, args, kwargs):
        return a, [a]
    keep = a if a.numel() >= b.numel() else b
    return _fresh(keep, torch.broadcast_shapes(a.shape, b.shape)), [keep]


def _div(func, args, kwargs):
    a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
    if not _signal(b) or kwargs.get("rounding_mode") is not None:
        out = func(*args, **kwargs)
        extra = {"floor/trunc division"} if kwargs.get("rounding_mode") and _dep(a) else set()
        return out, _tensors(args, kwargs), frozenset(extra)
    if not isinstance(a, Tensor):
        return func(*args, **kwargs), [b], frozenset({"division by an input-dependent tensor"})
    if _inplace(func, args, kwargs):
        return a, [a]
    return _fresh(a, torch.broadcast_shapes(a.shape, b.shape)), [a]


def _normalize(func, args, kwargs):
    x = _first(args, kwargs)
    if not _signal(x):
        return func(*args, **kwargs), [x]
    return _fresh(x), [x]


def _pool_as_average(avg: Callable) -> Callable:
    def handler(func, args, kwargs):
        return _avg_pool(avg, *args, **kwargs), _tensors(args, kwargs)
    return handler


def _avg_pool(avg, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
              return_indices=False):
    if any(d != 1 for d in _tuple(dilation)):
        raise RflensError("activations='linear' cannot turn a dilated max pool into an average "
                          "pool; use activations='as-is'")
    if return_indices:
        raise RflensError("activations='linear' cannot replace a max pool that returns indices; "
                          "use activations='as-is'")
    stride = kernel_size if stride is None or _tuple(stride) == () else stride
    return avg(input, kernel_size, stride, padding, ceil_mode, True)


def _adaptive_as_average(avg: Callable) -> Callable:
    def handler(func, args, kwargs):
        x = _first(args, kwargs)
        size = args[1] if len(args) > 1 else kwargs["output_size"]
        return avg(x, size), [x]
    return handler


def _affine(input, weight=None, bias=None, channel_dim: bool = False):
    shape = (1, -1) + (1,) * (input.dim() - 2) if channel_dim else None
    out = input if weight is None else input * (weight.reshape(shape) if shape else weight)
    return out if bias is None else out + (bias.reshape(shape) if shape else bias)


def _layer_norm(func, args, kwargs):
    input, _shape, weight, bias = (list(args) + [None] * 4)[:4]
    weight, bias = kwargs.get("weight", weight), kwargs.get("bias", bias)
    return _affine(input, weight, bias), _tensors(args, kwargs)


def _rms_norm(func, args, kwargs):
    input, _shape, weight = (list(args) + [None] * 3)[:3]
    return _affine(input, kwargs.get("weight", weight)), _tensors(args, kwargs)


def _group_norm(func, args, kwargs):
    input, _groups, weight, bias = (list(args) + [None] * 4)[:4]
    weight, bias = kwargs.get("weight", weight), kwargs.get("bias", bias)
    return _affine(input, weight, bias, channel_dim=True), _tensors(args, kwargs)


def _instance_norm(func, args, kwargs):
    names = ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats")
    bound = dict(zip(names, args)) | kwargs
    if not bound.get("use_input_stats", True):
        return func(*args, **kwargs), _tensors(args, kwargs)
    return (_affine(bound["input"], bound.get("weight"), bound.get("bias"), channel_dim=True),
            _tensors(args, kwargs))


def _batch_norm(func, args, kwargs):
    names = ("input", "running_mean", "running_var", "weight", "bias", "training")
    bound = dict(zip(names, args)) | kwargs
    if not bound.get("training", False) and bound.get("running_mean") is not None:
        return func(*args, **kwargs), _tensors(args, kwargs)  # running statistics: affine already
    return (_affine(bound["input"], bound.get("weight"), bound.get("bias"), channel_dim=True),
            _tensors(args, kwargs))


_SELF_GUARDED = (_identity, _binary_extreme, _amax, _where, _masked_fill, _mul, _div, _normalize)


def _tuple(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _functions(owners: tuple, names: tuple[str, ...], inplace: bool = True) -> dict[Callable, str]:
    out: dict[Callable, str] = {}
    for owner, label in owners:
        for name in names:
            for n in ((name, name + "_") if inplace and not name.startswith("__") else (name,)):
                fn = getattr(owner, n, None)
                if callable(fn):
                    out.setdefault(fn, f"{label}.{n}")
    return out


_TORCH = ((torch, "torch"), (Tensor, "Tensor"), (F, "F"))


def _norm_table() -> dict[Callable, Callable]:
    table = {F.layer_norm: _layer_norm, F.group_norm: _group_norm, F.instance_norm: _instance_norm,
             F.batch_norm: _batch_norm}
    if hasattr(F, "rms_norm"):
        table[F.rms_norm] = _rms_norm
    return table


def _linear_table() -> dict[Callable, Callable]:
    table: dict[Callable, Callable] = {}
    for fn in _functions(_TORCH, _POINTWISE):
        table[fn] = _identity
    for fn in _functions(_TORCH, ("maximum", "minimum", "fmax", "fmin")):
        table[fn] = _binary_extreme
    for fn in _functions(((torch, "torch"), (Tensor, "Tensor")), ("max", "min"), inplace=False):
        table[fn] = _binary_extreme
    for fn in _functions(_TORCH, ("amax", "amin"), inplace=False):
        table[fn] = _amax
    for fn in _functions(((torch, "torch"), (Tensor, "Tensor")), ("where",), inplace=False):
        table[fn] = _where
    for fn in _functions(((torch, "torch"), (Tensor, "Tensor")), ("masked_fill",)):
        table[fn] = _masked_fill
    for fn in _functions(((torch, "torch"), (Tensor, "Tensor")),
                         ("mul", "multiply", "__mul__", "__rmul__", "__imul__")):
        table[fn] = _mul
    for fn in _functions(((torch, "torch"), (Tensor, "Tensor")),
                         ("div", "divide", "true_divide", "__truediv__", "__itruediv__", "__div__")):
        table[fn] = _div
    table[F.normalize] = _normalize
    for d, (mx, av, amx, aav) in enumerate([(F.max_pool1d, F.avg_pool1d, F.adaptive_max_pool1d,
                                             F.adaptive_avg_pool1d),
                                            (F.max_pool2d, F.avg_pool2d, F.adaptive_max_pool2d,
                                             F.adaptive_avg_pool2d),
                                            (F.max_pool3d, F.avg_pool3d, F.adaptive_max_pool3d,
                                             F.adaptive_avg_pool3d)], start=1):
        table[mx] = _pool_as_average(av)
        table[getattr(torch, f"max_pool{d}d")] = _pool_as_average(av)
        table[amx] = _adaptive_as_average(aav)
    table.update(_norm_table())
    return table


def _on_input(handler: Callable) -> Callable:
    """``handler`` only where the first argument depends on the input; constants (a weight
    standardised by ``batch_norm``, a pooled buffer) are computed as they are."""
    def guarded(func, args, kwargs):
        if not _signal(_first(args, kwargs)):
            return func(*args, **kwargs), _tensors(args, kwargs)
        return handler(func, args, kwargs)
    return guarded


@functools.cache
def _tables(norms_only: bool) -> tuple[dict, dict, dict]:
    """(replacements, non-linear ops to name, products to name when both factors depend)."""
    table = _norm_table() if norms_only else _linear_table()
    table = {f: (h if h in _SELF_GUARDED else _on_input(h)) for f, h in table.items()}
    if norms_only:
        return table, {}, {}
    left = _functions(_TORCH, _LEFT) | _functions(((F, "F"),), _LEFT_F)
    return table, left, _functions(_TORCH, _PRODUCTS, inplace=False)


class _LinearMode(TorchFunctionMode):
    """See the module docstring. ``norms_only=True`` is :func:`norms_mode`."""

    def __init__(self, norms_only: bool = False) -> None:
        super().__init__()
        self.norms_only = norms_only
        self.table, self.left, self.products = _tables(norms_only)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = self.table.get(func)
        extra: frozenset = frozenset()
        if handler is not None:
            out, *rest = handler(func, args, kwargs)
            sources = rest[0]
            if len(rest) > 1:
                extra = rest[1]
        else:
            out = func(*args, **kwargs)
            sources = _tensors(args, kwargs)
            if func in self.left and any(_signal(t) for t in sources) and not _linear_power(func, args):
                extra = frozenset({self.left[func]})
            elif func in self.products and sum(_signal(t) for t in sources) >= 2:
                extra = frozenset({f"{self.products[func]} of two input-dependent tensors"})
        if getattr(func, "__name__", "") == "__setitem__" and args:
            _mark(args[0], sources, extra)
        else:
            _mark(out, sources, extra)
        return out


def _linear_power(func: Callable, args: tuple) -> bool:
    name = getattr(func, "__name__", "")
    return (name in ("pow", "__pow__", "pow_", "float_power") and len(args) > 1
            and isinstance(args[1], (int, float)) and args[1] == 1)


def linear_mode() -> contextlib.AbstractContextManager:
    """Context manager: while active, forward passes are linear in the input (see the module
    docstring). Mark the input with :func:`mark_input` (a leaf input that requires grad counts
    too); read what was left non-linear with :func:`left_nonlinear` on the output."""
    return _LinearMode()


def norms_mode() -> contextlib.AbstractContextManager:
    """Context manager: normalisations keep only their affine part; nothing else changes."""
    return _LinearMode(norms_only=True)


class BatchStatsWatch(TorchFunctionMode):
    """Counts ``batch_norm`` calls on data from the input (it requires grad; parameters must not)
    that normalise by statistics of the batch (BatchNorm without running statistics, or called with
    ``training=True``): such a forward mixes the samples. Weight standardisation (``batch_norm`` of
    a weight) does not count."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            bound = dict(zip(("input", "running_mean", "running_var", "weight", "bias", "training"),
                             args)) | kwargs
            data = bound.get("input")
            batch_stats = bound.get("training", False) or bound.get("running_mean") is None
            if batch_stats and isinstance(data, Tensor) and (data.requires_grad or _dep(data)):
                self.calls += 1
        return func(*args, **kwargs)
