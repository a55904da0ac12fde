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
import warnings

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


@pytest.fixture(scope="module", params=[(name, exporter) for name in EXPORTS
                                        for exporter in ("torchscript", "dynamo")],
                ids=lambda p: f"{p[0]}-{p[1]}")
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
