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
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from rflens.errors import RflensError
from rflens.trf.instrument import ModuleTracker, eval_mode, meta_state, output_items
from rflens.trf.rules import lookup
from rflens.trf.rules.registry import SCHEMAS
from rflens.trf.shapes import shortcut
from rflens.trf.rules.writeback import INPLACE_WRITEBACK


@dataclass(frozen=True)
class TensorRef:
    """A tensor in the captured graph: ``id`` of its version (None: not derived from the input)."""

    id: int | None
    shape: tuple[int, ...]


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
    inputs: list[TensorRef]
    path: str                     # "meta" or "cpu"
    notes: list[str] = field(default_factory=list)


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
        self.view_parent = WeakIdKeyDictionary()  # view tensor -> (tensor it was taken from, node)

    def track(self, t: torch.Tensor) -> TensorRef:
        ref = TensorRef(self.next_id, tuple(t.shape))
        self.ids[id(t)] = (ref.id, weakref.ref(t))
        self.next_id += 1
        return ref

    def version(self, t: torch.Tensor) -> int | None:
        entry = self.ids.get(id(t))
        return entry[0] if entry is not None and entry[1]() is t else None

    def ref(self, t: torch.Tensor) -> TensorRef:
        return TensorRef(self.version(t), tuple(t.shape))

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
                                             func.is_view, shortcut(func))
        return info

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.muted or not any(self.version(t) is not None for t in _tensors(args, kwargs)):
            return func(*args, **kwargs)
        info = self.info_of(func)
        if not info.has_rule:
            decomposed = self._decompose(func, args, kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        arg_refs = tuple(self._refs(a) for a in args)
        kwarg_refs = {k: self._refs(v) for k, v in kwargs.items()} if kwargs else {}
        out = NotImplemented
        if self.meta and info.shortcut is not None:
            out = info.shortcut(*args, **kwargs)
        if out is NotImplemented:
            out = func(*args, **kwargs)
        outs = _flat_tensors(out)
        refs = tuple(self.track(t) for t in outs)
        node = Node(len(self.nodes), info.name, info.overload, arg_refs, kwarg_refs,
                    refs, self.stack[-1] if self.stack else "", info.tags,
                    self.origin[0] if self.origin else "", info.schema)
        self.nodes.append(node)
        if info.mutable:
            self._write_back(node, outs)
        elif outs and info.view:
            source = next((t for t in _tensors(args, kwargs)), None)
            if source is not None:
                self.view_parent[outs[0]] = (source, node)
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
        """An in-place op on a view also changed its base: record a new version of the base."""
        for t in outs:
            base = t._base
            if base is None:
                continue
            old = self.ref(base)
            view = self.ref(t)
            new = self.track(base)
            self.nodes.append(Node(len(self.nodes), INPLACE_WRITEBACK, "", (old, view),
                                   {"chain": self._chain(t, base)}, (new,), node.module, frozenset(),
                                   schema=_pseudo_schema(INPLACE_WRITEBACK)))

    def _chain(self, view: torch.Tensor, base: torch.Tensor) -> tuple | None:
        """The view ops (name, args) that lead from ``base`` to ``view``, base first; None when
        the path is unknown."""
        steps = []
        cur = view
        while cur is not base:
            entry = self.view_parent.get(cur)
            if entry is None:
                return None
            cur, node = entry
            steps.append((node.name, tuple(a for a in node.args[1:])))
        return tuple(reversed(steps))


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
        if func in _PAD_FUNCTIONS:
            x = args[0] if args else kwargs.get("input")
            mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
            if mode == "circular" and isinstance(x, torch.Tensor) and self.recorder.version(x) is not None:
                pad = list(kwargs.get("pad", args[1] if len(args) > 1 else ()))
                return self.recorder.composite("pad_circular", lambda: func(*args, **kwargs), (x, pad))
        return func(*args, **kwargs)


_PAD_FUNCTIONS = {torch.nn.functional.pad, torch._C._nn.pad}


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
        inputs = tuple(torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t
                       for t in inputs)
    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(tracker)
        stack.enter_context(torch.no_grad())
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        recorder.meta = device == "meta"
        stack.enter_context(recorder)
        stack.enter_context(_Composites(recorder))
        input_refs = [recorder.track(t) for t in inputs if isinstance(t, torch.Tensor)]
        if device == "meta":
            torch.func.functional_call(model, state, inputs, strict=False, tie_weights=True)
        else:
            model(*inputs)
    return Capture(recorder.nodes, module_events, input_refs, device)


def capture_with_fallback(model: torch.nn.Module, inputs: tuple) -> Capture:
    """Capture on meta tensors; if the model cannot run on meta (data-dependent control flow,
    ``.item()``, ops without meta kernels), run it for real on CPU at batch 1 and say so."""
    try:
        return capture(model, inputs, device="meta")
    except Exception as meta_error:  # noqa: BLE001 - any failure on meta triggers the fallback
        real = tuple(torch.rand(t.shape, dtype=t.dtype if t.is_floating_point() else torch.float32,
                                device=_device_of(model))
                     if isinstance(t, torch.Tensor) else t for t in inputs)
        try:
            cap = capture(model, real, device="cpu")
        except Exception as cpu_error:
            raise RflensError(
                f"the model failed to run on the given input: {type(cpu_error).__name__}: "
                f"{str(cpu_error).splitlines()[0] if str(cpu_error) else ''} "
                "(check the input shape and that the model runs on it)") from cpu_error
        cap.notes.append(f"the model could not run on meta tensors ({type(meta_error).__name__}: "
                         f"{str(meta_error).splitlines()[0][:200] if str(meta_error) else ''}); "
                         "ran it for real on batch-1 random input instead")
        return cap


def _device_of(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
