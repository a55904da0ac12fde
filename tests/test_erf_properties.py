"""Property tests (hypothesis) for the analytic ERF and filter rarefaction on random networks.

1. ``analytic_erf`` on random graphs of convs (strides, dilations), transposed convs, max/average
   pooling, residual blocks, global context branches, squeeze-and-excitation gates, norms,
   functional activations and an op without a rule, against the test's own *twin*: the same
   network built truly linear (activations and gates removed, max pooling as average pooling,
   norms removed) with equal weights set here, differentiated by autograd. A local field is
   compared on an input enlarged until the twin's map no longer touches its border; a global one on
   the input as given; without a TRF, on the input as given and with the ratio unknown.
2. ``rarefy`` on random chains and graphs against the test's own shift-and-stitch loop on the
   interior (own stride and field recurrences), or a refusal that names the op.

``make test`` runs a few dozen examples (seconds); ``RFLENS_PROPERTY_EXAMPLES=500 pytest
tests/test_erf_properties.py`` (``make properties``) runs a long sweep.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from torch import nn

from shift_stitch import own_shift_and_stitch
from rflens.dense import rarefy
from rflens.erf import ERFWarning
from rflens.erf.analytic import analytic_erf
from rflens.errors import RflensError

pytestmark = pytest.mark.usefixtures("one_thread")
DT = torch.float64
_LONG = int(os.environ.get("RFLENS_PROPERTY_EXAMPLES", "0"))


def _settings(n: int):
    return settings(max_examples=_LONG or n, deadline=None, derandomize=not _LONG,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --- random networks ---------------------------------------------------------------------------------

KINDS = ("conv", "avg", "max", "convT", "residual", "global", "gate", "norm", "act", "flip")
block = st.tuples(st.sampled_from(KINDS), st.sampled_from([1, 2, 3, 5]), st.sampled_from([1, 2]),
                  st.sampled_from([1, 2]), st.booleans(), st.integers(0, 3))


class Block(nn.Module):
    """One block of a random network; ``twin=True`` builds its truly linear, normalisation-free
    version (the same convolutions)."""

    def __init__(self, spec: tuple, c: int, twin: bool) -> None:
        super().__init__()
        kind, k, s, d, pad, variant = spec
        self.kind, self.variant, self.twin = kind, variant, twin
        if kind == "conv":
            self.layer = nn.Conv2d(c, c, k, stride=s, dilation=d, padding=d * (k - 1) // 2 if pad else 0)
        elif kind in ("avg", "max"):
            k = max(k, 2)
            p = k // 2 if pad else 0
            if kind == "max" and not twin:
                self.layer = nn.MaxPool2d(k, s, p)
            else:
                self.layer = nn.AvgPool2d(k, s, p, count_include_pad=True)
        elif kind == "convT":
            k = max(k, 2)
            self.layer = nn.ConvTranspose2d(c, c, k, stride=s, padding=min(int(pad), k - 1))
        elif kind == "residual":
            k = k if k % 2 else k + 1
            self.layer = nn.Conv2d(c, c, k, padding=k // 2)
        elif kind == "gate":
            self.layer = nn.Conv2d(c, c, 1)
        elif kind == "norm":
            self.layer = nn.GroupNorm(1, c) if variant % 2 else nn.BatchNorm2d(c)
            if isinstance(self.layer, nn.BatchNorm2d):
                self.layer.running_mean.uniform_(-1, 1)
                self.layer.running_var.uniform_(0.5, 2)

    def forward(self, x):
        kind, twin = self.kind, self.twin
        if kind in ("conv", "avg", "max", "convT"):
            return self.layer(x)
        if kind == "residual":
            return x + self.layer(x if twin else F.relu(x))
        if kind == "global":  # a pooled context, or a running sum along the width
            return x + (x.mean((2, 3), keepdim=True) if self.variant % 2 else x.cumsum(3) / x.shape[3])
        if kind == "gate":
            return x if twin else x * torch.sigmoid(self.layer(x.mean((2, 3), keepdim=True)))
        if kind == "norm":
            return x if twin else self.layer(x)
        if kind == "act":
            if twin:
                return x
            return (x.clamp(min=0), torch.maximum(x, torch.zeros(())), torch.where(x > 0, x, 0.1 * x),
                    x * torch.sigmoid(x))[self.variant]
        return torch.flip(x, dims=[3])  # "flip": linear, but without a receptive-field rule


class Net(nn.Module):
    def __init__(self, specs: list, c: int, twin: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.blocks = nn.ModuleList(Block(s, c, twin) for s in specs)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return x


def equal_weights(model: nn.Module) -> nn.Module:
    """Every layer the mean of its inputs (set here): a conv 1/(c_in k^2), a transposed conv, whose
    output reads k/s taps per axis on average, s^2/(c_in k^2); biases 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.ConvTranspose2d):
                (k, _), (s, _) = m.kernel_size, m.stride
                m.weight.fill_(s * s / (m.in_channels * k * k))
                m.bias.zero_()
            elif isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1]))
                m.bias.zero_()
    return model


def twin_map(twin: nn.Module, n: int, unit: tuple[int, int]) -> np.ndarray:
    """sum_c |d y[c, unit] / dx| of the twin on an n x n zero input, by autograd."""
    x = torch.zeros((1, 1, n, n), dtype=DT, requires_grad=True)
    y = twin(x)
    (g,) = torch.autograd.grad(y[0, :, unit[0], unit[1]].sum(), x)
    return g[0, 0].abs().numpy()


def strides(specs: list) -> tuple[int, int]:
    """Product of the down strides and of the up strides of the network."""
    down = math.prod(s for kind, _, s, *_ in specs if kind in ("conv", "avg", "max"))
    up = math.prod(s for kind, _, s, *_ in specs if kind == "convT")
    return down, up


# --- 1. analytic ERF against the twin -----------------------------------------------------------------

@_settings(25)
@given(st.lists(block, min_size=1, max_size=5), st.integers(1, 2), st.integers(9, 16))
def test_analytic_erf_equals_the_path_counts_of_a_truly_linear_twin(specs, c, n):
    torch.manual_seed(0)
    model = Net(specs, c).double().eval()
    twin = equal_weights(Net(specs, c, twin=True).double().eval())
    try:
        with torch.no_grad():
            out = twin(torch.zeros(1, 1, n, n, dtype=DT))
            model(torch.zeros(1, 1, n, n, dtype=DT))
    except (RuntimeError, ValueError):
        assume(False)  # the input is too small for this network (or a norm over one value)
    assume(min(out.shape[2:]) >= 1)
    centre = tuple(m // 2 for m in out.shape[2:])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ERFWarning)
            a = analytic_erf(model, None, (1, n, n))
    except RflensError as exc:  # refused only when, on the input as given, the unit reads padding only
        assert "is empty" in str(exc) and twin_map(twin, n, centre).sum() == 0
        event("refused: the unit reads only padding")
        return
    assert a.unit == centre
    kinds = {spec[0] for spec in specs}
    event("no TRF" if "flip" in kinds else "global" if "global" in kinds else "local")
    if "flip" in kinds:  # no TRF: the map of the input as given, and the ratio unknown
        assert a.trf is None and any("ratio is unknown" in note for note in a.notes)
        expected = twin_map(twin, n, a.unit)
        np.testing.assert_allclose(a.on_input((1, n, n)), expected / expected.sum(), rtol=1e-9,
                                   atol=1e-14)
        return
    if "global" in kinds:  # a global branch survives linearisation: the input as given
        # (on a grid pooled to one unit the branch adds nothing outside the local box: then the
        # map is local, and enlarging the input is refused because the pooled extent would grow)
        assert a.is_global or any("computed on the input as given" in note for note in a.notes)
        assert a.box == ((0, n - 1), (0, n - 1))
        expected = twin_map(twin, n, a.unit)
        np.testing.assert_allclose(a.map, expected / expected.sum(), rtol=1e-9, atol=1e-14)
        return
    assert not a.is_global and not a.clipped
    down, up = strides(specs)
    margin = down * 8
    while True:  # enlarge by whole down-stride products until the twin's map fits with room
        big = n + 2 * margin
        unit = tuple(u + margin * up // down for u in a.unit)
        expected = twin_map(twin, big, unit)
        rows, cols = np.nonzero(expected)
        if rows.min() > 0 and cols.min() > 0 and rows.max() < big - 1 and cols.max() < big - 1:
            break
        margin *= 2
    (lo, hi), (lo2, hi2) = a.box
    crop = expected[lo + margin:hi + margin + 1, lo2 + margin:hi2 + margin + 1]
    assert crop.sum() == pytest.approx(expected.sum(), rel=1e-12)  # the box holds every path
    np.testing.assert_allclose(a.map, crop / crop.sum(), rtol=1e-9, atol=1e-14)


# --- 2. rarefaction against an own shift-and-stitch loop ----------------------------------------------

DENSE_KINDS = ("conv", "conv", "avg", "max", "convT1", "convT2", "residual", "global", "groupnorm",
               "batchnorm")
dense_block = st.tuples(st.sampled_from(DENSE_KINDS), st.sampled_from([1, 2, 3]),
                        st.sampled_from([1, 2]), st.sampled_from([1, 2]), st.booleans())
REFUSAL = {"global": r"aten\.mean", "groupnorm": r"aten\.native_group_norm",
           "convT2": r"strided transposed convolution"}


def dense_net(specs: list, c: int) -> tuple[nn.Module, tuple[int, int, int]]:
    """The network and its own geometry: total stride J and the field [lo, hi] of dense unit 0."""
    layers, jump, lo, hi = [nn.Conv2d(1, c, 3, padding=1)], 1, -1, 1
    for kind, k, s, d, pad in specs:
        if kind == "conv":
            p = d * (k - 1) // 2 if pad else 0
            layers.append(nn.Conv2d(c, c, k, stride=s, dilation=d, padding=p))
            lo, hi, jump = lo - p * jump, hi + (d * (k - 1) - p) * jump, jump * s
        elif kind in ("avg", "max"):
            k = max(k, 2)
            p = k // 2 if pad else 0
            layers.append(nn.MaxPool2d(k, s, p) if kind == "max" else nn.AvgPool2d(k, s, p))
            lo, hi, jump = lo - p * jump, hi + (k - 1 - p) * jump, jump * s
        elif kind == "convT1":  # stride 1: unit o reads inputs o + p - t, t = 0 .. k-1
            p = min(int(pad), k - 1)
            layers.append(nn.ConvTranspose2d(c, c, k, padding=p))
            lo, hi = lo - (k - 1 - p) * jump, hi + p * jump
        elif kind == "convT2":
            layers.append(nn.ConvTranspose2d(c, c, 2, stride=2))
        elif kind == "residual":
            k = k if k % 2 else k + 1
            layers.append(DenseResidual(c, k))
            lo, hi = lo - (k // 2) * jump, hi + (k // 2) * jump
        elif kind == "global":
            layers.append(GlobalContext())
        elif kind == "groupnorm":
            layers.append(nn.GroupNorm(1, c))
        else:
            bn = nn.BatchNorm2d(c)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            layers.append(bn)
    return nn.Sequential(*layers), (jump, lo, hi)


class DenseResidual(nn.Module):
    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, k, padding=k // 2)

    def forward(self, x):
        return x + self.conv(torch.relu(x))


class GlobalContext(nn.Module):
    def forward(self, x):
        return x + x.mean((2, 3), keepdim=True)


@_settings(25)
@given(st.lists(dense_block, min_size=1, max_size=5), st.integers(1, 2), st.integers(0, 2**16))
def test_rarefy_equals_own_shift_and_stitch_or_names_the_op(specs, c, seed):
    torch.manual_seed(seed)
    model, (jump, lo, hi) = dense_net(specs, c)
    model = model.double().eval()
    n = 28
    x = torch.randn((1, 1, n, n), generator=torch.Generator().manual_seed(seed), dtype=DT)
    try:
        with torch.no_grad():
            reference = model(x)
    except (RuntimeError, ValueError):
        assume(False)  # the input is too small for this network (or a norm over one value)
    assume(min(reference.shape[2:]) >= 1)
    kinds = [spec[0] for spec in specs]
    refused = ["convT2"] if "convT2" in kinds else [k for k in kinds if k in REFUSAL]
    event(f"refused: {refused[0]}" if refused else f"compared at stride {jump}")
    if refused:
        with pytest.raises(RflensError, match=REFUSAL[refused[0]]):
            rarefy(model, x)
        return
    with torch.no_grad():
        dense = rarefy(model, x)(x)
    stitched = own_shift_and_stitch(model, x, jump)
    size = min(dense.shape[2], stitched.shape[2])
    index = [i for i in range(size) if i + lo >= i % jump and i + hi <= n - 1]
    assume(index)
    rows = torch.tensor(index)
    a = dense[:, :, rows][:, :, :, rows]
    b = stitched[:, :, rows][:, :, :, rows]
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
