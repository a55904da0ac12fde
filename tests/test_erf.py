"""Gradient ERF: the established facts of Luo et al. 2016, exact path counts, inputs, weights, the CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rflens.cli import main
from rflens.erf import ERFWarning, PRESETS, effective_receptive_field
from rflens.errors import RflensError


pytestmark = pytest.mark.usefixtures("one_thread")


def erf(model, shape, **kw):
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ERFWarning)
        return effective_receptive_field(model, kw.pop("layer", None), shape, **kw)


def trinomial_grid(n: int) -> np.ndarray:
    """(1 + x + x^2)^n coefficients by the closed form sum_j C(n, j) C(n - j, i - 2j), outer product."""
    row = [sum(math.comb(n, j) * math.comb(n - j, i - 2 * j) for j in range(i // 2 + 1))
           for i in range(2 * n + 1)]
    row = np.array(row, dtype=np.float64)  # exact: every coefficient is below 2**53 here
    return np.outer(row, row)


class HeConv(nn.Conv2d):
    """A conv whose random draw is He-normal (keeps gradients O(1) through deep ReLU stacks)."""

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def stack(n: int, k: int = 3, c: int = 1, relu: bool = False, conv=nn.Conv2d,
          cin: int = 1) -> nn.Sequential:
    layers = []
    for i in range(n):
        layers.append(conv(cin if i == 0 else c, c, k, padding=k // 2, bias=False))
        if relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualStack(nn.Module):
    """``blocks`` residual blocks x + conv(act(conv(x))), or the same convs without the skips."""

    def __init__(self, blocks: int, c: int, skips: bool, relu: bool, conv=nn.Conv2d) -> None:
        super().__init__()
        self.stem = conv(1, c, 3, padding=1, bias=False)
        self.convs = nn.ModuleList(conv(c, c, 3, padding=1, bias=False) for _ in range(2 * blocks))
        self.skips, self.act = skips, (nn.ReLU() if relu else nn.Identity())

    def forward(self, x):
        x = self.act(self.stem(x))
        for a, b in zip(self.convs[::2], self.convs[1::2]):
            y = b(self.act(a(x)))
            x = self.act(x + y if self.skips else y)
        return x


# --- exact answers with uniform weights and linear activations ---------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_linear_uniform_stack_gives_the_path_count_grid(n):
    size = 2 * n + 9
    r = erf(stack(n, c=2, cin=2), (2, size, size), samples=2, weights="uniform", activations="linear")
    c = size // 2
    grid = trinomial_grid(n)
    expected = np.zeros((size, size))
    expected[c - n:c + n + 1, c - n:c + n + 1] = grid / grid.sum()
    np.testing.assert_allclose(r.normalized, expected, rtol=1e-12, atol=1e-18)
    assert r.metrics.std[0] ** 2 == pytest.approx(n * 8 / 12, rel=1e-12)
    assert r.trf.size == (2 * n + 1, 2 * n + 1)


@pytest.mark.parametrize("k,n", [(5, 3), (7, 2)])
def test_uniform_variance_is_n_k2_minus_1_over_12(k, n):
    size = n * (k - 1) + 11
    r = erf(stack(n, k=k), (1, size, size), samples=1, weights="uniform", activations="linear")
    assert r.metrics.std[0] ** 2 == pytest.approx(n * (k * k - 1) / 12, rel=1e-12)
    assert r.metrics.std[1] ** 2 == pytest.approx(n * (k * k - 1) / 12, rel=1e-12)


def test_sigma_grows_like_sqrt_n_with_uniform_weights():
    ns = [4, 8, 16, 32, 64]
    sigmas = [np.mean(erf(stack(n), (1, 64, 64), samples=1, weights="uniform",
                          activations="linear").metrics.sigma) for n in ns]
    exponent = np.polyfit(np.log(ns), np.log(sigmas), 1)[0]
    assert abs(exponent - 0.5) <= 0.03


@pytest.mark.slow
def test_sigma_grows_like_sqrt_n_with_random_weights_and_relu():
    ns = [4, 8, 16, 32, 64]
    sigmas = []
    for n in ns:
        r = erf(stack(n, c=8, relu=True, conv=HeConv), (1, 64, 64), samples=32, weights="random")
        sigmas.append(np.mean(r.metrics.sigma))
    exponent = np.polyfit(np.log(ns), np.log(sigmas), 1)[0]
    assert abs(exponent - 0.5) <= 0.1


def test_two_3x3_have_the_trf_of_one_5x5_but_a_smaller_sigma():
    shape = (1, 21, 21)
    two = erf(stack(2, k=3), shape, samples=1, weights="uniform", activations="linear")
    one = erf(stack(1, k=5), shape, samples=1, weights="uniform", activations="linear")
    assert two.trf.size == one.trf.size == (5, 5)
    assert two.metrics.std[0] ** 2 == pytest.approx(4 / 3, rel=1e-12)  # 2 * (9 - 1) / 12
    assert one.metrics.std[0] ** 2 == pytest.approx(2.0, rel=1e-12)  # (25 - 1) / 12
    two_r = erf(stack(2, k=3, c=8, relu=True), shape, samples=48, weights="random")
    one_r = erf(stack(1, k=5, c=8, relu=True), shape, samples=48, weights="random")
    assert np.mean(two_r.metrics.sigma) < np.mean(one_r.metrics.sigma)


def test_residual_stack_has_half_the_variance_with_uniform_weights():
    # each block is (identity + A^2)/2 in mass: variance 2 * 8/12 / 2 per block instead of 2 * 8/12
    shape = (1, 35, 35)
    res = erf(ResidualStack(4, 2, True, False), shape, samples=1, weights="uniform", activations="linear")
    plain = erf(ResidualStack(4, 2, False, False), shape, samples=1, weights="uniform",
                activations="linear")
    assert plain.metrics.std[0] ** 2 == pytest.approx((1 + 8) * 8 / 12, rel=1e-12)
    assert res.metrics.std[0] ** 2 == pytest.approx((1 + 4) * 8 / 12, rel=1e-12)
    assert res.trf.size == plain.trf.size == (19, 19)


def test_residual_stack_has_a_smaller_sigma_with_random_weights_and_relu():
    shape = (1, 41, 41)
    res = erf(ResidualStack(4, 8, True, True, HeConv), shape, samples=32, weights="random")
    plain = erf(ResidualStack(4, 8, False, True, HeConv), shape, samples=32, weights="random")
    assert np.mean(res.metrics.sigma) < np.mean(plain.metrics.sigma)


def test_conv1d_stack_gives_one_dimensional_path_counts():
    model = nn.Sequential(*[nn.Conv1d(1, 1, 3, padding=1) for _ in range(3)])
    r = erf(model, (1, 15), samples=1, weights="uniform", activations="linear")
    expected = np.zeros(15)
    expected[4:11] = np.array([1, 3, 6, 7, 6, 3, 1]) / 27
    np.testing.assert_allclose(r.normalized, expected, rtol=1e-12, atol=1e-18)


# --- the measurement itself ----------------------------------------------------------------------------

def test_result_does_not_depend_on_batch_size_or_memory_chunking():
    model = stack(3, c=4, relu=True)
    a = erf(model, (1, 16, 16), samples=7, batch_size=7)
    b = erf(model, (1, 16, 16), samples=7, batch_size=2)
    c = erf(model, (1, 16, 16), samples=7, batch_size=7, max_memory=1)  # one sample per pass
    assert (a.settings["largest_pass"], b.settings["largest_pass"], c.settings["largest_pass"]) == (7, 2, 1)
    np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(a.raw, c.raw, rtol=1e-5, atol=1e-12)
    assert a.samples == 7


def test_raw_is_the_mean_of_per_sample_abs_gradients():
    torch.manual_seed(3)
    model = stack(2, c=3, relu=True)
    x = torch.randn(5, 1, 12, 12)
    r = erf(model, (1, 12, 12), inputs=x)
    expected = np.zeros((12, 12))
    for sample in x:
        s = sample[None].clone().requires_grad_(True)
        model(s)[0, :, 6, 6].sum().backward()
        expected += s.grad[0].abs().sum(0).double().numpy()
    np.testing.assert_allclose(r.raw, expected / 5, rtol=1e-5)
    assert r.unit == (6, 6) and r.samples == 5


def test_replknet_readout_and_reduction():
    torch.manual_seed(4)
    model = stack(2, c=3)
    x = torch.randn(3, 1, 10, 10)
    r = erf(model, (1, 10, 10), inputs=x, readout="relu", reduce="relu")
    expected = np.zeros((10, 10))
    for sample in x:
        s = sample[None].clone().requires_grad_(True)
        torch.relu(model(s)[0, :, 5, 5]).sum().backward()
        expected += torch.relu(s.grad[0]).sum(0).double().numpy()
    np.testing.assert_allclose(r.raw, expected / 3, rtol=1e-5, atol=1e-9)
    sq = erf(model, (1, 10, 10), inputs=x, reduce="square")
    assert (sq.raw >= 0).all() and sq.settings["reduce"] == "square"


def test_float32_underflow_switches_to_float64():
    model = stack(30)
    with torch.no_grad():
        for conv in model:
            conv.weight.fill_(0.1 / 9)  # centre ~1e-32, tails ~1e-58: below float32
    r = erf(model, (1, 65, 65), samples=1)
    assert r.settings["dtype"] == "float64"
    grid = trinomial_grid(30)
    expected = np.zeros((65, 65))
    expected[2:63, 2:63] = grid / grid.sum()
    np.testing.assert_allclose(r.normalized, expected, rtol=1e-9, atol=0)
    assert any("float64" in w for w in r.warnings)


class NaNForPositiveMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        bad = x.mean(dim=(1, 2, 3), keepdim=True) > 0
        return self.conv(x) * torch.where(bad, torch.tensor(float("nan")), torch.tensor(1.0))


def test_nonfinite_gradients_are_reported_never_averaged():
    x = torch.randn(6, 1, 8, 8)
    x[[1, 4]] = x[[1, 4]].abs() + 0.1  # positive mean: NaN gradient
    x[[0, 2, 3, 5]] = -x[[0, 2, 3, 5]].abs() - 0.1
    model = NaNForPositiveMean()
    with pytest.raises(RflensError, match="2 of 6 sample.*NaN/Inf.*sample 1"):
        erf(model, (1, 8, 8), inputs=x)
    r = erf(model, (1, 8, 8), inputs=x, nonfinite="skip")
    assert r.samples == 4 and r.samples_skipped == 2
    good = erf(model, (1, 8, 8), inputs=x[[0, 2, 3, 5]])
    np.testing.assert_allclose(r.raw, good.raw, rtol=1e-6)
    assert any("NaN/Inf" in w for w in r.warnings)


def test_megapixel_input_runs_in_bounded_chunks():
    model = stack(2, c=2)
    # two samples' saved activations (about 2 x 3 x 4 MiB, doubled for gradients) exceed 40 MiB
    r = erf(model, (1, 1024, 1024), samples=2, batch_size=2, max_memory=40 * 2**20)
    assert r.settings["largest_pass"] == 1
    assert r.raw.shape == (1024, 1024) and r.unit == (512, 512)
    assert np.count_nonzero(r.raw) == 25


def test_random_weights_are_drawn_per_sample():
    model = stack(1, c=1)  # linear: the map is |w| of each draw, so one shared draw stays lumpy
    r = erf(model, (1, 9, 9), samples=64, batch_size=16, weights="random")
    taps = r.raw[3:6, 3:6].ravel()
    assert np.count_nonzero(r.raw) == 9
    # |w| with w ~ U(-b, b): mean b/2, std b/sqrt(12); averaged over 64 draws CV ~ 0.58/8
    assert taps.std() / taps.mean() < 0.2
    shared = erf(model, (1, 9, 9), samples=1, weights="random").raw[3:6, 3:6].ravel()
    assert len(set(np.round(shared / shared.max(), 6))) > 3  # a single draw is not flat


def test_unit_choice_and_centre_convention():
    model = stack(1, c=1)
    r = erf(model, (1, 8, 10), samples=1)
    assert r.unit == (4, 5)  # n // 2 on even sizes
    assert r.trf.box == ((3, 5), (4, 6))
    corner = erf(model, (1, 8, 10), samples=1, unit=(0, 9))
    assert corner.trf.box == ((-1, 1), (8, 10)) and corner.raw[0, 9] > 0
    with pytest.raises(RflensError, match="outside the output"):
        erf(model, (1, 8, 10), samples=1, unit=(8, 0))


def test_trf_box_matches_the_closed_form():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 3, padding=1),
                          nn.Conv2d(2, 2, 5, stride=2, padding=2))
    r = erf(model, (1, 32, 32), samples=1)
    # R = 1 + 2 + 2*2 + 4*2 = 15, J = 4, P = 1 + 2*1 + 2*2 = 7; unit 4: [4*4 - 7, 4*4 - 7 + 14]
    assert r.unit == (4, 4)
    assert r.trf.box == ((9, 23), (9, 23)) and r.trf.size == (15, 15) and r.trf.jump == (4.0, 4.0)
    assert r.metrics.erf_trf_ratio[0] == pytest.approx(r.metrics.extent[0.95][0] / 15)


def test_small_input_warns_about_mass_outside():
    model = stack(16)
    with pytest.warns(ERFWarning, match="too small"):
        r = effective_receptive_field(model, None, (1, 12, 12), samples=1, weights="uniform",
                                      activations="linear", progress=False)
    assert r.metrics.outside_fraction > 0.05
    assert r.metrics.trf_outside_fraction == pytest.approx(1 - (12 / 33) ** 2)


def test_module_outputs_and_layers():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    r = erf(model, (1, 12, 12), layer="2", samples=2)
    assert r.layer == "2" and r.output_shape == (2, 12, 12) and r.trf.size == (5, 5)
    with pytest.raises(RflensError, match="no spatial axes"):
        erf(model, (1, 12, 12), samples=1)
    with pytest.raises(RflensError, match="did you mean"):
        erf(model, (1, 12, 12), layer="22", samples=1)


def test_model_string_and_training_flags_are_restored():
    model = stack(2, c=2)
    model.train()
    erf(model, (1, 10, 10), samples=2)
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    r = erf("torchvision:resnet18", (3, 64, 64), layer="layer1", samples=1)
    assert r.model == "torchvision:resnet18" and r.output_shape == (64, 16, 16)


# --- inputs --------------------------------------------------------------------------------------------

def test_tensor_iterable_and_dataloader_inputs_agree():
    torch.manual_seed(5)
    model = stack(2, c=2, relu=True)
    x = torch.randn(4, 1, 10, 10)
    a = erf(model, (1, 10, 10), inputs=x)
    b = erf(model, (1, 10, 10), inputs=[(x[:2], 0), (x[2:], 1)])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=3)
    c = erf(model, (1, 10, 10), inputs=loader)
    d = erf(model, (1, 10, 10), inputs=({"image": s} for s in x))
    for other in (b, c, d):
        np.testing.assert_allclose(other.raw, a.raw, rtol=1e-6)
        assert other.samples == 4
    with pytest.raises(RflensError, match="shape"):
        erf(model, (1, 10, 10), inputs=torch.randn(2, 1, 9, 9))


def test_image_folder_inputs_are_resized_and_normalised(tmp_path):
    from PIL import Image

    from rflens.erf.inputs import IMAGENET_MEAN, IMAGENET_STD, resolve_inputs

    Image.new("RGB", (50, 30), (255, 0, 128)).save(tmp_path / "a.png")
    Image.new("RGB", (20, 40), (0, 255, 0)).save(tmp_path / "b.jpg", quality=100)
    (tmp_path / "notes.txt").write_text("not an image")
    source = resolve_inputs(str(tmp_path), (3, 16, 16))
    samples = list(source.samples((3, 16, 16)))
    assert source.count == 2 and [s.shape for s in samples] == [(3, 16, 16)] * 2
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    np.testing.assert_allclose(samples[0].mean(dim=(1, 2)).numpy(), expected, rtol=1e-5)
    r = erf(stack(2, c=3, cin=3), (3, 16, 16), inputs=str(tmp_path), samples=10)
    assert r.samples == 2 and "2 image(s)" in r.settings["inputs"]
    with pytest.raises(RflensError, match="not a folder"):
        erf(stack(1), (1, 8, 8), inputs=str(tmp_path / "missing"))


def test_bundled_sample_images_need_no_download():
    import skimage

    from rflens.erf.inputs import resolve_inputs, skimage_sample_files

    files = skimage_sample_files()
    assert len(files) >= 10
    assert all(f.is_relative_to(skimage.__file__.rsplit("/", 1)[0]) and f.is_file() for f in files)
    source = resolve_inputs("samples", (3, 32, 32))
    first = next(source.samples((3, 32, 32)))
    assert first.shape == (3, 32, 32) and torch.isfinite(first).all() and first.std() > 0.1
    gray = next(resolve_inputs("samples", (1, 24, 24)).samples((1, 24, 24)))
    assert gray.shape == (1, 24, 24)


def test_noise_inputs_are_seeded_per_sample():
    from rflens.erf.inputs import resolve_inputs

    a = list(zip(range(3), resolve_inputs("noise", (1, 4, 4), seed=1).samples((1, 4, 4))))
    b = list(zip(range(3), resolve_inputs("noise", (1, 4, 4), seed=1).samples((1, 4, 4))))
    c = next(resolve_inputs("noise", (1, 4, 4), seed=2).samples((1, 4, 4)))
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert not torch.equal(a[0][1], c) and not torch.equal(a[0][1], a[1][1])


# --- weights ---------------------------------------------------------------------------------------

def test_state_dict_file_weights(tmp_path):
    torch.manual_seed(1)
    source = stack(2, c=2, relu=True)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    torch.manual_seed(2)
    fresh = stack(2, c=2, relu=True)
    a = erf(source, (1, 10, 10), samples=3)
    b = erf(fresh, (1, 10, 10), samples=3, weights=str(path))
    np.testing.assert_allclose(b.raw, a.raw, rtol=1e-6)
    assert all(not torch.equal(p, q) for p, q in zip(fresh.parameters(), source.parameters()))
    torch.save(stack(3).state_dict(), tmp_path / "other.pt")
    with pytest.raises(RflensError, match="other.pt.*do not fit"):
        erf(fresh, (1, 10, 10), samples=1, weights=str(tmp_path / "other.pt"))
    torch.save({"model": object()}, tmp_path / "pickle.pt")
    with pytest.raises(RflensError, match="weights_only"):
        erf(fresh, (1, 10, 10), samples=1, weights=str(tmp_path / "pickle.pt"))


def test_uniform_weights_do_not_touch_the_model():
    model = stack(2, c=2)
    before = [p.clone() for p in model.parameters()]
    erf(model, (1, 10, 10), samples=1, weights="uniform")
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_presets_set_the_papers_procedures_and_explicit_options_win():
    model = stack(2, c=2, relu=True)
    r = erf(model, (1, 12, 12), preset="luo2016", samples=3)
    assert r.samples == 3 and r.settings["weights"] == "random" and r.settings["reduce"] == "abs"
    assert r.settings["preset"] == "luo2016" and PRESETS["luo2016"]["samples"] == 20
    rep = erf(stack(2, c=3, cin=3), (3, 24, 24), preset="replknet2022", samples=2)
    assert rep.settings["reduce"] == "relu" and rep.settings["readout"] == "relu"
    assert "scikit-image" in rep.settings["inputs"] and rep.input_shape == (3, 24, 24)
    assert PRESETS["replknet2022"]["input_shape"] == (3, 1024, 1024)
    with pytest.raises(RflensError, match="unknown preset"):
        erf(model, (1, 12, 12), preset="nope")


def test_bad_options_are_one_line_errors():
    model = stack(1)
    for kw in ({"weights": "randomly"}, {"activations": "none"}, {"reduce": "max"},
               {"samples": 0}, {"dtype": "int8"}, {"unit": "middle"}):
        with pytest.raises(RflensError) as info:
            erf(model, (1, 8, 8), **kw)
        assert "\n" not in str(info.value)


# --- result object ---------------------------------------------------------------------------------

def test_result_serialises_and_renders():
    r = erf(stack(2, c=2), (1, 12, 12), samples=2)
    d = json.loads(r.to_json())
    assert d["schema_version"] == 1 and d["unit"] == [6, 6] and d["input_shape"] == [1, 12, 12]
    assert d["trf"]["box"] == [[4, 8], [4, 8]] and d["trf"]["size"] == [5, 5]
    assert set(d["metrics"]) >= {"gaussian", "mass_radius", "erf_trf_ratio",
                                 "high_contribution_area_ratio", "outside_fraction"}
    assert r.normalized.sum() == pytest.approx(1.0) and r.raw.dtype == np.float64
    html = r._repr_html_()
    assert "<table>" in html and "data:image/png;base64," in html
    from rich.console import Console

    console = Console(record=True, width=120, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(r)
    assert "Gaussian sigma" in console.export_text()
    with pytest.raises(Exception):
        r.samples = 3  # frozen


def test_progress_bar_goes_to_stderr_only(capsys):
    effective_receptive_field(stack(1), None, (1, 8, 8), samples=4, batch_size=1, progress=True)
    out = capsys.readouterr()
    assert out.out == ""
    effective_receptive_field(stack(1), None, (1, 8, 8), samples=4, batch_size=1, progress=False)
    assert capsys.readouterr().err == ""


# --- CLI -------------------------------------------------------------------------------------------

@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "net.py"
    path.write_text("from torch import nn\n"
                    "def make():\n"
                    "    return nn.Sequential(*[nn.Conv2d(1 if i == 0 else 2, 2, 3, padding=1) "
                    "for i in range(3)])\n")
    return f"{path}:make"


def test_cli_json_carries_everything(model_file, capsys):
    code = main(["erf", model_file, "--layer", "2", "--input", "1x15x15", "--samples", "3",
                 "--format", "json", "-q"])
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema_version"] == 1 and d["layer"] == "2" and d["input_shape"] == [1, 15, 15]
    assert d["samples"] == 3 and d["unit"] == [7, 7] and d["trf"]["size"] == [7, 7]
    assert d["metrics"]["gaussian"]["sigma"][0] > 0 and d["model"].endswith(":make")


def test_cli_analytic_save_and_plot(model_file, tmp_path, capsys):
    npy, png = tmp_path / "erf.npy", tmp_path / "erf.png"
    code = main(["erf", model_file, "--layer", "2", "--input", "1x15x15", "--analytic",
                 "--format", "json", "--save", str(npy), "--plot", str(png)])
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert d["method"] == "analytic"
    assert d["metrics"]["moments"]["std"][0] ** 2 == pytest.approx(3 * 8 / 12, rel=1e-12)
    saved = np.load(npy)
    expected = np.zeros((15, 15))
    expected[4:11, 4:11] = trinomial_grid(3) / 729
    np.testing.assert_allclose(saved, expected, rtol=1e-12)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_table_and_uniform_weights(model_file, capsys):
    code = main(["erf", model_file, "--layer", "1", "--input", "1x11x11", "--samples", "2",
                 "--weights", "uniform", "--activations", "linear", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "ERF/TRF ratio" in out and "Gaussian sigma" in out


@pytest.mark.parametrize("args,needle", [
    (["--layer", "9"], "no layer '9'"),
    (["--layer", "2", "--weights", "nope.pt"], "nope.pt"),
    (["--layer", "2", "--inputs", "/no/such/dir"], "not a folder"),
    (["--layer", "2", "--samples", "0"], "--samples"),
    (["--layer", "2", "--input", "1x0x5"], "--input"),
])
def test_cli_bad_input_is_one_line_exit_2(model_file, capsys, args, needle):
    shape = [] if "--input" in args else ["--input", "1x12x12"]
    code = main(["erf", model_file, *shape, *args, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if line.startswith("rflens: error")]) == 1
    assert needle in err[-1]


class DataDependent(nn.Module):
    """Runs neither on meta tensors nor under vmap (``.item()`` in the forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        scale = 2.0 if float(x.detach().abs().max().item()) > 1e9 else 1.0
        return self.conv(x) * scale


def test_models_that_cannot_run_on_meta_measure_memory_on_the_first_sample():
    torch.manual_seed(0)
    model = DataDependent()
    x = torch.randn(5, 1, 9, 9)
    r = erf(model, (1, 9, 9), inputs=x, batch_size=4)
    assert r.settings["largest_pass"] == 4  # passes of 1 then 4 samples
    w = model.conv.weight.detach()[0, 0].abs().double().numpy()
    np.testing.assert_allclose(r.raw[3:6, 3:6], w, rtol=1e-6)  # cross-correlation: |w| at the taps
    assert np.count_nonzero(r.raw) == 9


def test_random_weights_fall_back_to_one_draw_per_pass_when_vmap_fails():
    r = erf(DataDependent(), (1, 9, 9), samples=64, batch_size=16, weights="random")
    assert any("could not be batched" in w for w in r.warnings)
    assert r.settings["largest_pass"] == 1 and r.samples == 64
    taps = r.raw[3:6, 3:6].ravel()
    assert taps.std() / taps.mean() < 0.2  # still a fresh draw per sample (see above)
