"""rflens against the independent gradient-support oracle (tests/oracle.py).

Three layers of trust, in this order:

1. plain tests of the oracle itself against values derived by hand from docs/receptive-fields.md
   (so the oracle is trusted without rflens);
2. one test per worked example / rule of the docs comparing rflens' per-layer numbers
   (``size``, ``jump``, ``padding``, ``uniform``, ``aligned``, ``is_global``) with hand-derived values;
   then (2b) the minimal models on which the property tests once caught rflens wrong, each checked
   against hand-derived hulls as well as the oracle;
3. hypothesis property tests on random chains and DAGs (1-D, 2-D, 3-D) of convs (stride, dilation,
   integer / ``'same'`` / asymmetric padding, non-square kernels), max/avg pools with ``ceil_mode``,
   transposed convs with ``output_padding``, nearest / (bi|tri)linear / bicubic upsampling, residual
   adds and channel concatenations (aligned or not), explicit pads and crops. Two properties:

   - *clipped* (the strong one): for every sampled unit (borders favoured) of the output and two
     random layers, ``rf.box(layer, unit, clip=True)`` equals the oracle's hull (``None`` when the
     unit depends on no real pixel, e.g. its unclipped box misses the image or lies in padding)
     and lies inside the unclipped ``rf.box``; layer names and shapes match the model;
   - *interior*: on inputs large enough that a unit's paths never touch padding, the *unclipped*
     ``rf.box`` equals the oracle hull, and the per-layer ``size``/``jump`` agree with it.

Resampling ratios are kept exactly representable in binary (see tests/oracle.py) so that a zero
interpolation weight is an exact 0.0 and the oracle needs no tolerance. A failure message prints
the generated network as code lines: that is the repro. Shrinking is off unless RFLENS_SHRINK=1
(it can take minutes per failure); the Hypothesis database replays a failure first on the next run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator, Sequence

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from torch import nn

try:
    from corners import sample_units
    from oracle import OUTPUT, GradientOracle, Hull, Unit, interior_units, touches_border
except ImportError:  # tests/ made a package
    from tests.corners import sample_units
    from tests.oracle import OUTPUT, GradientOracle, Hull, Unit, interior_units, touches_border


# ----------------------------------------------------------------------------------------------
# access to rflens (the engine may land after this file)
# ----------------------------------------------------------------------------------------------

def _rflens():
    """The rflens module with its public entry point, or skip the test."""
    module = pytest.importorskip("rflens")
    if not hasattr(module, "receptive_field"):
        pytest.skip("rflens.receptive_field is not available yet")
    return module


def rflens_field(model: nn.Module, input_shape: Sequence[int]):
    return _rflens().receptive_field(model, input_shape=tuple(input_shape))


def _box(raw) -> Hull | None:
    """rflens box → tuple of (lo, hi) int pairs (None: the unit reads nothing)."""
    return None if raw is None else tuple((int(lo), int(hi)) for lo, hi in raw)


def _all(value) -> bool:
    """A per-axis tuple of flags or a single flag → one flag."""
    if isinstance(value, (tuple, list)):
        return all(bool(v) for v in value)
    return bool(value)


def _contains(outer: Hull | None, inner: Hull) -> bool:
    return outer is not None and all(lo <= a and b <= hi for (lo, hi), (a, b) in zip(outer, inner))


# ----------------------------------------------------------------------------------------------
# 1. the oracle alone, against hand-derived values
# ----------------------------------------------------------------------------------------------

def _hulls(model: nn.Module, shape: Sequence[int], units: Sequence[Unit], layer: str = OUTPUT
           ) -> list[Hull | None]:
    return GradientOracle(model, shape).hulls(layer, list(units))


def test_oracle_two_and_three_3x3_convs():
    two = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    three = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 1, 3))
    assert _hulls(two, (1, 12, 12), [(0, 0), (3, 5)]) == [((0, 4), (0, 4)), ((3, 7), (5, 9))]
    assert _hulls(three, (1, 12, 12), [(2, 1)]) == [((2, 8), (1, 7))]


def test_oracle_stride_then_2x2():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 2))
    # layer-1 units 0 and 1 see [0..2] and [2..4]; their union is [0..4]; jump 2
    assert _hulls(model, (1, 11, 11), [(0, 0), (1, 2)]) == [((0, 4), (0, 4)), ((2, 6), (4, 8))]
    assert _hulls(model, (1, 11, 11), [(0, 0)], layer="0") == [((0, 2), (0, 2))]


def test_oracle_dilation_padding_and_clipping():
    model = nn.Sequential(nn.Conv1d(1, 1, 3, dilation=2), nn.Conv1d(1, 1, 3, padding=1))
    # k' = 5, then +2: size 7, P = 1; unit 0 is [-1, 5] clipped to [0, 5]
    assert _hulls(model, (1, 20), [(0,), (1,), (4,)]) == [((0, 5),), ((0, 6),), ((3, 9),)]
    model = nn.Sequential(nn.Conv1d(1, 1, 3, padding=4))  # unit 0 reads only padding
    assert _hulls(model, (1, 8), [(0,), (1,), (2,)]) == [None, None, ((0, 0),)]


def test_oracle_closed_form_chain():
    # R = 1 + 2*1 + 4*2 + 1*2 = 13, J = 4, P = 1 + 2*2 = 5 (docs closed form)
    model = nn.Sequential(nn.Conv1d(1, 1, 3, stride=2, padding=1),
                          nn.Conv1d(1, 1, 3, dilation=2, padding=2), nn.MaxPool1d(2, 2))
    got = _hulls(model, (1, 64), [(3,), (4,)])
    assert got == [((3 * 4 - 5, 3 * 4 - 5 + 12),), ((4 * 4 - 5, 4 * 4 - 5 + 12),)]


def test_oracle_max_pool_is_replaced_and_dilated_max_pool_too():
    model = nn.Sequential(nn.MaxPool2d(2, 2), nn.Conv2d(1, 1, 3))  # R = 2 + 2*2 = 6
    assert _hulls(model, (1, 16, 16), [(0, 1)]) == [((0, 5), (2, 7))]
    model = nn.Sequential(nn.MaxPool1d(3, stride=2, dilation=2, padding=1, ceil_mode=True))
    oracle = GradientOracle(model, (1, 12))
    assert oracle.output_shape(OUTPUT) == (1, 1, 6)
    # window o covers o*2 - 1 + {0, 2, 4}
    assert oracle.hulls(OUTPUT, [(0,), (1,), (5,)]) == [((1, 3),), ((1, 5),), ((9, 11),)]


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_oracle_pool_replacements_keep_output_shapes(dims: int):
    pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
    for k, s, p, d, ceil in itertools.product([2, 3], [1, 2, 3], [0, 1], [1, 2], [False, True]):
        model = pool(k, s, p, d, ceil_mode=ceil)
        shape = (1,) + (7,) * dims
        oracle = GradientOracle(model, shape)
        assert oracle.output_shape(OUTPUT)[1:] == model(torch.zeros(1, *shape)).shape[1:]


def test_oracle_ceil_mode_window_in_right_padding():
    model = nn.MaxPool1d(2, stride=2, padding=1, ceil_mode=True)  # 7 units on 12 pixels
    assert _hulls(model, (1, 12), [(0,), (1,), (6,)]) == [((0, 0),), ((1, 2),), ((11, 11),)]


def test_oracle_transposed_conv_is_phase_dependent():
    # output o reads input i with o = 2i + j, j in {0,1,2}
    model = nn.ConvTranspose1d(1, 1, 3, stride=2)
    got = _hulls(model, (1, 6), [(o,) for o in range(5)])
    assert got == [((0, 0),), ((0, 0),), ((0, 1),), ((1, 1),), ((1, 2),)]
    model = nn.ConvTranspose1d(1, 1, 1, stride=2)  # odd units read nothing
    assert _hulls(model, (1, 4), [(0,), (1,), (2,)]) == [((0, 0),), None, ((1, 1),)]


def test_oracle_upsampling():
    nearest = nn.Upsample(scale_factor=3, mode="nearest")
    assert _hulls(nearest, (1, 5), [(o,) for o in range(7)]) == [((o // 3, o // 3),) for o in range(7)]
    # bilinear x2, align_corners=False: neighbours of (o + 0.5)/2 - 0.5, clamped at 0 (weight 0)
    linear = nn.Upsample(scale_factor=2, mode="linear")
    got = _hulls(linear, (1, 6), [(o,) for o in range(12)])
    assert got == [((0, 0),), ((0, 1),), ((0, 1),), ((1, 2),), ((1, 2),), ((2, 3),), ((2, 3),),
                   ((3, 4),), ((3, 4),), ((4, 5),), ((4, 5),), ((5, 5),)]
    # align_corners=True with ratio 1/2: even units sit exactly on a pixel (neighbour weight 0)
    corners = nn.Upsample(size=11, mode="linear", align_corners=True)
    got = _hulls(corners, (1, 6), [(o,) for o in range(11)])
    assert got == [((o // 2, (o + 1) // 2),) for o in range(11)]
    bicubic = nn.Upsample(scale_factor=2, mode="bicubic")  # 4 taps: floor(src) - 1 .. + 2
    got = _hulls(bicubic, (1, 8, 8), [(4, 5), (0, 15)])
    assert got == [((0, 3), (1, 4)), ((0, 1), (6, 7))]


def test_oracle_merges_and_global():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + x

    assert _hulls(Residual(), (1, 9, 9), [(4, 0)]) == [((3, 5), (0, 1))]
    pooled = nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1))
    assert _hulls(pooled, (1, 9, 7), [(0, 0)]) == [((0, 8), (0, 6))]
    adaptive = nn.AdaptiveAvgPool1d(4)  # windows floor(i*n/m) .. ceil((i+1)*n/m) - 1, n=10, m=4
    assert _hulls(adaptive, (1, 10), [(i,) for i in range(4)]) == [((0, 2),), ((2, 4),), ((5, 7),),
                                                                    ((7, 9),)]


def test_oracle_3d_and_hooked_layers_and_model_untouched():
    model = nn.Sequential(nn.Conv3d(1, 2, (3, 1, 2), stride=(1, 2, 1)), nn.ReLU(inplace=True),
                          nn.MaxPool3d(2))
    before = [p.clone() for p in model.parameters()]
    oracle = GradientOracle(model, (1, 8, 8, 8))
    assert oracle.hull("0", (1, 1, 1)) == ((1, 3), (2, 2), (1, 2))
    assert oracle.hull(OUTPUT, (0, 0, 0)) == ((0, 3), (0, 2), (0, 2))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert isinstance(model[1], nn.ReLU) and isinstance(model[2], nn.MaxPool3d)


def test_oracle_interior_units_and_border_flags():
    model = nn.Sequential(nn.Conv1d(1, 1, 3, padding=1), nn.Conv1d(1, 1, 3, padding=1))
    oracle = GradientOracle(model, (1, 12))
    units = interior_units(oracle, OUTPUT, margin=2)
    assert [u for u, _ in units] == [(i,) for i in range(4, 8)]
    assert all(h == ((u[0] - 2, u[0] + 2),) for u, h in units)
    assert touches_border(oracle.hull(OUTPUT, (1,)), (12,)) == (True,)
    assert touches_border(oracle.hull(OUTPUT, (5,)), (12,)) == (False,)


# ----------------------------------------------------------------------------------------------
# 2. rflens per-layer numbers against the docs' worked examples
# ----------------------------------------------------------------------------------------------

def _numbers(rf, name: str) -> tuple[tuple, tuple, tuple]:
    layer = rf[name]
    return tuple(layer.size), tuple(layer.jump), tuple(layer.padding)


def test_docs_two_3x3_convs_give_5():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    rf = rflens_field(model, (3, 32, 32))
    assert _numbers(rf, "0") == ((3, 3), (1, 1), (0, 0))
    assert _numbers(rf, "2") == ((5, 5), (1, 1), (0, 0))


def test_docs_three_3x3_convs_give_7():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
    rf = rflens_field(model, (3, 32, 32))
    assert _numbers(rf, "2") == ((7, 7), (1, 1), (0, 0))


def test_docs_3x3_stride2_then_2x2_gives_5():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 2))
    rf = rflens_field(model, (1, 21, 21))
    assert _numbers(rf, "1") == ((5, 5), (2, 2), (0, 0))
    assert _box(rf.box("0", (0, 0))) == ((0, 2), (0, 2))
    assert _box(rf.box("0", (1, 1))) == ((2, 4), (2, 4))
    assert _box(rf.box("1", (0, 0))) == ((0, 4), (0, 4))


def test_docs_closed_form_with_padding_dilation_and_pool():
    model = nn.Sequential(nn.Conv1d(1, 1, 3, stride=2, padding=1),
                          nn.Conv1d(1, 1, 3, dilation=2, padding=2), nn.MaxPool1d(2, 2))
    rf = rflens_field(model, (1, 64))
    assert _numbers(rf, "0") == ((3,), (2,), (1,))
    assert _numbers(rf, "1") == ((11,), (2,), (5,))
    assert _numbers(rf, "2") == ((13,), (4,), (5,))
    assert _box(rf.box("2", (3,))) == ((7, 19),)  # [i*J - P, i*J - P + R - 1]
    assert tuple(rf["2"].center) == (Fraction(1),)  # -P + (R-1)/2


def test_docs_ceil_mode_same_and_explicit_pad_only_move_p():
    floor = rflens_field(nn.MaxPool1d(2, 2), (1, 11))
    ceil = rflens_field(nn.MaxPool1d(2, 2, ceil_mode=True), (1, 11))
    assert _numbers(floor, OUTPUT) == _numbers(ceil, OUTPUT) == ((2,), (2,), (0,))
    assert floor[OUTPUT].shape[-1] == 5 and ceil[OUTPUT].shape[-1] == 6
    same = rflens_field(nn.Conv1d(1, 1, 4, padding="same"), (1, 11))  # total 3: left 1, right 2
    assert _numbers(same, OUTPUT) == ((4,), (1,), (1,))
    padded = rflens_field(nn.Sequential(nn.ConstantPad1d((2, 0), 0.0), nn.Conv1d(1, 1, 3)), (1, 11))
    assert _numbers(padded, "1") == ((3,), (1,), (2,))


def test_docs_grouped_and_pointwise_layers():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Dropout(0.5), nn.Conv2d(4, 4, 1)).eval()
    rf = rflens_field(model, (4, 16, 16))
    for name in ("0", "4"):
        assert _numbers(rf, name) == ((3, 3), (1, 1), (0, 0))


def test_docs_transposed_conv_has_fractional_phase_dependent_jump():
    rf = rflens_field(nn.ConvTranspose1d(1, 1, 3, stride=2), (1, 8))
    layer = rf[OUTPUT]
    assert tuple(layer.jump) == (Fraction(1, 2),)
    assert not _all(layer.uniform)
    assert tuple(layer.size) == (2,)  # even units read 2 input pixels, odd units 1
    # o = 2i + j: unit 0 also reads input unit -1 (j = 2), outside the image
    assert [_box(rf.box(OUTPUT, (o,))) for o in range(5)] == [((-1, 0),), ((0, 0),), ((0, 1),),
                                                              ((1, 1),), ((1, 2),)]
    assert _box(rf.box(OUTPUT, (0,), clip=True)) == ((0, 0),)


def test_docs_nearest_and_bilinear_upsampling():
    rf = rflens_field(nn.Upsample(scale_factor=2, mode="nearest"), (1, 8, 8))
    assert tuple(rf[OUTPUT].jump) == (Fraction(1, 2),) * 2
    assert tuple(rf[OUTPUT].size) == (1, 1) and not _all(rf[OUTPUT].uniform)
    assert _box(rf.box(OUTPUT, (5, 2))) == ((2, 2), (1, 1))
    rf = rflens_field(nn.Upsample(scale_factor=2, mode="bilinear"), (1, 8, 8))
    assert tuple(rf[OUTPUT].jump) == (Fraction(1, 2),) * 2
    assert tuple(rf[OUTPUT].size) == (2, 2)
    assert _box(rf.box(OUTPUT, (3, 4))) == ((1, 2), (1, 2))  # (o + 0.5)/2 - 0.5 = 1.25, 1.75


def test_docs_aligned_and_unaligned_merges():
    class Add(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + x

    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv1d(1, 1, 3, padding=1)
            self.b = nn.Conv1d(1, 1, 4, padding="same")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.a(x), self.b(x)], dim=1)

    add = rflens_field(Add(), (1, 16))
    assert _all(add[OUTPUT].aligned) and _numbers(add, OUTPUT) == ((3,), (1,), (1,))
    cat = rflens_field(Cat(), (1, 16))
    assert not _all(cat[OUTPUT].aligned)
    assert _box(cat.box(OUTPUT, (5,))) == ((4, 7),)  # union of [4, 6] and [4, 7]


def test_docs_global_and_adaptive_pooling():
    rf = rflens_field(nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1)), (1, 12, 12))
    assert _all(rf[OUTPUT].is_global)
    assert not _all(rf["0"].is_global)
    rf = rflens_field(nn.AdaptiveAvgPool1d(4), (1, 10))
    assert not _all(rf[OUTPUT].is_global)
    assert [_box(rf.box(OUTPUT, (i,))) for i in range(4)] == [((0, 2),), ((2, 4),), ((5, 7),),
                                                              ((7, 9),)]


# ----------------------------------------------------------------------------------------------
# 2b. minimal disagreements found by the property tests (hand-checked; rflens was wrong)
# ----------------------------------------------------------------------------------------------

def _compare(model: nn.Module, shape: Sequence[int], unit: Unit, expected: Hull | None,
             layer: str = OUTPUT) -> None:
    """Oracle and rflens' clipped box must both equal the hand-derived hull."""
    assert GradientOracle(model, shape).hull(layer, unit) == expected  # the oracle, by hand
    rf = rflens_field(model, shape)
    clipped = rf.box(layer, unit, clip=True)
    assert (None if clipped is None else _box(clipped)) == expected


@pytest.mark.parametrize("unit, expected", [((1,), ((1, 1),)), ((5,), ((3, 3),))])
def test_regression_dilated_transposed_conv_at_border(unit: Unit, expected: Hull) -> None:
    # output o reads input i with o = i + 2j, j in {0, 1}: unit 1 reads {1, -1}, unit 5 {5, 3};
    # the hole between the taps is not read, so the clipped hull is one pixel
    _compare(nn.ConvTranspose1d(1, 1, 2, dilation=2), (1, 5), unit, expected)


@pytest.mark.parametrize("unit, expected", [((0, 1), ((0, 1), (0, 1))), ((0, 9), ((0, 1), (2, 4)))])
def test_regression_bicubic_after_padding(unit: Unit, expected: Hull) -> None:
    # width 5 padded to 7 (columns 0 and 6 are zeros), bicubic x2 -> 14. Unit 9: source
    # 9.5/2 - 0.5 = 4.25, taps 3..6 = pixels 2..5, pixel 5 is padding -> {2, 3, 4}; all four cubic
    # weights at t = 0.25 are non-zero. Unit 1: taps -1..2 clamped to 0..2 -> pixels {0, 1}.
    model = nn.Sequential(nn.ConstantPad2d((1, 1, 0, 0), 0.0), nn.Upsample(scale_factor=2, mode="bicubic"))
    _compare(model, (1, 5, 5), unit, expected)


class _ShiftedSum(nn.Module):
    """``F.pad(x, (1, 0, 1, 0)) + F.pad(x, (0, 1, 0, 1))``: two branches shifted by one pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (1, 0, 1, 0)) + F.pad(x, (0, 1, 0, 1))


@pytest.mark.parametrize("unit, expected", [((0, 5), None), ((0, 1), ((0, 0), (1, 1)))])
def test_regression_branch_in_padding_on_one_axis(unit: Unit, expected: Hull | None) -> None:
    # unit (0, 5): row 0 of the first branch and column 5 of the second are padding, so it depends
    # on no pixel; unit (0, 1): only the second branch is real there (pixel (0, 1)). Per-axis
    # unions over branches must drop a branch that is empty on *any* axis.
    _compare(_ShiftedSum(), (1, 5, 5), unit, expected)


class _MixedJumpSum(nn.Module):
    """``up3(x) + F.pad(x, (0, 14))``: an unaligned merge of jumps 1/3 and 1."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=3.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x) + F.pad(x, (0, 14))


def test_regression_unclipped_box_after_mixed_jump_merge() -> None:
    # merge unit u sees [u // 3, u] (union of both paths); the conv's last unit 20 reads merge units
    # 19..21 -> unclipped [6, 21]; its only real pixel is 6 (the pad branch is zeros there)
    model = nn.Sequential(_MixedJumpSum(), nn.Conv1d(1, 1, 3, padding=1))
    _compare(model, (1, 7), (20,), ((6, 6),))
    raw = _box(rflens_field(model, (1, 7)).box(OUTPUT, (20,)))
    assert raw == ((6, 21),)


def test_regression_empty_units_do_not_widen_unclipped_boxes() -> None:
    # the transposed conv (k=1, s=2) leaves odd units empty; the stride-3 conv keeps units 0, 3, 6..
    # of it, so its odd units are empty too; the final 2-wide conv unit v reads one real unit and
    # one empty unit: its field is the single pixel 3v/2 (v even) or 3(v+1)/2 (v odd), size 1
    model = nn.Sequential(nn.ConvTranspose1d(1, 1, 1, stride=2), nn.Conv1d(1, 1, 1, stride=3),
                          nn.Conv1d(1, 1, 2))
    expected = [((3 * (v + v % 2) // 2,) * 2,) for v in range(6)]
    oracle = GradientOracle(model, (1, 12))
    assert oracle.hulls("2", [(v,) for v in range(6)]) == expected
    rf = rflens_field(model, (1, 12))
    assert [_box(rf.box("2", (v,), clip=True)) for v in range(6)] == expected
    assert [_box(rf.box("2", (v,))) for v in range(6)] == expected
    assert tuple(rf["2"].size) == (1,)


def test_regression_empty_units_under_a_dilated_conv() -> None:
    # same cause, one layer less: the dilated conv unit v reads units v and v + 3 of the transposed
    # conv, one of which is empty (odd): the field is the single pixel of the even one
    model = nn.Sequential(nn.ConvTranspose1d(1, 1, 1, stride=2), nn.Conv1d(1, 1, 2, dilation=3))
    expected = [(((v + 3 * (v % 2)) // 2,) * 2,) for v in range(12)]
    assert GradientOracle(model, (1, 8)).hulls(OUTPUT, [(v,) for v in range(12)]) == expected
    rf = rflens_field(model, (1, 8))
    assert [_box(rf.box(OUTPUT, (v,))) for v in range(12)] == expected


@pytest.mark.parametrize("pool", [nn.AvgPool1d(6), nn.AdaptiveAvgPool1d(1)], ids=["avg", "adaptive"])
def test_regression_padding_after_a_pool_to_one_unit(pool: nn.Module) -> None:
    # the pool leaves one unit seeing all 6 pixels; padding (2, 2) makes 5 units of which only
    # unit 2 is real: every unit must be addressable and the padded ones see nothing
    model = nn.Sequential(pool, nn.ConstantPad1d((2, 2), 0.0))
    expected = [None, None, ((0, 5),), None, None]
    assert GradientOracle(model, (1, 6)).hulls(OUTPUT, [(u,) for u in range(5)]) == expected
    rf = rflens_field(model, (1, 6))
    assert tuple(rf[OUTPUT].shape) == (1, 1, 5)
    assert [_box(rf.box(OUTPUT, (u,), clip=True)) for u in range(5)] == expected


class _NonMonotoneSum(nn.Module):
    """Even units 2k see pixels [k, k+1] (transposed-conv branch), odd units 2k+1 see [k, k]."""

    def __init__(self) -> None:
        super().__init__()
        self.convt = nn.ConvTranspose1d(1, 1, 2, stride=2, padding=2, dilation=2)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.convt(x)  # o = 2i - 2 + 2j: even o reads {o/2, o/2 + 1}, odd o reads nothing
        return t + self.up(x)[..., : t.shape[-1]]


def test_regression_window_over_a_non_monotone_merge() -> None:
    # a merge's per-unit intervals need not be monotone (hi(2k) = k+1 > hi(2k+1) = k); a window
    # over units 2k, 2k+1 sees [k, k+1], not [lo(2k), hi(2k+1)] = [k, k]
    model = nn.Sequential(_NonMonotoneSum(), nn.MaxPool1d(2))
    expected = [((j, j + 1),) for j in range(6)]
    assert GradientOracle(model, (1, 8)).hulls(OUTPUT, [(j,) for j in range(6)]) == expected
    rf = rflens_field(model, (1, 8))
    assert [_box(rf.box(OUTPUT, (j,), clip=True)) for j in range(6)] == expected
    assert [_box(rf.box(OUTPUT, (j,))) for j in range(6)] == expected  # interior units: no padding


def _transposed_reads(o: int, kernel: int, stride: int, dilation: int, n: int | None) -> list[int]:
    """Input units read by transposed-conv output ``o`` (docs: ``o = i*s + j*d``, no padding);
    ``n``: keep only real units ``0 <= i < n`` (None: keep all, the unclipped field)."""
    hits = [(o - j * dilation) // stride for j in range(kernel) if (o - j * dilation) % stride == 0]
    return [i for i in hits if n is None or 0 <= i < n]


def _hull_1d(values: list[int]) -> Hull | None:
    return ((min(values), max(values)),) if values else None


def test_regression_window_over_a_dilated_transposed_conv() -> None:
    # k=3, s=3, d=2: output o reads i = o/3 (o = 0 mod 3), (o-2)/3 (o = 2) or (o-4)/3 (o = 1):
    # o -> 0, -1, 0, 1, 0, 1, 2, 1, 2, ... is not monotone; pool unit u reads o = 2u, 2u + 1
    model = nn.Sequential(nn.ConvTranspose1d(1, 1, 3, stride=3, dilation=2), nn.AvgPool1d(2, 2))
    n, units = 8, range(13)
    reads = [[i for o in (2 * u, 2 * u + 1) for i in _transposed_reads(o, 3, 3, 2, n)] for u in units]
    geometric = [[i for o in (2 * u, 2 * u + 1) for i in _transposed_reads(o, 3, 3, 2, None)]
                 for u in units]
    expected = [_hull_1d(r) for r in reads]
    assert GradientOracle(model, (1, n)).hulls(OUTPUT, [(u,) for u in units]) == expected
    rf = rflens_field(model, (1, n))
    assert [_box(rf.box(OUTPUT, (u,), clip=True)) for u in units] == expected
    assert [_box(rf.box(OUTPUT, (u,))) for u in units] == [_hull_1d(g) for g in geometric]


class _OneUnitUpsampleSum(nn.Module):
    """``F.pad(up(conv5(x)), (2, 2)) + x`` on 5 pixels: ``up`` maps 1 unit to 1 unit with
    ``align_corners=True`` (PyTorch's source scale is then 0, a jump of 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 5)
        self.up = nn.Upsample(size=(1,), mode="linear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(self.up(self.conv(x)), (2, 2)) + x


def test_regression_one_unit_align_corners_upsample_then_pad_and_merge() -> None:
    # unit 2 sees pixels 0..4 through the conv branch (and pixel 2 through x); the others see
    # only their own pixel
    expected = [((0, 0),), ((1, 1),), ((0, 4),), ((3, 3),), ((4, 4),)]
    model = _OneUnitUpsampleSum()
    assert GradientOracle(model, (1, 5)).hulls(OUTPUT, [(u,) for u in range(5)]) == expected
    rf = rflens_field(model, (1, 5))
    assert [_box(rf.box(OUTPUT, (u,), clip=True)) for u in range(5)] == expected


class _DiagonalSum(nn.Module):
    """Sum of ``n`` copies of x shifted by (k, k), k = 0..n-1: the union of ``n`` boxes that is
    far from a product of per-axis intervals."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.n
        return sum(F.pad(x, (k, n - 1 - k, k, n - 1 - k)) for k in range(n))


def test_regression_many_components_stay_exact() -> None:
    # unit (0, c) of 17 diagonal copies: only copy k = 0 is real in row 0, so it sees pixel (0, c)
    # for c < 4 (the per-axis union over all copies would give columns 0..c)
    model, shape = _DiagonalSum(17), (1, 4, 4)
    expected = [((0, 0), (c, c)) for c in range(4)] + [None] * 16
    units = [(0, c) for c in range(20)]
    assert GradientOracle(model, shape).hulls(OUTPUT, units) == expected
    rf = rflens_field(model, shape)
    assert [_box(rf.box(OUTPUT, u, clip=True)) for u in units] == expected


# ----------------------------------------------------------------------------------------------
# 3. random architectures
# ----------------------------------------------------------------------------------------------

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
PAD = {1: nn.ZeroPad1d, 2: nn.ZeroPad2d, 3: nn.ZeroPad3d}
LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


@dataclass(frozen=True)
class Bound:
    """Upper bounds of a node's field: size ``r``, |effective padding| ``p``, jump ``j``.

    Used only to size inputs / margins for the interior property (never compared with rflens).
    """

    r: int = 1
    p: int = 0
    j: int = 1

    def through(self, extent: int, stride: int = 1, pad: int = 0) -> "Bound":
        return Bound(self.r + (extent - 1) * self.j, self.p + pad * self.j, self.j * stride)

    def join(self, other: "Bound") -> "Bound":
        return Bound(max(self.r, other.r), max(self.p, other.p), max(self.j, other.j))

    @property
    def margin(self) -> int:
        return 2 * self.r + self.p + 2 * self.j + 2


class GraphNet(nn.Module):
    """A model that replays recorded steps: modules, adds, channel concats and ``F.pad``."""

    def __init__(self, steps: list[tuple], modules: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [x]
        for kind, arg, sources in self.steps:
            inputs = [values[s] for s in sources]
            if kind == "module":
                values.append(getattr(self, arg)(inputs[0]))
            elif kind == "add":
                values.append(inputs[0] + inputs[1])
            elif kind == "cat":
                values.append(torch.cat(inputs, dim=1))
            elif kind == "pad":
                values.append(F.pad(inputs[0], arg))
            else:
                raise ValueError(kind)
        return values[-1]


@dataclass
class Net:
    model: nn.Module
    input_shape: tuple[int, ...]
    layers: list[str]
    code: list[str]
    bound: Bound

    def repro(self) -> str:
        return "\n".join(self.code)


@dataclass
class NetBuilder:
    """Builds a random GraphNet node by node, tracking shapes (by running) and field bounds."""

    dims: int
    input_shape: tuple[int, ...]
    cap: int
    interior: bool = False  # keep paths away from padding: stride-1 branches, bounded growth
    budget: int = 10 ** 9
    steps: list[tuple] = field(default_factory=list)
    modules: dict[str, nn.Module] = field(default_factory=dict)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    bounds: list[Bound] = field(default_factory=list)
    code: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shapes.append(tuple(self.input_shape))
        self.bounds.append(Bound())
        self.code.append(f"x0 = torch.rand(1, {', '.join(map(str, self.input_shape))})")

    def spatial(self, node: int) -> tuple[int, ...]:
        return self.shapes[node][1:]

    def channels(self, node: int) -> int:
        return self.shapes[node][0]

    def fits(self, bound: Bound) -> bool:
        return bound.margin <= self.budget

    def _run(self, fn: Callable[[torch.Tensor], torch.Tensor], node: int) -> tuple[int, ...]:
        with torch.no_grad():
            return tuple(fn(torch.zeros(1, *self.shapes[node])).shape[1:])

    def _push(self, step: tuple, shape: tuple[int, ...], bound: Bound, line: str) -> int:
        assert all(n >= 1 for n in shape), (shape, line)
        self.steps.append(step)
        self.shapes.append(shape)
        self.bounds.append(bound)
        self.code.append(f"x{len(self.shapes) - 1} = {line}")
        return len(self.shapes) - 1

    def module(self, src: int, module: nn.Module, tag: str, bound: Bound) -> int:
        name = f"{tag}{len(self.steps) + 1}"
        self.modules[name] = module
        shape = self._run(module, src)
        return self._push(("module", name, (src,)), shape, bound,
                          f"self.{name}(x{src})  # {_describe(module)}")

    def add(self, a: int, b: int) -> int:
        shape = self.shapes[a]
        assert shape == self.shapes[b]
        return self._push(("add", None, (a, b)), shape, self.bounds[a].join(self.bounds[b]),
                          f"x{a} + x{b}")

    def cat(self, a: int, b: int) -> int:
        assert self.spatial(a) == self.spatial(b)
        shape = (self.channels(a) + self.channels(b),) + self.spatial(a)
        return self._push(("cat", None, (a, b)), shape, self.bounds[a].join(self.bounds[b]),
                          f"torch.cat([x{a}, x{b}], dim=1)")

    def fpad(self, src: int, pairs: Sequence[tuple[int, int]]) -> int:
        """``F.pad`` with per-axis (left, right) amounts (negative crops)."""
        flat = tuple(v for pair in reversed(pairs) for v in pair)
        shape = self._run(lambda t: F.pad(t, flat), src)
        pad = max(abs(left) for left, _ in pairs)
        bound = self.bounds[src].through(1, 1, pad)
        return self._push(("pad", flat, (src,)), shape, bound, f"F.pad(x{src}, {flat})")

    def build(self) -> Net:
        model = GraphNet(self.steps, self.modules)
        return Net(model, tuple(self.input_shape), list(self.modules), self.code,
                   self.bounds[-1])


def _describe(module: nn.Module) -> str:
    """Constructor-like text of a module (``nn.Upsample``'s repr omits ``align_corners``)."""
    if isinstance(module, nn.Upsample):
        return (f"Upsample(size={module.size}, scale_factor={module.scale_factor}, "
                f"mode={module.mode!r}, align_corners={module.align_corners})")
    return repr(module)


# --- drawing single ops -------------------------------------------------------------------------

def _axes(data: st.DataObject, dims: int, lo: int, hi: int) -> list[int]:
    return list(data.draw(st.tuples(*[st.integers(lo, hi)] * dims)))


def draw_conv(data: st.DataObject, b: NetBuilder, src: int, *, out_channels: int | None = None,
              stride_one: bool = False, keep_size: bool = False) -> int:
    """Conv with per-axis kernel 1..5, stride 1..3, dilation 1..3, integer or 'same' padding."""
    dims, sizes = b.dims, b.spatial(src)
    kernel, dilation = _axes(data, dims, 1, 5), _axes(data, dims, 1, 3)
    same = keep_size or data.draw(st.booleans())
    stride = [1] * dims if (same or stride_one) else _axes(data, dims, 1, 3)
    if keep_size and data.draw(st.booleans()):  # symmetric 'same' written as an integer padding
        kernel = [k | 1 for k in kernel]
        padding: str | list[int] = [d * (k - 1) // 2 for k, d in zip(kernel, dilation)]
    elif same:
        padding = "same"
    else:
        padding = _axes(data, dims, 0, 3)
        for a in range(dims):
            if sizes[a] + 2 * padding[a] < dilation[a] * (kernel[a] - 1) + 1:
                dilation[a] = 1
                kernel[a] = min(kernel[a], sizes[a] + 2 * padding[a])
    bound = _window_bound(b.bounds[src], kernel, stride, dilation,
                          [d * (k - 1) for k, d in zip(kernel, dilation)] if padding == "same"
                          else padding)
    if not b.fits(bound):
        kernel, stride, dilation = [1] * dims, [1] * dims, [1] * dims
        padding = [0] * dims if padding != "same" else padding
        bound = _window_bound(b.bounds[src], kernel, stride, dilation, [0] * dims)
    cout = out_channels or data.draw(st.integers(1, 3))
    module = CONV[dims](b.channels(src), cout, tuple(kernel), stride=tuple(stride),
                        padding=padding if padding == "same" else tuple(padding),
                        dilation=tuple(dilation))
    return b.module(src, module, "conv", bound)


def _window_bound(bound: Bound, kernel: Sequence[int], stride: Sequence[int],
                  dilation: Sequence[int], padding: Sequence[int]) -> Bound:
    extent = max(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    return bound.through(extent, max(stride), max(padding))


def draw_pool(data: st.DataObject, b: NetBuilder, src: int, *, stride_one: bool = False) -> int:
    """Max pool (dilation 1..2) or avg pool (count_include_pad either way), with ceil_mode."""
    dims, sizes = b.dims, b.spatial(src)
    is_max = data.draw(st.sampled_from(["max", "avg"])) == "max"
    kernel = _axes(data, dims, 1, 4)
    stride = [1] * dims if stride_one else _axes(data, dims, 1, 3)
    dilation = _axes(data, dims, 1, 2) if is_max else [1] * dims
    padding = [data.draw(st.integers(0, k // 2)) for k in kernel]
    ceil_mode = data.draw(st.booleans())
    for a in range(dims):
        # avg_pool3d (CPU) wants the kernel to fit the unpadded input
        room = sizes[a] if (dims == 3 and not is_max) else sizes[a] + 2 * padding[a]
        if room < dilation[a] * (kernel[a] - 1) + 1:
            dilation[a], kernel[a] = 1, min(kernel[a], sizes[a])
            padding[a] = min(padding[a], kernel[a] // 2)
    bound = _window_bound(b.bounds[src], kernel, stride, dilation, padding)
    if not b.fits(bound):
        kernel, stride, dilation, padding = [1] * dims, [1] * dims, [1] * dims, [0] * dims
        bound = b.bounds[src]
    if is_max:
        module = MAX_POOL[dims](tuple(kernel), tuple(stride), tuple(padding), tuple(dilation),
                                ceil_mode=ceil_mode)
    else:
        module = AVG_POOL[dims](tuple(kernel), tuple(stride), tuple(padding), ceil_mode=ceil_mode,
                                count_include_pad=data.draw(st.booleans()))
    return b.module(src, module, "pool", bound)


def draw_conv_transpose(data: st.DataObject, b: NetBuilder, src: int) -> int:
    """Transposed conv: kernel 1..4, stride 1..3, dilation 1..2, padding, output_padding."""
    dims, sizes = b.dims, b.spatial(src)
    kernel, stride, dilation = _axes(data, dims, 1, 4), _axes(data, dims, 1, 3), _axes(data, dims, 1, 2)
    padding, out_pad = [], []
    for a in range(dims):
        extent = dilation[a] * (kernel[a] - 1)
        p = data.draw(st.integers(0, extent))
        op = data.draw(st.integers(0, max(stride[a], dilation[a]) - 1))
        out = (sizes[a] - 1) * stride[a] - 2 * p + extent + op + 1
        if out > b.cap:
            stride[a], op = 1, 0
            out = sizes[a] - 2 * p + extent + 1
        if out < 1:
            p = 0
        padding.append(p)
        out_pad.append(op)
    extent = max(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    bound = b.bounds[src].through(extent + 1, 1, extent)
    if not b.fits(bound):
        kernel, stride, dilation = [1] * dims, [1] * dims, [1] * dims
        padding, out_pad = [0] * dims, [0] * dims
        bound = b.bounds[src]
    module = CONV_T[dims](b.channels(src), data.draw(st.integers(1, 3)), tuple(kernel),
                          stride=tuple(stride), padding=tuple(padding),
                          output_padding=tuple(out_pad), dilation=tuple(dilation))
    return b.module(src, module, "convt", bound)


def draw_upsample(data: st.DataObject, b: NetBuilder, src: int) -> int:
    """Nearest (integer scales 1..3), linear family (x2/x4, or align_corners with ratio 1/2, 1/4)
    and bicubic x2 (2-D). Only binary-exact ratios (see module docstring)."""
    dims, sizes = b.dims, b.spatial(src)
    modes = ["nearest", "linear", "linear_corners"] + (["bicubic"] if dims == 2 else [])
    mode = data.draw(st.sampled_from(modes))
    bound = b.bounds[src].through({"nearest": 1, "bicubic": 4}.get(mode, 2), 1, 2)
    if mode == "nearest":
        scale = [float(s) if n * s <= b.cap else 1.0 for s, n in zip(_axes(data, dims, 1, 3), sizes)]
        module = nn.Upsample(scale_factor=tuple(scale), mode="nearest")
    elif mode == "linear_corners":
        factors = [f if (n - 1) * f + 1 <= b.cap else 1
                   for f, n in zip(data.draw(st.tuples(*[st.sampled_from([2, 4])] * dims)), sizes)]
        module = nn.Upsample(size=tuple((n - 1) * f + 1 for n, f in zip(sizes, factors)),
                             mode=LINEAR_MODE[dims], align_corners=True)
    else:
        choices = [2] if mode == "bicubic" else [2, 4]
        factors = data.draw(st.tuples(*[st.sampled_from(choices)] * dims))
        if any(n * f > b.cap for n, f in zip(sizes, factors)):
            module = nn.Upsample(scale_factor=1.0, mode="nearest")
        else:
            module = nn.Upsample(scale_factor=tuple(float(f) for f in factors),
                                 mode="bicubic" if mode == "bicubic" else LINEAR_MODE[dims],
                                 align_corners=False)
    return b.module(src, module, "up", bound)


def draw_pad(data: st.DataObject, b: NetBuilder, src: int, *, crop: bool = False) -> int:
    """Asymmetric constant padding (module or ``F.pad``); with ``crop`` amounts may be negative."""
    sizes = b.spatial(src)
    pairs = []
    low = -3 if crop else 0
    for n in sizes:
        left, right = data.draw(st.integers(low, 3)), data.draw(st.integers(low, 3))
        while n + min(left, 0) + min(right, 0) < 1:  # the crop alone must leave a pixel
            left, right = min(left + 1, 0) if left < 0 else left, min(right + 1, 0) if right < 0 else right
        pairs.append((left, right))
    if crop or data.draw(st.booleans()):
        return b.fpad(src, pairs)
    flat = tuple(v for pair in reversed(pairs) for v in pair)
    bound = b.bounds[src].through(1, 1, max(left for left, _ in pairs))
    return b.module(src, PAD[b.dims](flat), "pad", bound)


def draw_local_op(data: st.DataObject, b: NetBuilder, src: int, *, resample: bool, crop: bool,
                  stride_one: bool = False) -> int:
    kinds = ["conv", "conv", "pool", "pool", "pad"] + (["convt", "up"] if resample else []) + (
        ["crop"] if crop else [])
    kind = data.draw(st.sampled_from(kinds))
    if kind == "conv":
        return draw_conv(data, b, src, stride_one=stride_one)
    if kind == "pool":
        return draw_pool(data, b, src, stride_one=stride_one)
    if kind == "pad":
        return draw_pad(data, b, src)
    if kind == "crop":
        return draw_pad(data, b, src, crop=True)
    if kind == "convt":
        return draw_conv_transpose(data, b, src)
    return draw_upsample(data, b, src)


# --- drawing blocks ---------------------------------------------------------------------------------

def draw_residual(data: st.DataObject, b: NetBuilder, src: int) -> int:
    """x + f(x) with f one or two size-keeping convs (aligned branches)."""
    node = src
    for _ in range(data.draw(st.integers(1, 2))):
        node = draw_conv(data, b, node, out_channels=b.channels(src), keep_size=True)
    return b.add(src, node)


def draw_two_branches(data: st.DataObject, b: NetBuilder, src: int, *, resample: bool,
                      crop: bool, stride_one: bool) -> int:
    """Two branches from ``src`` (possibly not aligned), padded to one size, then add or cat."""
    ends = []
    for count in (data.draw(st.integers(1, 2)), data.draw(st.integers(0, 2))):
        node = src
        for _ in range(count):
            node = draw_local_op(data, b, node, resample=resample, crop=crop, stride_one=stride_one)
        ends.append(node)
    a, c = ends
    target = [max(x, y) for x, y in zip(b.spatial(a), b.spatial(c))]
    for i, end in enumerate(ends):
        if b.spatial(end) != tuple(target):
            pairs = []
            for n, t in zip(b.spatial(end), target):
                left = data.draw(st.integers(0, t - n))
                pairs.append((left, t - n - left))
            ends[i] = b.fpad(end, pairs)
    a, c = ends
    if data.draw(st.sampled_from(["cat", "add"])) == "cat":
        return b.cat(a, c)
    if b.channels(a) != b.channels(c):
        c = draw_conv(data, b, c, out_channels=b.channels(a), keep_size=True)
    return b.add(a, c)


@dataclass(frozen=True)
class Family:
    """What a generated network may contain and how big its input is."""

    dims: int
    size: tuple[int, int]  # input side range (clipped property) or fixed side (interior)
    cap: int  # largest spatial side any feature map may reach
    max_steps: int = 4
    resample: bool = True
    dag: bool = True
    crop: bool = False
    interior: bool = False


def draw_net(data: st.DataObject, family: Family) -> Net:
    dims = family.dims
    if family.interior:
        sizes = (family.size[0],) * dims
    else:
        sizes = tuple(data.draw(st.tuples(*[st.integers(*family.size)] * dims)))
    channels = data.draw(st.integers(1, 2))
    budget = (family.size[0] - 8) // 3 if family.interior else 10 ** 9
    b = NetBuilder(dims, (channels, *sizes), family.cap, family.interior, budget)
    node = 0
    kinds = ["op", "residual", "branches", "branches"] if family.dag else ["op"]
    for _ in range(data.draw(st.integers(2 if family.dag else 1, family.max_steps))):
        kind = data.draw(st.sampled_from(kinds))
        if kind == "op":
            node = draw_local_op(data, b, node, resample=family.resample, crop=family.crop)
        elif kind == "residual":
            node = draw_residual(data, b, node)
        else:
            node = draw_two_branches(data, b, node, resample=family.resample and not family.interior,
                                     crop=family.crop, stride_one=family.interior)
    if not b.steps or b.steps[-1][0] != "module":  # end on a module so "output" ≠ an input alias
        node = draw_conv(data, b, node)
    return b.build()


# --- comparing -------------------------------------------------------------------------------------

def _pick_layers(net: Net, rng: random.Random, count: int) -> list[str]:
    layers = [OUTPUT] + rng.sample(net.layers, min(count - 1, len(net.layers)))
    return layers


def _fail(net: Net, layer: str, lines: list[str]) -> None:
    head = "\n".join(lines[:8])
    more = f"\n... and {len(lines) - 8} more" if len(lines) > 8 else ""
    pytest.fail(f"rflens disagrees with the oracle at layer {layer!r}:\n{head}{more}\n"
                f"model (input {net.input_shape}):\n{net.repro()}", pytrace=False)


@contextlib.contextmanager
def _repro_on_error(net: Net) -> Iterator[None]:
    """Any exception (from rflens or the harness) gets the generated network appended."""
    try:
        yield
    except Exception as exc:  # pytest.fail raises Failed (a BaseException): not caught here
        raise AssertionError(f"{type(exc).__name__}: {exc}\nmodel (input {net.input_shape}):\n"
                             f"{net.repro()}") from exc


def check_clipped(net: Net, seed: int, units_per_layer: int = 40, layers: int = 3) -> None:
    """Strong property: ``rf.box(clip=True)`` equals the oracle hull for every unit (None when the
    unit sees no real pixel), and lies inside the unclipped box."""
    with _repro_on_error(net):
        _check_clipped(net, seed, units_per_layer, layers)


def _check_clipped(net: Net, seed: int, units_per_layer: int, layers: int) -> None:
    rf = rflens_field(net.model, net.input_shape)
    oracle = GradientOracle(net.model, net.input_shape, seed=seed)
    rng = random.Random(seed)
    ordered = [name for name in rf.names if name in set(net.layers)]
    assert ordered == net.layers and OUTPUT in rf.names, (rf.names, net.repro())
    for layer in _pick_layers(net, rng, layers):
        shape = oracle.output_shape(layer)
        assert tuple(rf[layer].shape) == shape, (layer, net.repro())
        units = sample_units(shape[2:], rng, units_per_layer)
        bad = []
        for unit, hull in zip(units, oracle.hulls(layer, units)):
            raw = _box(rf.box(layer, unit, clip=False))
            got = _box(rf.box(layer, unit, clip=True))
            if got != hull:
                bad.append(f"unit {unit}: oracle {hull}, rflens clip=True {got} (unclipped {raw})")
            elif got is not None and not _contains(raw, got):
                bad.append(f"unit {unit}: clipped box {got} not inside unclipped box {raw}")
        if bad:
            _fail(net, layer, bad)


def check_interior(net: Net, seed: int, candidates: int = 12, layers: int = 3) -> int:
    """Unclipped rflens boxes equal oracle hulls on units whose paths never touch padding.

    Also checks ``size`` (all units, uniform layers) and ``jump`` against the hulls. Returns how
    many units were compared.
    """
    with _repro_on_error(net):
        return _check_interior(net, seed, candidates, layers)


def _check_interior(net: Net, seed: int, candidates: int, layers: int) -> int:
    rf = rflens_field(net.model, net.input_shape)
    oracle = GradientOracle(net.model, net.input_shape, seed=seed)
    rng = random.Random(seed)
    margin = net.bound.margin
    compared = 0
    for layer in _pick_layers(net, rng, layers):
        shape = oracle.output_shape(layer)[2:]
        pool = sorted({tuple(rng.randrange(n * 3 // 8, max(n * 5 // 8, n * 3 // 8 + 1)) for n in shape)
                       for _ in range(candidates)})
        pool += [tuple(u + 1 for u in unit) for unit in pool if all(u + 1 < n for u, n in zip(unit, shape))]
        found = dict(interior_units(oracle, layer, margin, pool))
        bad = []
        for unit, hull in found.items():
            got = _box(rf.box(layer, unit, clip=False))
            if got != hull:
                bad.append(f"unit {unit}: oracle {hull}, rflens unclipped {got}")
        layer_field = rf[layer]
        if _all(layer_field.uniform):
            for unit, hull in found.items():
                widths = tuple(hi - lo + 1 for lo, hi in hull)
                if widths != tuple(layer_field.size):
                    bad.append(f"unit {unit}: oracle width {widths}, rflens size {layer_field.size}")
                nxt = tuple(u + 1 for u in unit)
                if nxt in found:
                    step = tuple(b[0] - a[0] for a, b in zip(hull, found[nxt]))
                    if step != tuple(layer_field.jump):
                        bad.append(f"units {unit}->{nxt}: oracle shift {step}, rflens jump "
                                   f"{layer_field.jump}")
        if bad:
            _fail(net, layer, bad)
        compared += len(found)
    return compared


# --- the properties ------------------------------------------------------------------------------

CLIPPED = {
    "chain1d": Family(1, (6, 40), 160, max_steps=5, dag=False),
    "chain2d": Family(2, (5, 20), 64, max_steps=4, dag=False),
    "dag1d": Family(1, (6, 40), 160, max_steps=4),
    "dag2d": Family(2, (5, 18), 48, max_steps=3),
    "chain3d": Family(3, (4, 9), 18, max_steps=3, dag=False),
    "dag3d": Family(3, (4, 9), 18, max_steps=3),
    "crop2d": Family(2, (5, 18), 48, max_steps=3, crop=True),
}

INTERIOR = {
    "chain1d": Family(1, (400, 400), 1600, max_steps=5, dag=False, interior=True),
    "dag1d": Family(1, (400, 400), 1600, max_steps=4, interior=True),
    "dag2d": Family(2, (96, 96), 200, max_steps=3, interior=True),
    "dag3d": Family(3, (36, 36), 60, max_steps=2, interior=True),  # few examples: see below
}

# Shrinking a failing network can take Hypothesis minutes (each example runs rflens and the
# oracle); the failure message already prints the network as code. RFLENS_SHRINK=1 turns it on.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target] + (
    [Phase.shrink] if os.environ.get("RFLENS_SHRINK") == "1" else [])
_SETTINGS = dict(deadline=None, report_multiple_bugs=False, phases=_PHASES,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _require_engine() -> None:
    _rflens()


@pytest.mark.parametrize("family", list(CLIPPED), ids=list(CLIPPED))
@settings(max_examples=40, **_SETTINGS)
@given(data=st.data())
def test_clipped_boxes_match_oracle(family: str, data: st.DataObject) -> None:
    _require_engine()
    net = draw_net(data, CLIPPED[family])
    check_clipped(net, seed=data.draw(st.integers(0, 2 ** 16), label="seed"))


@pytest.mark.parametrize("family", [f for f in INTERIOR if f != "dag3d"])
@settings(max_examples=20, **_SETTINGS)
@given(data=st.data())
def test_interior_boxes_match_oracle(family: str, data: st.DataObject) -> None:
    _require_engine()
    net = draw_net(data, INTERIOR[family])
    compared = check_interior(net, seed=data.draw(st.integers(0, 2 ** 16), label="seed"))
    assume(compared > 0)


@settings(max_examples=8, **_SETTINGS)
@given(data=st.data())
def test_interior_boxes_match_oracle_3d(data: st.DataObject) -> None:
    """3-D inputs big enough for an interior are costly for the oracle: few units, few examples."""
    _require_engine()
    net = draw_net(data, INTERIOR["dag3d"])
    compared = check_interior(net, seed=data.draw(st.integers(0, 2 ** 16), label="seed"),
                              candidates=3, layers=2)
    assume(compared > 0)
