"""Tests of rflens.dense: shift-and-stitch vs filter rarefaction.

Conventions under test (see the rflens.dense docstring): shift ``s`` sees ``x[..., s:]`` zero-padded at
the far end; output ``i`` of shift ``s`` lands at ``J*i + s``; the two methods agree on the interior.
Everything runs in float64 on CPU with random weights and small inputs.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from shift_stitch import own_shift_and_stitch
from rflens.dense import (DenseGeometry, RarefiedAvgPool, RarefiedMaxPool, analyze, compare,
                          interior, rarefy, shift_and_stitch, shifted_input, stitch, truncate)
from rflens.errors import RflensError

DT = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


# ------------------------------------------------------------------------------------------------
# OverFeat's offset max pooling, against numpy by hand
# ------------------------------------------------------------------------------------------------
def test_overfeat_offset_max_pooling_1d() -> None:
    """Max pool 3 stride 3 at offsets 0/1/2, interleaved == a dense max filter of width 3."""
    signal = np.random.default_rng(0).normal(size=11)
    pool = nn.MaxPool1d(3, stride=3)
    x = torch.tensor(signal).reshape(1, 1, -1)
    # by hand: offset o pools windows starting at o, o+3, o+6 (signal[o:] has 11-o >= 9 samples)
    by_offset = {o: [signal[o + 3 * i: o + 3 * i + 3].max() for i in range(3)] for o in range(3)}
    interleaved = [by_offset[n % 3][n // 3] for n in range(9)]
    dense_max = np.lib.stride_tricks.sliding_window_view(signal, 3).max(axis=-1)  # 9 windows
    np.testing.assert_array_equal(interleaved, dense_max)

    stitched = shift_and_stitch(pool, x).flatten().numpy()
    np.testing.assert_array_equal(stitched, dense_max)
    with torch.no_grad():
        np.testing.assert_array_equal(rarefy(pool, x)(x).flatten().numpy(), dense_max)


def test_overfeat_pool_then_conv_is_dilated_by_the_pool_stride() -> None:
    """After the stride-3 pool a 2-tap conv reads pooled units 3 input pixels apart when dense."""
    signal = np.random.default_rng(1).normal(size=20)
    w0, w1, b = 0.7, -1.3, 0.25
    conv = nn.Conv1d(1, 1, 2, dtype=DT)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[w0, w1]]], dtype=DT))
        conv.bias.fill_(b)
    net = nn.Sequential(nn.MaxPool1d(3, 3), conv).double()
    x = torch.tensor(signal).reshape(1, 1, -1)
    m = np.lib.stride_tricks.sliding_window_view(signal, 3).max(axis=-1)  # m[n] = max(s[n:n+3])
    expected = w0 * m[:-3] + w1 * m[3:] + b  # dense unit n reads pooled windows at n and n+3
    with torch.no_grad():
        dense = rarefy(net, x)(x).flatten().numpy()
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-12)
    stitched = shift_and_stitch(net, x).flatten().numpy()
    n = np.arange(len(expected))
    inside = n + 5 <= len(signal) - 1  # field of dense unit n is [n, n+5]
    np.testing.assert_allclose(stitched[n[inside]], expected[inside], rtol=0, atol=1e-12)


def test_shift_and_stitch_places_shift_s_output_i_at_J_i_plus_s() -> None:
    """A 1x1 'pool' with stride (2, 3) picks x[2i+s, 3j+t]: stitching gives x back."""
    x = _randn(1, 2, 8, 9)
    dense = shift_and_stitch(nn.MaxPool2d(1, stride=(2, 3)), x)
    assert torch.equal(dense, x)
    assert torch.equal(shifted_input(x, (1, 2))[..., :7, :7], x[..., 1:, 2:])
    assert torch.equal(shifted_input(x, (1, 2))[..., 7:, :], torch.zeros(1, 2, 1, 9, dtype=DT))
    parts = {(s,): torch.full((1, 1, 2), float(s)) for s in range(3)}
    assert stitch(parts, (3,)).flatten().tolist() == [0, 1, 2, 0, 1, 2]


def test_interior_definition() -> None:
    geom = DenseGeometry(jump=(4,), lo=(-5,), hi=(6,))
    (index,) = interior(geom, input_size=(30,), stitched_size=(32,), rarefied_size=(30,))
    # n + lo >= n mod 4  and  n + hi <= 29  and  n < 30
    expected = [n for n in range(30) if n - 5 >= n % 4 and n + 6 <= 29]
    assert index.tolist() == expected == list(range(8, 24))  # 8 = first multiple of J >= P = 5
    assert geom.min_input == (8 + 6 + 1,)
    (index,) = interior(geom, input_size=(14,), stitched_size=(16,), rarefied_size=(14,))
    assert index.tolist() == []


def test_interior_is_tight_on_the_left() -> None:
    """Just left of the interior the shifted pass pads where the rarefied pass reads pixels."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 2, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv1d(2, 1, 3, stride=2, padding=1)).double()
    x = _randn(1, 1, 40) + 3.0
    r = compare(net, x, warmup=False)
    first = r["interior"][0][0]
    stitched, dense = shift_and_stitch(net, x), rarefy(net, x)(x).detach()
    assert r["max_abs_diff"] < 1e-12
    assert not torch.allclose(stitched[..., :first], dense[..., :first])


# ------------------------------------------------------------------------------------------------
# random strided networks (hypothesis)
# ------------------------------------------------------------------------------------------------
class Residual(nn.Module):
    """conv(k, stride s) -> relu -> conv(3) plus a 1x1 stride-s shortcut; forward calls submodules."""

    def __init__(self, conv: type, c: int, k: int, s: int) -> None:
        super().__init__()
        self.a, self.b = conv(c, c, k, stride=s, padding=k // 2), conv(c, c, 3, padding=1)
        self.short = conv(c, c, 1, stride=s) if s > 1 else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.b(self.relu(self.a(x)))
        out += self.short(x)
        return self.relu(out)


C = 2


def _layer(kind: str, d: int, p: dict) -> nn.Module:
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[d - 1]
    if kind == "conv":
        return conv(C, C, p["k"], stride=p["s"], padding=p["pad"], dilation=p["dil"],
                    padding_mode=p["mode"])
    if kind == "max":
        return (nn.MaxPool1d, nn.MaxPool2d)[d - 1](p["k"], p["s"], p["k"] // 2 if p["pad"] else 0,
                                                   dilation=p["dil"], ceil_mode=p["ceil"])
    if kind == "avg":
        extra = {"divisor_override": p["div"]} if d == 2 else {}
        return (nn.AvgPool1d, nn.AvgPool2d)[d - 1](p["k"], p["s"], p["k"] // 2 if p["pad"] else 0,
                                                   ceil_mode=p["ceil"],
                                                   count_include_pad=p["cip"], **extra)
    if kind == "res":
        return Residual(conv, C, 3 if p["k"] > 2 else 1, p["s"])
    bn = (nn.BatchNorm1d, nn.BatchNorm2d)[d - 1](C)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    return {"relu": nn.ReLU(), "bn": bn, "drop": nn.Dropout(0.5), "tanh": nn.Tanh()}[kind]


@st.composite
def strided_nets(draw: st.DrawFn) -> tuple[int, list]:
    d = draw(st.sampled_from([1, 2]))
    max_jump = 16 if d == 1 else 6
    layers, jump = [], 1
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "max", "avg", "res", "relu", "bn", "drop",
                                     "tanh"]))
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 3))
        s = s if jump * s <= max_jump else 1
        dil = draw(st.integers(1, 2))
        params = {"k": k, "s": s, "dil": dil, "pad": draw(st.integers(0, dil * (k - 1))),
                  "mode": draw(st.sampled_from(["zeros", "zeros", "reflect", "circular"])),
                  "ceil": draw(st.booleans()), "cip": draw(st.booleans()),
                  "div": draw(st.sampled_from([None, None, 1, 3]))}
        if kind in ("max", "avg"):
            params["pad"] = draw(st.booleans())
        layers.append((kind, params))
        if kind in ("conv", "max", "avg", "res"):
            jump *= s
    return d, layers


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=strided_nets(), seed=st.integers(0, 2**16), extra=st.integers(0, 4))
def test_shift_and_stitch_equals_rarefied_on_random_nets(spec: tuple, seed: int, extra: int) -> None:
    d, layers = spec
    torch.manual_seed(seed)
    net = nn.Sequential(*[_layer(kind, d, p) for kind, p in layers]).double().eval()
    geom = analyze(net, (C, *[64] * d))
    size = max(geom.size) + 2 * max(geom.jump) + extra
    x = _randn(2, C, *[size] * d, seed=seed)
    result = compare(net, x, warmup=False, shifts_per_pass=64)
    assert result["compared"] > 0
    assert result["max_abs_diff"] < 1e-5, (layers, result)


def test_conv3d_maxpool3d() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                        nn.Conv3d(2, 2, 3, padding=1)).double()
    result = compare(net, _randn(1, 1, 20, 20, 20), warmup=False, shifts_per_pass=64)
    assert result["jump"] == [4, 4, 4] and result["shifts"] == 64
    assert result["compared"] > 0 and result["max_abs_diff"] < 1e-10


# ------------------------------------------------------------------------------------------------
# torchvision models
# ------------------------------------------------------------------------------------------------
def test_vgg16_features_up_to_third_pool() -> None:
    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features.double()
    result = compare(features, _randn(1, 3, 56, 56), layer="16", warmup=False, shifts_per_pass=64)
    assert result["jump"] == [8, 8] and result["shifts"] == 64
    assert result["field_lo"] == [-18, -18] and result["field_hi"] == [25, 25]  # R = 44, P = 18
    assert result["interior"] == [[24, 30, 7], [24, 30, 7]]
    assert result["max_abs_diff"] < 1e-5
    assert result["max_abs_diff_overlap"] > 1e-3  # the borders really differ


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).double().eval()


def test_resnet18_up_to_layer2(resnet18: nn.Module) -> None:
    result = compare(resnet18, _randn(1, 3, 112, 112), layer="layer2", warmup=False,
                     shifts_per_pass=64)
    assert result["jump"] == [8, 8] and result["shifts"] == 64
    assert result["field_lo"] == [-49, -49] and result["field_hi"] == [49, 49]  # R = 99, P = 49
    assert result["compared"] == 49
    assert result["max_abs_diff"] < 1e-5


def test_resnet18_rarefied_strides_and_dilations(resnet18: nn.Module) -> None:
    rare = rarefy(truncate(resnet18, "layer2"), (3, 64, 64)).model
    assert rare.conv1.stride == (1, 1) and rare.conv1.dilation == (1, 1)
    assert isinstance(rare.maxpool, RarefiedMaxPool) and rare.maxpool.dilation == (2, 2)
    assert rare.layer1[0].conv1.dilation == (4, 4) and rare.layer1[0].conv1.padding == (4, 4)
    block = rare.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv1.dilation == (4, 4)
    assert block.downsample[0].stride == (1, 1)  # both branches lose their stride
    assert block.conv2.dilation == (8, 8) and rare.layer2[1].conv1.dilation == (8, 8)


def test_rarefy_does_not_touch_the_model(resnet18: nn.Module) -> None:
    before = {k: v.clone() for k, v in resnet18.state_dict().items()}
    text = repr(resnet18)
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in resnet18.modules()]
    rarefy(truncate(resnet18, "layer2"), (3, 64, 64))
    compare(resnet18, _randn(1, 3, 24, 24), layer="maxpool", warmup=False, shifts_per_pass=16)
    assert repr(resnet18) == text and not resnet18.training
    assert all(torch.equal(before[k], v) for k, v in resnet18.state_dict().items())
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in resnet18.modules()] == hooks
    assert resnet18.layer2[0].conv1.stride == (2, 2)


def test_compare_keeps_train_mode_of_the_model() -> None:
    net = nn.Sequential(nn.Conv1d(1, 1, 3, 2), nn.BatchNorm1d(1)).double().train()
    compare(net, _randn(1, 1, 30), warmup=False)
    assert net.training and net[1].training


def test_truncate_matches_manual_forward(resnet18: nn.Module) -> None:
    x = _randn(1, 3, 32, 32)
    r = resnet18
    with torch.no_grad():
        manual = r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))
        assert torch.equal(truncate(r, "layer2")(x), manual)


# ------------------------------------------------------------------------------------------------
# layers: average pooling semantics, padding
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("div", [None, 5])
def test_rarefied_avgpool_matches_avg_pool_at_dilation_1(cip: bool, div: int | None) -> None:
    x = _randn(2, 3, 9, 11)
    ours = RarefiedAvgPool((3, 2), (1, 1), (1, 1), count_include_pad=cip, divisor_override=div)(x)
    ref = F.avg_pool2d(x, (3, 2), stride=1, padding=1, count_include_pad=cip, divisor_override=div)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_rarefied_avgpool_dilated_by_hand() -> None:
    x = _randn(1, 1, 12)
    out = RarefiedAvgPool((2,), (3,), (3,), count_include_pad=False)(x).flatten()
    padded = np.concatenate([[np.nan] * 3, x.flatten().numpy(), [np.nan] * 3])
    expected = [np.nanmean([padded[n], padded[n + 3]]) for n in range(len(padded) - 3)]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_padding_modules_same_conv_and_pool_padding() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.ZeroPad2d((1, 2, 0, 1)), nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(),
                        nn.ReflectionPad2d(1), nn.Conv2d(2, 2, 2, padding="same"),
                        nn.MaxPool2d(2, 2, padding=1), nn.Conv2d(2, 1, 4, padding="same")).double()
    rare = rarefy(net, (1, 32, 32))
    assert rare[3].padding == (2, 2, 2, 2)
    result = compare(net, _randn(1, 1, 40, 40), warmup=False)
    assert result["compared"] > 0 and result["max_abs_diff"] < 1e-10


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------
def test_error_names_global_pool_and_suggests_layer(resnet18: nn.Module) -> None:
    with pytest.raises(RflensError, match=r"cannot rarefy avgpool \(AdaptiveAvgPool2d\): "
                                          r"global/dense layers .* --layer"):
        rarefy(resnet18, (3, 64, 64))


@pytest.mark.parametrize("layer, match", [
    (nn.Linear(8, 8), r"cannot rarefy 1 \(Linear\): global/dense"),  # mixes the last (width) axis
    (nn.Upsample(scale_factor=2), r"cannot rarefy 1 \(Upsample\): .*resampling"),
    (nn.GroupNorm(1, 4), r"cannot rarefy 1 \(GroupNorm\)"),
    (nn.Flatten(), r"cannot rarefy 1 \(Flatten\)"),
    (nn.Softmax(dim=-1), r"cannot rarefy 1 \(Softmax\): global/dense .*aten._softmax"),
])
def test_errors_for_layers_without_dense_equivalent(layer: nn.Module, match: str) -> None:
    with pytest.raises(RflensError, match=match):
        rarefy(nn.Sequential(nn.Conv2d(1, 4, 2, 2), layer), (1, 16, 16))


class FunctionalPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv(x), 2)


class Misaligned(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool, self.conv = nn.AvgPool1d(2), nn.Conv1d(1, 1, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) + self.conv(x)  # same shape on 16 samples, strides 2 and 1


class PaddedConv(nn.Conv2d):
    """A Conv2d subclass that pads in its own forward (like timm's Conv2dSame)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (0, 1, 0, 1)), self.weight, self.bias, self.stride)


class KeywordCalls(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv1d(1, 1, 3, 2), nn.Conv1d(1, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(input=self.a(input=x))


def test_subclass_with_own_forward_is_refused_and_keyword_inputs_are_tracked() -> None:
    with pytest.raises(RflensError, match=r"cannot rarefy 0 \(PaddedConv\): .*overrides forward"):
        rarefy(nn.Sequential(PaddedConv(1, 1, 2, 2)), (1, 16, 16))
    rare = rarefy(KeywordCalls(), (1, 16))
    assert rare.a.stride == (1,) and rare.b.dilation == (2,)


def test_errors_for_functional_ops_and_misaligned_merges() -> None:
    with pytest.raises(RflensError, match=r"<model> \(FunctionalPool\) calls .*max_pool2d"):
        rarefy(FunctionalPool(), (1, 16, 16))
    with pytest.raises(RflensError, match=r"strides \(2,\) and \(1,\)"):
        rarefy(Misaligned(), (1, 16))
    with pytest.raises(RflensError, match="no layer 'layer9' in the model; did you mean"):
        truncate(torchvision.models.resnet18(weights=None), "layer9")


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def _stub_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_model(spec: str) -> tuple[nn.Module, dict]:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.AdaptiveAvgPool2d(1))
        return net, {"source": "stub", "name": spec, "input_shape": None}

    def parse_input(text: str) -> tuple[int, ...]:
        return tuple(int(v) for v in text.split("x"))

    stub = types.SimpleNamespace(load_model=load_model, parse_input=parse_input)
    monkeypatch.setitem(sys.modules, "rflens.sources.models", stub)


def test_cli_table_and_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from rflens.cli import main

    _stub_models(monkeypatch)
    assert main(["dense", "stub", "--input", "3x32x32", "--layer", "2"]) == 0
    table = capsys.readouterr().out
    for word in ("J (total stride)", "4x4", "shifts", "16", "max |diff|", "time shift-and-stitch",
                 "time rarefied", "ratio"):
        assert word in table
    assert main(["dense", "stub", "--input", "3x32x32", "--layer", "2", "--format", "json",
                 "--dtype", "float64"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["jump"] == [4, 4] and data["shifts"] == 16 and data["max_abs_diff"] < 1e-10
    assert data["ratio"] > 0 and data["time_rarefied_s"] > 0


def test_cli_errors_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture) -> None:
    from rflens.cli import main

    _stub_models(monkeypatch)
    assert main(["dense", "stub", "--input", "3x32x32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot rarefy 3 (AdaptiveAvgPool2d)" in err


def test_cli_with_a_torchvision_model(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("rflens.sources.models")
    from rflens.cli import main

    argv = ["dense", "torchvision:resnet18", "--input", "3x48x48", "--layer", "layer1",
            "--dtype", "float64", "--format", "json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["jump"] == [4, 4] and data["shifts"] == 16 and data["compared"] == 9
    assert data["max_abs_diff"] < 1e-5


# ------------------------------------------------------------------------------------------------
# Ops that mix the grid, written in forward (issue 12, class 9): refused naming the op
# ------------------------------------------------------------------------------------------------
class Mixer(nn.Module):
    def __init__(self, op, before_stride: bool = False) -> None:
        super().__init__()
        self.op, self.before = op, before_stride
        self.a = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.before:
            return self.b(self.a(self.op(x)))
        return self.b(self.op(self.a(x)))


MIXERS = {
    "group_norm": (lambda x: F.group_norm(x, 2), "aten.native_group_norm"),
    "layer_norm over C,H,W": (lambda x: F.layer_norm(x, x.shape[1:]), "aten.native_layer_norm"),
    "layer_norm over H,W": (lambda x: F.layer_norm(x, x.shape[2:]), "aten.native_layer_norm"),
    "instance_norm": (lambda x: F.instance_norm(x), "aten.native_batch_norm"),
    "softmax along W": (lambda x: torch.softmax(x, dim=-1), "aten._softmax"),
    "softmax over positions": (lambda x: x.flatten(2).softmax(-1).view_as(x), "aten._softmax"),
    "normalize along W": (lambda x: F.normalize(x, dim=-1), "aten.linalg_vector_norm"),
    "batch statistics": (lambda x: F.batch_norm(x, None, None, training=True), "aten.native_batch_norm"),
}


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("before", [False, True])
def test_ops_that_mix_the_grid_are_refused_by_name(name: str, before: bool) -> None:
    op, aten = MIXERS[name]
    model = Mixer(op, before).double().eval()
    with pytest.raises(RflensError, match=rf"cannot rarefy <model> \(Mixer\): .*{aten}"):
        rarefy(model, (2, 16, 16))
    # the refusal is needed: the op makes the dense output differ from shift-and-stitch on the
    # interior (field of dense unit n: [n-3, n+5] after the stride-2 conv and the 3x3 conv)
    local = Mixer(lambda x: x, before).double().eval()
    local.load_state_dict(model.state_dict())
    x = _randn(1, 2, 16, 16, seed=4)
    with torch.no_grad():
        naive = rarefy(local, x)  # the rarefied layers, run with the op back in place
        naive.op = op
        dense = naive(x)
    stitched = own_shift_and_stitch(model, x, 2)
    inner = (slice(None), slice(None), slice(4, 10), slice(4, 10))
    assert (dense[inner] - stitched[inner]).abs().max() > 1e-6  # far above float64 rounding


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(4, track_running_stats=False), nn.GroupNorm(2, 4),
                                  nn.InstanceNorm2d(4), nn.LayerNorm([4, 8, 8])],
                         ids=lambda m: type(m).__name__)
def test_norm_modules_over_space_are_refused_by_name(norm: nn.Module) -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), norm, nn.Conv2d(4, 4, 3, padding=1))
    with pytest.raises(RflensError, match=rf"cannot rarefy 1 \({type(norm).__name__}\): global/dense"):
        rarefy(model.eval(), (2, 16, 16))


def test_norms_that_keep_the_grid_are_accepted() -> None:
    """Running statistics and normalisation over channels only are pointwise on the grid."""
    class ChannelNorm(nn.Module):
        def forward(self, x):
            return F.normalize(x, dim=1) + F.layer_norm(x.movedim(1, -1), (4,)).movedim(-1, 1)

    for mid in (nn.BatchNorm2d(4), nn.InstanceNorm2d(4, track_running_stats=True), ChannelNorm()):
        model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), mid,
                              nn.Conv2d(4, 4, 3, padding=1)).double().eval()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        x = _randn(1, 2, 16, 16, seed=5)
        with torch.no_grad():
            dense = rarefy(model, x)(x)
        stitched = own_shift_and_stitch(model, x, 2)
        inner = (slice(None), slice(None), slice(4, 10), slice(4, 10))
        torch.testing.assert_close(dense[inner], stitched[inner], rtol=1e-12, atol=1e-12)


def test_a_norm_over_a_one_unit_map_is_refused_too() -> None:
    """On the example the strided map has one unit, where a GroupNorm mixes nothing; the rarefied
    network runs it over many units, so it is refused all the same."""
    model = nn.Sequential(nn.Conv2d(1, 2, 2, 2), nn.Conv2d(2, 2, 2, 2), nn.Conv2d(2, 2, 2, 2),
                          nn.GroupNorm(1, 2)).double().eval()
    with pytest.raises(RflensError, match=r"cannot rarefy 3 \(GroupNorm\): .*native_group_norm"):
        rarefy(model, (1, 8, 8))
    x = _randn(1, 1, 16, 16, seed=6)
    stitched = own_shift_and_stitch(model, x, 8)  # each shift normalises its own 2 x 2 positions
    with torch.no_grad():
        naive = model[3](rarefy(model[:3], x)(x))  # the norm run over the 9 x 9 dense map instead
    assert (naive[..., :2, :2] - stitched[..., :2, :2]).abs().max() > 1e-3
