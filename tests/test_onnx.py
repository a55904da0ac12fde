"""ONNX files as a model source.

Oracles: the PyTorch original of every exported model (rflens' fields of the original network,
whose own correctness tests/test_trf.py and the gradient-support oracle check), matched to the ONNX
rows by their *values* computed with onnxruntime (not by name, not through the conversion); and
onnxruntime's difference probe (src/rflens/sources/onnx_probe.py) for graphs built directly with
onnx.helper, which needs no PyTorch model at all.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
import torchvision

import onnx_nets
import rflens
from rflens.errors import RflensError
from rflens.sources import load_model
from rflens.sources.onnx_probe import run_values
from rflens.trf.instrument import ModuleTracker, output_items

pytestmark = pytest.mark.filterwarnings("ignore")

EXPORTS = {
    "resnet18": (lambda: torchvision.models.resnet18(), (3, 48, 48)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(), (3, 48, 48)),
    "deeplab_backbone": (onnx_nets.deeplab_backbone, (3, 40, 40)),
    "unet": (onnx_nets.TinyUNet, (2, 24, 24)),
    "causal_tcn": (onnx_nets.CausalTCN, (1, 40)),
}


def export(model: torch.nn.Module, x: torch.Tensor, path, dynamo: bool) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)


SLOW_EXPORTS = {("mobilenet_v3_small", "dynamo"), ("deeplab_backbone", "dynamo")}  # ~30 s each


@pytest.fixture(scope="module", params=[
    pytest.param((name, exporter), marks=[pytest.mark.slow] if (name, exporter) in SLOW_EXPORTS else [])
    for name in EXPORTS for exporter in ("torchscript", "dynamo")], ids=lambda p: f"{p[0]}-{p[1]}")
def exported(request, tmp_path_factory):
    name, exporter = request.param
    factory, shape = EXPORTS[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(1, *shape)
    path = tmp_path_factory.mktemp("onnx") / f"{name}-{exporter}.onnx"
    export(model, x, path, exporter == "dynamo")
    return model, shape, path


def module_outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every module call's output tensors by row name (``name``, ``name#2``, ``name[1]``), copied
    when the call returns (later in-place ops do not change them)."""
    out = {}

    def keep(name, call, _module, output):
        base = (name or "output") + (f"#{call + 1}" if call else "")
        for suffix, t in output_items(output):
            out[base + suffix] = t.detach().clone().numpy()

    with torch.no_grad(), ModuleTracker(model, keep):
        model(x)
    return out


def _values_by_row(rf, source) -> dict[str, str]:
    rows = {}
    for name in rf.names:
        value = source.value_of(name)
        if value is not None:
            rows[name] = value
    return rows


def _same_field(a, b) -> bool:
    if a.known != b.known or a.is_global != b.is_global:
        return False
    if not a.known:
        return True
    if a.axes != b.axes:
        return False
    grid = a.grid
    if a.is_global or not grid or tuple(b.grid) != tuple(grid):
        return tuple(b.grid) == tuple(grid)
    units = {tuple(0 for _ in grid), tuple(g // 2 for g in grid), tuple(g - 1 for g in grid),
             tuple(min(3, g - 1) for g in grid)}
    return all(a.box(u, clip=True) == b.box(u, clip=True) for u in units)


def test_exported_rows_match_the_pytorch_original(exported):
    model, shape, path = exported
    net, meta = load_model(str(path))
    assert meta["source"] == "onnx" and meta["input_shape"] == shape
    onnx_rf = rflens.receptive_field(net, shape)
    torch_rf = rflens.receptive_field(model, shape)
    assert not onnx_rf.unsupported_ops
    assert not any("could not run on meta" in w for w in onnx_rf.warnings), onnx_rf.warnings

    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(3))
    rows = _values_by_row(onnx_rf, net.rflens_onnx)
    onnx_values = run_values(str(path), x.numpy(), sorted(set(rows.values())))
    torch_values = module_outputs(model, x)

    mapped, compared_convs = 0, 0
    for row, value in rows.items():
        v = onnx_values[value]
        # same values up to float32 rounding, and not a near-constant tensor (saturated gates)
        scale, spread = float(np.abs(v).max()), float(np.ptp(v))
        matches = [name for name, t in torch_values.items() if name in torch_rf and t.shape == v.shape
                   and spread > 1e-4 * scale and float(np.abs(t - v).max()) <= 2e-5 * scale]
        op = net.rflens_onnx.rows.get(row, ("", "", ()))[1]
        if not matches:
            assert op not in ("Conv", "ConvTranspose", "MaxPool"), \
                f"{row} ({op}) matches no layer of the PyTorch model"
            continue
        mapped += 1
        compared_convs += op in ("Conv", "ConvTranspose")
        for name in matches:
            assert _same_field(onnx_rf[row], torch_rf[name]), (
                f"{row} vs {name}: {onnx_rf[row]} != {torch_rf[name]}")
    assert compared_convs >= 3 and mapped >= 5, (mapped, len(rows))


# --- graphs built with onnx.helper, checked against onnxruntime's difference probe -------------

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from rflens.sources.onnx_probe import hull_of, probe_hulls  # noqa: E402


def make_model(nodes, in_shape, inits=(), opset=17, out="y"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *in_shape])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, [f"d{i}" for i in range(len(in_shape) + 1)])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def weight(name, shape, seed=0):
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def floats(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.float32), name)


def check_against_onnxruntime(model, in_shape, tmp_path, name="m"):
    """Every unit's clipped rflens box equals onnxruntime's difference-probe hull, and the converted
    module computes the values onnxruntime computes."""
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    net, meta = load_model(str(path))
    assert meta["input_shape"] == tuple(in_shape)
    rf = rflens.receptive_field(net, in_shape)
    assert not rf.unsupported_ops and not any("meta" in w for w in rf.warnings), rf.warnings
    layer = rf["output"]
    hulls = probe_hulls(str(path), ["y"], in_shape)["y"]
    assert tuple(layer.shape[2:]) == hulls.shape[:-2]
    wrong = [(u, layer.box(u, clip=True), hull_of(hulls, u)) for u in np.ndindex(*hulls.shape[:-2])
             if layer.box(u, clip=True) != hull_of(hulls, u)]
    assert not wrong, f"{len(wrong)} unit(s) differ, e.g. (unit, rflens, onnxruntime) {wrong[:3]}"
    x = np.random.default_rng(5).standard_normal((1, *in_shape)).astype(np.float32)
    with torch.no_grad():
        ours = net(torch.from_numpy(x)).numpy()
    theirs = run_values(str(path), x, ["y"])["y"]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    return rf


WINDOW_CASES = {
    # name: (op, attributes, input shape (C, *spatial), kernel)
    "conv-same_upper-stride2-even-kernel": ("Conv", {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (2, 9, 10), (4, 4)),
    "conv-same_lower-stride2-even-kernel": ("Conv", {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (2, 9, 10), (4, 4)),
    "conv-same_upper-stride1-even-kernel": ("Conv", {"auto_pad": "SAME_UPPER"}, (2, 8, 7), (2, 4)),
    "conv-same_lower-stride1": ("Conv", {"auto_pad": "SAME_LOWER"}, (2, 7, 8), (2, 3)),
    "conv-same_upper-stride3-1d": ("Conv", {"auto_pad": "SAME_UPPER", "strides": [3]}, (2, 17), (4,)),
    "conv-asymmetric-pads": ("Conv", {"pads": [2, 0, 1, 3], "strides": [2, 1]}, (2, 9, 8), (3, 3)),
    "conv-valid": ("Conv", {"auto_pad": "VALID", "strides": [2, 2]}, (2, 9, 8), (3, 2)),
    "conv-symmetric-pads-groups": ("Conv", {"pads": [1, 2, 1, 2], "group": 2}, (2, 7, 8), (3, 5)),
    "maxpool-same_upper-stride2": ("MaxPool", {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (2, 9, 10), (2, 3)),
    "maxpool-same_lower-stride2": ("MaxPool", {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (2, 9, 10), (2, 3)),
    "maxpool-asymmetric-pads": ("MaxPool", {"pads": [0, 2, 1, 0], "strides": [2, 2]}, (2, 9, 10), (3, 3)),
    "avgpool-same_upper-exclude-pad": ("AveragePool", {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (2, 9, 10), (3, 2)),
    "avgpool-asymmetric-include-pad": ("AveragePool", {"pads": [1, 0, 0, 1], "count_include_pad": 1}, (2, 8, 9), (2, 2)),
    "avgpool-asymmetric-exclude-pad": ("AveragePool", {"pads": [1, 0, 0, 1], "strides": [2, 1]}, (2, 8, 9), (2, 2)),
}


@pytest.mark.parametrize("case", sorted(WINDOW_CASES))
def test_window_padding_matches_onnxruntime(case, tmp_path):
    op, attrs, in_shape, kernel = WINDOW_CASES[case]
    inputs, inits = ["x"], []
    if op == "Conv":
        groups = attrs.get("group", 1)
        inits = [weight("w", (3 * groups, in_shape[0] // groups, *kernel)), weight("b", (3 * groups,), 1)]
        inputs += ["w", "b"]
    else:
        attrs = {**attrs, "kernel_shape": list(kernel)}
    node = helper.make_node(op, inputs, ["y"], name=f"the_{op}", **attrs)
    check_against_onnxruntime(make_model([node], in_shape, inits), in_shape, tmp_path)


CONV_T_CASES = {
    "output_padding": ({"strides": [2, 3], "output_padding": [1, 2], "pads": [1, 1, 1, 1]}, (3, 3)),
    "asymmetric-pads": ({"strides": [2, 2], "pads": [0, 1, 2, 0]}, (3, 4)),
    "output_shape": ({"strides": [2, 2], "output_shape": [12, 11]}, (3, 3)),
    "same_upper": ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (3, 4)),
    "same_lower": ({"strides": [2, 2], "auto_pad": "SAME_LOWER"}, (3, 4)),
    "dilated-1d": ({"strides": [3], "dilations": [2], "pads": [2, 0], "output_padding": [1]}, (3,)),
}


@pytest.mark.parametrize("case", sorted(CONV_T_CASES))
def test_conv_transpose_geometry_matches_onnxruntime(case, tmp_path):
    attrs, kernel = CONV_T_CASES[case]
    in_shape = (2, 5, 6)[: 1 + len(kernel)]
    inits = [weight("w", (2, 3, *kernel)), weight("b", (3,), 1)]
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", **attrs)
    check_against_onnxruntime(make_model([node], in_shape, inits), in_shape, tmp_path)


COORDINATES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
               "tf_crop_and_resize"]
SAMPLING = ["nearest-round_prefer_floor", "nearest-round_prefer_ceil", "nearest-floor", "nearest-ceil",
            "linear", "cubic"]
# (scales or None, sizes or None) per variant: up/down, integer and odd ratios
TARGETS = [([1, 1, 2.0, 3.0], None), (None, [1, 2, 5, 13]), ([1, 1, 0.5, 1.5], None),
           (None, [1, 2, 11, 4]), (None, [1, 2, 2, 17])]
# one output row: pytorch_half_pixel and align_corners read source row 0 (see also the test below)
ONE_ROW = (None, [1, 2, 1, 17])


def resize_model(coordinates, sampling, target, in_shape=(2, 7, 9), opset=17):
    mode, _, nearest = sampling.partition("-")
    scales, sizes = target
    inits = [floats("roi", [0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7] if coordinates == "tf_crop_and_resize" else [])]
    inputs = ["x", "roi"]
    if scales is not None:
        inits.append(floats("scales", scales))
        inputs.append("scales")
    else:
        inits.append(ints("sizes", sizes))
        inputs += ["", "sizes"]
    attrs = {"mode": mode, "coordinate_transformation_mode": coordinates}
    if nearest:
        attrs["nearest_mode"] = nearest
    if coordinates == "tf_crop_and_resize":
        attrs["extrapolation_value"] = 0.25
    node = helper.make_node("Resize", inputs, ["y"], name="the_resize", **attrs)
    return make_model([node], in_shape, inits, opset=opset)


@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("coordinates", COORDINATES)
def test_resize_matches_onnxruntime(coordinates, sampling, tmp_path):
    exact_cubic = coordinates in ("half_pixel", "pytorch_half_pixel", "align_corners")
    targets = TARGETS if sampling != "cubic" or exact_cubic else TARGETS[:1]
    if coordinates in ("pytorch_half_pixel", "align_corners"):
        targets = targets + [ONE_ROW]
    for k, target in enumerate(targets):
        model = resize_model(coordinates, sampling, target)
        if sampling == "cubic" and not exact_cubic:
            path = tmp_path / "cubic.onnx"
            onnx.save(model, str(path))
            net, _ = load_model(str(path))
            with pytest.raises(RflensError, match="the_resize.*cubic.*coordinate_transformation_mode"):
                rflens.receptive_field(net, (2, 7, 9))
            continue
        if coordinates == "tf_crop_and_resize" and target[0] is not None and sampling != "linear":
            continue  # onnxruntime sizes the output from roi and scales differently from the spec
        check_against_onnxruntime(model, (2, 7, 9), tmp_path, name=f"r{k}")


@pytest.mark.parametrize("sampling", ["linear", "nearest-floor"])
def test_resize_follows_the_exact_coordinates_where_onnxruntime_rounds(sampling, tmp_path):
    """7 rows resized to 1 with half_pixel: the source row is (0 + 1/2) * 7 - 1/2 = 3 exactly, so
    linear reads row 3 alone and floor gives 3 (PyTorch's bilinear agrees). onnxruntime divides by
    the float32 scale 1/7 and gets 2.9999998: a 2e-7 weight on row 2, and floor 2. rflens follows
    the specification's exact arithmetic (documented in rflens.sources.onnx_resize)."""
    path = tmp_path / "one.onnx"
    onnx.save(resize_model("half_pixel", sampling, ONE_ROW), str(path))
    net, _ = load_model(str(path))
    rf = rflens.receptive_field(net, (2, 7, 9))
    assert rf.box("output", (0, 0), clip=True)[0] == (3, 3)
    hull = hull_of(probe_hulls(str(path), ["y"], (2, 7, 9))["y"], (0, 0))
    assert hull[0] == ((2, 3) if sampling == "linear" else (2, 2))  # the runtime's rounding
    x = torch.randn(1, 2, 7, 9, requires_grad=True)
    torch.nn.functional.interpolate(x, size=(1, 17), mode="bilinear")[0, :, 0, 0].sum().backward()
    assert torch.nonzero(x.grad[0].abs().sum(dim=(0, 2))).flatten().tolist() == [3]


def test_resize_on_1d_and_3d_inputs(tmp_path):
    for coords, mode in (("asymmetric", "linear"), ("half_pixel", "nearest"), ("align_corners", "linear")):
        node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="r1",
                                coordinate_transformation_mode=coords, mode=mode)
        model = make_model([node], (2, 11), [ints("sizes", [1, 2, 25])])
        check_against_onnxruntime(model, (2, 11), tmp_path, name=f"1d-{coords}-{mode}")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="r3",
                            coordinate_transformation_mode="asymmetric", mode="nearest",
                            nearest_mode="floor")
    model = make_model([node], (1, 3, 4, 5), [floats("scales", [1, 1, 2, 1, 1.5])])
    check_against_onnxruntime(model, (1, 3, 4, 5), tmp_path, name="3d")


@pytest.mark.parametrize("opset, mode", [(7, "linear"), (9, "nearest"), (10, "nearest")])
def test_old_opset_upsample_is_upgraded(opset, mode, tmp_path):
    """Upsample (opsets 7-9) and Resize-10 read x / scale (asymmetric), nearest rounding down when
    upsampling and up when downsampling (onnxruntime); version_converter's Resize-11 forgets both."""
    if opset == 7:
        node = helper.make_node("Upsample", ["x"], ["y"], mode=mode, scales=[1.0, 1.0, 2.0, 3.0])
        inits = []
    else:
        node = helper.make_node("Upsample" if opset == 9 else "Resize", ["x", "s"], ["y"], mode=mode)
        inits = [floats("s", [1, 1, 3, 2] if opset == 9 else [1, 1, 0.4, 0.6])]
    model = make_model([node], (2, 5, 6), inits, opset=opset)
    if opset == 10:
        check_against_onnxruntime(model, (2, 5, 6), tmp_path)
        return
    rf = check_against_onnxruntime(model, (2, 5, 6), tmp_path)
    scales = (2, 3) if opset == 7 else (3, 2)
    assert rf["output"].jump == tuple(Fraction(1, s) for s in scales)


# --- the CLI, input shapes and bad input ---------------------------------------------------------

from rflens.cli import main  # noqa: E402


def conv_chain(in_dims=(2, 12, 12), name="net"):
    """Conv (SAME_UPPER, stride 2) -> Relu -> MaxPool, input dims as given (str = dynamic)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *in_dims])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="stem/conv.0", auto_pad="SAME_UPPER",
                              strides=[2, 2]),
             helper.make_node("Relu", ["a"], ["b"], name="stem/relu"),
             helper.make_node("MaxPool", ["b"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, name, [x], [y], initializer=[weight("w", (4, 2, 3, 3))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def error_line(capfd, *argv, output: bool = False) -> str:
    """The one stderr line of a failing command (capfd sees the C++ libraries' output too);
    nothing on stdout unless ``output``."""
    code = main(list(argv))
    out, err = capfd.readouterr()
    assert code == 2 and (output or not out.strip()), (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rflens: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_rows_are_named_after_the_onnx_nodes(tmp_path, capfd):
    path = tmp_path / "chain.onnx"
    onnx.save(conv_chain(), str(path))
    net, meta = rflens.load_model(str(path))
    assert meta["input_shape"] == (2, 12, 12) and meta["source"] == "onnx"
    assert "initializers" in meta["weights"]
    rf = rflens.receptive_field(net, meta["input_shape"])
    # one row per node; rows with a dot are the parts of one node's conversion (SAME padding)
    assert [n for n in rf.names if "." not in n] == ["stem/conv_0", "stem/relu", "pool", "output"]
    assert rf["stem/conv_0.op"].op == "Conv2d" and rf["stem/conv_0.pad"].op == "SamePad"
    assert net.rflens_onnx.rows["stem/conv_0"] == ("stem/conv.0", "Conv", ("a",))
    assert net.rflens_onnx.value_of("pool") == "y" and net.rflens_onnx.value_of("output") == "y"
    # conv 3, stride 2, SAME_UPPER on 12: total padding 1, at the end; then a 3x3 max pool
    assert rf["stem/conv_0"].size == (3, 3) and rf["stem/conv_0"].padding == (0, 0)
    assert rf["pool"].size == (7, 7) and rf["pool"].jump == (2, 2) and rf["pool"].padding == (2, 2)
    assert main(["trf", str(path), "--format", "csv"]) == 0
    out = capfd.readouterr().out
    assert "stem/conv_0,Padded,1x4x6x6,3,3,2,2,0,0,1,1," in out, out
    assert main(["trf", str(path), "--verify", "--format", "json"]) == 0
    assert "all agree" in capfd.readouterr().err


def test_verify_reports_a_disagreement(tmp_path, capfd, monkeypatch):
    """--verify compares with onnxruntime, not with the conversion: a wrong conversion fails."""
    from rflens.sources import onnx_ops

    path = tmp_path / "chain.onnx"
    onnx.save(conv_chain(), str(path))
    monkeypatch.setattr(onnx_ops, "same_pads", lambda size, k, s, d, upper: (1, 0))  # SAME_LOWER
    line = error_line(capfd, "trf", str(path), "--verify", output=True)  # the table, then the diff
    assert "disagree with onnxruntime" in line and "stem/conv_0 unit" in line


def test_dynamic_axes_need_input(tmp_path, capfd):
    path = tmp_path / "dyn.onnx"
    onnx.save(conv_chain((2, "height", 12)), str(path))
    net, meta = load_model(str(path))
    assert meta["input_shape"] is None and meta["input_dims"] == (2, None, None)
    line = error_line(capfd, "trf", str(path))
    assert "dynamic sizes (2x?x12" in line and "--input 2x224x12" in line
    assert main(["trf", str(path), "--input", "2x20x12", "--format", "json"]) == 0
    assert '"shape": [\n      1,\n      2,\n      20,\n      12' in capfd.readouterr().out
    line = error_line(capfd, "trf", str(path), "--input", "3x20x12")
    assert "2x?x?" in line and "3x20x12" in line
    rf = rflens.receptive_field(net, (2, 20, 12))
    assert rf["pool"].grid == (10, 6)


def fixed_size_chain():
    """conv_chain followed by a Reshape to a constant feature-map shape: sizes baked in."""
    model = conv_chain()
    node = model.graph.node[-1]
    node.output[0] = "p"
    model.graph.node.append(helper.make_node("Reshape", ["p", "shape"], ["y"], name="unflatten"))
    model.graph.initializer.append(ints("shape", [1, 4, 3, 12]))
    return model


def test_static_sizes_bind_only_graphs_that_bake_sizes_in(tmp_path, capfd):
    free, fixed = tmp_path / "free.onnx", tmp_path / "fixed.onnx"
    onnx.save(conv_chain(), str(free))
    onnx.save(fixed_size_chain(), str(fixed))
    net, meta = load_model(str(free))
    assert meta["input_shape"] == (2, 12, 12) and meta["input_dims"] == (2, None, None)
    assert rflens.receptive_field(net, (2, 20, 16))["pool"].grid == (10, 8)
    net, meta = load_model(str(fixed))
    assert net.rflens_onnx.fixed_by == "Reshape node 'unflatten'"
    assert meta["input_dims"] == (2, 12, 12)
    line = error_line(capfd, "trf", str(fixed), "--input", "2x20x16")
    assert "2x12x12" in line and "2x20x16" in line
    with pytest.raises(RflensError, match="Reshape node 'unflatten' fixes the sizes"):
        rflens.receptive_field(net, (2, 20, 16))
    assert rflens.receptive_field(net, (2, 12, 12))["output"].shape == (1, 4, 3, 12)


def test_any_batch_size_runs(tmp_path):
    path = tmp_path / "chain.onnx"
    onnx.save(conv_chain(), str(path))
    net, _ = load_model(str(path))
    x = np.random.default_rng(0).standard_normal((3, 2, 12, 12)).astype(np.float32)
    with torch.no_grad():
        ours = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours[1:2], run_values(str(path), x[1:2], ["y"])["y"], rtol=1e-5, atol=1e-6)


def unsupported(kind):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])
    if kind == "op":
        node = helper.make_node("LpPool", ["x"], ["y"], name="lp_node", kernel_shape=[2, 2])
        opsets = [helper.make_opsetid("", 17)]
    elif kind == "domain":
        node = helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    else:  # an opset-8 op without a form in later opsets
        node = helper.make_node("ImageScaler", ["x"], ["y"], name="scaler", scale=2.0)
        opsets = [helper.make_opsetid("", 8)]
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)
    model.ir_version = 8 if kind != "opset" else 4
    return model


@pytest.mark.parametrize("kind, words", [
    ("op", ["LpPool", "lp_node", "no PyTorch conversion"]),
    ("domain", ["FusedConv", "fused", "com.microsoft"]),
    ("opset", ["ImageScaler", "scaler", "opset 8", "cannot be upgraded"]),
])
def test_unconvertible_graphs_name_the_op_and_node(kind, words, tmp_path, capfd):
    path = tmp_path / f"{kind}.onnx"
    onnx.save(unsupported(kind), str(path))
    line = error_line(capfd, "trf", str(path))
    for word in words:
        assert word in line, line


def test_bad_files_give_one_line(tmp_path, capfd):
    good = tmp_path / "good.onnx"
    onnx.save(conv_chain(), str(good))
    cases = {"missing.onnx": None, "text.onnx": b"this is not a model\n",
             "noise.onnx": np.random.default_rng(0).bytes(300),
             "truncated.onnx": good.read_bytes()[: good.stat().st_size // 2]}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        line = error_line(capfd, "trf", str(path))
        assert name in line, line
        assert ("not found" in line) if content is None else ("ONNX" in line), line


def test_two_graph_inputs_are_refused(tmp_path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2, 6, 6])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "two.onnx"))
    with pytest.raises(RflensError, match="2 graph inputs \\(a, b\\)"):
        load_model(str(tmp_path / "two.onnx"))


def test_every_command_takes_an_onnx_model(tmp_path, capfd):
    path = tmp_path / "chain.onnx"
    onnx.save(conv_chain((2, 16, 16)), str(path))
    assert main(["erf", str(path), "--layer", "pool", "--samples", "4", "--format", "json", "-q"]) == 0
    data = json.loads(capfd.readouterr().out)
    assert data["layer"] == "pool"
    assert main(["dense", str(path), "--layer", "stem/relu"]) == 0
    assert "J (total stride)" in capfd.readouterr().out
    from rflens.erf import effective_receptive_field

    result = effective_receptive_field(str(path), "stem/conv_0", samples=2, progress=False)
    assert result.input_shape[-3:] == (2, 16, 16) and result.trf.size == (3, 3)
    assert result.raw.shape == (16, 16) and result.raw.sum() > 0


def test_awkward_node_names_get_unique_rows(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 6])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="type"),      # an nn.Module method
             helper.make_node("Relu", ["a"], ["b"], name="output"),    # the model's own row
             helper.make_node("Relu", ["b"], ["c"], name="a.b"),
             helper.make_node("Relu", ["c"], ["d"], name="a_b"),       # same name once dots go
             helper.make_node("Relu", ["d"], ["y"])]                   # no name: its output's
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "names.onnx"))
    net, _ = load_model(str(tmp_path / "names.onnx"))
    rf = rflens.receptive_field(net, (1, 6))
    assert rf.names == ["type~2", "output~2", "a_b", "a_b~2", "y", "output"]
    assert net.rflens_onnx.rows["a_b~2"][0] == "a_b" and net.rflens_onnx.rows["a_b"][0] == "a.b"
