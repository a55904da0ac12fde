"""The TRF engine against hand-derived values from docs/receptive-fields.md and published tables."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import rflens
from rflens.errors import RflensError, UnsupportedOpError


def chain(*layers) -> nn.Sequential:
    return nn.Sequential(*layers)


def closed_form(layers):
    """R = 1 + Σ (k'_l - 1) Π_{m<l} s_m,  J = Π s,  P = Σ p_l Π_{m<l} s_m (the docs' closed form)."""
    r, j, p = 1, 1, 0
    for k, s, pad, d in layers:
        r += (d * (k - 1) + 1 - 1) * j
        p += pad * j
        j *= s
    return r, j, p


# --- the docs' worked examples ------------------------------------------------------------------

def test_two_and_three_3x3_convs():
    rf = rflens.receptive_field(chain(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)),
                                (1, 32, 32))
    assert rf["1"].size == (5, 5)
    assert rf["2"].size == (7, 7)
    assert rf["2"].jump == (1, 1) and rf["2"].padding == (0, 0)


def test_stride2_then_2x2_sees_union_0_to_4():
    rf = rflens.receptive_field(chain(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 2)), (1, 15, 15))
    assert rf["1"].size == (5, 5)
    assert rf.box("0", (0, 0)) == ((0, 2), (0, 2))
    assert rf.box("0", (0, 1)) == ((0, 2), (2, 4))
    assert rf.box("1", (0, 0)) == ((0, 4), (0, 4))


@pytest.mark.parametrize("spec", [
    [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 2, 2), (2, 2, 0, 1)],
    [(7, 2, 3, 1), (3, 2, 1, 1), (3, 1, 1, 1), (3, 1, 2, 2), (3, 1, 4, 4)],
    [(1, 1, 0, 1), (4, 4, 0, 1), (3, 1, 0, 3)],
])
def test_closed_form_and_backward_recursion(spec):
    layers = [nn.Conv1d(1, 1, k, stride=s, padding=p, dilation=d) for k, s, p, d in spec]
    rf = rflens.receptive_field(chain(*layers), (1, 400))
    r, j, p = closed_form(spec)
    last = rf[str(len(spec) - 1)]
    assert last.size == (r,) and last.jump == (j,) and last.padding == (p,)
    back = 1  # r_i = (r_{i+1} - 1) * s_i + k'_i, run from the deepest layer
    for k, s, _, d in reversed(spec):
        back = (back - 1) * s + d * (k - 1) + 1
    assert back == r


def test_centre_and_box_formula():
    rf = rflens.receptive_field(chain(nn.Conv2d(1, 1, 7, 2, 3), nn.MaxPool2d(3, 2, 1)), (1, 64, 64))
    layer = rf["1"]
    size, jump, pad = layer.size[0], layer.jump[0], layer.padding[0]
    assert (size, jump, pad) == (11, 4, 5)
    for i in (0, 3, 15):
        assert layer.box((i, i))[0] == (i * jump - pad, i * jump - pad + size - 1)
    assert layer.center == (Fraction(-pad) + Fraction(size - 1, 2),) * 2


def test_non_square_and_asymmetric_padding():
    model = chain(nn.ZeroPad2d((2, 0, 1, 0)), nn.Conv2d(1, 1, (3, 5), stride=(1, 2)))
    rf = rflens.receptive_field(model, (1, 20, 30))
    assert rf["1"].size == (3, 5)
    assert rf["1"].jump == (1, 2)
    assert rf["1"].padding == (1, 2)  # the left/top pad moves the field, the right/bottom does not


def test_same_padding_even_kernel():
    # padding='same' with an even kernel pads (k-1)//2 on the left and the rest on the right
    rf = rflens.receptive_field(chain(nn.Conv1d(1, 1, 4, padding="same")), (1, 20))
    assert rf["0"].size == (4,) and rf["0"].padding == (1,)


def test_ceil_mode_changes_count_not_geometry():
    rf = rflens.receptive_field(chain(nn.MaxPool2d(3, 2, ceil_mode=True)), (1, 8, 8))
    assert rf["0"].shape[2:] == (4, 4)
    assert rf["0"].size == (3, 3) and rf["0"].padding == (0, 0)
    assert rf.box("0", (3, 3)) == ((6, 8), (6, 8))
    assert rf.box("0", (3, 3), clip=True) == ((6, 7), (6, 7))


# --- going up: fractions and phase-dependent fields ------------------------------------------

def test_transposed_conv_jump_is_a_fraction():
    model = chain(nn.Conv1d(1, 1, 3, stride=4, padding=1), nn.ConvTranspose1d(1, 1, 4, stride=2, padding=1))
    rf = rflens.receptive_field(model, (1, 64))
    assert rf["1"].jump == (Fraction(2),)
    up = rflens.receptive_field(chain(nn.ConvTranspose1d(1, 1, 3, stride=2)), (1, 16))
    assert up["0"].jump == (Fraction(1, 2),)
    assert not up["0"].uniform
    # output o reads input i when o = 2i + j, j in 0..2: o=2 reads i in {0, 1}, o=3 reads {1}
    assert up.box("0", 2) == ((0, 1),)
    assert up.box("0", 3) == ((1, 1),)
    assert up["0"].size == (2,)


def test_nearest_upsample_and_pixel_shuffle():
    model = chain(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Upsample(scale_factor=2, mode="nearest"))
    rf = rflens.receptive_field(model, (4, 16, 16))
    assert rf["1"].jump == (1, 1)
    assert rf.box("1", (4, 5)) == rf.box("0", (2, 2))  # unit o reads floor(o / 2)
    shuffle = rflens.receptive_field(chain(nn.PixelShuffle(2)), (4, 8, 8))
    assert shuffle["0"].jump == (Fraction(1, 2),) * 2
    assert shuffle.box("0", (5, 2)) == ((2, 2), (1, 1))


def test_bilinear_reads_two_neighbours():
    rf = rflens.receptive_field(chain(nn.Upsample(scale_factor=2, mode="bilinear")), (1, 8, 8))
    # source (o + 0.5) / 2 - 0.5: o = 3 -> 1.25 reads 1 and 2; o = 0 -> -0.25, clamped to pixel 0
    assert rf.box("0", (3, 3)) == ((1, 2), (1, 2))
    assert rf.box("0", (0, 0), clip=True) == ((0, 0), (0, 0))
    assert not rf["0"].uniform


def test_adaptive_pool_windows():
    rf = rflens.receptive_field(chain(nn.AdaptiveAvgPool1d(3)), (1, 10))
    # windows floor(i*10/3) .. ceil((i+1)*10/3) - 1 = [0,3], [3,6], [6,9]
    assert [rf.box("0", i) for i in range(3)] == [((0, 3),), ((3, 6),), ((6, 9),)]
    assert not rf["0"].is_global
    pooled = rflens.receptive_field(chain(nn.AdaptiveAvgPool1d(1)), (1, 10))
    assert pooled["0"].is_global and pooled.box("0", 0) == ((0, 9),)


# --- merges, alignment, global ------------------------------------------------------------------

class Residual(nn.Module):
    def __init__(self, pad_other: int = 1):
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=pad_other)

    def forward(self, x):
        y = self.b(x)
        if y.shape != x.shape:
            y = F.pad(y, (0, 2, 0, 2))
        return self.a(x) + y + x


def test_residual_union_is_aligned():
    rf = rflens.receptive_field(Residual(), (2, 16, 16))
    assert rf["output"].size == (3, 3) and rf["output"].aligned
    assert not rf.alignment_issues


def test_non_aligned_merge_is_reported_not_raised():
    rf = rflens.receptive_field(Residual(pad_other=0), (2, 16, 16))
    out = rf["output"]
    assert not out.aligned
    assert rf.alignment_issues
    text = rf.alignment_issues[0].describe()
    assert "non-aligned add" in text and "a:convolution" in text and "constant_pad_nd" in text
    # branch b without padding then right-padded sees [i, i+2]; branch a sees [i-1, i+1]
    assert rf.box("output", (5, 5)) == ((4, 7), (4, 7))


def test_concat_along_channels_and_width():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3, padding=1)
            self.b = nn.Conv2d(1, 1, 5, padding=2)

        def forward(self, x):
            c = torch.cat([self.a(x), self.b(x)], dim=1)
            return torch.cat([c[..., :4], c[..., 4:]], dim=3)

    rf = rflens.receptive_field(Cat(), (1, 12, 12))
    assert rf["output"].size == (5, 5) and rf["output"].aligned
    assert rf.box("output", (6, 6)) == ((4, 8), (4, 8))


def test_squeeze_excitation_is_global_but_keeps_local_field():
    model = torchvision.models.efficientnet_b0()
    rf = rflens.receptive_field(model, (3, 224, 224))
    se, dw = rf["features.1.0.block.1"], rf["features.1.0.block.0"]
    assert se.is_global and not dw.is_global
    assert se.size == dw.size
    assert rf["features.1.0.block.2"].size == dw.size


def test_group_norm_and_layer_norm_over_space_are_global():
    rf = rflens.receptive_field(chain(nn.Conv2d(4, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 1)), (4, 10, 10))
    assert rf["1"].is_global and rf["2"].is_global and rf["2"].size == (3, 3)
    rf = rflens.receptive_field(chain(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)), (4, 10, 10))
    assert not rf["1"].is_global  # eval-mode BatchNorm is pointwise


def test_vgg16_matches_published_table():
    # Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019
    rf = rflens.receptive_field(torchvision.models.vgg16(), (3, 224, 224))
    expected = {"features.4": (6, 2, 2), "features.9": (16, 4, 6), "features.16": (44, 8, 18),
                "features.23": (100, 16, 42), "features.30": (212, 32, 90)}
    for name, (size, jump, pad) in expected.items():
        layer = rf[name]
        assert (layer.size, layer.jump, layer.padding) == ((size, size), (jump, jump), (pad, pad)), name


def test_resnet_sizes_derived_by_hand():
    # torchvision ResNets put the stride on the first block's 3x3 conv. By hand: conv1 7/2 and
    # maxpool 3/2 give R=11, J=4; every 3x3 adds 2J. ResNet-18: 11 + 4*8 + 8 + 3*16 + 16 + 3*32
    # + 32 + 3*64 = 435. ResNet-50 (one 3x3 per bottleneck, 3/4/6/3 blocks): 11 + 3*8 + 8 + 3*16
    # + 16 + 5*32 + 32 + 2*64 = 427. (TF-slim's resnet_v1_50, 483 in Distill's table, strides the
    # last block of each stage instead.)
    rf18 = rflens.receptive_field(torchvision.models.resnet18(), (3, 224, 224))
    assert rf18["layer4"].size == (435, 435) and rf18["layer4"].jump == (32, 32)
    rf50 = rflens.receptive_field(torchvision.models.resnet50(), (3, 224, 224))
    assert rf50["layer4"].size == (427, 427) and rf50["layer4"].jump == (32, 32)


# --- unknown ops, strictness, the user's model -----------------------------------------------------

from nets import Flip  # noqa: E402 (shared with the plot tests)


def test_unknown_op_is_reported_never_identity():
    rf = rflens.receptive_field(Flip(), (1, 16, 16))
    assert rf["conv"].known
    assert not rf["after"].known and rf["after"].size is None
    assert any("aten.flip" in u.op for u in rf.unsupported_ops)
    assert any("flip" in w for w in rf.warnings)
    with pytest.raises(UnsupportedOpError, match="flip"):
        rflens.receptive_field(Flip(), (1, 16, 16), strict=True)


def test_model_is_not_mutated():
    model = torchvision.models.resnet18()
    model.train()
    model.layer2.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rflens.receptive_field(model, (3, 64, 64))
    assert model.training and not model.layer2.training and model.layer3.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    from torch.nn.modules import module as module_mod  # rflens' global hooks are gone too

    assert not module_mod._global_forward_hooks and not module_mod._global_forward_pre_hooks
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_inplace_ops_and_channel_slice_writes():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 5, padding=2)

        def forward(self, x):
            y = self.a(x).relu_()
            y[:, :2].add_(self.b(x)[:, :2])
            return y

    rf = rflens.receptive_field(InPlace(), (4, 16, 16))
    assert rf["output"].size == (5, 5)


def test_data_dependent_model_falls_back_to_cpu():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            y = self.conv(x)
            return y * 2 if y.sum().item() > -1e9 else y

    rf = rflens.receptive_field(Branchy(), (1, 10, 10))
    assert rf.capture_path == "cpu"
    assert any("meta" in w for w in rf.warnings)
    assert rf["output"].size == (3, 3)


def test_units_seeing_inverts_box():
    rf = rflens.receptive_field(torchvision.models.resnet18(), (3, 224, 224))
    seen = rf.units_seeing("layer3", (100, 120))
    layer = rf["layer3"]
    for i in range(layer.grid[0]):
        for j in range(layer.grid[1]):
            box = layer.box((i, j), clip=True)
            inside = box[0][0] <= 100 <= box[0][1] and box[1][0] <= 120 <= box[1][1]
            in_range = seen[0][0] <= i <= seen[0][1] and seen[1][0] <= j <= seen[1][1]
            assert inside == in_range


def test_bad_layer_name_suggests():
    rf = rflens.receptive_field(Flip(), (1, 16, 16))
    with pytest.raises(KeyError, match="did you mean conv"):
        rf["cnv"]
    with pytest.raises(RflensError, match="outside"):
        rf.box("conv", (70, 0))


def test_input_too_small_names_layer_and_minimum():
    with pytest.raises(rflens.InputTooSmallError, match=r"features\.\d+.*at least 3x32x32"):
        rflens.receptive_field(torchvision.models.vgg16(), (3, 16, 16))


def test_3d_and_1d_inputs():
    rf = rflens.receptive_field(chain(nn.Conv3d(1, 1, (3, 5, 5), stride=(1, 2, 2))), (1, 8, 16, 16))
    assert rf["0"].size == (3, 5, 5) and rf["0"].jump == (1, 2, 2)


def test_serialisation():
    rf = rflens.receptive_field(chain(nn.Conv1d(1, 1, 3, stride=2), nn.ConvTranspose1d(1, 1, 3, stride=4)),
                                (1, 32))
    d = rf.to_dict()
    assert d["schema_version"] == 1 and d["input"]["shape"] == [1, 1, 32]
    assert d["layers"][1]["jump"] == ["1/2"] and d["layers"][0]["jump"] == [2]
    assert d["layers"][1]["uniform"] is False
    df = rf.to_dataframe()
    assert list(df["name"]) == ["0", "1", "output"]
    assert list(df["size_0"])[:2] == [3, rf["1"].size[0]]
    assert "<table" in rf._repr_html_()


def test_circular_padding_reads_the_opposite_border():
    # F.pad(mode="circular") arrives as writes into slices of an empty tensor; padded unit 0 is
    # pixel 7 of 8, so the conv's unit 0 reads pixels {7, 0, 1}: exact hull (0, 7)
    class Circular(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 3)

        def forward(self, x):
            return self.conv(F.pad(x, (1, 1), mode="circular"))

    rf = rflens.receptive_field(Circular(), (1, 8))
    assert rf["conv"].known and not rf.unsupported_ops
    assert rf.box("conv", 0, clip=True) == ((0, 7),)
    assert rf.box("conv", 3, clip=True) == ((2, 4),)
    assert rf.box("conv", 7, clip=True) == ((0, 7),)


def test_merged_component_overflow_is_flagged():
    # 65 diagonally shifted copies of the image summed: each copy is real on a different block of
    # rows and columns, more components than rflens tracks (64); the clipped boxes become per-axis
    # unions (supersets) and that must be said, never silent
    class DiagonalSum(nn.Module):
        def forward(self, x):
            n = 65
            return sum(F.pad(x, (k, n - 1 - k, k, n - 1 - k)) for k in range(n))

    rf = rflens.receptive_field(DiagonalSum(), (1, 4, 4))
    assert not rf["output"].exact_hull
    assert any("supersets" in w for w in rf.warnings)
    assert rf.box("output", (0, 2), clip=True)[1][0] <= 2  # still contains the true hull (0,2),(2,2)
    small = rflens.receptive_field(Residual(), (2, 8, 8))
    assert small["output"].exact_hull and not any("supersets" in w for w in small.warnings)
