"""Everything rflens does around a user's forward pass, in one place.

- :func:`eval_mode`: run in eval mode, give every module back its train/eval flag afterwards.
- :func:`meta_state`: meta copies of every parameter and buffer (non-persistent buffers too), for
  ``torch.func.functional_call``: the model itself is never moved or changed.
- :class:`ModuleTracker`: which module (by ``named_modules()`` path) is running, how often each has
  been called, and what each call returned — two global hooks, removed on exit.
- :class:`LayerRef` and :func:`run_to_layer`: a layer name as rflens prints it (``layer4``,
  ``layer4#2`` for the second call, ``backbone[0]`` for one output of several, ``output`` for the
  model itself) resolved to a module call, and a forward pass that stops right after that call.

Every command that takes a layer name (``trf``, ``erf``, ``dense``, ``report``, ``tile``) resolves
it here, so a name printed by one is accepted by all.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from rflens.errors import RflensError

ROOT = "output"  # the row name of the model's own output


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every module's own flag is restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Give every module back the attributes it had: a forward pass that caches tensors on its
    modules (torchvision's anchor generator keeps its anchors moved to the input's device) would
    otherwise leave meta tensors behind in the user's model."""
    saved = [(m, dict(m.__dict__)) for m in model.modules()]
    try:
        yield model
    finally:
        for m, attrs in saved:
            current = m.__dict__
            for key in [k for k in current if k not in attrs]:
                del current[key]
            for key, value in attrs.items():
                if current.get(key, _MISSING) is not value:
                    current[key] = value


_MISSING = object()


def meta_state(model: nn.Module, keep_grad: bool = False) -> dict[str, torch.Tensor]:
    """Meta copies (same shape, dtype, no data) of every parameter and buffer of ``model``, by name.

    Non-persistent buffers are included (``state_dict`` leaves them out, and a model that reads one
    would otherwise touch real memory). ``keep_grad`` keeps each parameter's ``requires_grad``."""
    state = {}
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        copy = torch.empty_like(t, device="meta")
        state[name] = copy.requires_grad_(t.requires_grad) if keep_grad and t.is_floating_point() else copy
    return state


def _is_compiled(module: nn.Module) -> bool:
    return type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None), nn.Module)


def eager(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile``d model wraps (the same parameters and forward, run eagerly);
    any other model as it is."""
    while _is_compiled(model):
        model = model._orig_mod
    return model


def module_names(model: nn.Module) -> dict[int, str]:
    """``id(module) -> name`` for every module of ``model`` (a shared module keeps its first name).

    The wrappers ``torch.compile`` puts around submodules get no name, and their ``_orig_mod``
    segment is left out of the names below them: rows carry the names the user wrote."""
    names: dict[int, str] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if _is_compiled(m):
            continue
        parts = [p for p in name.split(".") if p != "_orig_mod"] if "_orig_mod" in name else None
        names.setdefault(id(m), name if parts is None else ".".join(parts))
    return names


class ModuleTracker:
    """While active (a context manager), follows every module call of ``model``.

    ``stack`` holds the names of the modules running now (innermost last); ``calls[name]`` how many
    calls of that module have finished. ``on_enter(name, module, args)`` (optional) runs when a call
    starts, ``on_exit(name, call, module, output)`` when it returns; ``call`` counts from 0. Hooks are global (one pair for the whole model, however
    many modules it has) and are removed on exit, also when the forward raises."""

    def __init__(self, model: nn.Module, on_exit: Callable[[str, int, nn.Module, Any], None] | None = None,
                 on_enter: Callable[[str, nn.Module, tuple], None] | None = None):
        self.names = module_names(model)
        self.stack: list[str] = []
        self.calls: dict[str, int] = {}
        self.on_exit, self.on_enter = on_exit, on_enter
        self._handles: list = []

    def __enter__(self) -> "ModuleTracker":
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre(self, module: nn.Module, _args) -> None:
        name = self.names.get(id(module))
        if name is not None:  # the hooks are global: other models' calls are not ours
            self.stack.append(name)
            if self.on_enter is not None:
                self.on_enter(name, module, _args)

    def _post(self, module: nn.Module, _args, output) -> None:
        name = self.names.get(id(module))
        if name is None:
            return
        while self.stack and self.stack.pop() != name:
            pass  # calls cut short by an exception (a stop after a layer) never returned
        k = self.calls.get(name, 0)
        self.calls[name] = k + 1
        if self.on_exit is not None:
            self.on_exit(name, k, module, output)

    @property
    def current(self) -> str | None:
        """The innermost running module's name (None outside any module of the model)."""
        return self.stack[-1] if self.stack else None


def output_items(output: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensors a module returned, as ``(suffix, tensor)``: suffix ``""`` for a single tensor (and
    for the first of a list/tuple), else ``"[key]"`` / ``"[i]"`` — the suffixes of row names."""
    if isinstance(output, torch.Tensor):
        return [("", output)]
    if isinstance(output, dict):
        return [(f"[{k}]", v) for k, v in output.items() if isinstance(v, torch.Tensor)]
    if isinstance(output, (list, tuple)):
        items = [(f"[{i}]", v) for i, v in enumerate(output) if isinstance(v, torch.Tensor)]
        if items:
            items[0] = ("", items[0][1])
        return items
    return []


_NAME = re.compile(r"^(?P<module>[^#\[]*)(?:#(?P<call>\d+))?(?P<key>\[[^\]]*\])?$")


@dataclass(frozen=True)
class LayerRef:
    """A layer name as rflens prints it: ``module`` (a ``named_modules()`` path, ``""`` for the model
    itself), which ``call`` of it (1-based), and which output ``key`` (``""`` for the first or only
    tensor, else ``"[name]"`` / ``"[i]"``)."""

    module: str
    call: int = 1
    key: str = ""

    @property
    def name(self) -> str:
        base = self.module or ROOT
        return base + (f"#{self.call}" if self.call > 1 else "") + self.key

    @staticmethod
    def parse(name: str | None, model: nn.Module) -> "LayerRef":
        """Resolve ``name`` against ``model``; None, ``""`` or ``"output"`` mean the model itself
        (unless it has a submodule called ``output``). Raises a one-line error with close names."""
        if name is None or name == "":
            return LayerRef("")
        modules = dict(model.named_modules())
        if name in modules:
            return LayerRef(name)
        m = _NAME.match(name)
        if m is not None:
            module, call, key = m.group("module"), int(m.group("call") or 1), m.group("key") or ""
            if module == ROOT and ROOT not in modules:
                module = ""
            if module in modules and call >= 1:
                return LayerRef(module, call, key)
        raise RflensError(_not_found(name, modules))

    def find_module(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.module) if self.module else model


def _not_found(name: str, modules: dict) -> str:
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names + [ROOT], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    tops = ", ".join(n for n in names if "." not in n)
    tops = tops if len(tops) <= 200 else tops[:200].rsplit(", ", 1)[0] + ", ..."
    listing = f" (top-level layers: {tops})" if tops else ""
    return f"no layer '{name}' in the model{hint}{listing}; 'rflens trf MODEL' lists every layer name"


class _Stop(Exception):
    def __init__(self, output: Any) -> None:
        super().__init__("layer reached")
        self.output = output


def select_output(output: Any, ref: LayerRef) -> torch.Tensor:
    """The tensor of a module's output that ``ref.key`` names (the first tensor when no key)."""
    items = output_items(output)
    if not items:
        raise RflensError(f"layer '{ref.name}' returns a {type(output).__name__} without tensors; "
                          "pick a layer that outputs a feature map")
    if not ref.key:
        return items[0][1]  # the first (or only) tensor, as the row without a key shows
    for suffix, t in items:
        if suffix == ref.key:
            return t
    keys = ", ".join(ref.name.split("[")[0] + s for s, _ in items)
    raise RflensError(f"layer '{ref.name}' has no output {ref.key}; its outputs are {keys}")


def run_to_layer(model: nn.Module, ref: LayerRef, inputs: tuple, call: Callable | None = None) -> torch.Tensor:
    """Run ``model`` on ``inputs`` (through ``call(*inputs)`` when given, e.g. a ``functional_call``)
    until call ``ref.call`` of module ``ref.module`` returns; give back its output ``ref.key``. The
    rest of the forward pass is skipped. The whole model runs when ``ref`` is the model itself."""
    run = call or model
    if not ref.module:
        return select_output(run(*inputs), ref)
    target = ref.find_module(model)
    seen = [0]

    def hook(_module, _args, output):
        seen[0] += 1
        if seen[0] == ref.call:
            raise _Stop(output)

    handle = target.register_forward_hook(hook)
    try:
        run(*inputs)
    except _Stop as stop:
        return select_output(stop.output, ref)
    finally:
        handle.remove()
    if seen[0]:
        raise RflensError(f"layer '{ref.module}' is called {seen[0]} time(s) in the forward pass, "
                          f"not {ref.call}; 'rflens trf MODEL' lists every call")
    raise RflensError(f"layer '{ref.module}' is never called in the model's forward pass; pick "
                      "another layer ('rflens trf MODEL' lists them)")


def run_to_layers(model: nn.Module, refs: list[LayerRef], inputs: tuple,
                  call: Callable | None = None) -> list[torch.Tensor]:
    """:func:`run_to_layer` for several layers in one forward pass: the outputs of ``refs`` (in that
    order), the pass stopped as soon as the last of them has returned (the whole model runs when one
    of them is the model itself)."""
    if len(refs) == 1:
        return [run_to_layer(model, refs[0], inputs, call)]
    run = call or model
    wanted: dict[str, dict[int, list[int]]] = {}
    for i, ref in enumerate(refs):
        if ref.module:
            wanted.setdefault(ref.module, {}).setdefault(ref.call, []).append(i)
    found: dict[int, torch.Tensor] = {}
    need = sum(len(v) for calls in wanted.values() for v in calls.values())
    whole = any(not ref.module for ref in refs)
    handles, counts = [], {}

    def make_hook(name: str):
        def hook(_module, _args, output):
            counts[name] = counts.get(name, 0) + 1
            for i in wanted[name].get(counts[name], ()):
                found[i] = select_output(output, refs[i])
            if not whole and len(found) == need:
                raise _Stop(None)
        return hook

    for name in wanted:
        handles.append(model.get_submodule(name).register_forward_hook(make_hook(name)))
    try:
        out = run(*inputs)
        for i, ref in enumerate(refs):
            if not ref.module:
                found[i] = select_output(out, ref)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [refs[i].name for i in range(len(refs)) if i not in found]
    if missing:
        raise RflensError(f"layer(s) {', '.join(missing)} never returned in the model's forward pass "
                          "(or not that many calls); 'rflens trf MODEL' lists every layer and call")
    return [found[i] for i in range(len(refs))]
