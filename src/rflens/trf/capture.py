"""Capture: run a model once under a ``TorchDispatchMode`` and record every aten op that touches
data derived from the input, as a list of :class:`Node` (a graph in execution order), together
with which module (by ``named_modules()`` path) was running and what each module returned.

The user's model is never moved or changed: by default it runs on *meta* copies of its
parameters and buffers (``torch.func.functional_call``), in eval mode; train/eval flags are
restored and every hook removed in ``finally``. Tensor identity is tracked by object (weakly),
with a new version id whenever an op writes a tensor in place; an in-place write through a view
also produces a new version of the view's base.
"""

from __future__ import annotations

import warnings
import weakref
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from rflens.errors import RflensError
from rflens.trf.aliasing import layout, placement
from rflens.trf.instrument import ModuleTracker, eval_mode, meta_state, output_items, preserved
from rflens.trf.rules import lookup
from rflens.trf.rules.registry import SCHEMAS
from rflens.trf.shapes import shortcut
from rflens.trf.rules.writeback import INPLACE_WRITEBACK


@dataclass(frozen=True)
class TensorRef:
    """A tensor in the captured graph: ``id`` of its version (None: not derived from the input)."""

    id: int | None
    shape: tuple[int, ...]
    dtype: torch.dtype | None = None


def tensor_refs(args) -> list[TensorRef]:
    """The TensorRefs among a node's arguments (they nest at most one list deep)."""
    out = []
    for a in args:
        if isinstance(a, TensorRef):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, TensorRef))
    return out


@dataclass(frozen=True)
class Node:
    index: int
    name: str               # aten op name (overload packet), e.g. "convolution"
    overload: str
    args: tuple             # tensors replaced by TensorRef
    kwargs: dict
    outputs: tuple[TensorRef, ...]
    module: str             # innermost running module path ("" = the root module)
    tags: frozenset[str]
    origin: str = ""        # the op this one was decomposed from, if any
    schema: tuple = ()      # (name, default) of every argument, in the op's schema order


@dataclass(frozen=True)
class ModuleOutput:
    """One call of a module: what it returned, ``outputs`` as (suffix, TensorRef) pairs (suffix ""
    for a single tensor, else "[key]" / "[i]"), and the tensors it was called with."""

    name: str
    call: int
    after_node: int
    outputs: tuple[tuple[str, TensorRef], ...]
    type_name: str
    inputs: tuple[TensorRef, ...] = ()   # the call's positional tensor arguments
    first_node: int = 0                  # index of the first node recorded during the call


@dataclass
class Capture:
    nodes: list[Node]
    modules: list[ModuleOutput]
    inputs: list[TensorRef]       # every tensor among the inputs (nested lists/dicts flattened)
    path: str                     # "meta" or "cpu"
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None    # why the recording ends before the model's end (partial capture)


class CaptureError(Exception):
    """The model failed while being captured: ``partial`` holds what was recorded until then,
    ``op``/``module`` where it failed, ``error`` the exception."""

    def __init__(self, partial: Capture, op: str, module: str, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.partial, self.op, self.module, self.error = partial, op, module, error


@dataclass(frozen=True)
class _OpInfo:
    """What capture needs to know about one op overload, worked out once per overload."""

    name: str
    overload: str
    tags: frozenset[str]
    schema: tuple
    has_rule: bool
    mutable: bool
    view: bool
    shortcut: object  # shape-only replacement of the meta kernel, or None
    outs: frozenset   # names of out= arguments


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        # id(tensor) -> (version id, weak reference): identity checked through the weak reference,
        # so a freed tensor's recycled id is never mistaken for it
        self.ids: dict[int, tuple[int, weakref.ref]] = {}
        self.next_id = 0
        self.nodes: list[Node] = []
        self.stack: list[str] = []
        self.info: dict = {}
        self.origin: list[str] = []
        self.meta = False
        self.muted = 0  # > 0 while a composite runs: its inner ops are not recorded
        self.current = ("", "")  # the op being dispatched and its module (named when one fails)
        self.alias_refs: dict[int, list[weakref.ref]] = {}  # id(storage root) -> tensors on it
        self.roots: dict[int, tuple[weakref.ref, weakref.ref]] = {}  # id(tensor) -> (it, its root)

    def track(self, t: torch.Tensor, view_of: torch.Tensor | None = None) -> TensorRef:
        """A new version of ``t``. ``view_of``: the tensor ``t`` is a view of (a view op's input:
        inside the dispatch mode a view's ``_base`` is not set yet)."""
        ref = TensorRef(self.next_id, tuple(t.shape))
        known = self.ids.get(id(t))
        self.ids[id(t)] = (ref.id, weakref.ref(t))
        if known is None or known[1]() is not t:  # a tensor seen for the first time: note its storage
            root = self.root_of(view_of) if view_of is not None else self.root_of(t)
            self.roots[id(t)] = (weakref.ref(t), weakref.ref(root))
            self.alias_refs.setdefault(id(root), []).append(weakref.ref(t))
        self.next_id += 1
        return ref

    def root_of(self, t: torch.Tensor) -> torch.Tensor:
        """The tensor that owns ``t``'s storage (``t`` itself when it is no view)."""
        entry = self.roots.get(id(t))
        if entry is not None and entry[0]() is t and entry[1]() is not None:
            return entry[1]()
        return t._base if t._base is not None else t

    def version(self, t: torch.Tensor) -> int | None:
        entry = self.ids.get(id(t))
        return entry[0] if entry is not None and entry[1]() is t else None

    def ref(self, t: torch.Tensor) -> TensorRef:
        return TensorRef(self.version(t), tuple(t.shape), t.dtype)

    def _refs(self, a):
        """An argument with tensors replaced by TensorRefs (aten args nest one list deep)."""
        if isinstance(a, torch.Tensor):
            return self.ref(a)
        if isinstance(a, (list, tuple)) and any(isinstance(b, torch.Tensor) for b in a):
            return type(a)(self.ref(b) if isinstance(b, torch.Tensor) else b for b in a)
        return a

    def info_of(self, func) -> _OpInfo:
        info = self.info.get(func)
        if info is None:
            names = {str(t).split(".")[-1] for t in func.tags}
            packet = func.overloadpacket.__name__
            if packet.endswith("_") and "pointwise" not in names:  # relu_ inherits relu's tags
                base = getattr(torch.ops.aten, packet[:-1], None)
                if base is not None and hasattr(base, "default"):
                    names |= {str(t).split(".")[-1] for t in base.default.tags}
            tags = frozenset(names)
            schema = tuple((a.name, a.default_value if a.has_default_value() else None)
                           for a in func._schema.arguments)
            info = self.info[func] = _OpInfo(packet, func._overloadname, tags, schema,
                                             lookup(packet, tags) is not None, func._schema.is_mutable,
                                             func.is_view, shortcut(func),
                                             frozenset(a.name for a in func._schema.arguments if a.is_out))
        return info

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.muted or not any(self.version(t) is not None for t in _tensors(args, kwargs)):
            return func(*args, **kwargs)
        info = self.info_of(func)
        self.current = (info.name, self.stack[-1] if self.stack else "")
        if not info.has_rule:
            decomposed = self._decompose(func, args, kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        arg_refs = tuple(self._refs(a) for a in args)
        kwarg_refs = {k: (TensorRef(None, tuple(v.shape)) if k in info.outs else self._refs(v))
                      for k, v in kwargs.items()} if kwargs else {}  # out= is written, not read
        out = NotImplemented
        if self.meta and info.shortcut is not None:
            out = info.shortcut(*args, **kwargs)
        if out is NotImplemented:
            out = func(*args, **kwargs)
        outs = _flat_tensors(out)
        source = args[0] if info.view and args and isinstance(args[0], torch.Tensor) else None
        refs = tuple(self.track(t, source) for t in outs)
        if info.name in _STRIDED_VIEWS and outs and isinstance(args[0], torch.Tensor):
            x = args[0]  # where the view's elements sit in its source, from strides and offsets
            root = self.root_of(x)
            kwarg_refs["placement"] = placement(layout(x), layout(outs[0]), layout(root))
        node = Node(len(self.nodes), info.name, info.overload, arg_refs, kwarg_refs,
                    refs, self.stack[-1] if self.stack else "", info.tags,
                    self.origin[0] if self.origin else "", info.schema)
        self.nodes.append(node)
        if info.mutable:
            self._write_back(node, outs)
        return out

    def composite(self, name: str, run, args: tuple) -> object:
        """Run ``run()`` without recording its aten ops and record one node ``name`` with ``args``
        for its output instead (a Python-level function whose pieces say less than the whole)."""
        self.muted += 1
        try:
            out = run()
        finally:
            self.muted -= 1
        refs = tuple(self.track(t) for t in _flat_tensors(out))
        self.nodes.append(Node(len(self.nodes), name, "", tuple(self._refs(a) for a in args), {},
                               refs, self.stack[-1] if self.stack else "", frozenset(),
                               schema=_pseudo_schema(name)))
        return out

    def _decompose(self, func, args, kwargs):
        table = torch._decomp.decomposition_table
        fn = table.get(func)
        self.origin.append(func.overloadpacket.__name__)
        try:
            with self:
                if fn is not None:
                    return fn(*args, **kwargs)
                return func.decompose(*args, **kwargs)
        finally:
            self.origin.pop()

    def _write_back(self, node: Node, outs: list[torch.Tensor]) -> None:
        """An in-place write changed every tensor sharing the written tensor's storage — its base
        and any view of it taken earlier: each gets a new version, the written elements placed
        inside it by sizes, strides and storage offsets (:mod:`rflens.trf.aliasing`)."""
        for w in outs:
            root = self.root_of(w)
            new_w = self.ref(w)
            aliases = self._aliases(root)
            if not any(t is root for t in aliases):
                aliases.append(root)  # a fresh buffer (torch.zeros) first written through a view
            for t in aliases:
                if t is w:
                    continue
                place = placement(layout(w), layout(t), layout(root))
                if place == ():
                    continue  # no element in common
                old = self.ref(t)
                new = self.track(t)
                self.nodes.append(Node(len(self.nodes), INPLACE_WRITEBACK, "", (old, new_w),
                                       {"placement": place}, (new,), node.module, frozenset(),
                                       schema=_pseudo_schema(INPLACE_WRITEBACK)))

    def _aliases(self, root: torch.Tensor) -> list[torch.Tensor]:
        """The live tracked tensors that share ``root``'s storage (``root`` included)."""
        refs = self.alias_refs.get(id(root), [])
        alive = [t for t in (r() for r in refs) if t is not None]
        self.alias_refs[id(root)] = [weakref.ref(t) for t in alive]
        return [t for t in alive if self.root_of(t) is root]


_STRIDED_VIEWS = {"as_strided", "as_strided_copy"}


def _pseudo_schema(name: str) -> tuple:
    return tuple((n, None) for n in SCHEMAS[name])


class _Composites(TorchFunctionMode):
    """Records a few Python-level functions as one node each, where PyTorch's pieces would hide
    what they do: circular padding arrives as a fresh buffer filled through slices (recorded as
    ``pad_circular(input, pad)``)."""

    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        circular_op = getattr(func, "_overloadpacket", func) is _PAD_CIRCULAR
        if func in _PAD_FUNCTIONS or circular_op:
            x = args[0] if args else kwargs.get("input", kwargs.get("self"))
            mode = "circular" if circular_op else kwargs.get("mode", args[2] if len(args) > 2 else "constant")
            if mode == "circular" and isinstance(x, torch.Tensor) and self.recorder.version(x) is not None:
                pad = list(kwargs.get("pad", args[1] if len(args) > 1 else ()))
                return self.recorder.composite("pad_circular", lambda: func(*args, **kwargs), (x, pad))
        return func(*args, **kwargs)


_PAD_FUNCTIONS = {torch.nn.functional.pad, torch._C._nn.pad}
_PAD_CIRCULAR = torch.ops.aten._pad_circular  # called directly: circular padding without F.pad


def _flat_tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def _tensors(args, kwargs):
    """The tensors among an aten op's arguments (they nest at most one list deep)."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    yield b


def capture(model: torch.nn.Module, inputs: tuple, *, device: str = "meta") -> Capture:
    """Run ``model(*inputs)`` once and record its op graph.

    ``device="meta"``: parameters, buffers and inputs are replaced by meta tensors (no memory, no
    compute). ``device="cpu"``: the model runs for real on its own parameters, under
    ``torch.no_grad()``. The model's train/eval flags are restored afterwards.
    """
    recorder = _Recorder()
    module_events: list[ModuleOutput] = []
    entered: list[tuple[str, tuple[TensorRef, ...], int]] = []

    def on_enter(name: str, module: torch.nn.Module, args: tuple) -> None:
        entered.append((name, tuple(recorder.ref(t) for t in _tensors(args, {})), len(recorder.nodes)))

    def on_exit(name: str, call: int, module: torch.nn.Module, out) -> None:
        refs = tuple((s, recorder.ref(t)) for s, t in output_items(out))
        inputs, first = (), len(recorder.nodes)
        while entered:  # calls cut short by an exception never returned: skip their entries
            entry_name, inputs, first = entered.pop()
            if entry_name == name:
                break
        module_events.append(ModuleOutput(name, call, len(recorder.nodes), refs, type(module).__name__,
                                          inputs, first))

    tracker = ModuleTracker(model, on_exit, on_enter)
    recorder.stack = tracker.stack
    if device == "meta":
        state = meta_state(model)
        inputs = tree_map(lambda t: torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor)
                          else t, tuple(inputs))
    input_refs: list[TensorRef] = []
    try:
        with ExitStack() as stack:
            stack.enter_context(preserved(model))
            stack.enter_context(eval_mode(model))
            stack.enter_context(tracker)
            stack.enter_context(torch.no_grad())
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            recorder.meta = device == "meta"
            stack.enter_context(recorder)
            stack.enter_context(_Composites(recorder))
            input_refs = [recorder.track(t) for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)]
            if device == "meta":
                torch.func.functional_call(model, state, inputs, strict=False, tie_weights=True)
            else:
                model(*inputs)
    except Exception as exc:
        op, module = recorder.current
        if tracker.stack and tracker.stack[-1] != module:  # it failed before reaching an aten op
            op, module = "", tracker.stack[-1]
        partial = Capture(recorder.nodes, module_events, input_refs, device)
        raise CaptureError(partial, op, module, exc) from exc
    return Capture(recorder.nodes, module_events, input_refs, device)


_META_ONLY = ("meta", "data-dependent", "nonzero", "_local_scalar_dense", "item()", "fake value")


def capture_with_fallback(model: torch.nn.Module, inputs: tuple) -> Capture:
    """Capture on meta tensors. When the model cannot run there because it reads tensor values
    (``.item()``, ``nonzero``, data-dependent shapes), mixes in tensors it made on the CPU, or an op
    has no meta kernel (errors that name the meta device or are NotImplementedError), run it for real
    on CPU at batch 1 and say so (the fields are those of the branch that input took). When that
    fails too, keep what was recorded before the failing op (a detector's backbone and feature
    pyramid before its box post-processing) and say where the analysis stopped. Any other failure
    (a wrong or too small input) is reported at once, with the op and module that raised it."""
    if isinstance(model, torch.jit.ScriptModule):
        real = tree_map(lambda t: _random_like(t, _device_of(model)) if isinstance(t, torch.Tensor) else t,
                        tuple(inputs))
        try:
            cap = capture(model, real, device="cpu")
        except CaptureError as cpu:
            raise RflensError(f"the TorchScript model failed to run on random input of the given shape: "
                              f"{type(cpu.error).__name__}: {str(cpu.error).splitlines()[0][:160]}") from cpu.error
        cap.notes.append("a TorchScript model: scripted code cannot run on meta weights, so it ran for "
                         "real on batch-1 random input, and its submodules call no Python hooks, so "
                         "only the output row is reported (pass the eager model for per-layer rows)")
        return cap
    try:
        return capture(model, inputs, device="meta")
    except CaptureError as meta:
        text = str(meta.error).splitlines()[0][:200] if str(meta.error) else ""
        where = f"aten.{meta.op} in module {meta.module or '(root)'}" if meta.op else \
            f"module {meta.module}" if meta.module else "the model"
        message = str(meta.error).lower()
        if not isinstance(meta.error, NotImplementedError) and not any(k in message for k in _META_ONLY):
            raise RflensError(f"the model failed to run on the given input at {where}: "
                              f"{type(meta.error).__name__}: {text} (check the input shape and that "
                              "the model runs on it)") from meta.error
        real = tree_map(lambda t: _random_like(t, _device_of(model)) if isinstance(t, torch.Tensor) else t,
                        tuple(inputs))
        try:
            cap = capture(model, real, device="cpu")
        except CaptureError as cpu:
            if not meta.partial.nodes:
                raise RflensError(f"the model failed to run on the given input at {where}: "
                                  f"{type(meta.error).__name__}: {text}; on the CPU too: "
                                  f"{type(cpu.error).__name__}: {str(cpu.error).splitlines()[0][:160]}") \
                    from cpu.error
            cap = meta.partial
            cap.stopped = (f"the analysis stopped at {where}, which cannot run without real data "
                           f"({type(meta.error).__name__}: {text[:120]}), and the model failed on "
                           f"random data too ({type(cpu.error).__name__}); rows after it are missing")
            return cap
        cap.notes.append(f"the model reads tensor values at {where} ({type(meta.error).__name__}: "
                         f"{text}): it ran for real on batch-1 random input instead, so its control "
                         "flow — and the fields — are those of the branch that input took")
        return cap


def _random_like(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Stand-in data for a real run: uniform noise for floating inputs; zeros for integer and bool
    ones (label maps, token ids, masks: 0 is a valid index into any table)."""
    if t.is_floating_point() or t.is_complex():
        return torch.rand(t.shape, dtype=t.dtype, device=device)
    return torch.zeros(t.shape, dtype=t.dtype, device=device)


def _device_of(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
