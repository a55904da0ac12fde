"""Resampling against PyTorch itself: every output unit's clipped box equals the support of its
input gradient (float32, as models run), for scale factors simple and not (π, 1/3), same-size
resizes (PyTorch copies those axes) and antialiased resizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import rflens

SCALES = [0.5, 0.7, 1.1, 1.5, 2.0, 2.5, 3.0, math.pi, 1 / 3]


class Resize(torch.nn.Module):
    def __init__(self, **kw) -> None:
        super().__init__()
        self.kw = kw

    def forward(self, x):
        return F.interpolate(x, **self.kw)


def _support(model, shape, index) -> tuple | None:
    x = torch.rand((1, *shape), requires_grad=True)
    (g,) = torch.autograd.grad(model(x)[index].sum(), x)
    g = g[0].abs().sum(0)
    hull = []
    for axis in range(g.dim()):
        other = tuple(a for a in range(g.dim()) if a != axis)
        nz = torch.nonzero(g.sum(dim=other) if other else g).flatten()
        if not len(nz):
            return None
        hull.append((int(nz.min()), int(nz.max())))
    return tuple(hull)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic"])
@pytest.mark.parametrize("scale", SCALES)
def test_every_unit_matches_pytorch(mode, scale) -> None:
    shape = (1, 7, 9)
    model = Resize(scale_factor=scale, mode=mode)
    out = rflens.receptive_field(model, shape)["output"]
    h, w = model(torch.zeros(1, *shape)).shape[2:]
    assert out.grid == (h, w)
    for r in range(h):
        for c in range(w):
            box, seen = out.box((r, c), clip=True), _support(model, shape, (0, slice(None), r, c))
            if out.exact_hull:
                assert box == seen, (r, c)
            else:  # a source a hair from a pixel centre: rounding decides; flagged superset
                assert all(a <= c_ and d_ <= b for (a, b), (c_, d_) in zip(box, seen)), (r, c)


def test_rounding_ties_are_flagged_not_guessed() -> None:
    """×3 bicubic: the source of unit 1 is 1.2e-8 from pixel 0 in float32; whether the kernel
    fuses the multiply-add decides whether pixels 1-2 are read. rflens keeps both and says so."""
    out = rflens.receptive_field(Resize(scale_factor=3.0, mode="bicubic"), (1, 7, 9))["output"]
    assert not out.exact_hull
    exact = rflens.receptive_field(Resize(scale_factor=2.0, mode="bicubic"), (1, 7, 9))["output"]
    assert exact.exact_hull


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic"])
def test_same_size_axes_are_copied(mode) -> None:
    shape = (1, 7, 7)
    for scale in [(1.1, 1.1), (1.1, 1.5)]:
        model = Resize(scale_factor=scale, mode=mode)
        out = rflens.receptive_field(model, shape)["output"]
        h, w = model(torch.zeros(1, *shape)).shape[2:]
        for r in range(h):
            for c in range(w):
                assert out.box((r, c), clip=True) == _support(model, shape, (0, slice(None), r, c))


def test_an_irrational_scale_on_a_large_input() -> None:
    """π: no period of 10^6 units walked (this took 15 s when it was); sources unit by unit."""
    model = Resize(scale_factor=math.pi, mode="bilinear")
    out = rflens.receptive_field(model, (1, 64, 64))["output"]
    assert out.axes[0].jump is None or out.grid == (201, 201)
    for r in (0, 1, 100, 200):
        assert out.box((r, r), clip=True) == _support(model, (1, 64, 64), (0, slice(None), r, r))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(3, 4), (5, 2), (14, 20), (4, 9)])
def test_antialiased_resizes_match_pytorch(mode, size) -> None:
    shape = (1, 11, 9)
    model = Resize(size=size, mode=mode, antialias=True)
    out = rflens.receptive_field(model, shape)["output"]
    assert out.known, out.unknown_ops
    for r in range(size[0]):
        for c in range(size[1]):
            assert out.box((r, c), clip=True) == _support(model, shape, (0, slice(None), r, c)), (r, c)
