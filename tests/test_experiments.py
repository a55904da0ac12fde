"""rflens experiments: the path-count integers against an independent numpy convolution of ones,
the √n exponents within the bounds issue 4 set, the other experiments' wiring (small versions),
and the ``rflens experiment`` CLI (list, unknown names, JSON + PNG written). The multi-seed
training experiments and their building blocks are in ``test_experiments_seeds.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rflens.cli import main
from rflens.errors import RflensError
from rflens.experiments import EXPERIMENTS, get, names, run_experiment
from rflens.experiments import factors, path_counts, sqrt_growth, stack_vs_large, training

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def conv_ones_2d(depth: int, k: int = 3) -> np.ndarray:
    """Full 2-D convolution of ``depth`` k×k arrays of ones, by shifted adds (int64, exact)."""
    out = np.ones((1, 1), dtype=np.int64)
    for _ in range(depth):
        grown = np.zeros((out.shape[0] + k - 1, out.shape[1] + k - 1), dtype=np.int64)
        for i in range(k):
            for j in range(k):
                grown[i:i + out.shape[0], j:j + out.shape[1]] += out
        out = grown
    return out


def conv_ones_1d(depth: int, k: int = 3) -> list[int]:
    out = np.ones(1, dtype=np.int64)
    for _ in range(depth):
        out = np.convolve(out, np.ones(k, dtype=np.int64))
    return [int(v) for v in out]


# --- path counts -------------------------------------------------------------------------------------

def test_path_counts_are_the_convolution_of_ones():
    r = path_counts.run(depths=(2, 3))
    assert r.counts_1d[2] == [1, 2, 3, 2, 1] == conv_ones_1d(2)
    assert r.counts_1d[3] == [1, 3, 6, 7, 6, 3, 1] == conv_ones_1d(3)
    for n in (2, 3):
        grid = np.array(r.counts_2d[n], dtype=np.int64)
        np.testing.assert_array_equal(grid, conv_ones_2d(n))
        assert all(type(v) is int for row in r.counts_2d[n] for v in row)
        assert r.totals[n] == 9 ** n == int(conv_ones_2d(n).sum())
        assert r.gradient_max_error[n] < 1e-9
    assert r.counts_2d[2][2][2] == 9 and r.counts_2d[3][3][3] == 49
    assert r.variance[2] * 3 == 4 and r.variance[3] == 2  # n (k^2 - 1) / 12, exact fractions
    assert r.passed


def test_path_counts_polynomial_agrees_with_convolution_for_other_kernels():
    for k, n in ((5, 3), (2, 4), (7, 2)):
        assert path_counts.polynomial_counts(k, n) == conv_ones_1d(n, k)


# --- sqrt growth ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def growth():
    """sqrt-growth over depths 8…64 (the full run's fit range) with 64 instead of 256 samples."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures start before the function-scoped one
    try:
        return sqrt_growth.run(depths=(8, 11, 16, 23, 32, 45, 64), samples=64, seed=0)
    finally:
        torch.set_num_threads(threads)


def test_uniform_exponent_is_one_half_within_0_03(growth):
    fit = growth.series["uniform"].fit
    assert abs(fit.exponent - 0.5) <= 0.03
    assert fit.r2 > 0.999
    assert growth.uniform_variance_error < 1e-9  # sigma^2 = n (k^2 - 1) / 12 exactly (moments)


def test_random_relu_exponent_is_one_half_within_0_1(growth):
    assert abs(growth.series["random + ReLU"].fit.exponent - 0.5) <= 0.1
    assert abs(growth.series["random"].fit.exponent - 0.5) <= 0.1


def test_erf_trf_ratio_slope_is_minus_one_half(growth):
    for series in growth.series.values():
        assert abs(series.ratio_fit.exponent + 0.5) <= 0.1
    assert growth.passed
    assert growth.series["uniform"].fit.n_range == (8, 64)


# --- the other experiments (small versions) ----------------------------------------------------------

def test_stack_vs_large_equal_trf_and_stack_more_concentrated():
    r = stack_vs_large.run(samples=32)
    for label, by_setting in r.pairs.items():
        stack, large = by_setting["uniform"]
        assert stack.trf == large.trf
        assert stack.std < large.std
    s, l = r.pairs["2×3×3 vs 5×5"]["uniform"]
    assert s.std ** 2 == pytest.approx(4 / 3, rel=1e-9) and l.std ** 2 == pytest.approx(2, rel=1e-9)
    json.dumps(r.to_dict())


def test_factors_wiring_and_directions_of_strides_dilation_and_skips():
    r = factors.run(samples=16, size=48)
    assert set(r.variants) == set(factors.VARIANTS)
    assert r.variants["base"].ratio == 1.0
    assert r.variants["dilation 2"].trf == 35 and r.variants["stride 2"].trf == 25
    assert r.variants["dilation 2"].ratio > 1 and r.variants["stride 2"].ratio > 1
    assert r.variants["residual skips"].ratio < 1
    payload = json.loads(json.dumps(r.to_dict()))
    assert "map" not in payload["data"]["variants"]["base"]


def test_stratified_split_keeps_every_class():
    labels = np.repeat(np.arange(10), 20)
    train, test = training.stratified_split(labels, 0.25, seed=0)
    assert len(np.intersect1d(train, test)) == 0 and train.size + test.size == 200
    assert np.bincount(labels[test]).tolist() == [5] * 10


# --- registry and CLI ----------------------------------------------------------------------------------

def test_unknown_name_raises_with_close_names():
    with pytest.raises(RflensError, match="did you mean sqrt-growth"):
        get("sqrt-grow")


def test_cli_list(capsys):
    assert main(["experiment", "list"]) == 0
    out = capsys.readouterr().out
    for name in names():
        assert name in out
    assert set(names()) == set(EXPERIMENTS) == {"path-counts", "sqrt-growth", "stack-vs-large",
                                                "factors", "training", "long-range", "large-kernel",
                                                "vit-vs-cnn"}


def test_cli_unknown_name_one_line_exit_2(capsys, tmp_path):
    assert main(["experiment", "path-count", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown experiment 'path-count'" in err and "path-counts" in err
    assert not any(tmp_path.iterdir())


def test_cli_path_counts_writes_json_and_png(capsys, tmp_path):
    out_dir = tmp_path / "new" / "folder"
    assert main(["experiment", "path-counts", "-o", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "1 3 6 7 6 3 1" in printed and "yes" in printed
    data = json.loads((out_dir / "path-counts.json").read_text())
    assert data["schema_version"] == 1 and data["passed"] is True
    assert data["data"]["counts_2d"]["2"] == conv_ones_2d(2).tolist()
    assert data["data"]["counts_2d"]["3"] == conv_ones_2d(3).tolist()
    assert data["data"]["variance"] == {"2": "4/3", "3": "2"}
    assert all(c["passed"] for c in data["checks"])
    png = (out_dir / "path-counts.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 10_000
