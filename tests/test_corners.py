"""Corner catalogue (issue 11): small hand-written models — the shapes people write in forward
methods — each compared unit by unit with the gradient-support oracle, for *every* row the oracle
can address (the root and each module run once), plus hand-derived summaries and flags.

What is demanded of rflens, per case (``mode``):

- ``exact``: every row known, and every unit's ``box(unit, clip=True)`` equals the oracle hull
  (``None`` when the unit depends on no pixel of the grid inputs) — also on rows with a global
  path: the clipped box promises the hull of the pixels the unit depends on;
- ``honest``: as ``exact``, except that a row may instead be unknown (with the op named) or say
  its clipped boxes may be supersets (``exact_hull`` False) and contain the hull. Used only where
  issue 11 allows a flag: selection by input-dependent values.

Where a gradient hides a dependency (``out=`` ops do not differentiate, an embedding lookup, a
flip done by ``gather``) the oracle runs a *twin*: the same program written with ops of the same
dependency structure. Several inputs: the oracle differentiates with respect to the inputs that
carry the image grid (``grid`` paths) and holds the others (a conditioning vector, a timestep)
fixed — they are not part of the field.

API assumptions (issue 11 leaves the names open; adjust here if the engine names them otherwise):
a summary that no single number describes is ``None`` on that axis (``rf[row].axes[k].jump``...)
with a reason in ``rf.warnings`` or the row; "may be a superset" is ``exact_hull`` False; the
``.item()`` note says "data-dependent".

Every case that current rflens gets wrong is ``xfail(strict=True)`` with the issue class and
what rflens does wrong: the lead removes a mark when the fix lands (strict: an unexpected pass
fails the suite, so no mark outlives its bug).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import warnings
from collections.abc import Callable
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from corners import OUTPUT, SupportOracle, compare_rows, explains
from torch import nn

import rflens


class Fn(nn.Module):
    """``fn(*inputs, *modules)`` as a module (the modules are children ``mods.0``, ``mods.1``...)."""

    def __init__(self, fn: Callable, *modules: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(modules)

    def forward(self, *inputs):
        return self.fn(*inputs, *self.mods)


@dataclasses.dataclass
class Corner:
    name: str
    cls: str                              # issue 11 class, e.g. "1 several inputs"
    model: nn.Module | Callable[[], nn.Module]  # a callable builds it when the test runs
    inputs: tuple                         # positional inputs as the user passes them (batch 1)
    grid: tuple = ((0,),)                 # paths of the inputs that carry the image grid
    twin: nn.Module | None = None         # what the oracle runs (same dependency structure)
    twin_inputs: tuple | None = None
    mode: str = "exact"                   # "exact" or "honest" (see module docstring)
    extra: Callable | None = None         # more checks: extra(rf) (hand-derived numbers, flags)
    xfail: str | None = None              # why current rflens fails (issue class + what is wrong)
    rename: Callable[[str], str] = lambda n: n
    call: Callable | None = None          # how rflens is called (default: example_inputs=inputs)
    rows: tuple | None = None             # rows to compare (default: all; channels-last rows excluded)


def x2d(h: int = 6, w: int = 7, c: int = 1) -> torch.Tensor:
    return torch.rand(1, c, h, w)


def x1d(n: int = 9, c: int = 1) -> torch.Tensor:
    return torch.rand(1, c, n)


def _conv(c_in=1, c_out=1, k=3, **kw) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, **kw)


def _axis(rf, row: str, attr: str, axis: int):
    a = rf[row].axes[axis]
    return None if a is None else getattr(a, attr)


def _summary(rf, row: str) -> tuple:
    """(size, jump, padding) per axis; None where rflens gives none (an unknown row)."""
    layer = rf[row]
    return tuple(None if v is None else tuple(v) for v in (layer.size, layer.jump, layer.padding))


# ----------------------------------------------------------------------------------------------
# class 1: several inputs
# ----------------------------------------------------------------------------------------------

class CondVector(nn.Module):
    """A conditioning vector through a Linear, broadcast over the conv's map (FiLM-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(1, 2, 3, padding=1)
        self.film = nn.Linear(4, 4)

    def forward(self, x, c):
        gamma, beta = self.film(c).chunk(2, dim=1)
        return self.conv(x) * gamma[:, :, None, None] + beta[:, :, None, None]


class Timestep(nn.Module):
    """A diffusion-style timestep embedding added to the map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(1, 2, 3, padding=1)
        self.temb = nn.Linear(1, 2)
        self.out = _conv(2, 1, 3)

    def forward(self, x, t):
        return self.out(self.conv(x) + self.temb(t[:, None])[:, :, None, None])


class CondMap(nn.Module):
    """A (N, C, 1, 1) conditioning tensor: 4-D, but it does not carry the image grid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(1, 2, 3)

    def forward(self, x, c):
        return self.conv(x) + c


class ImageAndMask(nn.Module):
    """Two inputs on the same grid (image and mask): both carry it, the field is their union."""

    def __init__(self) -> None:
        super().__init__()
        self.a = _conv(1, 2, 3, padding=1)
        self.b = _conv(1, 2, 5, padding=2)

    def forward(self, x, mask):
        return self.a(x) + self.b(mask)


class ListInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(1, 2, 3)

    def forward(self, xs):
        return self.conv(xs[0]) + xs[1][:, :, 1:-1, 1:-1]


class DictInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(1, 2, 3, padding=1)
        self.lin = nn.Linear(3, 2)

    def forward(self, batch):
        return self.conv(batch["image"]) * self.lin(batch["cond"])[:, :, None, None]


def _not_global(rf) -> None:
    assert not rf[OUTPUT].is_global, "a non-grid input made the output 'global'"


def _several_inputs() -> list[Corner]:
    return [
        Corner("conditioning vector (FiLM)", "1 several inputs", CondVector(), (x2d(), torch.rand(1, 4)),
               extra=_not_global),
        Corner("timestep beside the image", "1 several inputs", Timestep(), (x2d(), torch.rand(1)),
               extra=_not_global),
        Corner("(N, C, 1, 1) conditioning tensor", "1 several inputs", CondMap(),
               (x2d(), torch.rand(1, 2, 1, 1)), extra=_not_global),
        Corner("image and mask on one grid", "1 several inputs", ImageAndMask(), (x2d(), x2d()),
               grid=((0,), (1,))),
        Corner("list of tensors as input", "1 several inputs", ListInput(), ([x2d(), x2d(c=2)],),
               grid=((0, 0), (0, 1))),
        Corner("dict of tensors as input", "1 several inputs", DictInput(),
               ({"image": x2d(), "cond": torch.rand(1, 3)},), grid=((0, "image"),)),
    ]


# ----------------------------------------------------------------------------------------------
# class 2: out= arguments
# ----------------------------------------------------------------------------------------------

def _mul_out(x):
    c = torch.zeros_like(x) + x[..., :1]  # c holds column 0 before it is overwritten
    torch.mul(x, 2, out=c)
    return c


def _add_out_over_conv(x, conv):
    c = conv(x)  # 3x3 field, overwritten below: the output is x + 1
    torch.add(x, 1, out=c)
    return c


def _cat_out(x, conv):
    buf = torch.cat([x, x], 1) * 1  # old content reads (0, 0) on every unit below
    buf = buf[:, :, :1, :1].expand_as(buf).contiguous()
    torch.cat([conv(x), x], 1, out=buf)
    return buf


def _sum_out(x):
    buf = _shift(x[:, :1]) * 1  # old content: the left neighbour
    torch.sum(x, 1, keepdim=True, out=buf)
    return buf


def _clamp_out(x):
    c = _shift(x) * 1
    torch.clamp(x, 0, 2, out=c)
    return c


def _out_args() -> list[Corner]:
    return [
        Corner("torch.mul(x, 2, out=c)", "2 out=", Fn(_mul_out), (x2d(),), twin=Fn(lambda x: x * 2)),
        Corner("torch.add(x, 1, out=conv(x))", "2 out=", Fn(_add_out_over_conv, _conv(1, 1, 3, padding=1)),
               (x2d(),), twin=Fn(lambda x, conv: x + 1, _conv(1, 1, 3, padding=1))),
        Corner("torch.cat(..., out=buf)", "2 out=", Fn(_cat_out, _conv(1, 1, 3, padding=1)), (x2d(),),
               twin=Fn(lambda x, conv: torch.cat([conv(x), x], 1), _conv(1, 1, 3, padding=1))),
        Corner("torch.sum(x, 1, out=buf)", "2 out=", Fn(_sum_out), (x2d(c=2),),
               twin=Fn(lambda x: x.sum(1, keepdim=True))),
        Corner("torch.clamp(x, 0, 2, out=c)", "2 out=", Fn(_clamp_out), (x2d(),), twin=Fn(lambda x: x * 1)),
    ]


# ----------------------------------------------------------------------------------------------
# class 3: views and in-place writes
# ----------------------------------------------------------------------------------------------

def _shift(x):
    """x shifted right by one column (column 0 is padding)."""
    return F.pad(x, (1, 0))[..., :-1]


def _view_then_inplace(x):
    y = x.clone()
    v = y[:, :, 1:3]           # a view taken before its base is written
    y.mul_(0).add_(_shift(x))  # the base now holds shift(x)
    return v + 0


def _view_then_copy(x):
    y = x.clone()
    v = y[:, :, 1:3]
    y.copy_(_shift(x))
    return v.clone()


def _view_then_setitem(x):
    y = x.clone()
    v = y.transpose(2, 3)      # a transposed view
    y[:] = _shift(x)
    return v.transpose(2, 3) * 1


def _view_of_view_then_write(x):
    y = x.clone()
    v = y[:, :, 1:][:, :, :, ::2]
    y.zero_()
    y += _shift(x)
    return v * 1


def _torch_zeros_fill(x):
    y = torch.zeros(x.shape[0], x.shape[1], x.shape[2] + 2, x.shape[3] + 2, dtype=x.dtype,
                    device=x.device)
    y[..., 1:-1, 1:-1] = x
    return y


def _new_zeros_fill(x):
    y = x.new_zeros(x.shape[0], x.shape[1], x.shape[2] + 2, x.shape[3] + 2)
    y[:, :, 1:-1, 1:-1] = x
    return y


def _interleave(x, conv):
    y = x.new_zeros(x.shape[0], x.shape[1], x.shape[2], 2 * x.shape[3])
    y[..., ::2] = x
    y[..., 1::2] = conv(x)
    return y


def _halves(x, a, b):
    w = x.shape[3] // 2
    y = torch.empty_like(x)
    y[..., :w] = a(x[..., :w])
    y[..., w:] = b(x[..., w:])
    return y


def _flat_fill(x):
    n, c, h, w = x.shape
    y = x.new_zeros(n, c, h * w)
    y.view(n, c, h, w)[..., 1:] = x[..., :-1]
    return y.view(n, c, h, w)


def _slice_assign(x):
    y = x.clone()
    y[:, :, 1:3] = x[:, :, 3:5] * 2
    return y


def _slice_assign_const(x):
    y = x.clone()
    y[:, :, :, 2:4] = 0
    return y


def _index_put_rows(x):
    y = x.clone()
    y[:, :, torch.tensor([0, 2])] = x[:, :, 3:5]
    return y


def _fresh_pad_summary(rf) -> None:
    # a zero pad by one pixel written as a buffer: size 1, jump 1, padding 1 (like F.pad)
    assert _summary(rf, OUTPUT) == ((1, 1), (1, 1), (1, 1))


def _views() -> list[Corner]:
    c = "3 views and in-place writes"
    return [
        Corner("view, then base.mul_().add_()", c, Fn(_view_then_inplace), (x2d(),),
               twin=Fn(lambda x: _shift(x)[:, :, 1:3] + 0)),
        Corner("view, then base.copy_()", c, Fn(_view_then_copy), (x2d(),),
               twin=Fn(lambda x: _shift(x)[:, :, 1:3] * 1)),
        Corner("transposed view, then base[:] = ...", c, Fn(_view_then_setitem), (x2d(),),
               twin=Fn(lambda x: _shift(x) * 1)),
        Corner("view of a view, then base.zero_(); +=", c, Fn(_view_of_view_then_write), (x2d(),),
               twin=Fn(lambda x: _shift(x)[:, :, 1:, ::2] * 1)),
        Corner("torch.zeros(...)[..., 1:-1, 1:-1] = x", c, Fn(_torch_zeros_fill), (x2d(),),
               twin=Fn(lambda x: F.pad(x, (1, 1, 1, 1))), extra=_fresh_pad_summary),
        Corner("x.new_zeros(...)[..., 1:-1, 1:-1] = x", c, Fn(_new_zeros_fill), (x2d(),),
               twin=Fn(lambda x: F.pad(x, (1, 1, 1, 1))), extra=_fresh_pad_summary),
        Corner("interleave x and conv(x) into new_zeros", c, Fn(_interleave, _conv(1, 1, 3, padding=1)),
               (x2d(),)),
        Corner("halves written into torch.empty_like", c,
               Fn(_halves, _conv(1, 1, 3, padding=1), _conv(1, 1, 1)), (x2d(6, 8),)),
        Corner("write through a reshaped (flat) view", c, Fn(_flat_fill), (x2d(),),
               twin=Fn(lambda x: _shift(x) * 1),
               xfail="class 3: a write through a view() of a flat buffer is not placed (unknown)"),
        Corner("slice assignment overwrites a region", c, Fn(_slice_assign), (x2d(),)),
        Corner("slice assignment of a constant", c, Fn(_slice_assign_const), (x2d(),)),
        Corner("index_put with a constant index", c, Fn(_index_put_rows), (x2d(),),
               xfail="class 3/9: index_put with fixed indices is not followed (unknown)"),
    ]


# ----------------------------------------------------------------------------------------------
# class 4: summaries that are not numbers of anything; pads
# ----------------------------------------------------------------------------------------------

def _aten_circular(x):
    return torch.ops.aten._pad_circular(x, [1, 1, 1, 1])


def _check_circular_summary(size: int):
    def check(rf) -> None:
        assert _summary(rf, OUTPUT) == ((size, size), (1, 1), (1, 1)), _summary(rf, OUTPUT)
    return check


def _cat_spatial_jump_none(rf) -> None:
    # units 0..4 read a 3x3 conv, units 5..9 a crop of x: no single jump or padding along W
    assert _axis(rf, OUTPUT, "jump", 1) is None and _axis(rf, OUTPUT, "padding", 1) is None, \
        rf[OUTPUT].axes[1]
    assert explains(rf, OUTPUT, "concat", "no single"), rf.warnings


def _cat_twice_jump_none(rf) -> None:
    assert _axis(rf, "mods.0", "jump", 0) is None, rf["mods.0"].axes[0]
    assert explains(rf, "mods.0", "concat", "no single"), rf.warnings


def _convt_empty_unit0(rf) -> None:
    # unit o reads input (o + 1) / 2 for odd o; even units read nothing: unit 0 has no interval,
    # so no padding / centre read from it
    assert _axis(rf, OUTPUT, "padding", 0) is None, rf[OUTPUT].axes[0]
    assert explains(rf, OUTPUT, "empty", "no single", "reads nothing"), rf.warnings


def _summaries() -> list[Corner]:
    c = "4 summaries / pads"
    circ = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    return [
        Corner("conv padding_mode circular", c, circ, (x2d(8, 8),), extra=_check_circular_summary(3)),
        Corner("two circular convs on 5 pixels", c,
               nn.Sequential(nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular"),
                             nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular")), (x1d(5),)),
        Corner("reflect / replicate convs", c,
               nn.Sequential(_conv(padding=1, padding_mode="reflect"), _conv(padding=2, padding_mode="replicate")),
               (x2d(7, 8),)),
        Corner("F.pad modes chained", c,
               Fn(lambda x: F.pad(F.pad(F.pad(x, (2, 1, 0, 2), mode="circular"), (1, 2, 2, 1), mode="reflect"),
                                  (0, 3, 1, 0), mode="replicate")), (x2d(5, 6),)),
        Corner("aten._pad_circular (no F.pad)", c, Fn(_aten_circular), (x2d(8, 8),),
               twin=Fn(lambda x: F.pad(x, (1, 1, 1, 1), mode="circular")),
               extra=_check_circular_summary(1)),
        Corner("aten._pad_circular then 3x3 conv", c, Fn(lambda x, conv: conv(_aten_circular(x)), _conv()),
               (x2d(8, 8),), twin=Fn(lambda x, conv: conv(F.pad(x, (1, 1, 1, 1), mode="circular")), _conv()),
               extra=_check_circular_summary(3)),
        Corner("cat of conv(x) and a crop along W", c,
               Fn(lambda x, conv: torch.cat([conv(x), x[:, :, 1:-1, 1:-1]], 3), _conv()), (x2d(7, 7),),
               extra=_cat_spatial_jump_none),
        Corner("cat([x, x]) along the length, then conv", c,
               Fn(lambda x, conv: conv(torch.cat([x, x], -1)), nn.Conv1d(1, 1, 3)), (x1d(6),),
               extra=_cat_twice_jump_none),
        Corner("transposed conv whose unit 0 is empty", c, nn.ConvTranspose1d(1, 1, 1, stride=2, padding=1),
               (x1d(8),), extra=_convt_empty_unit0),
    ]


# ----------------------------------------------------------------------------------------------
# class 5: interpolation
# ----------------------------------------------------------------------------------------------

def _copy_summary(rf) -> None:
    assert _summary(rf, OUTPUT)[0] == (1,) * len(rf[OUTPUT].axes)


def _interp(**kw) -> nn.Module:
    return Fn(lambda x: F.interpolate(x, **kw))


def _interpolation() -> list[Corner]:
    c = "5 interpolation"
    return [
        Corner("linear 7 -> 7, scale_factor 1.1", c, _interp(scale_factor=1.1, mode="linear"), (x1d(7),),
               extra=_copy_summary),
        Corner("bilinear 5x7 -> 5x7, scale_factor (1.1, 1.05)", c,
               _interp(scale_factor=(1.1, 1.05), mode="bilinear"), (x2d(5, 7),), extra=_copy_summary),
        Corner("bicubic same size, scale_factor 1.1", c, _interp(scale_factor=1.1, mode="bicubic"),
               (x2d(5, 7),), extra=_copy_summary),
        Corner("nearest same size, scale_factor 1.1", c, _interp(scale_factor=1.1, mode="nearest"),
               (x2d(5, 7),), extra=_copy_summary),
        Corner("linear with size == input size", c, _interp(size=7, mode="linear"), (x1d(7),),
               extra=_copy_summary),
        Corner("nearest x1/3", c, _interp(scale_factor=1 / 3, mode="nearest"), (x1d(12),)),
        Corner("bilinear x pi (align_corners)", c,
               _interp(scale_factor=math.pi, mode="bilinear", align_corners=True), (x2d(4, 5),)),
        Corner("bilinear antialias x1/2", c, _interp(scale_factor=0.5, mode="bilinear", antialias=True),
               (x2d(8, 10),)),
        Corner("bicubic antialias to a size", c, _interp(size=(3, 4), mode="bicubic", antialias=True),
               (x2d(9, 10),)),
    ]


# ----------------------------------------------------------------------------------------------
# class 6: capture (fallback, dtypes, buffers, data-dependent branches)
# ----------------------------------------------------------------------------------------------

class NonPersistent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv()
        self.register_buffer("pos", torch.ones(1, 1, 4, 5), persistent=False)

    def forward(self, x):
        return self.conv(x) + self.pos


class ItemBranch(nn.Module):
    """A branch on ``.item()``: with any positive input the first branch is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.a = _conv(1, 1, 3, padding=1)
        self.b = _conv(1, 1, 5, padding=2)

    def forward(self, x):
        if x.sum().item() > 0:
            return self.a(x)
        return self.b(x)


class BoolBranch(ItemBranch):
    def forward(self, x):
        if x.sum() > 0:  # Tensor.__bool__
            return self.a(x)
        return self.b(x)


def _meta_path(rf) -> None:
    assert rf.capture_path == "meta", rf.warnings


def _data_dependent(rf) -> None:
    assert not rf.unsupported_ops, rf.unsupported_ops
    assert explains(rf, OUTPUT, "data-dependent"), rf.warnings


def _strict_data_dependent(model: nn.Module, inputs: tuple):
    return rflens.receptive_field(model, example_inputs=inputs, strict=True)


def _capture() -> list[Corner]:
    c = "6 capture"
    return [
        Corner("bf16 model, input_shape=", c, nn.Sequential(_conv(1, 2), _conv(2, 1)).to(torch.bfloat16),
               (x2d(8, 8),), twin=nn.Sequential(_conv(1, 2), _conv(2, 1)),
               call=lambda m, i: rflens.receptive_field(m, input_shape=(1, 8, 8)), extra=_meta_path),
        Corner("fp16 model, input_shape=", c, nn.Sequential(_conv(1, 2), _conv(2, 1)).half(),
               (x2d(8, 8),), twin=nn.Sequential(_conv(1, 2), _conv(2, 1)),
               call=lambda m, i: rflens.receptive_field(m, input_shape=(1, 8, 8)), extra=_meta_path),
        Corner("non-persistent buffer added to the map", c, NonPersistent(), (x2d(6, 7),), extra=_meta_path),
        Corner(".item() branch", c, ItemBranch(), (x2d(),), extra=_data_dependent),
        Corner("if tensor: branch", c, BoolBranch(), (x2d(),), extra=_data_dependent),
        Corner(".item() branch, strict=True", c, ItemBranch(), (x2d(),), call=_strict_data_dependent,
               extra=_data_dependent),
    ]


# ----------------------------------------------------------------------------------------------
# class 7: compiled / scripted models, embeddings, movedim, 1-D linear
# ----------------------------------------------------------------------------------------------

def _mix_taps(cols, taps: int):
    """Every entry of a column reads all of that column's taps (outlook attention's weighting)."""
    n, ck, l = cols.shape
    grouped = cols.view(n, ck // taps, taps, l)
    return (grouped + grouped.sum(2, keepdim=True)).view(n, ck, l)


def _plain_chain() -> nn.Sequential:
    return nn.Sequential(_conv(1, 2, 3), nn.ReLU(), _conv(2, 1, 3, stride=2))


class InnerCompiled(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = _conv(1, 1, 1)

    def forward(self, x):
        return self.head(self.body(x))


def _names_are(*names: str):
    def check(rf) -> None:
        assert rf.names == list(names), rf.names
    return check


def _script_rows(rf) -> None:
    # a TorchScript module fires no Python hooks: per-layer rows are either there under the user's
    # names or their absence is said
    assert rf.names == ["0", "1", "2", OUTPUT] or explains(rf, None, "script"), (rf.names, rf.warnings)


class LabelMap(nn.Module):
    """Embedding of an integer label map (N, 1, H, W): a per-pixel lookup, then a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 3)
        self.conv = _conv(3, 2, 3)

    def forward(self, labels):
        return self.conv(self.emb(labels[:, 0]).permute(0, 3, 1, 2))


class LabelMapTwin(nn.Module):
    """The same dependency structure on a float map: a 1x1 conv instead of the lookup."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = _conv(1, 3, 1)
        self.conv = _conv(3, 2, 3)

    def forward(self, x):
        return self.conv(self.emb(x))


class LabelMapBranch(LabelMap):
    """An embedding model that must run for real (a data-dependent branch)."""

    def forward(self, labels):
        if labels.max().item() >= 0:
            return self.conv(self.emb(labels[:, 0]).permute(0, 3, 1, 2))
        return self.conv(self.emb(labels[:, 0]).permute(0, 3, 1, 2)) * 2


def _other() -> list[Corner]:
    c = "7 other corners"
    plain = _plain_chain()
    inner = InnerCompiled(_plain_chain())
    # torch.compile and torch.jit load their machinery on first use: build those models lazily
    labels = torch.randint(0, 10, (1, 1, 7, 8))
    strip = lambda n: n.replace("_orig_mod.", "").replace("._orig_mod", "").replace("_orig_mod", "")

    def scripted() -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.script(_plain_chain())
    return [
        Corner("torch.compile(model)", c, lambda: torch.compile(plain), (x2d(9, 9),), twin=plain,
               extra=_names_are("0", "1", "2", OUTPUT), rename=strip),
        Corner("compiled submodule", c, lambda: InnerCompiled(torch.compile(inner.body)), (x2d(9, 9),), twin=inner,
               extra=_names_are("body.0", "body.1", "body.2", "body", "head", OUTPUT), rename=strip),
        Corner("torch.jit.script(model)", c, scripted, (x2d(9, 9),), twin=_plain_chain(),
               extra=_script_rows),
        Corner("embedding on a label map", c, LabelMap(), (labels,), twin=LabelMapTwin(),
               twin_inputs=(x2d(7, 8),)),
        Corner("embedding on a label map, real run", c, LabelMapBranch(), (labels,), twin=LabelMapTwin(),
               twin_inputs=(x2d(7, 8),)),
        Corner("nn.Unfold columns viewed as a grid", c,
               Fn(lambda x: F.unfold(x, 3, dilation=2, padding=1, stride=2).unflatten(-1, (3, 3))),
               (x2d(7, 8),), rows=(OUTPUT,)),
        Corner("nn.Unfold, taps mixed, nn.Fold (VOLO's outlook pattern)", c,
               Fn(lambda x: F.fold(_mix_taps(F.unfold(x, (3, 2), padding=1, stride=2), 6), (7, 8), (3, 2),
                                   padding=1, stride=2)), (x2d(7, 8),)),
        Corner("nn.Fold of a dilated unfold, taps mixed", c,
               Fn(lambda x: F.fold(_mix_taps(F.unfold(x, 2, dilation=3, stride=2), 4), (9, 8), 2,
                                   dilation=3, stride=2)), (x2d(9, 8),)),
        Corner("Tensor.unfold windows, taps summed (HaloNet's blocks)", c,
               Fn(lambda x: x.unfold(3, 3, 2).unfold(2, 2, 1).sum((-1, -2))), (x2d(7, 9),)),
        # nothing mixes the taps: fold(unfold(x)) reads one pixel per pixel; rflens flags a superset
        Corner("nn.Fold(nn.Unfold(x)) unmixed", c,
               Fn(lambda x: F.fold(F.unfold(x, (3, 2), padding=1, stride=2) * 2, (7, 8), (3, 2),
                                   padding=1, stride=2)), (x2d(7, 8),), mode="honest"),
        # the Linear's own row is channels-last: only the root (back in (N, C, *grid)) is compared
        Corner("movedim + Linear over channels", c,
               Fn(lambda x, lin: lin(x.movedim(1, -1)).movedim(-1, 1), nn.Linear(2, 3)), (x2d(c=2),),
               rows=(OUTPUT,)),
        Corner("1-D: Linear over channels (tokens)", c,
               Fn(lambda x, lin: lin(x.transpose(1, 2)).transpose(1, 2), nn.Linear(2, 3)), (x1d(9, 2),),
               rows=(OUTPUT,)),
    ]


# ----------------------------------------------------------------------------------------------
# class 9: global paths and value-dependent selection
# ----------------------------------------------------------------------------------------------

class SE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(1, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        y = self.conv(x)
        return y * torch.sigmoid(self.fc(y.mean((2, 3))))[:, :, None, None]


class WhereBuffer(nn.Module):
    def __init__(self, w: int = 7) -> None:
        super().__init__()
        self.register_buffer("mask", torch.arange(w)[None, None, None, :] % 2 == 0)

    def forward(self, x):
        return torch.where(self.mask, x, _shift(x))


class MaskedFillBuffer(nn.Module):
    def __init__(self, w: int = 7) -> None:
        super().__init__()
        self.register_buffer("mask", torch.arange(w)[None, None, None, :] >= 3)

    def forward(self, x):
        return _shift(x).masked_fill(self.mask, 0.0) + x


class GatherBuffer(nn.Module):
    def __init__(self, h: int = 6, w: int = 7) -> None:
        super().__init__()
        self.register_buffer("idx", torch.arange(w - 1, -1, -1).expand(1, 1, h, w).contiguous())

    def forward(self, x):
        return torch.gather(x, 3, self.idx)


class IndexBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("idx", torch.tensor([0, 2, 4]))

    def forward(self, x):
        return x[:, :, :, self.idx] + x.index_select(3, self.idx)


def _where_mask_in_forward(x):
    mask = torch.arange(x.shape[3], device=x.device)[None, None, None, :] % 2 == 0
    return torch.where(mask, x, _shift(x))


def _mask_twin(keep: Callable[[torch.Tensor], torch.Tensor]):
    return Fn(lambda x: x * keep(torch.arange(x.shape[3]) % 2 == 0) + _shift(x) * keep(torch.arange(x.shape[3]) % 2 == 1))


def _global() -> list[Corner]:
    c = "9 global / selection"
    select = "class 9: selection by a fixed (buffer) mask/index reports the union of every branch as " \
             "if exact (or nothing: unknown) instead of following the values"
    return [
        Corner("x + x.sum(W) broadcast back", c, Fn(lambda x: x + x.sum(3, keepdim=True)), (x2d(5, 6),)),
        Corner("conv(x) * x.mean(H) broadcast back", c,
               Fn(lambda x, conv: conv(x) * x.mean(2, keepdim=True), _conv(1, 1, 3, padding=1)), (x2d(5, 6),)),
        Corner("softmax over W", c, Fn(lambda x: torch.softmax(x, -1) * 1), (x2d(4, 5),),
               twin=Fn(lambda x: x.sum(-1, keepdim=True).expand_as(x) * 1)),
        Corner("squeeze-and-excitation gate", c, SE(), (x2d(5, 6),)),
        Corner("where with a buffer mask", c, WhereBuffer(), (x2d(5, 7),),
               twin=_mask_twin(lambda m: m), xfail=select),
        Corner("masked_fill with a buffer mask", c, MaskedFillBuffer(), (x2d(5, 7),),
               twin=Fn(lambda x: _shift(x) * (torch.arange(7) < 3) + x), xfail=select),
        Corner("gather with a buffer index (a flip)", c, GatherBuffer(), (x2d(6, 7),),
               twin=Fn(lambda x: x.flip(3) * 1), xfail=select),
        Corner("index / index_select with a buffer index", c, IndexBuffer(), (x2d(5, 7),),
               twin=Fn(lambda x: x[:, :, :, 0:5:2] * 2), xfail=select),
        Corner("where with a mask built in forward", c, Fn(_where_mask_in_forward), (x2d(5, 7),),
               twin=_mask_twin(lambda m: m), mode="honest"),
        Corner("where with an input-dependent mask", c,
               Fn(lambda x: torch.where(x > 0.25, x, _shift(x))), (x2d(5, 7),), mode="honest"),
        Corner("gather with an input-dependent index", c,
               Fn(lambda x: torch.gather(x, 3, x.argmax(3, keepdim=True)) * x), (x2d(5, 7),), mode="honest"),
    ]


CORNERS = (_several_inputs() + _out_args() + _views() + _summaries() + _interpolation() + _capture()
           + _other() + _global())


def _param(corner: Corner):
    marks = [pytest.mark.xfail(strict=True, reason=corner.xfail)] if corner.xfail else []
    return pytest.param(corner, marks=marks, id=f"{corner.cls.split()[0]}:{corner.name}")


@pytest.mark.parametrize("corner", [_param(c) for c in CORNERS])
def test_corner_matches_the_gradient_oracle(corner: Corner, one_thread) -> None:
    model = corner.model if isinstance(corner.model, nn.Module) else corner.model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if corner.call is not None:
            rf = corner.call(model, corner.inputs)
        else:
            rf = rflens.receptive_field(model, example_inputs=corner.inputs)
    if corner.extra is not None:
        corner.extra(rf)
    assert OUTPUT in rf.names, rf.names
    oracle = SupportOracle(corner.twin or model, corner.twin_inputs or corner.inputs, corner.grid)
    bad = compare_rows(rf, oracle, rows=corner.rows, rename=corner.rename,
                       allow_superset=corner.mode == "honest",
                       allow_unknown=corner.mode == "honest")
    assert not bad, "\n".join(bad)


def test_catalogue_covers_every_class() -> None:
    classes = {c.cls.split()[0] for c in CORNERS}
    assert classes >= {"1", "2", "3", "4", "5", "6", "7", "9"}
    names = [c.name for c in CORNERS]
    assert len(names) == len(set(names))


# ----------------------------------------------------------------------------------------------
# cases that need more than one unit comparison
# ----------------------------------------------------------------------------------------------

def test_odd_scale_factor_is_fast() -> None:
    # milliseconds are expected; the alarm stops a slow run after 2 s so the suite stays fast
    model = _interp(scale_factor=math.pi, mode="bilinear")

    def too_slow(*_):
        raise TimeoutError("a 7x7 bilinear x pi took more than 2 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        rf = rflens.receptive_field(model, input_shape=(1, 7, 7))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert rf[OUTPUT].known


def test_linear_along_a_1d_signal_is_global() -> None:
    # nn.Linear over the length of a 1-D signal: every output feature reads the whole signal; the
    # feature axis is not the grid (one unit left on it), and that unit's box is all 6 pixels
    # (rflens may give the output features the signal's grid — every unit then reads all of it —
    # or leave one unit; either way every box is the whole signal)
    rf = rflens.receptive_field(nn.Linear(6, 6), input_shape=(1, 6))
    assert rf[OUTPUT].is_global and rf[OUTPUT].grid in ((1,), (6,))
    oracle = SupportOracle(nn.Linear(6, 6), (x1d(6),))
    assert {oracle.hulls(OUTPUT, [(u,)])[0] for u in range(6)} == {((0, 5),)}
    assert {rf.box(OUTPUT, (u,), clip=True) for u in range(rf[OUTPUT].grid[0])} == {((0, 5),)}


class _Recorder(nn.Module):
    """Records the device type of every input it sees (a real run shows 'cpu')."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv(3, 1, 3)
        self.seen: list[str] = []

    def forward(self, x):
        self.seen.append(x.device.type)
        return self.conv(x)


def test_no_real_run_when_it_cannot_help() -> None:
    model = _Recorder()
    with pytest.raises(rflens.RflensError) as err:
        rflens.receptive_field(model, input_shape=(1, 8, 8))  # the conv wants 3 channels
    assert "channel" in str(err.value)
    assert "cpu" not in model.seen, model.seen


def test_data_dependent_branch_runs_for_real_and_says_why() -> None:
    rf = rflens.receptive_field(ItemBranch(), input_shape=(1, 6, 7))
    assert rf.capture_path == "cpu"
    assert explains(rf, None, "meta"), rf.warnings


def test_user_model_is_untouched_by_corner_runs() -> None:
    model = CondVector()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rflens.receptive_field(model, example_inputs=(x2d(), torch.rand(1, 4)))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fraction_summaries_are_fractions() -> None:
    # a jump below 1 stays an exact fraction (nearest x3): guards the summary checks above
    rf = rflens.receptive_field(_interp(scale_factor=3, mode="nearest"), input_shape=(1, 5))
    assert rf[OUTPUT].jump == (Fraction(1, 3),)


# ----------------------------------------------------------------------------------------------
# class 8 (analytic ERF with a gate) and class 10 (names), the parts that touch the TRF's rows
# ----------------------------------------------------------------------------------------------

def test_analytic_erf_through_a_gate_is_the_local_field() -> None:
    # conv 3x3 (padding 1) on 12x12, gated by a function of its own mean: linearised, the gate is
    # a constant, so the centre unit (6, 6) reads the 3x3 window rows/cols 5..7
    result = rflens.analytic_erf(SE(), OUTPUT, input_shape=(1, 12, 12))
    support = [tuple(int(v) for v in idx) for idx in zip(*(result.map > 0).nonzero())]
    (lo0, _), (lo1, _) = result.box
    assert {(r + lo0, c + lo1) for r, c in support} == {(r, c) for r in range(5, 8) for c in range(5, 8)}


def test_every_printed_row_name_is_accepted_by_the_analytic_erf() -> None:
    model = nn.Sequential(_conv(1, 2, 3), nn.ReLU(), _conv(2, 1, 3))
    rf = rflens.receptive_field(model, input_shape=(1, 12, 12))
    assert rf.names == ["0", "1", "2", OUTPUT]
    for name in rf.names:
        result = rflens.analytic_erf(model, name, input_shape=(1, 12, 12))
        assert result.map.sum() == pytest.approx(1.0)
