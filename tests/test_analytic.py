"""Analytic (path-count) ERF against closed forms and an independent forward-pass oracle."""

from __future__ import annotations

import copy
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import torch.nn.functional as F
from torch import nn

from rflens.erf.analytic import analytic_erf, analytic_result, chain_of, parse_chain, path_counts_1d
from rflens.errors import RflensError


pytestmark = pytest.mark.usefixtures("one_thread")


def box_kernel_coefficients(n: int, k: int) -> list[int]:
    """Coefficients of (1 + x + ... + x^(k-1))^n by the closed form
    sum_j (-1)^j C(n, j) C(i - j*k + n - 1, n - 1) (no convolution involved)."""
    out = []
    for i in range(n * (k - 1) + 1):
        out.append(sum((-1) ** j * math.comb(n, j) * math.comb(i - j * k + n - 1, n - 1)
                       for j in range(i // k + 1)))
    return out


# --- chains -----------------------------------------------------------------------------------------

def test_two_3x3_layers_give_the_seed_grid():
    a = analytic_erf([3, 3])
    assert a.axis_counts == ((1, 2, 3, 2, 1), (1, 2, 3, 2, 1))
    expected = np.outer([1, 2, 3, 2, 1], [1, 2, 3, 2, 1])
    assert (a.counts == expected).all()
    np.testing.assert_allclose(a.map, expected / 81.0, rtol=1e-15)
    assert a.box == ((-2, 2), (-2, 2))  # unit 0 with 'same' padding


@pytest.mark.parametrize("n,k", [(1, 3), (5, 3), (17, 3), (6, 5), (9, 7), (40, 3)])
def test_chain_counts_equal_the_closed_form(n, k):
    a = analytic_erf([k] * n)
    assert list(a.axis_counts[0]) == box_kernel_coefficients(n, k)
    assert a.variance() == (Fraction(n * (k * k - 1), 12),) * 2


def test_strided_chain_matches_the_documented_example():
    # 3x3 stride 2 then 2x2 stride 1: R = 5, units see [0..2] and [2..4]
    lo, counts = path_counts_1d([(3, 2, 1, 0), (2, 1, 1, 0)], unit=0)
    assert (lo, counts) == (0, [1, 1, 2, 1, 1])


@pytest.mark.parametrize("layers", [[(3, 2), (3, 1), (3, 2, 2)], [(5, 2), (3, 2), (3, 1, 3), (2, 2)]])
def test_chain_size_and_offset_follow_the_closed_form(layers):
    a = analytic_erf(layers, input_shape=None)
    chain = parse_chain(layers, 2)
    strides = [c.stride[0] for c in chain]
    spans = [c.dilation[0] * (c.kernel[0] - 1) for c in chain]
    size = 1 + sum(s * math.prod(strides[:i]) for i, s in enumerate(spans))
    pad = sum(c.padding[0] * math.prod(strides[:i]) for i, c in enumerate(chain))
    assert a.box[0] == (-pad, -pad + size - 1)
    assert sum(a.axis_counts[0]) == math.prod(c.kernel[0] for c in chain)  # every path counted once


def test_sequential_chain_uses_exact_counts_and_geometry():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(8, 8, (5, 3), stride=(1, 2), padding=(2, 1)),
                                        nn.BatchNorm2d(8)),
                          nn.MaxPool2d(2), nn.Conv2d(8, 4, 1))
    a = analytic_erf(model, None, (3, 20, 20))
    assert a.exact and a.method.startswith("chain")
    rows = [(3, 1, 1, 1), (5, 1, 1, 2), (2, 2, 1, 0), (1, 1, 1, 0)]
    cols = [(3, 1, 1, 1), (3, 2, 1, 1), (2, 2, 1, 0), (1, 1, 1, 0)]
    # output 10 x 5 -> centre unit (5, 2)
    assert a.unit == (5, 2)
    assert (a.box[0][0], list(a.axis_counts[0])) == path_counts_1d(rows, 5)
    assert (a.box[1][0], list(a.axis_counts[1])) == path_counts_1d(cols, 2)


def test_chain_stops_at_the_named_layer():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1),
                          nn.Conv2d(1, 1, 3, padding=1))
    assert len(chain_of(model, "1")) == 2
    assert analytic_erf(model, "1").axis_counts[0] == (1, 2, 3, 2, 1)


def test_deep_stacks_neither_overflow_nor_underflow():
    a = analytic_erf([7] * 200)  # 7^200 per axis > float64 max
    logs = a.log10_map
    assert np.isfinite(logs).all()
    corner = -2 * 200 * math.log10(7)  # one path to the corner pixel out of 7^400
    assert logs[0, 0] == pytest.approx(corner, rel=1e-12)
    centre = a.axis_counts[0][600]
    expected = 2 * (math.log10(centre) - 200 * math.log10(7))
    assert logs[600, 600] == pytest.approx(expected, rel=1e-12)
    assert a.map.sum() == pytest.approx(1.0, rel=1e-12)
    b = analytic_erf([3] * 200)
    assert np.isfinite(b.log10_map).all() and (b.map > 0).all()  # 9^-200 fits float64


def test_hundred_layer_stack_counts_are_exact_integers():
    """Depth 100 (timed in benchmarks/erf_speed.py, not here): the counts are the trinomial
    coefficients of (1 + x + x²)^100, exact Python integers far beyond float precision."""
    counts = analytic_erf([3] * 100, ndim=1).axis_counts[0]
    assert sum(counts) == 3 ** 100 and len(counts) == 201
    central = sum(math.comb(100, k) * math.comb(100 - k, k) for k in range(51))  # x^100 coefficient
    assert counts[100] == central and counts[0] == counts[-1] == 1


def test_outside_fraction_is_exact_for_chains():
    a = analytic_erf([3, 3], input_shape=(1, 4, 4))  # centre unit 2: box [0, 4] on a 4-pixel axis
    assert a.box == ((0, 4), (0, 4))
    inside = Fraction(9 - 1, 9)  # the last pixel of 1 2 3 2 1 falls outside
    assert a.outside_fraction() == pytest.approx(float(1 - inside * inside), rel=1e-15)


def test_bad_chain_specs_are_one_line_errors():
    for spec in ([0], [(3, 0)], ["x"], [{"kernel": 3, "strid": 2}]):
        with pytest.raises(RflensError):
            analytic_erf(spec)


# --- graphs against an independent forward oracle ---------------------------------------------------

def set_mean_weights(model: nn.Module) -> nn.Module:
    """Every conv averages its inputs, biases 0 (done here, independently of rflens), in float64."""
    model = model.double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / (m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]))
                if m.bias is not None:
                    m.bias.zero_()
    return model


def forward_oracle(model: nn.Module, shape: tuple[int, int, int], unit: tuple[int, int]) -> np.ndarray:
    """Influence of each pixel on the unit by forward passes of one-hot images (linear model)."""
    c, h, w = shape
    eye = torch.zeros(h * w, c, h, w, dtype=torch.float64)
    eye.view(h * w, c, h * w)[torch.arange(h * w), :, torch.arange(h * w)] = 1.0
    with torch.no_grad():
        y = copy.deepcopy(model).double()(eye)
    out = y[:, :, unit[0], unit[1]].sum(dim=1).reshape(h, w).numpy()
    return out / out.sum()


class Residual(nn.Module):
    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, k, padding=k // 2)
        self.b = nn.Conv2d(c, c, k, padding=k // 2)

    def forward(self, x):
        return x + self.b(self.a(x))


class Branches(nn.Module):
    def __init__(self, c: int, k1: int, k2: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, k1, padding=k1 // 2)
        self.b = nn.Conv2d(c, 1, k2, padding=k2 // 2)
        self.out = nn.Conv2d(c + 1, c, 1)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], dim=1))


class Graph(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def make_block(kind: int, c: int, k: int, k2: int, stride: int) -> nn.Module:
    if kind == 0:
        return Residual(c, k)
    if kind == 1:
        return Branches(c, k, k2)
    if kind == 2:
        return nn.Conv2d(c, c, k, stride=stride, padding=k // 2, dilation=1)
    return nn.AvgPool2d(2 if k2 == 1 else 3, stride=stride, padding=0 if k2 == 1 else 1)


block = st.tuples(st.integers(0, 3), st.sampled_from([1, 3, 5]), st.sampled_from([1, 3]),
                  st.sampled_from([1, 2]))


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(block, min_size=1, max_size=4), st.integers(1, 2))
def test_analytic_equals_forward_oracle_and_uniform_gradient_on_random_graphs(blocks, c):
    from rflens.erf import effective_receptive_field

    model = set_mean_weights(Graph([nn.Conv2d(1, c, 3, padding=1)] +
                                   [make_block(kind, c, k, k2, s) for kind, k, k2, s in blocks]))
    shape = (1, 20, 20)
    a = analytic_erf(model, None, shape)
    with torch.no_grad():
        out = model(torch.zeros(1, *shape, dtype=torch.float64))
    assert a.unit == tuple(n // 2 for n in out.shape[2:])
    oracle = forward_oracle(model, shape, a.unit)
    if all(lo >= 0 and hi < 20 for lo, hi in a.box):  # field inside: nothing cut by the border
        np.testing.assert_allclose(a.on_input(shape), oracle, rtol=1e-9, atol=1e-15)
    g = effective_receptive_field(model, None, shape, samples=2, weights="uniform",
                                  activations="linear", progress=False)
    np.testing.assert_allclose(g.normalized, oracle, rtol=1e-9, atol=1e-15)


def test_graph_field_past_the_border_is_reported_unclipped():
    model = set_mean_weights(Graph([nn.Conv2d(1, 2, 3, padding=1), Residual(2, 5), Residual(2, 3),
                                    Branches(2, 5, 3)]))  # stride 1: TRF 1 + 2 + 8 + 4 + 4 = 19
    small = (1, 9, 9)
    a = analytic_erf(model, None, small)
    assert a.box == ((4 - 9, 4 + 9), (4 - 9, 4 + 9)) and not a.clipped
    big = forward_oracle(model, (1, 29, 29), (14, 14))  # same unit, 10 pixels of margin
    np.testing.assert_allclose(a.map, big[14 - 9:14 + 10, 14 - 9:14 + 10], rtol=1e-9, atol=1e-15)
    inside = big[10:19, 10:19].sum()
    assert a.outside_fraction(small) == pytest.approx(1 - inside, rel=1e-9)


def test_max_pool_becomes_average_pool():
    model = set_mean_weights(Graph([nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(3, 2, 1),
                                    Residual(1, 3)]))
    twin = set_mean_weights(Graph([nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(3, 2, 1),
                                   Residual(1, 3)]))
    a = analytic_erf(model, None, (1, 24, 24))
    np.testing.assert_allclose(a.on_input((1, 24, 24)), forward_oracle(twin, (1, 24, 24), a.unit),
                               rtol=1e-9, atol=1e-15)


def test_graph_and_chain_methods_agree_on_a_chain():
    seq = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 5, stride=2, padding=2),
                        nn.AvgPool2d(2), nn.Conv2d(3, 2, 3, dilation=2, padding=2))
    chain = analytic_erf(seq, None, (1, 40, 40))
    graph = analytic_erf(Graph([seq]), None, (1, 40, 40))
    assert chain.exact and not graph.exact
    assert chain.box == graph.box
    np.testing.assert_allclose(graph.map, chain.map, rtol=1e-12, atol=1e-18)


def test_analytic_result_carries_exact_metrics():
    seq = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(6)])
    r = analytic_result(seq, None, (1, 41, 41))
    assert r.method == "analytic" and r.trf.size == (13, 13)
    assert r.metrics.std[0] ** 2 == pytest.approx(6 * 8 / 12, rel=1e-12)
    assert r.metrics.outside_fraction == 0.0
    assert r.to_dict()["metrics"]["outside_fraction"]["method"].startswith("exact")


def test_graph_needs_an_input_shape():
    with pytest.raises(RflensError, match="input_shape"):
        analytic_erf(Graph([nn.Conv2d(1, 1, 3)]), None, None)


def test_strided_graph_field_past_the_border_is_reported_unclipped():
    model = set_mean_weights(Graph([nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, stride=2, padding=1),
                                    Residual(2, 3), nn.AvgPool2d(2, 2), Branches(2, 3, 5)]))
    # jump 4; on 12 x 12 the output is 3 x 3 and the centre unit (1, 1) sees past the border
    a = analytic_erf(model, None, (1, 12, 12))
    assert a.unit == (1, 1) and a.box[0][0] < 0 and not a.clipped
    margin = 12  # a multiple of the jump: the unit moves by 3 and its field by 12 pixels
    big = forward_oracle(model, (1, 36, 36), (1 + margin // 4, 1 + margin // 4))
    (lo, hi), _ = a.box
    np.testing.assert_allclose(a.map, big[lo + margin:hi + margin + 1, lo + margin:hi + margin + 1],
                               rtol=1e-9, atol=1e-15)
    assert big.sum() == pytest.approx(a.map.sum())  # the box holds every path


def test_enlargement_beyond_the_memory_budget_falls_back_to_a_flagged_clipped_map():
    model = set_mean_weights(Graph([nn.Conv2d(1, 2, 3, padding=1), Residual(2, 5), Residual(2, 3)]))
    shape = (1, 7, 7)  # TRF 15 around unit 3: needs 4 pixels of margin on each side
    a = analytic_erf(model, None, shape, max_memory=1)
    assert a.clipped and a.box == ((0, 6), (0, 6))
    np.testing.assert_allclose(a.map, forward_oracle(model, shape, (3, 3)), rtol=1e-9, atol=1e-15)
    b = analytic_erf(model, None, shape)
    assert not b.clipped and b.box == ((-4, 10), (-4, 10))


# --- issue 12: global fields, the grid's period, no TRF, conv subclasses, gates -------------------

class PooledContext(nn.Module):
    """A DeepLab-style head: a local branch and an image-pooling branch broadcast back, concatenated."""

    def __init__(self, pool: str = "adaptive") -> None:
        super().__init__()
        self.pool = pool
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.local = nn.Conv2d(2, 2, 3, padding=1)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        if self.pool == "adaptive":
            context = F.adaptive_avg_pool2d(x, 1).expand_as(x)
        else:  # a running sum along the width (cumsum): global to the left
            context = x.cumsum(-1) / x.shape[-1]
        return self.out(torch.cat([self.local(x), context], dim=1))


@pytest.mark.parametrize("pool", ["adaptive", "cumsum"])
def test_global_branches_are_kept_over_the_whole_input(pool):
    model = set_mean_weights(PooledContext(pool))
    shape = (1, 24, 24)
    a = analytic_erf(model, None, shape)
    oracle = forward_oracle(model, shape, a.unit)  # the network as it is, on the input as given
    assert a.is_global and a.box == ((0, 23), (0, 23)) and not a.clipped
    np.testing.assert_allclose(a.map, oracle, rtol=1e-9, atol=1e-15)
    (lo, hi), (lo2, hi2) = a.trf.box
    outside_local = 1 - oracle[max(lo, 0):hi + 1, max(lo2, 0):hi2 + 1].sum()
    assert outside_local > 0.2  # the pooled branch's share, which a crop to the local box loses
    r = analytic_result(model, None, shape)
    assert math.isnan(r.metrics.outside_fraction)
    assert r.trf.is_global and r.trf.size == (24, 24)  # the TRF of a global unit: the whole input
    assert all(v < 1 for v in r.metrics.erf_trf_ratio)
    assert any("global" in w for w in r.warnings)
    radius = r.metrics.mass_radius[0.95]
    ys, xs = np.indices(oracle.shape)
    c = r.trf.center
    dist = np.hypot(ys - c[0], xs - c[1]).ravel()
    order = np.argsort(dist, kind="stable")
    reach = dist[order][np.searchsorted(np.cumsum(oracle.ravel()[order]), 0.95)]
    assert radius == pytest.approx(reach, abs=1.5)  # own 95 % radius, same centre (pixel rings)


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(4, 2, 1), nn.Conv2d(2, 4, 1)
        self.after = nn.Conv2d(4, 2, 5, padding=2)

    def forward(self, x):
        x = self.conv(x)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.after(x * gate)


class Ungated(SqueezeExcite):
    def forward(self, x):
        return self.after(self.conv(x))


def test_a_squeeze_excitation_gate_is_a_constant():
    shape = (1, 6, 6)  # field 7 around unit 3: [0, 6] needs one more pixel on the right
    a = analytic_erf(SqueezeExcite(), None, shape)
    assert not a.is_global and a.box == ((0, 6), (0, 6)) and not a.clipped
    twin = set_mean_weights(Ungated())
    big = forward_oracle(twin, (1, 16, 16), (8, 8))  # same unit, 5 pixels of margin
    np.testing.assert_allclose(a.map, big[5:12, 5:12], rtol=1e-9, atol=1e-15)
    assert any("no global path survives" in n for n in a.notes)


class DownUp(nn.Module):
    """Strided convs, then transposed convs: jump 1, but the output repeats only every 4 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.d1 = nn.Conv2d(1, 2, 5, stride=2, padding=2)
        self.d2 = nn.Conv2d(2, 2, 5, stride=2, padding=2)
        self.u1 = nn.ConvTranspose2d(2, 2, 2, stride=2)
        self.u2 = nn.ConvTranspose2d(2, 1, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x):
        return self.u2(self.u1(self.d2(self.d1(x))))


def set_mean_weights_t(model: nn.Module) -> nn.Module:
    """Mean weights for convs; a transposed conv's output unit reads k/s taps per axis on average,
    so its weight is s^2 / (c_in k^2) (the mass-preserving choice)."""
    model = set_mean_weights(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.ConvTranspose2d):
                (k, _), (s, _) = m.kernel_size, m.stride
                m.weight.fill_(s * s / (m.in_channels * k * k))
                m.bias.zero_()
    return model


@pytest.mark.parametrize("n", range(3, 12))
def test_down_up_networks_keep_the_phase_of_the_unit(n):
    model = set_mean_weights_t(DownUp())
    a = analytic_erf(model, None, (1, n, n))
    margin = 12  # 12 input pixels = 3 periods of the 4-pixel output period: 12 units further on
    big = forward_oracle(model, (1, n + 2 * margin, n + 2 * margin),
                         (a.unit[0] + margin, a.unit[1] + margin))
    (lo, hi), (lo2, hi2) = a.box
    np.testing.assert_allclose(a.map, big[lo + margin:hi + margin + 1, lo2 + margin:hi2 + margin + 1],
                               rtol=1e-9, atol=1e-15)
    assert big[lo + margin:hi + margin + 1, lo2 + margin:hi2 + margin + 1].sum() == pytest.approx(1.0)


class TinyUNet(nn.Module):
    """A skip connection concatenated after down/up: runs only on even sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 2, 5, padding=2)
        self.down = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2, 2, 5, padding=2)
        self.up = nn.ConvTranspose2d(2, 2, 2, stride=2)
        self.dec = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        skip = self.enc(x)
        return self.dec(torch.cat([skip, self.up(self.mid(self.down(skip)))], dim=1))


@pytest.mark.parametrize("n", [4, 6, 8])
def test_u_nets_are_enlarged_by_whole_periods(n):
    model = set_mean_weights_t(TinyUNet())
    a = analytic_erf(model, None, (1, n, n))  # the field (> n) needs room; odd margins would crash
    assert a.box[0][0] < 0 and not a.clipped
    margin = 10
    big = forward_oracle(model, (1, n + 2 * margin, n + 2 * margin),
                         (a.unit[0] + margin, a.unit[1] + margin))
    (lo, hi), (lo2, hi2) = a.box
    np.testing.assert_allclose(a.map, big[lo + margin:hi + margin + 1, lo2 + margin:hi2 + margin + 1],
                               rtol=1e-9, atol=1e-15)


def test_without_a_trf_the_ratio_is_unknown():
    from nets import Flip

    model = set_mean_weights(Flip())
    r = analytic_result(model, None, (1, 12, 12))
    assert r.trf is None
    assert all(math.isnan(v) for v in r.metrics.erf_trf_ratio)
    assert any("ERF/TRF ratio is unknown" in w for w in r.warnings)
    np.testing.assert_allclose(r.raw, forward_oracle(model, (1, 12, 12), r.unit), rtol=1e-9,
                               atol=1e-15)


def test_conv_subclasses_that_override_forward_are_followed():
    from timm.layers import Conv2dSame, StdConv2d

    seq = nn.Sequential(Conv2dSame(1, 2, 4, stride=2), nn.Conv2d(2, 2, 3, padding=1))
    model = set_mean_weights(copy.deepcopy(seq))
    a = analytic_erf(seq, None, (1, 11, 11))
    assert not a.exact  # not trusted as a plain chain: followed as a graph
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 11, 11, dtype=torch.float64))
    assert a.unit == tuple(n // 2 for n in out.shape[2:]) == (3, 3)  # 11 -> 6 with 'same' padding
    np.testing.assert_allclose(a.on_input((1, 11, 11)), forward_oracle(model, (1, 11, 11), a.unit),
                               rtol=1e-9, atol=1e-15)
    with pytest.raises(RflensError, match=r"StdConv2d\).*override"):
        analytic_erf(nn.Sequential(StdConv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)),
                     None, (1, 10, 10))


class ResidualSequential(nn.Sequential):
    def forward(self, x):
        return x + super().forward(x)


def test_a_sequential_with_its_own_forward_is_not_a_chain():
    model = ResidualSequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1))
    assert chain_of(model) is None
    a = analytic_erf(model, None, (1, 15, 15))
    np.testing.assert_allclose(a.on_input((1, 15, 15)),
                               forward_oracle(set_mean_weights(model), (1, 15, 15), a.unit),
                               rtol=1e-9, atol=1e-15)
