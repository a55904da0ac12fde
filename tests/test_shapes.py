"""Capture's shape-only shortcuts (rflens.trf.shapes) against PyTorch's own meta kernels: same
shapes, strides and dtypes, or no shortcut at all (NotImplemented)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rflens.trf.shapes import SHORTCUTS

aten = torch.ops.aten
CL = torch.channels_last


def meta(*shape, dtype=torch.float32, fmt=None):
    t = torch.empty(shape, dtype=dtype, device="meta")
    return t.contiguous(memory_format=fmt) if fmt is not None else t


def _same(a, b) -> None:
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
        return
    assert (tuple(a.shape), a.stride(), a.dtype) == (tuple(b.shape), b.stride(), b.dtype)


CASES = [
    (aten.convolution.default, (meta(2, 3, 17, 12), meta(8, 3, 3, 2), None, [2, 1], [1, 0], [1, 2], False, [0, 0], 1)),
    (aten.convolution.default, (meta(1, 4, 9, 9), meta(4, 2, 3, 3), None, [2, 2], [1, 1], [1, 1], True, [1, 0], 2)),
    (aten.convolution.default, (meta(1, 3, 20), meta(6, 1, 5), meta(6), [3], [2], [1], False, [0], 3)),
    (aten.convolution.default, (meta(1, 3, 9, 9, fmt=CL), meta(4, 3, 3, 3), None, [1], [1], [1], False, [0], 1)),
    (aten.native_batch_norm.default, (meta(2, 5, 4, 3), meta(5), meta(5), meta(5), meta(5), False, 0.1, 1e-5)),
    (aten.native_batch_norm.default, (meta(2, 5, 4, 3, fmt=CL), meta(5), meta(5), meta(5), meta(5), False, 0.1, 1e-5)),
    (aten._native_batch_norm_legit_no_training.default, (meta(1, 3, 4, 4), meta(3), meta(3), meta(3), meta(3), 0.1, 1e-5)),
    (aten.native_layer_norm.default, (meta(2, 7, 5, 6), [6], meta(6), meta(6), 1e-5)),
    (aten.native_layer_norm.default, (meta(2, 7, 5, 6), [5, 6], None, None, 1e-5)),
    (aten.native_group_norm.default, (meta(2, 6, 4, 5), meta(6), meta(6), 2, 6, 20, 3, 1e-5)),
    (aten.addmm.default, (meta(7), meta(5, 3), meta(3, 7))),
    (aten.mm.default, (meta(5, 3), meta(3, 7))),
    (aten.bmm.default, (meta(2, 5, 3), meta(2, 3, 7))),
    (aten.cat.default, ([meta(1, 2, 4, 5), meta(1, 3, 4, 5)], 1)),
    (aten.cat.default, ([meta(1, 2, 4, 5), meta(1, 2, 4, 1)], -1)),
    (aten.mean.dim, (meta(2, 3, 5, 6), [2, 3], True)),
    (aten.mean.dim, (meta(2, 3, 5, 6), [-1], False)),
    (aten._softmax.default, (meta(2, 3, 5), 1, False)),
    (aten.gelu.default, (meta(2, 3, 5, fmt=None),)),
    (aten.silu.default, (meta(2, 3, 5, 4, fmt=CL),)),
    (aten.relu.default, (meta(4, 5).t(),)),
    (aten.relu_.default, (meta(2, 3),)),
    (aten.add.Tensor, (meta(2, 3, 4, 5), meta(2, 3, 4, 5))),
    (aten.add.Tensor, (meta(2, 3, 4, 5), meta(3, 1, 1))),
    (aten.mul.Tensor, (meta(2, 3, 4, 5, fmt=CL), meta(2, 3, 4, 5, fmt=CL))),
    (aten.mul.Tensor, (meta(2, 3, 4, 5, fmt=CL), meta(1, 3, 1, 1))),
    (aten.mul.Tensor, (meta(1, 3, 1, 1), meta(2, 3, 4, 5))),
    (aten.div.Tensor, (meta(2, 3, dtype=torch.float64), 2.0)),
    (aten.sub.Tensor, (meta(2, 3), meta(2, 3, dtype=torch.float64))),
    (aten.add.Tensor, (meta(2, 3, dtype=torch.int64), meta(2, 3, dtype=torch.int64))),
    (aten.add_.Tensor, (meta(2, 3, 4), meta(3, 4))),
]


@pytest.mark.parametrize("func, args", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_shortcut_equals_the_meta_kernel(func, args) -> None:
    got = SHORTCUTS[func](*args)
    if got is NotImplemented:
        return  # the real kernel runs: nothing to compare
    want = func(*args)
    if func._schema.is_mutable:
        assert got is args[0]
    _same(got, want)


def test_every_shortcut_is_covered_and_some_cases_decline() -> None:
    covered = {func for func, _ in CASES}
    declined = [func for func, args in CASES if SHORTCUTS[func](*args) is NotImplemented]
    assert {aten.convolution.default, aten.native_batch_norm.default, aten.add.Tensor} <= covered
    assert declined, "mixed dtypes and integer tensors must fall back to the real kernel"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.data())
def test_broadcasting_arithmetic_matches(shape, data) -> None:
    other = [data.draw(st.sampled_from([n, 1])) for n in shape][data.draw(st.integers(0, len(shape) - 1)):]
    a, b = meta(*shape), meta(*other)
    if data.draw(st.booleans()):
        a, b = b, a
    for func in (aten.add.Tensor, aten.mul.Tensor):
        got = SHORTCUTS[func](a, b)
        if got is not NotImplemented:
            _same(got, func(a, b))


LAYOUTS = ["contiguous", "channels_last", "permuted"]


def _laid_out(shape, layout):
    if layout == "channels_last" and len(shape) == 4:
        return meta(*shape, fmt=CL)
    if layout == "permuted" and len(shape) == 4:
        n, c, h, w = shape
        return meta(n, h, w, c).permute(0, 3, 1, 2)  # what x.permute(0, 3, 1, 2) after NHWC gives
    return meta(*shape)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=4, max_size=4), st.sampled_from(LAYOUTS),
       st.sampled_from(LAYOUTS), st.integers(0, 3), st.data())
def test_layouts_match_the_meta_kernel(shape, x_layout, w_layout, keep, data) -> None:
    """Channels-last and permuted inputs (ConvNeXt's LayerNorm2d, layer scale) through every
    shortcut that accepts them: same strides as the real kernel."""
    x = _laid_out(shape, x_layout)
    c = shape[1]
    w = _laid_out([data.draw(st.integers(1, 4)), c, 2, 1], w_layout)
    calls = [
        (aten.convolution.default, (x, w, None, [1, 1], [1, 0], [1, 1], False, [0, 0], 1)),
        (aten.native_layer_norm.default, (x, [shape[-1]], None, None, 1e-5)),
        (aten.native_layer_norm.default, (x.permute(0, 2, 3, 1), [c], None, None, 1e-5)),
        (aten.mean.dim, (x, [[-1, -2], [1], [0, 2], [3]][keep], bool(keep % 2))),
        (aten.mul.Tensor, (x, meta(c, 1, 1))),
        (aten.add.Tensor, (meta(*[n if k == keep else 1 for k, n in enumerate(shape)]), x)),
        (aten.mul.Tensor, (x, meta(*[n if k != keep else 1 for k, n in enumerate(shape)]))),
    ]
    for func, args in calls:
        got = SHORTCUTS[func](*args)
        if got is not NotImplemented:
            _same(got, func(*args))


@pytest.mark.parametrize("model, shape", [
    (torch.nn.Conv2d(3, 1, 3), (1, 8, 8)),
    (torch.nn.Conv2d(4, 4, 3, groups=2), (3, 8, 8)),
    (torch.nn.ConvTranspose2d(3, 2, 3), (2, 8, 8)),
    (torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(3)), (1, 8, 8)),
    (torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.GroupNorm(2, 6)), (1, 8, 8)),
    (torch.nn.LayerNorm(7), (1, 8, 8)),
], ids=["conv channels", "grouped conv channels", "transposed conv channels", "batch norm size",
        "group norm size", "layer norm shape"])
def test_shortcuts_never_hide_a_shape_error(model, shape) -> None:
    """A model that fails on the real input must fail under rflens too, naming where."""
    import rflens
    with pytest.raises(RuntimeError):
        model(torch.rand(1, *shape))
    with pytest.raises(rflens.RflensError, match="failed to run"):
        rflens.receptive_field(model, input_shape=shape)
