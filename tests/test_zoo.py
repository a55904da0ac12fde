"""Every torchvision classification and segmentation model runs through the engine without a
traceback; unsupported constructs are reported by name, never silently dropped."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torchvision
from torchvision import models as tvm

import rflens

CLASSIFICATION = tvm.list_models(module=tvm)
SEGMENTATION = tvm.list_models(module=tvm.segmentation)
# token mixers over windows/flattened tokens that the engine reports as not followed (see docs)
PARTIAL = ("vit_", "swin", "maxvit")


def build(name: str) -> torch.nn.Module:
    kwargs = {"weights": None}
    if name in SEGMENTATION:
        kwargs["weights_backbone"] = None
    try:
        with torch.device("meta"):  # no memory and no init cost; rflens only needs shapes
            return torchvision.models.get_model(name, **kwargs)
    except NotImplementedError:  # a builder whose arithmetic reads tensor values (RegNet)
        with _no_init():
            return torchvision.models.get_model(name, **kwargs)


@contextlib.contextmanager
def _no_init():
    """Skip weight initialisation (uninitialised memory is fine: only shapes matter here)."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


@pytest.mark.parametrize("name", CLASSIFICATION + SEGMENTATION)
def test_model_runs_and_reports(name):
    shape = (3, 299, 299) if "inception" in name else (3, 224, 224)
    rf = rflens.receptive_field(build(name), shape, name=name)
    assert rf.names[-1].startswith("output")
    for layer in rf.layers:
        if not layer.known:
            assert layer.unknown_ops or layer.lost, layer.name  # always says why
    if not name.startswith(PARTIAL):
        out = rf[rf.names[-1]]
        assert out.known and not rf.unsupported_ops, (name, rf.unsupported_ops)
        assert all(layer.known for layer in rf.layers), name
    if name in CLASSIFICATION and not name.startswith(PARTIAL):
        assert rf["output"].is_global  # a classifier pools over the whole image
