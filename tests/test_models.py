"""Resolving MODEL arguments, --input shapes and default shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import rflens.sources.models as models
from rflens.errors import RflensError
from rflens.sources.models import default_input_shape, load_model, parse_input

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def error_of(fn, *args) -> str:
    with pytest.raises(RflensError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def no_downloads(monkeypatch, tmp_path):
    """Fail any attempt to fetch weights, and hide any weights cached on this machine."""
    import torchvision.models._api as api

    def refuse(*args, **kwargs):
        raise AssertionError(f"weights download attempted: {args}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# --- parse_input --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, shape", [
    ("3x224x224", (3, 224, 224)),
    ("3,224,224", (3, 224, 224)),
    ("3X32x48", (3, 32, 48)),
    (" 3 x 224 x 224 ", (3, 224, 224)),
    ("(3, 64, 64)", (3, 64, 64)),
    ("1x64", (1, 64)),
    ("1x16x32x32", (1, 16, 32, 32)),
])
def test_parse_input_accepts(text, shape):
    assert parse_input(text) == shape


@pytest.mark.parametrize("text", ["3x0x224", "3x-1x224", "3x2.5x224", "3xax224", "3x224x", "x",
                                  "3", "1x2x3x4x5", "3;224;224"])
def test_parse_input_rejects(text):
    message = error_of(parse_input, text)
    assert f"'{text}'" in message and "3x224x224" in message


@pytest.mark.parametrize("text", ["", "   "])
def test_parse_input_rejects_empty(text):
    assert "empty --input" in error_of(parse_input, text)


# --- torchvision ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, name, cls", [
    ("torchvision:resnet18", "resnet18", "ResNet"),
    ("torchvision:ResNet18", "resnet18", "ResNet"),
    ("torchvision:lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "LRASPP"),
    ("torchvision:fcn_resnet50", "fcn_resnet50", "FCN"),
    ("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn",
     "FasterRCNN"),
    ("torchvision:r3d_18", "r3d_18", "VideoResNet"),
])
def test_torchvision_models_build_without_weights(no_downloads, spec, name, cls):
    model, meta = load_model(spec)
    assert type(model).__name__ == cls
    assert meta == {"source": "torchvision", "name": name, "input_shape": None,
                    "weights": models.UNTRAINED}


def test_torchvision_segmentation_keeps_default_aux_loss(no_downloads):
    model, _ = load_model("torchvision:fcn_resnet50")
    assert model.aux_classifier is None


def test_torchvision_unknown_name_suggests_close_names():
    message = error_of(load_model, "torchvision:resnet19")
    assert "unknown torchvision model 'resnet19'" in message and "'resnet18'" in message


def test_torchvision_missing_name():
    assert "torchvision:resnet18" in error_of(load_model, "torchvision:")


def test_bare_torchvision_name_suggests_prefix():
    message = error_of(load_model, "resnet18")
    assert "unrecognised MODEL 'resnet18'" in message and "'torchvision:resnet18'" in message


def test_unrecognised_model_lists_forms():
    message = error_of(load_model, "keras:foo")
    assert "'keras:foo'" in message and "timm:NAME" in message and ".yaml" in message


def test_empty_model():
    assert "empty MODEL" in error_of(load_model, "  ")


def test_torchvision_builder_failure_is_one_line(monkeypatch):
    import torchvision.models as tvm

    def broken(**kwargs):
        raise ValueError("first line\nsecond line")

    monkeypatch.setattr(tvm, "get_model_builder", lambda name: broken)
    message = error_of(load_model, "torchvision:resnet18")
    assert "building torchvision:resnet18 raised ValueError: first line second line" in message


# --- timm -----------------------------------------------------------------------------------------

def test_timm_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    message = error_of(load_model, "timm:resnet18")
    assert "pip install timm" in message and "pip install rflens[timm]" in message


def test_timm_not_installed_default_shape(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    assert default_input_shape("timm:resnet18") == (3, 224, 224)


def test_timm_model():
    pytest.importorskip("timm")
    model, meta = load_model("timm:resnet18")
    assert isinstance(model, nn.Module)
    assert meta == {"source": "timm", "name": "resnet18", "input_shape": (3, 224, 224),
                    "weights": models.UNTRAINED}


def test_timm_unknown_name_suggests_close_names():
    pytest.importorskip("timm")
    message = error_of(load_model, "timm:resnet_18")
    assert "unknown timm model 'resnet_18'" in message and "resnet18" in message


def test_timm_default_shape_from_pretrained_cfg():
    pytest.importorskip("timm")
    assert default_input_shape("timm:vit_base_patch16_384") == (3, 384, 384)


# --- file.py:factory ------------------------------------------------------------------------------

def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_factory_file(tmp_path):
    write(tmp_path, "helper_layers.py", "import torch.nn as nn\nWIDTH = 4\n")
    path = write(tmp_path, "net.py", "import torch.nn as nn\nfrom helper_layers import WIDTH\n"
                 "def make():\n    return nn.Conv2d(3, WIDTH, 3)\n")
    before = list(sys.path)
    model, meta = load_model(f"{path}:make")
    assert isinstance(model, nn.Conv2d) and model.out_channels == 4
    assert meta == {"source": "file", "name": f"{path}:make", "input_shape": None,
                    "weights": f"as {path}:make() builds them"}
    assert sys.path == before


def test_factory_may_be_a_class(tmp_path):
    path = write(tmp_path, "cls.py", "import torch.nn as nn\nclass Net(nn.Module):\n"
                 "    def forward(self, x):\n        return x\n")
    model, _ = load_model(f"{path}:Net")
    assert type(model).__name__ == "Net"


def test_factory_missing_file(tmp_path):
    message = error_of(load_model, f"{tmp_path}/absent.py:make")
    assert "absent.py: model file not found" in message


def test_factory_not_named(tmp_path):
    path = write(tmp_path, "net.py", "")
    assert "name the factory after a colon" in error_of(load_model, f"{path}:")
    assert f"add the factory: {path}:make_model" in error_of(load_model, path)


def test_factory_missing_attribute_suggests(tmp_path):
    path = write(tmp_path, "net.py", "def make_model():\n    pass\n")
    message = error_of(load_model, f"{path}:make_modle")
    assert "has no attribute 'make_modle'" in message and "'make_model'" in message


def test_factory_not_callable(tmp_path):
    path = write(tmp_path, "net.py", "model = 3\n")
    message = error_of(load_model, f"{path}:model")
    assert f"{path}:model is not callable (type int)" in message


def test_factory_raising(tmp_path):
    path = write(tmp_path, "net.py", "def make():\n    raise RuntimeError('no\\nGPU')\n")
    message = error_of(load_model, f"{path}:make")
    assert f"{path}:make() (called with no arguments) raised RuntimeError: no GPU" in message


def test_factory_needing_arguments(tmp_path):
    path = write(tmp_path, "net.py", "def make(depth):\n    pass\n")
    assert "raised TypeError" in error_of(load_model, f"{path}:make")


def test_factory_returning_non_module(tmp_path):
    path = write(tmp_path, "net.py", "def make():\n    return [1]\n")
    message = error_of(load_model, f"{path}:make")
    assert f"{path}:make() returned list, expected a torch.nn.Module" in message


def test_factory_file_with_syntax_error(tmp_path):
    path = write(tmp_path, "net.py", "def make(:\n")
    message = error_of(load_model, f"{path}:make")
    assert f"{path}: syntax error at line 1" in message


def test_factory_file_failing_on_import(tmp_path):
    path = write(tmp_path, "net.py", "import not_a_real_module_xyz\n")
    message = error_of(load_model, f"{path}:make")
    assert "running the file failed with ModuleNotFoundError" in message
    assert "not_a_real_module_xyz" in message


# --- spec files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["chain.yaml", "chain.json"])
def test_spec_file(name):
    model, meta = load_model(str(EXAMPLES / name))
    assert isinstance(model, nn.Sequential) and list(model._modules) == ["layer0_conv", "layer1_conv"]
    assert meta == {"source": "spec", "name": "chain", "input_shape": (1, 64, 64),
                    "weights": models.UNTRAINED}


def test_spec_file_without_name_uses_stem(tmp_path):
    path = write(tmp_path, "tiny.yml", "input: [1, 16]\nlayers: [{op: conv, kernel: 3}]\n")
    assert load_model(path)[1]["name"] == "tiny"


def test_spec_file_missing(tmp_path):
    assert "nope.yaml: spec file not found" in error_of(load_model, str(tmp_path / "nope.yaml"))


# --- default_input_shape --------------------------------------------------------------------------

@pytest.mark.parametrize("name, shape", [
    ("resnet18", (3, 224, 224)),
    ("torchvision:resnet18", (3, 224, 224)),
    ("inception_v3", (3, 299, 299)),
    ("torchvision:inception_v3", (3, 299, 299)),
    ("torchvision:r3d_18", (3, 16, 112, 112)),
    ("torchvision:s3d", (3, 16, 224, 224)),
    ("mvit_v2_s", (3, 16, 224, 224)),
    ("model.py:make", (3, 224, 224)),
    (str(EXAMPLES / "signal1d.yaml"), (1, 256)),
])
def test_default_input_shape(name, shape):
    assert default_input_shape(name) == shape


def test_video_default_fits_s3d(no_downloads):
    model, _ = load_model("torchvision:s3d")
    model = model.eval().to("meta")
    out = model(torch.zeros(1, *default_input_shape("torchvision:s3d"), device="meta"))
    assert out.shape == (1, 400)


def test_public_api():
    assert set(models.__all__) >= {"load_model", "parse_input", "default_input_shape"}
