"""The multi-seed training experiments (``training``, ``long-range``, ``large-kernel``,
``vit-vs-cnn``): their building blocks against hand-derived values and the independent gradient
oracle, and each experiment's quick mode end to end (JSON with every per-seed value, intervals
and evaluated checks; PNG written)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from oracle import GradientOracle
from rflens.cli import main
from rflens.errors import RflensError
from rflens.experiments import get, run_experiment
from rflens.experiments.core import Check, ExperimentResult
from rflens.experiments.nets import DepthwiseNet, ResidualCNN, TinyViT, calibrate_batchnorm
from rflens.experiments.stats import (interval_check, mean_interval, not_above_check, open_check,
                                      ratio_interval)
from rflens.experiments.tasks import MarkTask, radial_masses, run_seeds

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T_975_4 = 2.7764451051977987  # Student t, 97.5 % quantile, 4 degrees of freedom (tables)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- intervals and checks ---------------------------------------------------------------------------

def test_mean_interval_is_the_student_t_interval():
    iv = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = T_975_4 * math.sqrt(2.5) / math.sqrt(5)  # sample variance 2.5
    assert iv.centre == 3.0 and iv.n == 5
    assert iv.low == pytest.approx(3 - half, rel=1e-12) and iv.high == pytest.approx(3 + half, rel=1e-12)
    assert iv.values == (1.0, 2.0, 3.0, 4.0, 5.0)


def test_ratio_interval_is_geometric_and_symmetric_in_log():
    iv = ratio_interval([2.0, 0.5, 2.0, 0.5])  # logs ±log 2: geometric mean 1
    assert iv.centre == pytest.approx(1.0, abs=1e-12)
    assert iv.low * iv.high == pytest.approx(1.0, rel=1e-12)
    same = ratio_interval([1.5] * 5)
    assert same.low == pytest.approx(1.5) and same.high == pytest.approx(1.5)
    skipped = ratio_interval([2.0, float("nan"), -1.0, 2.0, 2.0])
    assert skipped.n == 3 and len(skipped.values) == 5
    assert math.isnan(ratio_interval([2.0]).low)


def test_checks_pass_only_when_the_whole_interval_clears_the_bound():
    above = ratio_interval([1.2, 1.3, 1.25, 1.22, 1.28])
    straddle = ratio_interval([0.8, 1.3, 1.0, 1.1, 0.9])
    assert interval_check("q", above, ">", 1, "src").passed
    assert not interval_check("q", straddle, ">", 1, "src").passed
    assert not interval_check("q", above, "<", 1, "src").passed
    assert not interval_check("q", ratio_interval([2.0]), ">", 1, "src").passed  # NaN bounds
    assert not_above_check("q", straddle, 1, "src").passed
    assert not not_above_check("q", above, 1, "src").passed
    question = open_check("q", straddle, 1, "does it grow?")
    assert question.open and question.passed is None and question.answer == "no clear change"
    assert open_check("q", above, 1, "?").answer == "grows"
    assert question.to_dict()["open_question"] is True and question.to_dict()["passed"] is None


def test_open_questions_do_not_count_against_an_experiment():
    closed = Check("a", "x", "y", True)
    opened = Check("b", "open question: ?", "y", None, answer="grows")
    result = ExperimentResult(name="n", title="t", checks=[closed, opened], settings={})
    assert result.passed
    result.checks.append(Check("c", "x", "y", False))
    assert not result.passed


# --- the mark task and radial masses ------------------------------------------------------------------

def test_mark_task_places_the_marks_where_it_says():
    task = MarkTask(size=32, distance=10.0, amplitude=1.0, noise=0.0, jitter=1)
    center = (16.5, 16.5)
    x, labels = task.sample(200, center, np.random.default_rng(0))
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    for img, far_label, near_label in zip(x[:, 0].numpy(), labels["long-range"], labels["control"]):
        assert np.count_nonzero(img) == 18  # two 3×3 marks, no overlap, no noise
        r = np.hypot(yy - center[0], xx - center[1])
        near, far = (r < 5) & (img != 0), (r > 5) & (img != 0)
        assert near.sum() == 9 and far.sum() == 9
        far_r = math.hypot(yy[far].mean() - center[0], xx[far].mean() - center[1])
        assert abs(far_r - 10.0) <= math.sqrt(2) * 0.5 + 1e-9  # its centre was rounded to a pixel
        assert int(far_label) == int(img[far][0] > 0) and int(near_label) == int(img[near][0] > 0)
    assert 60 < int(labels["long-range"].sum()) < 140  # both signs occur


def test_mark_task_refuses_marks_that_do_not_fit():
    with pytest.raises(RflensError, match="do not fit"):
        MarkTask(size=24, distance=10.0).sample(1, (12.0, 12.0), np.random.default_rng(0))
    with pytest.raises(RflensError, match="too small"):
        MarkTask(distance=4.0).check((16.5, 16.5))


def test_radial_masses_by_hand():
    m = np.zeros((9, 9))
    m[4, 4], m[4, 7], m[0, 0] = 2.0, 1.0, 1.0  # distances 0, 3 and 4√2 from the centre
    out = radial_masses(m, (4.0, 4.0), {"ring": (2.5, 3.5)}, {"beyond": 3.0, "beyond0": 0.0})
    assert out == {"ring": 0.25, "beyond": 0.25, "beyond0": 0.5}


# --- networks: fields against the independent gradient oracle -------------------------------------

@pytest.mark.parametrize("make, size, side", [
    (lambda: ResidualCNN(4), 48, 36),
    (lambda: ResidualCNN(1, pools=2), 48, 26),
    (lambda: DepthwiseNet(13), 48, 28),
    (lambda: DepthwiseNet(13, stack=True), 48, 28),
    (lambda: ResidualCNN(3), 48, 28),
])
def test_probe_center_and_field_match_the_gradient_oracle(make, size, side):
    net = make().eval()
    grid = GradientOracle(net, (1, size, size)).output_shape("features")[2:]
    hull = GradientOracle(net, (1, size, size)).hull("features", tuple(n // 2 for n in grid))
    center = net.probe_center(size)
    for (lo, hi), c in zip(hull, center):
        assert hi - lo + 1 == side and (lo + hi) / 2 == c


def test_vit_token_grid_and_its_probed_token():
    flat = TinyViT(depth=0).eval()  # patch embedding only: the centre token sees its own patch
    hull = GradientOracle(flat, (1, 32, 32)).hull("features", (4, 4))
    assert hull == ((16, 19), (16, 19)) and flat.probe_center(32) == (17.5, 17.5)
    deep = TinyViT().eval()
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    grid = deep.features(x)
    assert grid.shape == (2, 32, 8, 8)
    grid[0, :, 4, 4].sum().backward()  # the summed readout rflens uses must not be degenerate
    g = x.grad[0, 0].abs()
    assert bool((g > 0).all()) and float(g[16:20, 16:20].sum()) > 0  # attention: the whole image
    assert float(x.grad[1].abs().sum()) == 0.0  # samples stay independent


def test_calibrate_batchnorm_sets_the_statistics_of_the_data():
    net = ResidualCNN(1)
    net.features[1].momentum = 0.3
    net.eval()
    x = torch.randn(96, 1, 16, 16) * 2 + 1
    calibrate_batchnorm(net, x, batch_size=32)
    conv_out = net.features[0](x).detach()
    bn = net.features[1]
    torch.testing.assert_close(bn.running_mean, conv_out.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    # the cumulative average of the three batches' unbiased variances (torch's convention)
    per_batch = torch.stack([conv_out[i:i + 32].var(dim=(0, 2, 3), unbiased=True) for i in (0, 32, 64)])
    torch.testing.assert_close(bn.running_var, per_batch.mean(dim=0), rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.3 and not net.training


def test_run_seeds_in_workers_gives_the_serial_numbers():
    from rflens.experiments import long_range

    options = dict(task=MarkTask(), blocks=1, epochs=1, per_epoch=32, batch_size=16, lr=1e-3,
                   erf_samples=4, test_size=16, ring_width=2.0, calibration=32)
    serial = run_seeds(long_range.one_seed, [3, 4], options, workers=1)
    parallel = run_seeds(long_range.one_seed, [3, 4], options, workers=2)
    for a, b in zip(serial, parallel):
        assert a.seed == b.seed and a.init == b.init and a.history == b.history
    with pytest.raises(RflensError, match="workers"):
        run_seeds(long_range.one_seed, [0], options, workers=0)


# --- quick modes end to end -------------------------------------------------------------------------

def _check_common(data: dict, name: str, seeds: int = 5) -> None:
    assert data["experiment"] == name and data["settings"]["mode"] == "quick"
    assert data["settings"]["threads"] == 1
    per_seed = data["data"]["seeds"]
    assert [s["seed"] for s in per_seed] == list(range(seeds))
    intervals = data["data"]["intervals"]
    assert intervals
    for iv in intervals.values():
        assert set(iv) >= {"centre", "low", "high", "level", "n", "values"} and iv["level"] == 0.95
        assert len(iv["values"]) == seeds
        if iv["n"] >= 2 and iv["low"] is not None:
            assert iv["low"] <= iv["centre"] <= iv["high"]
    for check in data["checks"]:
        if check.get("open_question"):
            assert check["passed"] is None and check["answer"]
        else:
            assert isinstance(check["passed"], bool)
    assert any(not c.get("open_question") for c in data["checks"])


def test_long_range_quick_mode_through_the_cli(tmp_path, capsys):
    assert main(["experiment", "long-range", "--quick", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "quick" in printed and "long-range" in printed
    data = json.loads((tmp_path / "long-range.json").read_text())
    _check_common(data, "long-range")
    first = data["data"]["seeds"][0]
    assert set(first["history"]) == {"long-range", "control"}
    assert {"ring", "beyond", "sigma"} <= set(first["init"])
    ratio = data["data"]["intervals"]["long-range: ring end/init"]["values"][0]
    assert ratio == pytest.approx(first["history"]["long-range"][-1]["ring"] / first["init"]["ring"])
    assert data["data"]["trf"] == 36 and data["data"]["center"] == [16.5, 16.5]
    assert (tmp_path / "long-range.png").read_bytes()[:8] == PNG_MAGIC


def test_training_quick_mode(tmp_path):
    r = run_experiment("training", tmp_path, quick=True, threads=1)
    assert r.trf == 52 and r.radius == 13 and len(r.seeds) == 5
    assert all(s.train_size == 128 and [h["epoch"] for h in s.history] == [0, 1] for s in r.seeds)
    data = json.loads((tmp_path / "training.json").read_text())
    _check_common(data, "training")
    assert {"sigma_digits", "sigma_noise", "beyond_digits", "beyond_noise", "accuracy"} <= set(
        data["data"]["seeds"][0]["history"][1])
    assert (tmp_path / "training.png").read_bytes()[:8] == PNG_MAGIC


def test_large_kernel_quick_mode(tmp_path):
    r = run_experiment("large-kernel", tmp_path, quick=True, threads=1)
    assert r.trf == {"large": 28, "depthwise stack": 28, "dense stack": 28} and r.checks[0].passed
    data = json.loads((tmp_path / "large-kernel.json").read_text())
    _check_common(data, "large-kernel")
    table = data["data"]["table"]
    assert set(table) == {"init", "trained"} and set(table["init"]["large"]) == {"0.2", "0.3", "0.5", "0.99"}
    seed0 = data["data"]["seeds"][0]["numbers"]["init"]["large"]
    assert set(seed0["r_log10"]) == {"0.2", "0.3", "0.5", "0.99"} and 0 < seed0["r_log10"]["0.5"] <= 1
    assert (tmp_path / "large-kernel.png").read_bytes()[:8] == PNG_MAGIC


def test_vit_vs_cnn_quick_mode(tmp_path):
    r = run_experiment("vit-vs-cnn", tmp_path, quick=True, threads=1)
    assert r.centers == {"ViT": (17.5, 17.5), "CNN": (16.5, 16.5)}
    assert 0.8 < r.parameters["ViT"] / r.parameters["CNN"] < 1.25  # "of similar size"
    data = json.loads((tmp_path / "vit-vs-cnn.json").read_text())
    _check_common(data, "vit-vs-cnn")
    vit = data["data"]["seeds"][0]["history"]["ViT"][0]
    assert vit["own_patch_dominance"] > 0 and 0 < vit["own_window"] < 1
    assert (tmp_path / "vit-vs-cnn.png").read_bytes()[:8] == PNG_MAGIC


def test_quick_flag_leaves_fast_experiments_alone():
    assert get("path-counts").quick_options() is None
    assert get("long-range").quick_options()["seeds"] == 5
    assert get("large-kernel").takes("workers") and not get("factors").takes("workers")
    r = run_experiment("path-counts", None, quick=True, workers=2, depths=(2,))
    assert r.settings["mode"] == "full" and r.passed
