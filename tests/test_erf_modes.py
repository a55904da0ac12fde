"""What weights= and activations= change, batch statistics, underflow inside the backward, 16-bit
images (issue 12, classes 5-8 and 10). Every map is checked against the test's own autograd on a
copy the test builds itself: truly linear, normalisation-free, or run one sample at a time."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rflens.erf import ERFWarning, effective_receptive_field
from rflens.erf.weights import redraw

pytestmark = pytest.mark.usefixtures("one_thread")
DT = torch.float64


def erf(model, shape, **kw):
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ERFWarning)
        return effective_receptive_field(model, kw.pop("layer", None), shape, **kw)


def own_erf(model: nn.Module, x: torch.Tensor, one_at_a_time: bool = False) -> np.ndarray:
    """Mean over samples of sum_c |d sum_c' y[c', centre] / dx| by plain autograd."""
    model = copy.deepcopy(model).eval()
    total = 0
    for i in range(x.shape[0]) if one_at_a_time else [None]:
        xi = (x if i is None else x[i:i + 1]).clone().requires_grad_(True)
        y = model(xi)
        centre = tuple(n // 2 for n in y.shape[2:])
        (g,) = torch.autograd.grad(y[(slice(None), slice(None)) + centre].sum(), xi)
        total = total + g.abs().sum(dim=1).sum(dim=0).double()
    return (total / x.shape[0]).numpy()


def noise(n: int, shape: tuple[int, ...], seed: int = 0, dtype=DT) -> torch.Tensor:
    """Gaussian samples that float32 holds exactly (tensor inputs reach the model as float32)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g, dtype=torch.float32).to(dtype)


# --- class 7: activations="linear" against a truly linear copy -------------------------------------

class Functional(nn.Module):
    """Non-linearities written in forward, as people write them. ``linear=True`` is the truly linear
    copy: each of them replaced by what it is without its non-linearity (x; a gate is 1)."""

    def __init__(self, linear: bool = False) -> None:
        super().__init__()
        self.linear = linear
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(4, 2, 1), nn.Conv2d(2, 4, 1)
        self.d = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        lin = self.linear
        x = self.a(x)
        x = x if lin else x.clamp(0, 6)                                   # ReLU6
        x = self.b(x)
        x = x if lin else torch.maximum(x, torch.zeros(()))               # ReLU
        x = x if lin else torch.where(x > 0, x, 0.1 * x)                  # leaky ReLU
        x = self.c(x)
        x = x if lin else x * torch.sigmoid(x)                            # SiLU
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        x = x if lin else x * gate                                        # squeeze-and-excitation
        x = x if lin else x.masked_fill(x < -1, -1.0)                     # hard floor
        return self.d(x)


def test_linear_mode_equals_a_truly_linear_copy():
    torch.manual_seed(0)
    model = Functional().double()
    twin = Functional(linear=True).double()
    twin.load_state_dict(model.state_dict())
    x = noise(6, (2, 14, 14))
    r = erf(model, (2, 14, 14), inputs=x, activations="linear", batch_size=3)
    np.testing.assert_allclose(r.raw, own_erf(twin, x), rtol=1e-12, atol=1e-15)
    assert not any("left these non-linear" in w for w in r.warnings)
    plain = erf(model, (2, 14, 14), inputs=x, batch_size=3)  # as-is: really non-linear
    assert np.abs(plain.raw - r.raw).max() > 0.05 * r.raw.max()


class Leftovers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        x = self.a(x)
        q = x.flatten(2)
        attn = torch.softmax(q.transpose(1, 2) @ q, dim=-1)               # attention over positions
        x = (q @ attn).view_as(x) + torch.exp(x) + x.abs()
        unused = torch.log(x.abs() + 1)  # noqa: F841  never reaches the unit: not named
        return self.b(x / (x.norm() + 1))                                 # divisor dropped


def test_linear_mode_names_every_non_linearity_it_leaves():
    r = erf(Leftovers().double(), (1, 8, 8), samples=2, activations="linear")
    (note,) = [w for w in r.warnings if "left these non-linear" in w]
    names = note.rsplit(": ", 1)[1].split(", ")
    assert sorted(names) == sorted(["torch.softmax", "Tensor.matmul of two input-dependent tensors",
                                    "torch.exp", "Tensor.abs"])


def test_linear_mode_leaves_constants_alone():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
            self.log_scale = nn.Parameter(torch.tensor(-2.0))

        def forward(self, x):  # softplus/clamp of a parameter is a constant, not an activation
            return self.conv(x) * F.softplus(self.log_scale).clamp(max=0.1)

    model = Scaled().double()
    x = noise(2, (1, 9, 9))
    r = erf(model, (1, 9, 9), inputs=x, activations="linear")
    np.testing.assert_allclose(r.raw, own_erf(model, x), rtol=1e-12)


# --- class 6: batch statistics and normalisations under uniform weights ---------------------------

class BatchStats(nn.Module):
    def __init__(self, functional: bool = False) -> None:
        super().__init__()
        self.functional = functional
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3, track_running_stats=False)
        self.b = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        x = self.a(x)
        x = F.batch_norm(x, None, None, training=True) if self.functional else self.bn(x)
        return self.b(torch.relu(x))


@pytest.mark.parametrize("functional", [False, True])
def test_batch_statistics_do_not_depend_on_the_batch_size(functional):
    torch.manual_seed(1)
    model = BatchStats(functional).double()
    x = noise(8, (1, 10, 10), seed=3)
    one = erf(model, (1, 10, 10), inputs=x, batch_size=1)
    eight = erf(model, (1, 10, 10), inputs=x, batch_size=8)
    truth = own_erf(model, x, one_at_a_time=True)
    np.testing.assert_allclose(one.raw, truth, rtol=1e-12)
    np.testing.assert_allclose(eight.raw, truth, rtol=1e-12)
    assert np.abs(own_erf(model, x) - truth).max() > 0.01 * truth.max()  # a batch of 8 would differ
    assert any("batch statistics" in w for w in eight.warnings)


def test_batch_statistics_with_random_weights_are_per_sample_too():
    torch.manual_seed(1)
    x = noise(4, (1, 10, 10), seed=3, dtype=torch.float32)
    a = erf(BatchStats(), (1, 10, 10), inputs=x, batch_size=1, weights="random")
    b = erf(BatchStats(), (1, 10, 10), inputs=x, batch_size=4, weights="random")
    np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5)


class Normed(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = norm
        self.b = nn.Conv2d(4, 2, 5, padding=2)

    def forward(self, x):
        return self.b(torch.relu(self.norm(self.a(x))))


def mean_weights(model: nn.Module) -> nn.Module:
    """Every conv averages its inputs, biases 0 (set here, independently of rflens)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1]))
                m.bias.zero_()
    return model


@pytest.mark.parametrize("norm", [nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True),
                                  nn.BatchNorm2d(4, track_running_stats=False),
                                  nn.LayerNorm([4, 12, 12])], ids=lambda m: type(m).__name__)
def test_uniform_weights_make_normalisations_the_identity(norm):
    model = Normed(norm).double()
    twin = mean_weights(Normed(nn.Identity()).double())
    x = noise(3, (1, 12, 12))
    r = erf(model, (1, 12, 12), inputs=x, weights="uniform")
    np.testing.assert_allclose(r.raw, own_erf(twin, x), rtol=1e-12)


# --- class 5: random weights redraw every parameter -----------------------------------------------

class Loose(nn.Module):
    """A conv kept in bare parameters, a ConvNeXt-style layer scale, multi-head attention."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((4, 2, 3, 3), 0.5))
        self.bias = nn.Parameter(torch.full((4,), 0.25))
        self.gamma = nn.Parameter(torch.full((4, 1, 1), 1e-6))
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.out = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        x = F.conv2d(x, self.weight, self.bias, padding=1)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.out(x + self.gamma * t.transpose(1, 2).reshape(b, c, h, w))


def test_random_redraws_every_parameter_by_its_rule():
    drawn = []
    for seed in (1, 2):
        model = Loose()
        kept = redraw(model, seed)
        assert kept == ["bias", "gamma"]  # vectors no initialiser owns: named, kept as they were
        assert torch.equal(model.bias, torch.full((4,), 0.25))
        assert torch.equal(model.gamma, torch.full((4, 1, 1), 1e-6))
        bound = 1 / math.sqrt(2 * 9)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 2*3*3
        w = model.weight.detach()
        assert w.abs().max() <= bound and w.std() == pytest.approx(bound / math.sqrt(3), rel=0.25)
        assert torch.equal(model.attn.out_proj.bias, torch.zeros(4))  # MHA's own _reset_parameters
        drawn.append(torch.cat([p.detach().flatten() for n, p in model.named_parameters()
                                if n not in ("bias", "gamma")]))
    same = (drawn[0] == drawn[1]).float().mean()
    assert same < 0.2  # only the zero biases MHA initialises agree between seeds


def test_random_weights_name_the_parameters_kept():
    r = erf(Loose(), (2, 6, 6), samples=2, weights="random")
    (note,) = [w for w in r.warnings if "kept 2 parameter" in w]
    assert note.endswith("bias, gamma")


# --- class 10: underflow in the middle of the backward --------------------------------------------

class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def underflow_net() -> nn.Sequential:
    """Early layers amplify by 1e38, late ones shrink by 1e-38: inside the backward the tails of the
    gradient fall below float32's range, but the input gradient is O(1e-10) or more."""
    convs = [nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(9)]
    for c in convs:
        nn.init.constant_(c.weight, 1 / 9)
    return nn.Sequential(convs[0], Scale(1e38), *convs[1:], Scale(1e-38))


def test_underflow_inside_the_backward_switches_to_float64():
    model = underflow_net()
    x = noise(2, (1, 23, 23), dtype=torch.float32)
    auto = erf(model, (1, 23, 23), inputs=x)
    truth = own_erf(copy.deepcopy(model).double(), x.double())
    assert auto.settings["dtype"] == "float64"
    assert any("switched to float64" in w and "backward of" in w for w in auto.warnings)
    np.testing.assert_allclose(auto.raw, truth, rtol=1e-9)
    assert np.count_nonzero(truth) == 19 * 19  # the TRF of 9 layers, all of it reached
    forced = erf(model, (1, 23, 23), inputs=x, dtype="float32")
    assert np.count_nonzero(forced.raw) < 19 * 19  # what float32 alone would have reported
    assert forced.raw[forced.raw > 0].min() > 1e-30  # ... with a final map far from underflow


# --- class 8: 16-bit images ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_scaled_by_their_own_range(tmp_path, suffix):
    from PIL import Image

    from rflens.erf.inputs import load_image

    ramp = (np.arange(32 * 32).reshape(32, 32) * 37 + 1000).astype(np.uint16)  # 1000 .. 38857
    path = tmp_path / f"ramp{suffix}"
    Image.fromarray(ramp).save(path)
    gray = load_image(path, (1, 32, 32))[0].numpy()
    expected = (ramp - 1000.0) / (ramp.max() - 1000.0)
    np.testing.assert_allclose(gray, (expected - 0.5) / 0.5, atol=1e-6)
    rgb = load_image(path, (3, 32, 32)).numpy()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(rgb, (expected[None] - mean[:, None, None]) / std[:, None, None],
                               atol=1e-5)


def test_weight_standardisation_is_not_taken_for_batch_statistics():
    from timm.layers import StdConv2d

    torch.manual_seed(2)
    model = nn.Sequential(StdConv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1))
    x = noise(4, (1, 9, 9), dtype=torch.float32)
    r = erf(model, (1, 9, 9), inputs=x, batch_size=4)
    assert not any("batch statistics" in w for w in r.warnings)
    assert r.settings["largest_pass"] == 4
    np.testing.assert_allclose(r.raw, own_erf(model, x), rtol=1e-5)
