"""Layer spec files: building 1-D/2-D/3-D chains, padding conventions, and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from rflens.errors import RflensError
from rflens.sources.spec import ACTIVATIONS, build_spec, load_spec, read_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def out_size(n: int, k: int, s: int = 1, before: int = 0, after: int = 0, d: int = 1,
             ceil: bool = False) -> int:
    span = n + before + after - d * (k - 1) - 1
    return (math.ceil(span / s) if ceil else span // s) + 1


def forward(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(1, *shape))


def error_of(data: dict, source: str = "net.yaml") -> str:
    with pytest.raises(RflensError) as info:
        build_spec(data, source=source)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(source)
    return message


# --- building -----------------------------------------------------------------------------------

def test_1d_chain_matches_spec():
    data = {"input": [2, 100], "layers": [
        {"op": "conv", "kernel": 5, "stride": 2, "padding": 2, "dilation": 1, "channels": 4},
        {"op": "relu"},
        {"op": "maxpool", "kernel": 3, "dilation": 2},
        {"op": "avgpool", "kernel": 2, "stride": 1, "ceil_mode": True},
    ]}
    model, shape = build_spec(data)
    assert shape == (2, 100)
    assert list(model._modules) == ["layer0_conv", "layer1_relu", "layer2_maxpool", "layer3_avgpool"]
    conv, _, mp, ap = model
    assert isinstance(conv, nn.Conv1d) and (conv.in_channels, conv.out_channels) == (2, 4)
    assert (conv.kernel_size, conv.stride, conv.padding) == ((5,), (2,), (2,))
    assert isinstance(mp, nn.MaxPool1d)
    assert (mp.kernel_size, mp.stride, mp.dilation) == ((3,), (3,), (2,))
    assert isinstance(ap, nn.AvgPool1d) and ap.ceil_mode and ap.stride == (1,)
    n = out_size(100, 5, 2, 2, 2)
    n = out_size(n, 3, 3, d=2)
    n = out_size(n, 2, 1, ceil=True)
    assert forward(model, shape).shape == (1, 4, n)


def test_2d_chain_per_axis_lists():
    data = {"input": [3, 40, 30], "layers": [
        {"op": "conv", "kernel": [3, 5], "stride": [1, 2], "padding": [1, 2], "dilation": [2, 1],
         "channels": 6, "groups": 3, "name": "stem"},
        {"op": "gelu", "name": "act"},
        {"op": "avgpool", "kernel": [2, 3], "stride": [2, 1], "padding": [1, 1]},
    ]}
    model, shape = build_spec(data)
    assert list(model._modules) == ["stem", "act", "layer2_avgpool"]
    stem = model.stem
    assert isinstance(stem, nn.Conv2d) and stem.groups == 3 and stem.out_channels == 6
    assert (stem.kernel_size, stem.stride, stem.padding, stem.dilation) == (
        (3, 5), (1, 2), (1, 2), (2, 1))
    assert model.layer2_avgpool.kernel_size == (2, 3) and model.layer2_avgpool.stride == (2, 1)
    h, w = out_size(40, 3, 1, 1, 1, d=2), out_size(30, 5, 2, 2, 2)
    h, w = out_size(h, 2, 2, 1, 1), out_size(w, 3, 1, 1, 1)
    assert forward(model, shape).shape == (1, 6, h, w)


def test_3d_chain_matches_spec():
    data = {"input": [1, 8, 16, 16], "layers": [
        {"op": "conv", "kernel": [3, 3, 3], "stride": [1, 2, 2], "padding": 1, "channels": 2},
        {"op": "maxpool", "kernel": [1, 2, 2]},
        {"op": "convtranspose", "kernel": 2, "stride": 2, "channels": 3},
        {"op": "upsample", "scale": [1, 2, 2], "mode": "bilinear"},
    ]}
    model, shape = build_spec(data)
    conv, pool, up, resample = model
    assert isinstance(conv, nn.Conv3d) and conv.stride == (1, 2, 2) and conv.padding == (1, 1, 1)
    assert isinstance(pool, nn.MaxPool3d) and pool.stride == (1, 2, 2)
    assert isinstance(up, nn.ConvTranspose3d) and up.kernel_size == (2, 2, 2)
    assert resample.mode == "trilinear" and resample.align_corners is False
    assert forward(model, shape).shape == (1, 3, 16, 16, 16)


def test_channels_default_to_incoming_count():
    model, _ = build_spec({"input": [5, 9, 9], "layers": [{"op": "conv", "kernel": 3}]})
    assert (model[0].in_channels, model[0].out_channels) == (5, 5)


def test_pool_stride_defaults_to_kernel_conv_stride_to_one():
    model, _ = build_spec({"input": [1, 9, 9], "layers": [
        {"op": "maxpool", "kernel": 3}, {"op": "conv", "kernel": 3}]})
    assert model[0].stride == (3, 3) and model[1].stride == (1, 1)


def test_convtranspose_output_padding():
    data = {"input": [2, 7, 7], "layers": [
        {"op": "convtranspose", "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1}]}
    model, shape = build_spec(data)
    assert model[0].output_padding == (1, 1) and model[0].padding == (1, 1)
    assert forward(model, shape).shape == (1, 2, 14, 14)


@pytest.mark.parametrize("mode, corners, torch_mode", [
    ("nearest", None, "nearest"), ("bilinear", True, "bilinear"), ("bicubic", False, "bicubic")])
def test_upsample_modes(mode, corners, torch_mode):
    layer = {"op": "upsample", "scale": 2, "mode": mode}
    if corners is not None:
        layer["align_corners"] = corners
    model, shape = build_spec({"input": [1, 5, 6], "layers": [layer]})
    assert model[0].mode == torch_mode and model[0].align_corners == corners
    assert forward(model, shape).shape == (1, 1, 10, 12)


def test_bilinear_means_linear_in_1d():
    model, _ = build_spec({"input": [1, 5], "layers": [{"op": "upsample", "scale": 3,
                                                        "mode": "bilinear"}]})
    assert model[0].mode == "linear"


@pytest.mark.parametrize("op", sorted(ACTIVATIONS))
def test_activations_keep_shape(op):
    model, shape = build_spec({"input": [2, 6, 6], "layers": [{"op": op}]})
    assert forward(model, shape).shape == (1, 2, 6, 6)


# --- padding ------------------------------------------------------------------------------------

def test_same_padding_odd_kernel_is_symmetric_and_keeps_size():
    model, shape = build_spec({"input": [1, 11, 12], "layers": [
        {"op": "conv", "kernel": 3, "dilation": 2, "padding": "same"}]})
    assert list(model._modules) == ["layer0_conv"] and model[0].padding == (2, 2)
    assert forward(model, shape).shape == (1, 1, 11, 12)


def test_same_padding_even_kernel_puts_extra_pixel_after():
    model, shape = build_spec({"input": [1, 10, 10], "layers": [
        {"op": "conv", "kernel": [4, 1], "padding": "same", "name": "c"}]})
    assert list(model._modules) == ["c_pad", "c"]
    assert model.c_pad.padding == (0, 0, 1, 2)  # F.pad order: W before/after, H before/after
    assert model.c.padding == (0, 0)
    assert forward(model, shape).shape == (1, 1, 10, 10)


def test_same_padding_for_stride_one_pool():
    model, shape = build_spec({"input": [1, 9, 9], "layers": [
        {"op": "maxpool", "kernel": 3, "stride": 1, "padding": "same"}]})
    assert forward(model, shape).shape == (1, 1, 9, 9)


def test_asymmetric_padding_output_size_and_placement():
    data = {"input": [1, 8, 8], "layers": [
        {"op": "conv", "kernel": 1, "padding": [[0, 3], [1, 0]], "name": "c"}]}
    model, shape = build_spec(data)
    assert list(model._modules) == ["c_pad", "c"]
    assert isinstance(model.c_pad, nn.ConstantPad2d) and model.c.padding == (0, 0)
    with torch.no_grad():
        model.c.weight.fill_(1.0)
        model.c.bias.zero_()
        out = model(torch.ones(1, *shape))[0, 0]
    assert out.shape == (11, 9)
    assert out[:8, 1:].eq(1).all()  # the image: no rows before it, one column before it
    assert out[8:].eq(0).all() and out[:, 0].eq(0).all()


def test_asymmetric_padding_mixed_with_int_axis_1d_and_3d():
    model, shape = build_spec({"input": [1, 10], "layers": [
        {"op": "avgpool", "kernel": 3, "stride": 2, "padding": [[2, 0]]}]})
    assert forward(model, shape).shape == (1, 1, out_size(10, 3, 2, 2, 0))
    model, shape = build_spec({"input": [1, 4, 6, 6], "layers": [
        {"op": "conv", "kernel": 3, "padding": [1, [0, 2], [2, 0]]}]})
    assert forward(model, shape).shape == (1, 1, 4, 6, 6)


def test_pool_padding_beyond_half_kernel_becomes_pad_layer():
    model, shape = build_spec({"input": [1, 8, 8], "layers": [
        {"op": "maxpool", "kernel": 2, "padding": 2, "name": "p"}]})
    assert list(model._modules) == ["p_pad", "p"] and model.p.padding == (0, 0)
    assert forward(model, shape).shape == (1, 1, 6, 6)


def test_maxpool_asymmetric_pad_uses_minus_infinity():
    model, shape = build_spec({"input": [1, 4, 4], "layers": [
        {"op": "maxpool", "kernel": 2, "stride": 1, "padding": [[1, 0], [0, 1]]}]})
    assert model[0].value == -math.inf
    out = model(-torch.ones(1, *shape))
    assert out.shape == (1, 1, 4, 4) and out.eq(-1).all()


@st.composite
def chains(draw):
    ndim = draw(st.integers(1, 3))
    sizes = [draw(st.integers(12, 20)) for _ in range(ndim)]
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["conv", "maxpool", "avgpool"]))
        layer = {"op": op, "kernel": draw(st.integers(1, 3)), "stride": draw(st.integers(1, 2)),
                 "padding": [[draw(st.integers(0, 2)), draw(st.integers(0, 2))] for _ in sizes]}
        if op != "avgpool":
            layer["dilation"] = draw(st.integers(1, 2))
        layers.append(layer)
    return sizes, layers


def expected_sizes(sizes: list[int], layers: list[dict]) -> list[int]:
    for layer in layers:
        k, s, d = layer["kernel"], layer["stride"], layer.get("dilation", 1)
        sizes = [out_size(n, k, s, b, a, d) for n, (b, a) in zip(sizes, layer["padding"])]
    return sizes


@settings(max_examples=40, deadline=None)
@given(chains())
def test_random_chains_have_predicted_sizes(chain):
    sizes, layers = chain
    assume(min(expected_sizes(sizes, layers)) >= 1)
    model, shape = build_spec({"input": [1, *sizes], "layers": layers})
    assert list(forward(model, shape).shape[2:]) == expected_sizes(sizes, layers)


# --- files --------------------------------------------------------------------------------------

def test_yaml_and_json_examples_agree():
    yaml_model, yaml_shape = load_spec(EXAMPLES / "chain.yaml")
    json_model, json_shape = load_spec(EXAMPLES / "chain.json")
    assert yaml_shape == json_shape == (1, 64, 64)
    assert str(yaml_model) == str(json_model)
    assert [m.kernel_size for m in yaml_model] == [(3, 3), (2, 2)]
    assert [m.stride for m in yaml_model] == [(2, 2), (1, 1)]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.y*ml")) + sorted(EXAMPLES.glob("*.json")),
                         ids=lambda p: p.name)
def test_every_example_builds_and_runs(path):
    model, shape = load_spec(path)
    assert forward(model, shape).ndim == len(shape) + 1


def test_load_spec_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RflensError, match="nope.yaml: spec file not found"):
        load_spec(missing)


def test_load_spec_wrong_suffix(tmp_path):
    path = tmp_path / "net.txt"
    path.write_text("input: [1, 8]")
    with pytest.raises(RflensError, match=r"net.txt: not a spec file .*\.yaml"):
        read_spec(path)


@pytest.mark.parametrize("name, text, expected", [
    ("bad.yaml", "input: [1, 8\nlayers: []\n", "bad.yaml: malformed YAML at line"),
    ("bad.json", '{"input": [1, 8],\n "layers": [}', "bad.json: malformed JSON at line 2, column"),
    ("empty.yaml", "", "empty.yaml: top level must be a mapping with 'input' and 'layers', got an"),
    ("list.json", "[1, 2]", "list.json: top level must be a mapping"),
])
def test_malformed_files(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(RflensError) as info:
        load_spec(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_errors_from_files_name_the_file(tmp_path):
    path = tmp_path / "net.json"
    path.write_text(json.dumps({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 0}]}))
    with pytest.raises(RflensError, match=r"net.json: layers\[0\] 'layer0_conv': field 'kernel'"):
        load_spec(path)


# --- validation ---------------------------------------------------------------------------------

CONV = {"op": "conv", "kernel": 3}


@pytest.mark.parametrize("data, parts", [
    ({"layers": [CONV]}, ["missing field 'input'"]),
    ({"input": [3], "layers": [CONV]}, ["field 'input'", "[C, H, W]", "got [3]"]),
    ({"input": [3, 0, 8], "layers": [CONV]}, ["field 'input'", "got [3, 0, 8]"]),
    ({"input": "3x8x8", "layers": [CONV]}, ["field 'input'", "got '3x8x8'"]),
    ({"input": [1, 8, 8]}, ["missing field 'layers'"]),
    ({"input": [1, 8, 8], "layers": []}, ["field 'layers' must be a non-empty list"]),
    ({"input": [1, 8, 8], "layers": [CONV], "layerz": 1}, ["top level", "'layerz'", "'layers'"]),
    ({"input": [1, 8, 8], "layers": ["conv"]}, ["layers[0]", "must be a mapping", "got 'conv'"]),
    ({"input": [1, 8, 8], "layers": [{"kernel": 3}]}, ["layers[0]", "missing field 'op'"]),
    ({"input": [1, 8, 8], "layers": [CONV, {"op": "convv", "kernel": 3}]},
     ["layers[1]", "unknown op 'convv'", "did you mean 'conv'"]),
    ({"input": [1, 8, 8], "layers": [{"op": 3}]}, ["layers[0]", "field 'op' must be a string"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 3, "strid": 2}]},
     ["layers[0] 'layer0_conv'", "unknown key 'strid'", "did you mean 'stride'"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 3, "ceil_mode": True}]},
     ["key 'ceil_mode' does not apply to op conv", "maxpool"]),
    ({"input": [1, 8, 8], "layers": [{"op": "maxpool", "kernel": 2, "channels": 4}]},
     ["key 'channels' does not apply to op maxpool"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv"}]}, ["missing field 'kernel'", "positive integer"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 0}]}, ["field 'kernel'", "got 0"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 2.5}]}, ["field 'kernel'", "got 2.5"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": True}]}, ["field 'kernel'", "got true"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": [3, 3, 3]}]},
     ["field 'kernel'", "list of 2 positive integers", "got [3, 3, 3]"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 3, "stride": -1, "name": "down"}]},
     ["layers[0] 'down'", "field 'stride'", "got -1"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 3, "dilation": 0}]}, ["'dilation'"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 3, "padding": -1}]},
     ["field 'padding'", "non-negative", "got -1"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 3, "padding": "valid"}]},
     ["field 'padding'", "'same'", "got 'valid'"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 3, "padding": [[1, 2, 3], 1]}]},
     ["field 'padding'", "[before, after] pairs"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 3, "stride": 2, "padding": "same"}]},
     ["field 'padding'", "'same' needs stride 1"]),
    ({"input": [1, 8, 8], "layers": [{"op": "convtranspose", "kernel": 3, "padding": "same"}]},
     ["layer0_convtranspose", "field 'padding'"]),
    ({"input": [1, 8, 8], "layers": [{"op": "convtranspose", "kernel": 3, "output_padding": 1}]},
     ["field 'output_padding'", "smaller than stride or dilation"]),
    ({"input": [2, 8, 8], "layers": [{"op": "conv", "kernel": 3, "groups": 3}]},
     ["field 'groups'", "dividing"]),
    ({"input": [1, 8, 8], "layers": [{"op": "conv", "kernel": 3, "channels": 0}]},
     ["field 'channels'", "positive integer"]),
    ({"input": [1, 8, 8], "layers": [{"op": "avgpool", "kernel": 2, "dilation": 2}]},
     ["key 'dilation' does not apply to op avgpool"]),
    ({"input": [1, 8, 8], "layers": [{"op": "maxpool", "kernel": 2, "ceil_mode": "yes"}]},
     ["field 'ceil_mode'", "true or false"]),
    ({"input": [1, 8, 8], "layers": [{"op": "upsample"}]}, ["missing field 'scale'"]),
    ({"input": [1, 8, 8], "layers": [{"op": "upsample", "scale": 0}]}, ["field 'scale'"]),
    ({"input": [1, 8, 8], "layers": [{"op": "upsample", "scale": [2, 2, 2]}]}, ["field 'scale'"]),
    ({"input": [1, 8, 8], "layers": [{"op": "upsample", "scale": 2, "mode": "area"}]},
     ["field 'mode'", "nearest, bilinear, bicubic"]),
    ({"input": [1, 8], "layers": [{"op": "upsample", "scale": 2, "mode": "bicubic"}]},
     ["field 'mode'", "bicubic is 2-D only"]),
    ({"input": [1, 8, 8], "layers": [{"op": "upsample", "scale": 2, "align_corners": True}]},
     ["field 'align_corners'", "nearest"]),
    ({"input": [1, 8, 8], "layers": [{"op": "relu", "name": "a"}, {"op": "relu", "name": "a"}]},
     ["layers[1]", "'a' is already used"]),
    ({"input": [1, 8, 8], "layers": [{"op": "relu", "name": "a.b"}]}, ["field 'name'", "'.'"]),
    ({"input": [1, 8, 8], "layers": [{"op": "relu", "name": "forward"}]},
     ["layers[0]", "'forward' cannot be used"]),
])
def test_invalid_specs_give_one_line_errors(data, parts):
    message = error_of(data)
    for part in parts:
        assert part in message, (part, message)


def test_build_spec_rejects_non_mapping():
    with pytest.raises(RflensError, match="spec must be a mapping"):
        build_spec([1, 2])  # type: ignore[arg-type]
