"""Random *programs* — forward methods as people write them — for the property tests and the soak.

A program is Python source: a model class whose ``forward`` is a list of statements, drawn op by op
and executed while it is drawn (so every shape is real). Beside the chains and DAGs of
tests/test_property_oracle.py (convs, pools, pads, upsampling, transposed convs, residuals,
channel concatenations) it draws the constructs of issue 11:

- ``inputs``: several inputs — a conditioning vector through a Linear, a timestep, a second map on
  the image grid — passed positionally, as a list or as a dict;
- ``view``: a view taken, then its base written in place (``mul_().add_()``, ``copy_``, ``[:] =``,
  ``zero_(); +=``);
- ``setitem``: slice assignment overwriting a region (with data or a constant);
- ``out``: ``torch.add/mul/clamp(..., out=buf)`` into a buffer that held other data;
- ``fresh``: fresh buffers (``new_zeros``, ``torch.zeros``) filled through slices;
- ``padmode``: circular / reflect / replicate pads (``F.pad`` and conv ``padding_mode``);
- ``labels``: an integer label map through ``nn.Embedding`` (a per-pixel lookup);
- ``compiled``: the model handed to rflens as ``torch.compile(model)``;
- ``resize``: interpolation corners — a resize to the same size with a scale factor other than 1
  (PyTorch copies), nearest downsampling by 1/2 or 1/3;
- ``reduce``: a sum / mean / max over one spatial axis broadcast back onto the map;
- ``select``: ``where`` / ``masked_fill`` with a fixed mask held in a buffer.

Each statement has a *twin* for the oracle (tests/corners.py) where the gradient would hide the
dependency (``out=`` does not differentiate, a lookup has no gradient): same dependency structure,
differentiable ops. A program is drawn through a ``Draw`` (``RandomDraw(seed)`` for the soak, a
Hypothesis ``data`` object for the tests), so a soak seed *is* its repro.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SPECIALS = ("inputs", "view", "setitem", "out", "fresh", "padmode", "labels", "compiled", "resize",
            "reduce", "select")
_GLOBALS = {"torch": torch, "nn": nn, "F": F}


class RandomDraw:
    """Draws from ``random.Random(seed)``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, seq: Sequence[Any]) -> Any:
        return self.rng.choice(list(seq))

    def bool(self, p: float = 0.5) -> bool:
        return self.rng.random() < p


class HypothesisDraw:
    """Draws through a Hypothesis ``st.data()`` object (shrinkable)."""

    def __init__(self, data) -> None:
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def choice(self, seq: Sequence[Any]) -> Any:
        return self.data.draw(self.st.sampled_from(list(seq)))

    def bool(self, p: float = 0.5) -> bool:
        return self.data.draw(self.st.integers(0, 999)) < int(p * 1000)


@dataclass
class Program:
    """Source of the model rflens sees and of its oracle twin, the inputs, and what it holds."""

    dims: int
    features: tuple[str, ...]
    source: str                    # rflens' model: class Program(nn.Module)
    twin_source: str               # the oracle's model (same dependency structure)
    inputs_code: str               # builds ``inputs`` (a tuple of positional arguments)
    twin_inputs_code: str
    grid: tuple                    # paths of the grid inputs
    rows: tuple[str, ...]          # module rows comparable with the oracle (N, C, *grid outputs)
    compiled: bool = False

    def build(self, twin: bool = False) -> tuple[nn.Module, tuple]:
        env: dict[str, Any] = dict(_GLOBALS)
        exec(self.twin_source if twin else self.source, env)  # noqa: S102 - our own generated code
        torch.manual_seed(0)
        model = env["Program"]()
        exec(self.twin_inputs_code if twin else self.inputs_code, env)  # noqa: S102
        return model, env["inputs"]

    def repro(self) -> str:
        wrap = "torch.compile(Program())" if self.compiled else "Program()"
        text = (f"import torch, rflens\nfrom torch import nn\nimport torch.nn.functional as F\n\n"
                f"{self.source}\n{self.inputs_code}\n"
                f"rf = rflens.receptive_field({wrap}, example_inputs=inputs)\n")
        if self.twin_source != self.source:
            text += ("\n# the oracle runs this twin (same dependency structure):\n"
                     + self.twin_source.replace("class Program", "class Twin")
                     + "\n" + self.twin_inputs_code.replace("inputs", "twin_inputs"))
        return text


@dataclass
class _Builder:
    draw: Any
    dims: int
    features: set[str]
    cap: int
    lines: list[tuple[str, str]] = field(default_factory=list)      # (rflens line, twin line)
    modules: dict[str, tuple[str, str]] = field(default_factory=dict)
    buffers: list[str] = field(default_factory=list)                 # register_buffer lines
    env: dict[str, Any] = field(default_factory=dict)
    holder: nn.Module = field(default_factory=nn.Module)
    comparable: list[str] = field(default_factory=list)
    count: int = 0

    # plumbing ----------------------------------------------------------------------------
    def var(self) -> str:
        self.count += 1
        return f"h{self.count}"

    def module(self, ctor: str, twin: str | None = None, comparable: bool = True) -> str:
        name = f"m{len(self.modules) + 1}"
        self.modules[name] = (ctor, twin or ctor)
        self.holder.add_module(name, eval(twin or ctor, dict(_GLOBALS)))
        if comparable:
            self.comparable.append(name)
        return f"self.{name}"

    def emit(self, line: str, twin: str | None = None) -> None:
        """Record a statement and run its twin now (shapes are read from real values)."""
        self.lines.append((line, twin or line))
        scope = {**self.env, "self": self.holder}
        with torch.no_grad():
            exec(twin or line, dict(_GLOBALS), scope)  # noqa: S102 - our own generated code
        scope.pop("self")
        self.env.update(scope)

    def shape(self, v: str) -> tuple[int, ...]:
        return tuple(self.env[v].shape)

    def spatial(self, v: str) -> tuple[int, ...]:
        return self.shape(v)[2:]

    def channels(self, v: str) -> int:
        return self.shape(v)[1]

    def nd(self, name: str) -> str:
        return f"{name}{self.dims}d"

    def tup(self, values: Sequence[int]) -> str:
        return "(" + ", ".join(str(v) for v in values) + ("," if len(values) == 1 else "") + ")"

    # ops -------------------------------------------------------------------------------------
    def conv_same(self, src: str, c_out: int | None = None) -> str:
        k = self.draw.int(1, 3) * 2 - 1
        m = self.module(f"nn.{self.nd('Conv')}({self.channels(src)}, {c_out or self.channels(src)}, {k}, "
                        f"padding={k // 2})")
        out = self.var()
        self.emit(f"{out} = {m}({src})")
        return out

    def shift(self, src: str) -> str:
        """``src`` moved by one pixel along a random axis (zeros enter): same shape."""
        axis = self.draw.int(0, self.dims - 1)
        pads = [0] * (2 * self.dims)
        k = 2 * (self.dims - 1 - axis)
        right = self.draw.bool()
        pads[k + (0 if right else 1)] = 1
        index = ", ".join(":-1" if (a == axis and right) else ("1:" if a == axis else ":")
                          for a in range(self.dims))
        out = self.var()
        self.emit(f"{out} = F.pad({src}, {self.tup(pads)})[:, :, {index}]")
        return out

    def _mode(self, force: bool, default: str) -> str:
        if force or ("padmode" in self.features and self.draw.bool(0.6)):
            return self.draw.choice(["circular", "reflect", "replicate"])
        return default

    def conv(self, src: str, force_mode: bool = False) -> str:
        sizes = self.spatial(src)
        mode = self._mode(force_mode, "zeros")
        k, s, d = self.draw.int(1, 4), self.draw.int(1, 2), self.draw.int(1, 2)
        p = self.draw.int(0, 2)
        limit = min(sizes) - 1 if mode == "reflect" else min(sizes)
        p = min(p, max(limit, 0))
        while d * (k - 1) + 1 > min(sizes) + 2 * p and (k > 1 or d > 1):
            k, d = max(1, k - 1), 1
        c_out = self.draw.int(1, 3)
        extra = f", padding_mode={mode!r}" if mode != "zeros" else ""
        m = self.module(f"nn.{self.nd('Conv')}({self.channels(src)}, {c_out}, {k}, stride={s}, "
                        f"padding={p}, dilation={d}{extra})")
        out = self.var()
        self.emit(f"{out} = {m}({src})")
        return out

    def pool(self, src: str) -> str:
        sizes = self.spatial(src)
        k = min(self.draw.int(1, 3), min(sizes))
        s, p = self.draw.int(1, 2), self.draw.int(0, k // 2)
        kind = self.draw.choice(["Max", "Avg"])
        ceil = self.draw.bool()
        m = self.module(f"nn.{self.nd(kind + 'Pool')}({k}, {s}, {p}, ceil_mode={ceil})")
        out = self.var()
        self.emit(f"{out} = {m}({src})")
        return out

    def pad(self, src: str, force_mode: bool = False) -> str:
        sizes = self.spatial(src)
        mode = self._mode(force_mode, "constant")
        pads = []
        for n in reversed(sizes):
            for _ in range(2):
                hi = {"reflect": min(2, n - 1), "circular": min(2, n)}.get(mode, 2)
                lo = -1 if (mode == "constant" and n > 3) else 0
                pads.append(self.draw.int(lo, max(hi, 0)))
        out = self.var()
        self.emit(f"{out} = F.pad({src}, {self.tup(pads)}, mode={mode!r})")
        return out

    def upsample(self, src: str) -> str:
        sizes = self.spatial(src)
        mode = self.draw.choice(["nearest", "linear"])
        scale = self.draw.choice([2, 3]) if mode == "nearest" else 2
        if max(sizes) * scale > self.cap:
            return src
        name = {1: "linear", 2: "bilinear"}[self.dims] if mode == "linear" else "nearest"
        out = self.var()
        self.emit(f"{out} = F.interpolate({src}, scale_factor={float(scale)}, mode={name!r})")
        return out

    def conv_transpose(self, src: str) -> str:
        k, s = self.draw.int(1, 3), self.draw.int(1, 2)
        if max(self.spatial(src)) * s + k > self.cap:
            s = 1
        p = self.draw.int(0, k - 1)
        while p and (min(self.spatial(src)) - 1) * s - 2 * p + k < 1:
            p -= 1
        m = self.module(f"nn.{self.nd('ConvTranspose')}({self.channels(src)}, {self.draw.int(1, 2)}, {k}, "
                        f"stride={s}, padding={p})")
        out = self.var()
        self.emit(f"{out} = {m}({src})")
        return out

    def residual(self, src: str) -> str:
        branch = self.conv_same(src)
        out = self.var()
        self.emit(f"{out} = {src} + {branch}")
        return out

    def cat(self, src: str) -> str:
        branch = self.conv_same(src, self.draw.int(1, 2))
        out = self.var()
        self.emit(f"{out} = torch.cat([{src}, {branch}], 1)")
        return out

    # issue-11 constructs -----------------------------------------------------------------
    def _region(self, sizes: Sequence[int]) -> tuple[str, list[int]]:
        """A random slice along one axis (others whole): its text and the region's sizes."""
        axis = self.draw.int(0, self.dims - 1)
        n = sizes[axis]
        a = self.draw.int(0, n - 1)
        b = self.draw.int(a + 1, n)
        parts = [f"{a}:{b}" if i == axis else ":" for i in range(self.dims)]
        out = list(sizes)
        out[axis] = b - a
        return ", ".join(parts), out

    def view_then_write(self, src: str) -> str:
        g = self.shift(src) if self.draw.bool() else self.conv_same(src)
        region, _ = self._region(self.spatial(src))
        y, v, out = self.var(), self.var(), self.var()
        write = self.draw.choice(["{y}.mul_(0).add_({g})", "{y}.copy_({g})", "{y}[:] = {g}",
                                  "{y}.zero_(); {y} += {g}"]).format(y=y, g=g)
        # the twin reads the written data directly (autograd replays views of written bases, but the
        # twin keeps the oracle free of that machinery)
        self.lines.append((f"{y} = {src}.clone(); {v} = {y}[:, :, {region}]; {write}",
                           f"{v} = {g}[:, :, {region}]"))
        self.env[v] = self.env[g][(slice(None), slice(None)) + _slices(region)].clone()
        self.emit(f"{out} = {v} * 1")
        return out

    def setitem(self, src: str) -> str:
        sizes = self.spatial(src)
        region, _ = self._region(sizes)
        if self.draw.bool(0.3):
            value = "0.0"
        else:
            value = f"{self.shift(src) if self.draw.bool() else self.conv_same(src)}[:, :, {region}]"
        y = self.var()
        self.emit(f"{y} = {src}.clone(); {y}[:, :, {region}] = {value}")
        return y

    def out_arg(self, src: str) -> str:
        old = self.shift(src)
        op = self.draw.choice(["add1", "mul", "clamp", "add"])
        other = self.conv_same(src) if op == "add" else None
        buf = self.var()
        call = {"add1": f"torch.add({src}, 1", "mul": f"torch.mul({src}, 2",
                # bounds that never clip: a clipped unit has a zero gradient, which would hide its
                # dependency from the oracle (a value-dependent gradient, not a missing path)
                "clamp": f"torch.clamp({src}, -1e6, 1e6", "add": f"torch.add({src}, {other}"}[op]
        self.lines.append((f"{buf} = {old} * 1; {call}, out={buf})", f"{buf} = {call})"))
        self.env[buf] = eval(f"{call})", dict(_GLOBALS), self.env)
        return buf

    def fresh(self, src: str) -> str:
        sizes, c = self.spatial(src), self.channels(src)
        if self.draw.bool(0.3) and max(sizes) * 2 <= self.cap:
            axis = self.draw.int(0, self.dims - 1)
            big = [n * 2 if a == axis else n for a, n in enumerate(sizes)]
            even = ", ".join("::2" if a == axis else ":" for a in range(self.dims))
            odd = ", ".join("1::2" if a == axis else ":" for a in range(self.dims))
            g = self.conv_same(src)
            out = self.var()
            self.emit(f"{out} = {src}.new_zeros({src}.shape[0], {c}, {', '.join(map(str, big))}); "
                      f"{out}[:, :, {even}] = {src}; {out}[:, :, {odd}] = {g}")
            return out
        lefts = [self.draw.int(0, 2) for _ in sizes]
        rights = [self.draw.int(0, 2) for _ in sizes]
        big = [n + a + b for n, a, b in zip(sizes, lefts, rights)]
        region = ", ".join(f"{a}:{a + n}" for a, n in zip(lefts, sizes))
        shape = f"{src}.shape[0], {c}, {', '.join(map(str, big))}"
        make = self.draw.choice([f"{src}.new_zeros({shape})",
                                 f"torch.zeros({shape}, dtype={src}.dtype, device={src}.device)"])
        out = self.var()
        self.emit(f"{out} = {make}; {out}[:, :, {region}] = {src}")
        return out

    def resize(self, src: str) -> str:
        sizes = self.spatial(src)
        out = self.var()
        if self.draw.bool(0.3) and min(sizes) >= 3:
            factor = self.draw.choice([2, 3])
            self.emit(f"{out} = F.interpolate({src}, scale_factor={1 / factor!r}, mode='nearest')")
            return out
        modes = ["nearest", {1: "linear", 2: "bilinear"}[self.dims]] + (["bicubic"] if self.dims == 2 else [])
        mode = self.draw.choice(modes)
        scale = 1 + self.draw.choice([0.25, 0.5, 0.75]) / max(sizes)  # floor(n * scale) == n
        self.emit(f"{out} = F.interpolate({src}, scale_factor={scale!r}, mode={mode!r})")
        return out

    def reduce(self, src: str) -> str:
        dim = 2 + self.draw.int(0, self.dims - 1)
        op = self.draw.choice(["sum", "mean", "amax"])
        merge = self.draw.choice(["+", "*"])
        out = self.var()
        twin_op = "sum" if op == "amax" else op  # max's gradient reaches one pixel: same reads as sum
        self.emit(f"{out} = {src} {merge} {src}.{op}({dim}, keepdim=True)",
                  f"{out} = {src} {merge} {src}.{twin_op}({dim}, keepdim=True)")
        return out

    def select(self, src: str) -> str:
        sizes = self.spatial(src)
        axis = self.draw.int(0, self.dims - 1)
        period, phase = self.draw.int(2, 3), self.draw.int(0, 1)
        name = f"mask{len(self.buffers) + 1}"
        view = ["1", "1"] + ["-1" if a == axis else "1" for a in range(self.dims)]
        self.buffers.append(f"self.register_buffer({name!r}, (torch.arange({sizes[axis]}) % {period} == "
                            f"{phase}).reshape({', '.join(view)}))")
        self.holder.register_buffer(name, (torch.arange(sizes[axis]) % period == phase).reshape(
            *[int(v) for v in view]))
        other = self.shift(src)
        out = self.var()
        if self.draw.bool():
            self.emit(f"{out} = torch.where(self.{name}, {src}, {other})",
                      f"{out} = {src} * self.{name} + {other} * ~self.{name}")
        else:
            self.emit(f"{out} = {other}.masked_fill(self.{name}, 0.0) + {src}",
                      f"{out} = {other} * ~self.{name} + {src}")
        return out

    def mix_inputs(self, src: str, extras: dict[str, str]) -> str:
        options = [k for k in extras if k != "m" or self.spatial(src) == self.env["x_grid"]]
        if not options:
            return src
        which = self.draw.choice(options)
        c, out = self.channels(src), self.var()
        if which == "c":
            lin = self.module(f"nn.Linear(4, {c})", comparable=False)
            index = ", ".join(["None"] * self.dims)
            self.emit(f"{out} = {src} * {lin}(c)[:, :, {index}]")
        elif which == "t":
            lin = self.module(f"nn.Linear(1, {c})", comparable=False)
            index = ", ".join(["None"] * self.dims)
            self.emit(f"{out} = {src} + {lin}(t[:, None])[:, :, {index}]")
        else:
            k = self.draw.int(1, 2) * 2 - 1
            conv = self.module(f"nn.{self.nd('Conv')}(1, {c}, {k}, padding={k // 2})")
            self.emit(f"{out} = {src} + {conv}(m)")
        return out


def _slices(region: str) -> tuple:
    out = []
    for part in region.split(", "):
        if part == ":":
            out.append(slice(None))
        else:
            a, b = part.split(":")
            out.append(slice(int(a), int(b)))
    return tuple(out)


_BASE_OPS = ("conv", "conv", "pool", "pad", "upsample", "conv_transpose", "residual", "cat")
_SPECIAL_OPS = {"view": "view_then_write", "setitem": "setitem", "out": "out_arg", "fresh": "fresh",
                "resize": "resize", "reduce": "reduce", "select": "select"}


def draw_program(draw, features: Sequence[str] = (), *, dims: int | None = None,
                 max_steps: int = 4) -> Program:
    """A random program holding every construct in ``features`` (see :data:`SPECIALS`)."""
    features = set(features)
    dims = dims or draw.choice([1, 2])
    cap = 40 if dims == 1 else 20
    sizes = [draw.int(6, 20) if dims == 1 else draw.int(5, 10) for _ in range(dims)]
    b = _Builder(draw, dims, features, cap)
    grid_text = ", ".join(map(str, sizes))
    c_in = 1 if "labels" in features else draw.int(1, 2)
    extras: dict[str, str] = {}
    if "inputs" in features:
        for name in draw.choice([["c"], ["t"], ["m"], ["c", "m"], ["t", "c"]]):
            extras[name] = {"c": "torch.rand(1, 4)", "t": "torch.rand(1)",
                            "m": f"torch.rand(1, 1, {grid_text})"}[name]
    b.env["x_grid"] = tuple(sizes)
    if "labels" in features:
        x_rf = f"torch.randint(0, 10, (1, 1, {grid_text}))"
    else:
        x_rf = f"torch.rand(1, {c_in}, {grid_text})"
    x_twin = f"torch.rand(1, {c_in}, {grid_text})"
    b.env["x"] = torch.rand(1, c_in, *sizes)
    for name, code in extras.items():
        b.env[name] = eval(code, dict(_GLOBALS))
    node = "x"
    if "labels" in features:
        width = draw.int(1, 3)
        b.modules["emb"] = (f"nn.Embedding(10, {width})", f"nn.{b.nd('Conv')}(1, {width}, 1)")
        b.holder.add_module("emb", eval(b.modules["emb"][1], dict(_GLOBALS)))
        node = b.var()
        b.lines.append((f"{node} = self.emb(x[:, 0]).movedim(-1, 1)", f"{node} = self.emb(x)"))
        b.env[node] = b.holder.emb(b.env["x"])
    specials = [f for f in sorted(features) if f in _SPECIAL_OPS]  # sorted: set order follows the hash seed
    steps = max(draw.int(1, max_steps), len(specials) + ("inputs" in features))
    plan = specials + (["inputs"] if "inputs" in features else [])
    plan += ["base"] * (steps - len(plan))
    order = list(plan)
    for i in range(len(order) - 1, 0, -1):  # a drawn permutation
        j = draw.int(0, i)
        order[i], order[j] = order[j], order[i]
    for kind in order:
        if kind == "base":
            node = getattr(b, draw.choice(_BASE_OPS))(node)
        elif kind == "inputs":
            node = b.mix_inputs(node, extras)
        else:
            node = getattr(b, _SPECIAL_OPS[kind])(node)
    if "padmode" in features and not any(
            m in text for m in ("circular", "reflect", "replicate")
            for text in [line for line, _ in b.lines] + [c for c, _ in b.modules.values()]):
        node = b.pad(node, force_mode=True) if draw.bool() else b.conv(node, force_mode=True)
    last = b.conv_same(node)  # end on a module so the root row is not an alias of an input
    return _finish(b, last, sorted(features), extras, x_rf, x_twin, draw)


def _finish(b: _Builder, last: str, features: list[str], extras: dict[str, str], x_rf: str,
            x_twin: str, draw) -> Program:
    names = ["x"] + list(extras)
    packing = draw.choice(["args", "list", "dict"]) if extras else "args"
    if packing == "args":
        signature, unpack, call_args = ", ".join(names), [], "(" + ", ".join(names) + ",)"
        grid = ((0,),) + (((names.index("m"),),) if "m" in extras else ())
    elif packing == "list":
        signature = "inputs"
        unpack = [", ".join(names) + " = " + ", ".join(f"inputs[{i}]" for i in range(len(names)))]
        call_args = "([" + ", ".join(names) + "],)"
        grid = ((0, 0),) + (((0, names.index("m")),) if "m" in extras else ())
    else:
        signature = "batch"
        unpack = [f"{n} = batch[{n!r}]" for n in names]
        call_args = "({" + ", ".join(f"{n!r}: {n}" for n in names) + "},)"
        grid = ((0, "x"),) + (((0, "m"),) if "m" in extras else ())

    def source(twin: bool) -> str:
        ctors = [f"        self.{n} = {pair[1] if twin else pair[0]}" for n, pair in b.modules.items()]
        ctors += [f"        {line}" for line in b.buffers]
        body = unpack + [pair[1] if twin else pair[0] for pair in b.lines] + [f"return {last}"]
        return ("class Program(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                + "\n".join(ctors) + "\n\n    def forward(self, " + signature + "):\n"
                + "\n".join("        " + line for line in body) + "\n")

    def inputs_code(x_code: str) -> str:
        lines = ["torch.manual_seed(0)", f"x = {x_code}"] + [f"{n} = {c}" for n, c in extras.items()]
        return "\n".join(lines) + f"\ninputs = {call_args}\n"

    return Program(b.dims, tuple(features), source(False), source(True), inputs_code(x_rf),
                   inputs_code(x_twin), grid, tuple(b.comparable), "compiled" in features)


def draw_features(draw, p_special: float = 0.8, p_mixed: float = 0.25) -> tuple[str, ...]:
    """None, one, or (sometimes) several issue-11 constructs."""
    if not draw.bool(p_special):
        return ()
    if draw.bool(p_mixed):
        return tuple(f for f in SPECIALS if draw.bool(0.35))
    return (draw.choice(SPECIALS),)
