"""Helpers for the corner catalogue (tests/test_corners.py) and the program generator/soak.

Two parts, kept apart:

1. :func:`support_hulls` — the gradient-support oracle of tests/oracle.py generalised to models
   with *several* inputs (positional tensors, lists and dicts of tensors). Like tests/oracle.py it
   imports nothing from rflens: the model is copied and made monotone with
   :func:`oracle.oracle_copy`, every floating input is replaced by a positive float64 draw
   (integer inputs such as label maps are kept), and the gradient of ``sum over channels`` of one
   unit of one layer is taken with respect to the *grid inputs* only (the inputs that carry the
   image grid; a conditioning vector or a timestep is held fixed: it is not part of the field).
   The hull of the union of the grid inputs' supports is the unit's observed field.
2. :func:`compare_rows` / :func:`honest_mismatches` — compare an rflens ``ReceptiveField`` with
   those hulls, unit by unit: the clipped box must *equal* the hull, or (only where the row says
   its clipped boxes may be supersets, ``exact_hull`` False) contain it. Rows marked unknown are
   reported by the caller's choice (an unknown is honest, but the catalogue says where rflens
   must be exact).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

try:
    from oracle import OUTPUT, Hull, Unit, first_tensor, oracle_copy
except ImportError:  # tests/ made a package
    from tests.oracle import OUTPUT, Hull, Unit, first_tensor, oracle_copy

Path = tuple  # a path into the positional inputs: (0,), (0, "image"), (0, 1)

__all__ = [
    "OUTPUT",
    "Hull",
    "Path",
    "SupportOracle",
    "Unit",
    "compare_rows",
    "contains",
    "explains",
    "honest_mismatches",
    "sample_units",
    "support_hulls",
]


# ----------------------------------------------------------------------------------------------
# 1. the oracle (no rflens)
# ----------------------------------------------------------------------------------------------

def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _get(inputs: Sequence[Any], path: Path) -> torch.Tensor:
    value: Any = inputs
    for key in path:
        value = value[key]
    return value


class _Stop(Exception):
    pass


class SupportOracle:
    """Observed fields of a (possibly multi-input) model.

    ``inputs``: the positional arguments of ``model`` (tensors, lists, dicts), batch 1.
    ``grid``: paths of the inputs that carry the image grid (default: the first argument).
    Every floating tensor becomes ``0.5 + uniform`` in float64; integer tensors are kept.
    """

    def __init__(self, model: nn.Module, inputs: Sequence[Any], grid: Sequence[Path] = ((0,),),
                 *, seed: int = 0, batched: bool = True, chunk: int = 64) -> None:
        self.model = oracle_copy(model, seed)
        gen = torch.Generator().manual_seed(seed + 1)

        def positive(t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point():
                return 0.5 + torch.rand(t.shape, generator=gen, dtype=torch.float64)
            return t.clone()

        self.inputs = tuple(_map_tensors(list(inputs), positive))
        self.grid = tuple(tuple(p) for p in grid)
        self.batched, self.chunk = batched, chunk
        self.spatial = tuple(_get(self.inputs, self.grid[0]).shape[2:])
        self._shapes: dict[str, tuple[int, ...]] = {}

    # running -----------------------------------------------------------------------------
    def _run(self, inputs: Sequence[Any], layer: str) -> torch.Tensor:
        if layer in (OUTPUT, ""):
            return first_tensor(self.model(*inputs))
        modules = dict(self.model.named_modules())
        if layer not in modules:
            raise KeyError(f"no module named {layer!r}")
        seen: list[torch.Tensor] = []

        def hook(_m, _i, out):
            seen.append(first_tensor(out))
            raise _Stop

        handle = modules[layer].register_forward_hook(hook)
        try:
            self.model(*inputs)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not seen:
            raise KeyError(f"module {layer!r} did not run")
        return seen[0]

    def calls(self) -> dict[str, int]:
        """How often each module runs in one forward (a module run twice has no single output)."""
        counts: dict[str, int] = {}
        names = {id(m): n for n, m in self.model.named_modules()}
        handles = [m.register_forward_hook(
            lambda mod, _i, _o: counts.__setitem__(names[id(mod)], counts.get(names[id(mod)], 0) + 1))
            for m in self.model.modules()]
        try:
            with torch.no_grad():
                self.model(*self.inputs)
        finally:
            for h in handles:
                h.remove()
        return counts

    def output_shape(self, layer: str) -> tuple[int, ...]:
        if layer not in self._shapes:
            with torch.no_grad():
                self._shapes[layer] = tuple(self._run(self.inputs, layer).shape)
        return self._shapes[layer]

    def units(self, layer: str) -> list[Unit]:
        return list(itertools.product(*(range(n) for n in self.output_shape(layer)[2:])))

    # gradients ---------------------------------------------------------------------------
    def _expanded(self, batch: int) -> tuple[list[Any], list[torch.Tensor]]:
        def expand(t: torch.Tensor) -> torch.Tensor:
            return t.expand(batch, *t.shape[1:]).clone() if t.dim() else t.clone()

        inputs = list(_map_tensors(list(self.inputs), expand))
        leaves = []
        for path in self.grid:
            parent: Any = inputs
            for key in path[:-1]:
                parent = parent[key]
            leaf = parent[path[-1]].requires_grad_(True)
            leaves.append(leaf)
        return inputs, leaves

    def _batch(self, layer: str, units: list[Unit]) -> torch.Tensor:
        inputs, leaves = self._expanded(len(units))
        y = self._run(inputs, layer)
        if y.shape[0] != len(units):
            raise ValueError(f"{layer!r}: batch {y.shape[0]} != {len(units)} (use batched=False)")
        picked = torch.stack([y[(b, slice(None)) + u].sum() for b, u in enumerate(units)])
        grads = torch.autograd.grad(picked.sum(), leaves, allow_unused=True)
        total = None
        for g, leaf in zip(grads, leaves):
            g = torch.zeros_like(leaf) if g is None else g
            mag = g.abs().sum(dim=1)  # over channels: (units, *spatial)
            total = mag if total is None else total + mag
        return total

    def magnitudes(self, layer: str, units: Sequence[Unit]) -> torch.Tensor:
        units = [tuple(int(v) for v in u) for u in units]
        step = self.chunk if self.batched else 1
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            out = [self._batch(layer, units[i:i + step]) for i in range(0, len(units), step)]
        finally:
            torch.set_num_threads(before)
        return torch.cat(out) if out else torch.zeros((0, *self.spatial), dtype=torch.float64)

    def hulls(self, layer: str, units: Sequence[Unit]) -> list[Hull | None]:
        return [_hull(m) for m in self.magnitudes(layer, units)]


def _hull(magnitude: torch.Tensor) -> Hull | None:
    if not bool((magnitude > 0).any()):
        return None
    out = []
    for axis in range(magnitude.dim()):
        others = [a for a in range(magnitude.dim()) if a != axis]
        marginal = magnitude.sum(dim=others) if others else magnitude
        nz = torch.nonzero(marginal > 0).flatten()
        out.append((int(nz.min()), int(nz.max())))
    return tuple(out)


def support_hulls(model: nn.Module, inputs: Sequence[Any], layer: str, units: Sequence[Unit],
                  grid: Sequence[Path] = ((0,),), **kw) -> list[Hull | None]:
    return SupportOracle(model, inputs, grid, **kw).hulls(layer, units)


# ----------------------------------------------------------------------------------------------
# 2. comparing rflens with the oracle
# ----------------------------------------------------------------------------------------------

def sample_units(shape: Sequence[int], rng: random.Random, count: int) -> list[Unit]:
    """Every unit when there are at most ``count``; else border-heavy random ones."""
    total = 1
    for n in shape:
        total *= n
    if total <= count:
        return list(itertools.product(*(range(n) for n in shape)))
    units: set[Unit] = set()
    while len(units) < count:
        unit = []
        for n in shape:
            edges = sorted({0, 1, n - 2, n - 1} & set(range(n)))
            unit.append(rng.choice(edges) if rng.random() < 0.5 else rng.randrange(n))
        units.add(tuple(unit))
    return sorted(units)


def contains(outer: Hull | None, inner: Hull | None) -> bool:
    if inner is None:
        return True
    return outer is not None and all(lo <= a and b <= hi for (lo, hi), (a, b) in zip(outer, inner))


def _box(raw) -> Hull | None:
    return None if raw is None else tuple((int(lo), int(hi)) for lo, hi in raw)


def honest_mismatches(row, units: Sequence[Unit], hulls: Sequence[Hull | None], *,
                      allow_superset: bool = True) -> list[str]:
    """Units where the clipped box is neither the hull nor (on a row that says its boxes may be
    supersets, ``exact_hull`` False, and only when ``allow_superset``) a superset of it."""
    bad = []
    for unit, hull in zip(units, hulls):
        try:
            got = _box(row.box(unit, clip=True))
        except Exception as exc:  # noqa: BLE001 - a refused unit is a finding, not a crash
            bad.append(f"unit {unit}: oracle {hull}, rflens raised {type(exc).__name__}: {exc}")
            continue
        if got == hull:
            continue
        if allow_superset and not row.exact_hull and contains(got, hull):
            continue
        note = "" if row.exact_hull else " (row flagged exact_hull=False)"
        bad.append(f"unit {unit}: oracle {hull}, rflens clip=True {got}{note}")
    return bad


def compare_rows(rf, oracle: SupportOracle, *, rows: Iterable[str] | None = None,
                 rename: Callable[[str], str] = lambda n: n, allow_superset: bool = True,
                 allow_unknown: bool = False, max_units: int = 300, seed: int = 0) -> list[str]:
    """Every comparable row of ``rf`` (the root and every module the oracle's model runs once, with
    an output of ``2 + n_spatial`` dimensions) against the oracle; a list of mismatch lines.

    ``rename`` maps an rflens row name to the oracle model's module path (identity by default).
    A row marked unknown is a mismatch unless ``allow_unknown``."""
    rng = random.Random(seed)
    calls = oracle.calls()
    n_spatial = len(oracle.spatial)
    bad: list[str] = []
    for name in (rf.names if rows is None else list(rows)):
        path = rename(name)
        if path != OUTPUT and calls.get(path, 0) != 1:
            continue
        shape = oracle.output_shape(path)
        if len(shape) != 2 + n_spatial:
            continue
        row = rf[name]
        if not row.known:
            if not allow_unknown:
                bad.append(f"row {name!r}: unknown ({', '.join(row.unknown_ops + row.lost)})")
            continue
        if tuple(row.grid) != tuple(shape[2:]):
            bad.append(f"row {name!r}: grid {tuple(row.grid)}, the layer's output is {shape[2:]}")
            continue
        units = sample_units(shape[2:], rng, max_units)
        hulls = oracle.hulls(path, units)
        lines = honest_mismatches(row, units, hulls, allow_superset=allow_superset)
        bad += [f"row {name!r} {line}" for line in lines[:6]]
        if len(lines) > 6:
            bad.append(f"row {name!r}: ... {len(lines) - 6} more units")
    return bad


def explains(rf, row_name: str | None, *words: str) -> bool:
    """Does any text rflens attaches to the result (warnings, the row's flags, lost/unknown reasons,
    any string field of its per-axis summaries) mention one of ``words`` (case-insensitive)?"""
    texts = [str(w) for w in rf.warnings]
    texts += [str(getattr(u, "reason", "")) for u in getattr(rf, "unsupported_ops", ())]
    if row_name is not None and row_name in rf.names:
        row = rf[row_name]
        texts += list(row.flags) + list(row.lost) + list(row.unknown_ops)
        for attr in ("reason", "reasons", "notes", "note"):
            value = getattr(row, attr, None)
            if value:
                texts += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        for axis in row.axes:
            if axis is None:
                continue
            for value in vars(axis).values() if hasattr(axis, "__dict__") else ():
                if isinstance(value, str):
                    texts.append(value)
            for attr in getattr(axis, "__dataclass_fields__", {}):
                value = getattr(axis, attr)
                if isinstance(value, str):
                    texts.append(value)
    blob = "\n".join(texts).lower()
    return any(w.lower() in blob for w in words)
