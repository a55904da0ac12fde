"""Tests of rflens.tile: tiled inference planned from exact receptive fields.

Independent checks:
- the halo is compared with the one observed by the gradient-support oracle (tests/oracle.py): for
  interior output units of every phase, how far the observed field reaches before the unit's own
  block of ``align`` input pixels and after it (``align`` and the output jump derived by hand in
  tests/tile_models.py), or with hand-derived halos;
- tiled and whole-input outputs are compared numerically in float64 (real weights and
  activations), for tiles at the borders and inside, with several tile sizes;
- the tile grid is checked against its definition with hypothesis (windows cover, kept regions
  partition, every kept block has its halo inside its tile's window);
- refusals are checked by name against the architecture, and against a measured error.
"""

from __future__ import annotations

import dataclasses
import io
import json
from contextlib import redirect_stderr

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rflens import tile
from rflens.cli import main
from rflens.errors import RflensError
from rflens.geometry.axis import AxisMap, compose, transposed_conv_reads, window_reads
from rflens.tile.geometry import balanced_tile, count, halo_of, min_tile, segments

try:
    import tile_models as tm
    from oracle import GradientOracle, interior_units
except ImportError:  # tests/ made a package
    from tests import tile_models as tm
    from tests.oracle import GradientOracle, interior_units

DT = torch.float64


def _model(cls, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return cls(**kw).to(DT).eval()


def _x(shape, seed: int = 1) -> torch.Tensor:
    return torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed), dtype=DT)


def oracle_halo(model, shape, units, align, jump, margin):
    """Per axis (before, after) observed by gradients: unit u's own block starts at
    ``(u * jump) // align * align``; interior units only (their hull is their whole field)."""
    oracle = GradientOracle(model, shape)
    found = interior_units(oracle, "output", margin, candidates=units)
    n = len(align)
    per_block = [a // j for a, j in zip(align, jump)]
    phases = [{u[k] % per_block[k] for u, _ in found} for k in range(n)]
    assert all(len(p) == q for p, q in zip(phases, per_block)), "not every phase is interior"
    before, after = [0] * n, [0] * n
    for unit, hull in found:
        for k, (lo, hi) in enumerate(hull):
            start = unit[k] // per_block[k] * align[k]
            before[k] = max(before[k], start - lo)
            after[k] = max(after[k], hi - (start + align[k] - 1))
    return tuple(zip(before, after))


def assert_stitches(model, shape, tile_size, batch: int = 1, **kw):
    """Tiled == whole within 1e-5 (float64) and the plan really has tiles at both borders and
    inside along every axis with more than two tiles."""
    p = tile.plan(model, shape, tile_size)
    assert p.exact, p.reason
    x = torch.cat([_x(shape, seed=s) for s in range(batch)])
    y = tile.run(model, x, p, progress=False, **kw)
    with torch.no_grad():
        ref = model(x)
    assert y.shape == ref.shape
    assert float((y - ref).abs().max()) < 1e-5
    assert any(len(a) >= 3 for a in p.axes), "no interior tile"
    for segs, n in zip(p.axes, shape[1:]):
        assert segs[0].start == 0 and segs[-1].stop == n
    return p


# ------------------------------------------------------------------------------------------------
# halos against the gradient-support oracle, stitched == whole
# ------------------------------------------------------------------------------------------------

def test_unet_halo_matches_oracle_and_stitches(one_thread):
    model = _model(tm.UNet)
    shape = (1, 192, 192)
    units = [(u, u) for u in range(88, 96)]  # two of each of the 4 phases
    expected = oracle_halo(model, shape, units, tm.UNet.align, tm.UNet.jump, margin=71)
    p = tile.plan(model, shape, 64)
    assert p.halo == expected
    assert p.multiple == tm.UNet.align
    assert p.halo_source == "trf" and p.exact
    assert p.min_size == (4, 4)  # two 2x pools: 1, 2, 3 fail, 4 runs; the skip concats need 4k
    for size in (40, (48, 60)):
        assert_stitches(model, (1, 100, 76), size)
    assert_stitches(model, (1, 100, 76), 44, batch=2, batch_size=3)


def test_causal_stack_halo_only_before(one_thread):
    model = _model(tm.CausalStack)
    units = [(u,) for u in range(100, 140)]
    expected = oracle_halo(model, (1, 256), units, (1,), (1,), margin=70)
    assert expected == tm.CausalStack.halo == ((30, 0),)
    p = tile.plan(model, (1, 300), 64)
    assert p.halo == ((30, 0),)
    assert p.multiple == (1,) and p.min_size == (1,)
    assert p.useful_input == ((31,), (31,))  # unit 30 sees [0, 30]; the field is 31 wide
    assert_stitches(model, (1, 300), 64)
    assert_stitches(model, (1, 300), 31)  # the smallest tile: one output unit kept per tile


def test_causal_halo_is_tight(one_thread):
    """One pixel less halo before and the stitched output is wrong."""
    model = _model(tm.CausalStack)
    p = tile.plan(model, (1, 300), 64)
    short = tuple(segments(300, 300, 64, 29, 0, 1, 1))
    bad = dataclasses.replace(p, axes=(short,))
    x = _x((1, 300))
    with torch.no_grad():
        ref = model(x)
    assert float((tile.run(model, x, bad, progress=False) - ref).abs().max()) > 1e-6
    assert float((tile.run(model, x, p, progress=False) - ref).abs().max()) < 1e-5


def test_conv3d_halo_matches_oracle_and_stitches(one_thread):
    model = _model(tm.Conv3d, c=1)  # one channel: the oracle's float64 3-D passes are slow
    shape = (1, 88, 88, 60)
    units = [(42, 42, 28), (43, 43, 29)]  # both phases of the stride-2 axes
    # margin 2R + P + 2J with R <= 13, 13, 9; P <= 6, 6, 4; J <= 2, 2, 1 (tests/oracle.py)
    expected = oracle_halo(model, shape, units, tm.Conv3d.align, tm.Conv3d.jump,
                           margin=(36, 36, 24))
    p = tile.plan(model, shape, (16, 16, 12))
    assert p.halo == expected
    assert p.halo[2] != p.halo[0]  # anisotropic kernels: per-axis halos differ
    assert p.multiple == tm.Conv3d.align
    assert_stitches(_model(tm.Conv3d), (1, 34, 30, 20), (20, 20, 14))


def test_dilated_segmentation_halo_matches_oracle_and_stitches(one_thread):
    model = _model(tm.DilatedSeg)
    shape = (3, 300, 300)
    units = [(u, u) for u in range(146, 154)]
    expected = oracle_halo(model, shape, units, tm.DilatedSeg.align, tm.DilatedSeg.jump, margin=120)
    p = tile.plan(model, shape, 96)
    assert p.halo == expected
    assert p.multiple == tm.DilatedSeg.align
    # 102 is not a multiple of 4: the last tile is moved back to end at the border, 2 px longer,
    # and the bilinear x4 output is 104 long (4 * ceil(ceil(102 / 2) / 2)), past the input
    p = assert_stitches(model, (3, 102, 90), 64)
    assert p.axes[0][-1].size == 66 and p.output_shape[2:] == (104, 92)


# ------------------------------------------------------------------------------------------------
# refusals: global paths named, size-dependent geometry, units that read nothing
# ------------------------------------------------------------------------------------------------

def test_group_norm_is_refused_by_name():
    model = _model(tm.WithGroupNorm)
    p = tile.plan(model, (1, 64, 64), 32)
    assert not p.exact and p.global_module == "norm"
    assert "norm" in p.reason and "global" in p.reason
    assert p.halo is None and p.axes is None
    with pytest.raises(RflensError, match="no tiles"):
        tile.run(model, _x((1, 64, 64)), p)
    d = json.loads(p.to_json())
    assert d["exact"] is False and d["halo"] is None and d["plan"] is None


def test_se_gate_is_refused_naming_the_pool_inside_the_block():
    p = tile.plan(_model(tm.WithSE), (1, 64, 64), 32)
    assert not p.exact and p.global_module == "blocks.1.se.pool"
    assert p.useful_input[1] == (7, 7)  # stem, block 0, block 1 conv: 3 + 2 + 2; the pool is not local


def test_lraspp_first_global_module_is_the_first_se_block():
    """torchvision's mobilenet_v3_large: the first block with squeeze-and-excitation is
    features[4] (16->24->40 channels, kernel 5), its SE module block[2] (expand, depthwise, SE)."""
    import torchvision

    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None,
                                                                       weights_backbone=None)
    p = tile.plan(model, (3, 128, 128), 64)
    assert not p.exact and p.global_module == "backbone.4.block.2.avgpool"


def test_classifier_is_refused_at_its_global_pool():
    import torchvision

    p = tile.plan(torchvision.models.resnet18(weights=None), (3, 64, 64))
    assert not p.exact and p.global_module == "avgpool" and p.axes is None
    assert p.output_shape == (1, 1000)


def test_size_dependent_padding_is_refused_and_really_seams():
    model = _model(tm.SamePad)
    p = tile.plan(model, (1, 101), 20)  # odd whole input, even tiles: different left padding
    assert not p.exact and "constant_pad_nd" in p.reason
    assert tile.check(model, p, progress=False).max_abs_diff > 1e-3
    q = tile.plan(model, (1, 100), 20)  # even everywhere: the geometry is the same
    assert q.exact and tile.check(model, q, progress=False).max_abs_diff < 1e-12


def test_units_that_read_nothing_are_not_called_exact():
    model = _model(tm.Gappy)
    p = tile.plan(model, (1, 50), 10)
    assert not p.exact and "read no input" in p.reason
    assert tile.check(model, p, progress=False).max_abs_diff > 1e-6  # the bias-only units seam


def test_erf_halo_on_a_global_model_is_measured():
    import rflens

    model = _model(tm.WithGroupNorm)
    shape = (1, 48, 48)
    erf = rflens.effective_receptive_field(model, None, shape, samples=2, progress=False)
    p = tile.plan(model, shape, 32, erf=erf, erf_mass=0.5)
    assert p.halo_source == "erf" and not p.exact and p.global_module == "norm"
    assert p.erf_box_mass >= 0.5
    unit = erf.unit  # the centre output unit; jump 1, alignment 1: its block is its own pixel
    box = tuple(slice(max(0, u - b), u + a + 1) for u, (b, a) in zip(unit, p.halo))
    assert erf.raw[box].sum() / erf.raw.sum() >= 0.5
    c = tile.check(model, p, progress=False)
    assert np.isfinite(c.max_abs_diff) and c.max_abs_diff > 0  # GroupNorm statistics differ


# ------------------------------------------------------------------------------------------------
# the grid, against its definition
# ------------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 400), before=st.integers(0, 40), after=st.integers(0, 40),
       align=st.sampled_from([1, 2, 3, 4, 8, 16]), q=st.integers(1, 4), extra=st.integers(0, 100),
       out_extra=st.integers(0, 7))
def test_segments_cover_partition_and_keep_halos(n, before, after, align, q, extra, out_extra):
    size = min_tile(before, after, align) + align * (extra // align)
    per_block = q * align
    n_out = -(-n // align) * per_block + out_extra  # at least every block's units
    smallest = min_tile(before, after, align)
    even = balanced_tile(n, size, before, after, align, smallest)
    assert even <= size and count(n, even, before, after, align) <= count(n, size, before, after,
                                                                          align)
    if n > size and even > smallest:  # one block less and more tiles are needed
        assert count(n, even - align, before, after, align) > count(n, size, before, after, align)
    segs = segments(n, n_out, size, before, after, align, per_block)
    assert len(segs) == count(n, size, before, after, align)
    assert segs[0].start == 0 and segs[-1].stop == n
    assert segs[0].core[0] == 0 and segs[-1].core[1] == n
    assert segs[0].keep[0] == 0 and segs[-1].keep[1] == n_out
    for s, t in zip(segs, segs[1:]):
        assert s.core[1] == t.core[0] and s.keep[1] == t.keep[0]  # a partition, in order
        assert s.core[1] % align == 0 and s.core[0] < s.core[1]
    for j, s in enumerate(segs):
        assert s.start % align == 0 and 0 <= s.start < s.stop <= n
        assert s.size == n if n <= size else size <= s.size < size + align
        if j < len(segs) - 1:
            assert s.size == size
        if s.start > 0:  # an inner edge: the halo before the first kept block is inside
            assert s.core[0] - before >= s.start
        if s.stop < n:
            assert s.core[1] + after <= s.stop
        off = s.start // align * per_block
        assert s.local == (s.keep[0] - off, s.keep[1] - off)


@settings(max_examples=200, deadline=None)
@given(layers=st.lists(st.tuples(st.sampled_from(["conv", "up"]), st.integers(1, 5),
                                 st.integers(1, 3), st.integers(0, 3), st.integers(1, 2)),
                       min_size=1, max_size=4))
def test_halo_of_is_the_maximum_over_many_units(layers):
    """Periodicity: the halo from one block equals the brute-force maximum over 40 blocks."""
    fmap = AxisMap.identity()
    for kind, k, s, p, d in layers:
        reads = window_reads(k, s, min(p, d * (k - 1)), d) if kind == "conv" else \
            transposed_conv_reads(max(k, s), s, min(p, k - 1), 1)
        fmap = compose(fmap, reads)
    align = fmap.shift * 2
    before, after = halo_of(fmap, align)
    per_block = fmap.period * 2
    units = np.arange(40 * per_block)
    lo, hi = fmap.evaluate(units)
    start = units // per_block * align
    ok = lo <= hi
    assert before == max(0, int((start - lo)[ok].max()))
    assert after == max(0, int((hi - start - align + 1)[ok].max()))


def test_tile_too_small_is_one_line_error():
    with pytest.raises(RflensError, match="too small.*at least 28"):
        tile.plan(_model(tm.UNet), (1, 100, 76), 24)


def test_tile_rounded_to_the_alignment_and_balanced_with_notes():
    p = tile.plan(_model(tm.UNet), (1, 100, 76), 42)
    assert p.tile == (40, 40) and any("rounded down to 40" in n for n in p.notes)
    # 64-pixel tiles on 200 (halo 11/11, alignment 4): windows at 0, 40, 80, 120, 136 (step
    # 64 - 11 - 12 rounded down to 40); 5 tiles of 60 (step 36, last at 140) also reach 200;
    # 56 (step 32: 0, 32, 64, 96, 128, 144) would need 6
    q = tile.plan(_model(tm.UNet), (1, 200, 200), 64)
    assert q.tile == (60, 60) and q.grid == (5, 5) and "on every axis" in q.notes[0]


def test_unproductive_layers_and_useful_sizes_by_hand():
    model = _model(tm.CausalStack)
    p = tile.plan(model, (1, 20), 20)
    # fields after each conv: 3, 7, 15, 31; only the last conv (and its ReLU, and the stack) > 20
    assert p.unproductive == ("net.10", "net.11", "net", "output")
    assert p.useful_input == ((31,), (31,))


# ------------------------------------------------------------------------------------------------
# run: batches, unbatched input, progress bar, the model left alone
# ------------------------------------------------------------------------------------------------

def test_run_unbatched_progress_and_model_untouched():
    model = _model(tm.UNet)
    model.train()
    p = tile.plan(model, (1, 64, 64), 32)
    x = _x((1, 64, 64))[0]
    err = io.StringIO()
    with redirect_stderr(err):
        y = tile.run(model, x, p, progress=True, batch_size=1)
    assert model.training and all(m.training for m in model.modules())
    assert next(model.parameters()).dtype == DT
    with torch.no_grad():
        model.eval()
        ref = model(x[None])[0]
    assert y.shape == ref.shape and float((y - ref).abs().max()) < 1e-5
    with pytest.raises(RflensError, match="plan is for inputs"):
        tile.run(model, _x((1, 64, 60)), p)


def test_check_leaves_the_model_dtype():
    model = _model(tm.CausalStack).float()
    p = tile.plan(model, (1, 120), 40)
    c = tile.check(model, p, progress=False)
    assert c.dtype == "float64" and c.max_abs_diff < 1e-12 and c.tiles == p.n_tiles
    assert next(model.parameters()).dtype == torch.float32


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

FACTORY = """
import sys
sys.path.insert(0, {tests!r})
import tile_models as tm
def unet(): return tm.UNet()
def causal(): return tm.CausalStack()
def gn(): return tm.WithGroupNorm()
"""


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(FACTORY.format(tests=str(__import__("pathlib").Path(__file__).parent)))
    return path


def _cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_schema_and_check(factory, capsys):
    code, out, _ = _cli(["tile", f"{factory}:unet", "--input", "1x100x76", "--tile", "40",
                         "--check", "--format", "json", "-q"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["schema_version"] == 1
    # by hand: output unit 4s reads dec2 units 2s-1..2s+1, whose fields span [4s-11, 4s+14]
    assert d["halo"] == [[11, 11], [11, 11]]
    assert d["multiple"] == [4, 4] and d["min_size"] == [4, 4]
    assert d["exact"] is True and d["reason"] is None
    assert d["plan"]["grid"] == [len(a) for a in d["plan"]["axes"]]
    assert d["plan"]["count"] == len(d["plan"]["tiles"]) == 20
    assert d["check"]["max_abs_diff"] < 1e-5 and d["check"]["dtype"] == "float64"


def test_cli_global_model_exit_0_with_reason(factory, capsys):
    code, out, _ = _cli(["tile", f"{factory}:gn", "--input", "1x64x64", "--format", "json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["exact"] is False and d["global_module"] == "norm" and "norm" in d["reason"]
    code, out, err = _cli(["tile", f"{factory}:gn", "--input", "1x48x48", "--tile", "48",
                           "--erf-halo", "0.5", "--samples", "2", "-q"], capsys)
    assert code == 0 and "max |tiled - whole|" in out and "ERF mass" in out


def test_cli_bad_tile_exit_2(factory, capsys):
    code, _, err = _cli(["tile", f"{factory}:causal", "--input", "1x100", "--tile", "abc"], capsys)
    assert code == 2 and "--tile" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(["tile", f"{factory}:causal", "--input", "1x100", "--tile", "10"], capsys)
    assert code == 2 and "too small" in err
    code, _, err = _cli(["tile", f"{factory}:gn", "--input", "1x64x64", "--erf-halo", "2"], capsys)
    assert code == 2 and "--erf-halo" in err


def test_cli_table_and_plot(factory, capsys, tmp_path):
    png = tmp_path / "plan.png"
    code, out, _ = _cli(["tile", f"{factory}:unet", "--input", "1x100x76", "--tile", "40",
                         "--plot", str(png)], capsys)
    assert code == 0 and png.stat().st_size > 1000
    assert "11/11 × 11/11" in out and "5×4 = 20 tiles" in out


def test_plot_draws_the_plan_it_is_given():
    from rflens import plot

    p = tile.plan(_model(tm.UNet), (1, 100, 76), 40)
    fig = plot.tile_plan(p, highlight=(1, 2))
    ax = fig.axes[0]
    win = [a for a in ax.patches if a.get_gid() == "tile-window" and a.get_linewidth() == 2]
    keep = [a for a in ax.patches if a.get_gid() == "tile-keep"]
    r, c = p.axes[0][1], p.axes[1][2]
    assert len(win) == 1 and len(keep) == 1
    assert win[0].get_xy() == (c.start - 0.5, r.start - 0.5)
    assert (win[0].get_width(), win[0].get_height()) == (c.size, r.size)
    assert keep[0].get_xy() == (c.core[0] - 0.5, r.core[0] - 0.5)
    assert len([a for a in ax.patches if a.get_gid() == "tile-window"]) == p.n_tiles + 1
    fig1 = plot.tile_plan(tile.plan(_model(tm.CausalStack), (1, 300), 64))
    assert len([a for a in fig1.axes[0].patches if a.get_gid() == "tile-keep"]) == 8
