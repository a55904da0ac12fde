"""Pretrained weights from local caches (never downloaded) and --weights FILE."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from rflens.cli import main
from rflens.errors import RflensError
from rflens.sources import load_model


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty torch hub cache under tmp_path, and any download attempt fails the test."""
    import torchvision.models._api as api

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch" / "hub" / "checkpoints"


def random_resnet18(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18()


def test_torchvision_weights_load_from_the_hub_cache(hub):
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    path = hub / Path(url).name
    path.parent.mkdir(parents=True)
    saved = random_resnet18(123).state_dict()
    torch.save(saved, path)
    model, meta = load_model("torchvision:resnet18@IMAGENET1K_V1")
    assert meta["name"] == "resnet18@IMAGENET1K_V1"
    assert str(path) in meta["weights"] and "IMAGENET1K_V1" in meta["weights"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    again, meta = load_model("torchvision:resnet18@default")  # DEFAULT is IMAGENET1K_V1 here
    assert meta["name"] == "resnet18@IMAGENET1K_V1"
    assert torch.equal(again.conv1.weight, saved["conv1.weight"])


def test_pretrained_weights_change_the_erf(hub):
    from rflens.erf import effective_receptive_field

    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    hub.mkdir(parents=True)
    trained = random_resnet18(123)
    with torch.no_grad():  # "trained": one strongly off-centre tap in every first-layer filter
        trained.conv1.weight.zero_()
        trained.conv1.weight[:, :, 0, 0] = 1.0
    torch.save(trained.state_dict(), hub / Path(url).name)
    loaded, _ = load_model("torchvision:resnet18@IMAGENET1K_V1")
    torch.manual_seed(0)
    untrained, meta = load_model("torchvision:resnet18")
    assert meta["weights"].startswith("untrained")
    maps = [effective_receptive_field(m, "conv1", (3, 32, 32), samples=2, progress=False).raw
            for m in (loaded, untrained)]
    # the loaded conv1 reads only the top-left tap: its centre unit's ERF is one pixel
    assert np.count_nonzero(maps[0]) == 1 and np.count_nonzero(maps[1]) == 49


def test_missing_weights_fail_at_once_naming_the_path(hub, capfd):
    expected = hub / Path(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url).name
    start = time.perf_counter()
    with pytest.raises(RflensError) as info:
        load_model("torchvision:resnet50@IMAGENET1K_V2")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message and str(expected) in message and "never downloads" in message
    assert main(["trf", "torchvision:resnet50@IMAGENET1K_V2"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and str(expected) in err


def test_unknown_weights_list_the_choices(hub):
    with pytest.raises(RflensError, match="IMAGENET1K_V1, IMAGENET1K_V2 \\(DEFAULT = IMAGENET1K_V2\\)"):
        load_model("torchvision:resnet50@IMAGENET_V3")
    with pytest.raises(RflensError, match="name the weights after '@'"):
        load_model("torchvision:resnet50@")


def _hf_snapshot(cache: Path, repo: str, filename: str) -> Path:
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("local")
    target = folder / "snapshots" / "local" / filename
    target.parent.mkdir(parents=True)
    return target


def test_timm_tags_load_from_the_hugging_face_cache(hub, tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import huggingface_hub.constants
    from safetensors.torch import save_file

    cache = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("download"))
    with pytest.raises(RflensError) as info:
        load_model("timm:resnet18@a1_in1k")
    message = str(info.value)
    assert "models--timm--resnet18.a1_in1k" in message and "hf download timm/resnet18.a1_in1k" in message
    torch.manual_seed(7)
    source = timm.create_model("resnet18", pretrained=False)
    save_file(source.state_dict(), str(_hf_snapshot(cache, "timm/resnet18.a1_in1k", "model.safetensors")))
    model, meta = load_model("timm:resnet18@DEFAULT")  # the default tag of resnet18 is a1_in1k
    assert meta["name"] == "resnet18.a1_in1k" and "model.safetensors" in meta["weights"]
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_timm_url_weights_from_the_torch_hub_cache(hub, tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    url = timm.get_pretrained_cfg("resnet18.a1_in1k").url
    hub.mkdir(parents=True)
    torch.manual_seed(8)
    source = timm.create_model("resnet18", pretrained=False)
    torch.save(source.state_dict(), hub / Path(url).name)
    model, meta = load_model("timm:resnet18@a1_in1k")
    assert str(hub / Path(url).name) in meta["weights"]
    assert torch.equal(model.fc.weight, source.fc.weight)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_is_loaded_strictly(suffix, tmp_path, capfd):
    from safetensors.torch import save_file

    saved = random_resnet18(5).state_dict()
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in saved.items()}}, path)
    else:
        save_file(saved, str(path))
    model, meta = load_model("torchvision:resnet18", weights=str(path))
    assert torch.equal(model.fc.bias, saved["fc.bias"])
    assert meta["weights"].startswith("safetensors" if suffix == ".safetensors" else "state dict")
    assert str(path.resolve()) in meta["weights"]
    assert main(["trf", "torchvision:resnet18", "--weights", str(path), "--layers", "layer1",
                 "--format", "csv"]) == 0
    assert "layer1," in capfd.readouterr().out


def test_weights_file_errors(tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save(torchvision.models.resnet34().state_dict(), wrong)
    with pytest.raises(RflensError, match="do not fit the model: .*unexpected.*another shape|do not fit"):
        load_model("torchvision:resnet18", weights=str(wrong))
    pickled = tmp_path / "object.pt"
    torch.save({"weights": object()}, pickled)  # only a full unpickler can read this
    with pytest.raises(RflensError, match="cannot read weights from .*object.pt"):
        load_model("torchvision:resnet18", weights=str(pickled))
    with pytest.raises(RflensError, match="not found"):
        load_model("torchvision:resnet18", weights=str(tmp_path / "absent.pt"))
