"""ERF at scale: several processes, image data sets, checkpoints, several targets per pass, memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nets import ScaleNet  # importable by the processes a multi-process run starts
from rflens.erf import ERFWarning, effective_receptive_field, effective_receptive_fields
from rflens.errors import RflensError

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def make_images(root: Path, count: int, tree: bool = True) -> Path:
    """``count`` smooth random RGB images of assorted sizes, in two class folders (or flat)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    for i in range(count):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        coarse = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        folder = root / (f"class{i % 2}" if tree else "")
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"img{i:02d}.png")
    return root


def quiet(fn, *args, **kw):
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ERFWarning)
        return fn(*args, **kw)


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


# --- several processes -------------------------------------------------------------------------------

def test_one_and_two_processes_give_the_same_map(tmp_path):
    folder = make_images(tmp_path / "images", 7)
    torch.manual_seed(0)
    model = ScaleNet()
    kw = dict(units=["center", (1, 2)], inputs=str(folder), samples=7, batch_size=2,
              weights="random", transform="resize")
    one = quiet(effective_receptive_fields, model, ["b", "a"], (3, 24, 24), loader_workers=0, **kw)
    two = quiet(effective_receptive_fields, model, ["b", "a"], (3, 24, 24), workers=2,
                loader_workers=1, **kw)
    assert [(r.layer, r.unit) for r in two] == [("b", (6, 6)), ("b", (1, 2)), ("a", (12, 12)),
                                               ("a", (1, 2))]
    for a, b in zip(one, two):
        assert a.samples == b.samples == 7
        assert (a.settings["processes"], b.settings["processes"]) == (1, 2)
        assert rel_diff(a.raw, b.raw) < 1e-9
    # a fresh draw per sample, seeded by the sample's global index: not one shared draw
    single = quiet(effective_receptive_field, model, "a", (3, 24, 24), inputs=str(folder),
                   samples=1, weights="random", transform="resize", loader_workers=0)
    assert rel_diff(one[2].raw, single.raw) > 1e-3


# --- checkpoints --------------------------------------------------------------------------------------

SLOW_MODEL = '''
import time
import torch
from torch import nn


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        time.sleep(0.15)
        return self.b(torch.relu(self.a(x)))


def build():
    return Slow()
'''


def _cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "rflens", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_interrupted_checkpointed_run_resumes_to_the_same_map(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW_MODEL)
    ckpt = tmp_path / "run.npz"
    args = ["erf", f"{tmp_path / 'slow.py'}:build", "--layer", "b", "--input", "1x16x16", "--samples", "40",
            "--batch-size", "2", "--checkpoint", str(ckpt), "--checkpoint-every", "4", "-q",
            "--format", "json", "--save", str(tmp_path / "resumed.npy")]
    first = _cli(args)
    deadline = time.monotonic() + 120
    progress = 0
    while time.monotonic() < deadline and first.poll() is None:
        if ckpt.exists():
            with np.load(ckpt) as data:
                progress = json.loads(str(data["meta"]))["next_batch"]
            if progress >= 2:
                break
        time.sleep(0.05)
    assert first.poll() is None, f"the run ended before it could be interrupted: {first.communicate()}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    with np.load(ckpt) as data:
        meta = json.loads(str(data["meta"]))
    assert not meta["done"] and 0 < meta["next_batch"] < 20  # stopped part-way
    second = _cli(args)
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    resumed = json.loads(out)
    assert resumed["samples"] == 40
    with np.load(ckpt) as data:
        assert json.loads(str(data["meta"]))["done"]
    # the uninterrupted run, in this process, with the model the CLI draws (seed 0)
    sys.path.insert(0, str(tmp_path))
    try:
        import slow
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    model = slow.build()
    slow.time.sleep = lambda s: None
    whole = quiet(effective_receptive_field, model, "b", (1, 16, 16), samples=40, batch_size=2)
    assert rel_diff(whole.raw, np.load(tmp_path / "resumed.npy")) < 1e-9


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    ckpt = tmp_path / "c.npz"
    model = ScaleNet()
    done = quiet(effective_receptive_field, model, "a", (3, 12, 12), samples=4, batch_size=2,
                 checkpoint=ckpt, checkpoint_every=2)
    again = quiet(effective_receptive_field, model, "a", (3, 12, 12), samples=4, batch_size=2,
                  checkpoint=ckpt, checkpoint_every=2)  # finished: rebuilt from the file
    np.testing.assert_array_equal(done.raw, again.raw)
    with pytest.raises(RflensError, match="another run.*samples: 4 there, 6 now"):
        quiet(effective_receptive_field, model, "a", (3, 12, 12), samples=6, checkpoint=ckpt)


# --- data sets ------------------------------------------------------------------------------------------

def test_image_trees_and_flat_folders_in_sorted_path_order(tmp_path):
    from rflens.erf.datasets import list_images, resolve_source

    make_images(tmp_path / "tree", 5)
    files = list_images(tmp_path / "tree")
    assert [f"{p.parent.name}/{p.name}" for p in files] == [
        "class0/img00.png", "class0/img02.png", "class0/img04.png", "class1/img01.png",
        "class1/img03.png"]
    src = resolve_source(str(tmp_path / "tree"), (3, 16, 16), count=5, transform="resize-crop")
    assert src.count == 5 and len(src.dataset) == 5
    assert src.dataset[3].shape == (3, 16, 16)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(RflensError, match="no images"):
        resolve_source(str(tmp_path / "empty"), (3, 16, 16), count=1)


def _two_tone(path: Path) -> None:
    """A 40x20 image: left half value 200, right half value 50 (all channels)."""
    from PIL import Image

    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20], a[:, 20:] = 200, 50
    Image.fromarray(a).save(path)


def test_resize_stretches_where_resize_crop_crops(tmp_path):
    from rflens.erf.datasets import resolve_source
    from rflens.erf.inputs import IMAGENET_MEAN, IMAGENET_STD

    (tmp_path / "im").mkdir()
    _two_tone(tmp_path / "im" / "a.png")
    norm = lambda v, c: (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]  # noqa: E731
    stretched = resolve_source(str(tmp_path / "im"), (3, 10, 10), count=1, transform="resize").dataset[0]
    cropped = resolve_source(str(tmp_path / "im"), (3, 10, 10), count=1,
                             transform="resize-crop").dataset[0]
    # stretch (RepLKNet): both halves survive, 5 columns each
    assert float(stretched[0, 5, 0]) == pytest.approx(norm(200, 0), abs=1e-6)
    assert float(stretched[0, 5, 9]) == pytest.approx(norm(50, 0), abs=1e-6)
    # crop: the middle 10 of 20 columns at scale 1/2; the outer columns are pure halves
    assert float(cropped[1, 5, 0]) == pytest.approx(norm(200, 1), abs=1e-6)
    assert float(cropped[1, 5, 9]) == pytest.approx(norm(50, 1), abs=1e-6)
    gray = resolve_source(str(tmp_path / "im"), (3, 10, 10), count=1, transform="resize",
                          mean="0.5", std="0.25").dataset[0]
    assert float(gray[2, 0, 0]) == pytest.approx((200 / 255 - 0.5) / 0.25, abs=1e-6)


def test_timm_models_get_their_own_preprocessing(tmp_path):
    timm = pytest.importorskip("timm")
    from rflens.erf.datasets import resolve_source

    (tmp_path / "im").mkdir()
    from PIL import Image

    Image.fromarray(np.full((30, 30, 3), 153, np.uint8)).save(tmp_path / "im" / "flat.png")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0)
    src = resolve_source(str(tmp_path / "im"), (3, 32, 32), count=1, model=vit)
    assert "timm data config" in src.description and "mean 0.5/0.5/0.5" in src.description
    np.testing.assert_allclose(src.dataset[0].numpy(), (153 / 255 - 0.5) / 0.5, atol=1e-6)
    resnet = timm.create_model("resnet18", pretrained=False)
    src = resolve_source(str(tmp_path / "im"), (3, 32, 32), count=1, model=resnet)
    assert "mean 0.485/0.456/0.406" in src.description
    np.testing.assert_allclose(src.dataset[0][0].numpy(), (153 / 255 - 0.485) / 0.229, atol=1e-5)
    plain = resolve_source(str(tmp_path / "im"), (3, 32, 32), count=1, model=ScaleNet())
    assert "resize shorter side + centre crop" in plain.description


# --- several targets in one pass, memory ------------------------------------------------------------

def test_several_layers_and_a_grid_of_units_match_single_runs():
    torch.manual_seed(1)
    model = ScaleNet()
    x = torch.randn(5, 3, 20, 20)
    many = quiet(effective_receptive_fields, model, ["b", "a"], (3, 20, 20), inputs=x,
                 units=["grid:2", (0, 0)], dtype="float64")
    assert [r.unit for r in many[:5]] == [(2, 2), (2, 7), (7, 2), (7, 7), (0, 0)]
    assert [r.unit for r in many[5:]] == [(5, 5), (5, 15), (15, 5), (15, 15), (0, 0)]
    for r in many:
        alone = quiet(effective_receptive_field, model, r.layer, (3, 20, 20), inputs=x, unit=r.unit,
                      dtype="float64")
        np.testing.assert_allclose(r.raw, alone.raw, rtol=1e-12, atol=1e-300)
        assert r.trf.box == alone.trf.box
    with pytest.raises(RflensError, match="grid:3 or grid:3x4"):
        quiet(effective_receptive_fields, model, ["a"], (3, 20, 20), inputs=x, units=["grid:a"])


def test_the_memory_budget_counts_every_target_and_every_parameter_copy():
    from rflens.erf.memory import _draw_bytes, _estimate_sample_bytes
    from rflens.erf.probe import _Probe
    from rflens.erf.settings import _settings

    model = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1))
    shape = (1, 32, 32)
    probes = {}
    for key, weights, units in (("one", "as-is", ["center"]), ("nine", "as-is", ["grid:3"]),
                                ("random", "random", ["center"])):
        s = _settings(None, {"weights": weights})
        probes[key] = _Probe(model, ["1"], s, torch.float32, torch.device("cpu"), 0, units)
    one, nine, rnd = (_estimate_sample_bytes(probes[k], shape) for k in ("one", "nine", "random"))
    pixels = 32 * 32
    # eight more targets: each one float32 input gradient (1 channel) and one float64 map
    assert nine - one == 8 * (pixels * 4 + pixels * 8)
    params = sum(p.numel() for p in model.parameters())
    assert rnd - one == params * (4 + 4 + 4) == _draw_bytes(model, torch.float32)
    r_one = quiet(effective_receptive_field, model, "1", shape, samples=4, batch_size=4,
                  max_memory=int(2 * one * 4))
    r_rnd = quiet(effective_receptive_field, model, "1", shape, samples=4, batch_size=4,
                  weights="random", max_memory=int(2 * one * 4))
    assert r_one.settings["largest_pass"] == 4 and r_rnd.settings["largest_pass"] < 4


# --- reductions and devices ------------------------------------------------------------------------------

def test_openerf_combination_is_channel_mean_then_relu():
    torch.manual_seed(2)
    model = ScaleNet()
    x = torch.randn(3, 3, 12, 12)
    r = quiet(effective_receptive_field, model, "b", (3, 12, 12), inputs=x, reduce="mean-relu",
              readout="mean")
    expected = np.zeros((12, 12))
    for sample in x:
        s = sample[None].clone().requires_grad_(True)
        model(s)[0, :, 3, 3].mean().backward()
        expected += torch.relu(s.grad[0].mean(0)).double().numpy()
    np.testing.assert_allclose(r.raw, expected / 3, rtol=1e-5, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_device_gives_the_cpu_map():
    torch.manual_seed(3)
    model = ScaleNet()
    x = torch.randn(4, 3, 16, 16)
    cpu = quiet(effective_receptive_field, model, "b", (3, 16, 16), inputs=x, dtype="float64")
    gpu = quiet(effective_receptive_field, model, "b", (3, 16, 16), inputs=x, dtype="float64",
                device="cuda")
    assert gpu.settings["device"].startswith("cuda")
    assert rel_diff(cpu.raw, gpu.raw) < 1e-9


def test_cuda_without_a_gpu_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RflensError, match="no CUDA GPU"):
        quiet(effective_receptive_field, ScaleNet(), "b", (3, 8, 8), device="cuda")


def test_bad_worker_counts_are_one_line_errors():
    with pytest.raises(RflensError, match="workers must be a positive integer"):
        quiet(effective_receptive_field, ScaleNet(), "b", (3, 8, 8), workers=0)
    local = type("Local", (nn.Module,), {"forward": lambda self, x: x})
    with pytest.raises(RflensError, match="cannot be pickled"):
        quiet(effective_receptive_field, local(), None, (3, 8, 8), workers=2)


SMALL_MODEL = '''
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, stride=2))
'''


@pytest.mark.slow
def test_the_same_command_runs_under_torchrun(tmp_path):
    (tmp_path / "small.py").write_text(SMALL_MODEL)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    from rflens.erf.distributed import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "rflens", "erf", f"{tmp_path / 'small.py'}:build",
           "--layer", "2", "--input", "3x20x20", "--samples", "5", "--batch-size", "2",
           "--weights", "random", "-q", "--format", "json", "--save", str(tmp_path / "two.npy")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # one report: only rank 0 prints
    assert report["settings"]["processes"] == 2 and report["samples"] == 5
    sys.path.insert(0, str(tmp_path))
    try:
        import small
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    one = quiet(effective_receptive_field, small.build(), "2", (3, 20, 20), samples=5, batch_size=2,
                weights="random")
    assert rel_diff(one.raw, np.load(tmp_path / "two.npy")) < 1e-9


def test_replknet_preset_stretches_images_and_centres_squares_on_the_unit(tmp_path):
    from rflens.erf.protocols import replknet_area_ratios

    folder = make_images(tmp_path / "im", 3, tree=False)
    torch.manual_seed(5)
    r = quiet(effective_receptive_field, ScaleNet(), "b", (3, 64, 64), inputs=str(folder),
              preset="replknet2022", loader_workers=0)
    assert "aspect ratio not kept" in r.settings["inputs"]
    assert (r.settings["reduce"], r.settings["readout"], r.samples) == ("relu", "relu", 3)
    # unit (16, 16) of the stride-2 conv reads input rows/columns 30..34: centre 32, the input's 31.5
    assert r.trf.center == (32.0, 32.0) and r.metrics.reference_pixel == (32, 32)
    assert r.metrics.center_offset == (0.5, 0.5)
    assert r.metrics.replknet == replknet_area_ratios(r.raw, (32, 32))
    rows = dict(r.summary_rows())
    assert any(k.startswith("RepLKNet r(t=0.99)") for k in rows)


def test_the_table_says_not_gaussian_instead_of_a_sigma():
    from rflens.erf.result import build_result

    two_peaks = np.zeros((40, 40))
    two_peaks[3, 3] = two_peaks[36, 36] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ERFWarning)
        r = build_result(two_peaks, model="m", layer="x", input_shape=(1, 40, 40), output_shape=(1, 1, 1),
                         unit=(0, 0), samples=1, method="gradient", settings={}, trf=None, notes=[])
    rows = dict(r.summary_rows())
    assert rows["Gaussian sigma (px)"].startswith("not Gaussian")
    assert "not Gaussian" in rows["mass outside input"]
