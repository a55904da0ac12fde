"""Image tests for rflens.plot: axes, titles, colour limits, the TRF box where it must be (in data
coordinates and in rendered pixels), growth data, and the integer counts of the path-count grid,
each checked against numbers computed here independently of the code under test."""

from __future__ import annotations

import io
import itertools
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from torch import nn

import rflens
from rflens import plot
from rflens.erf.analytic import analytic_result
from rflens.cli import main
from rflens.errors import RflensError


def chain3(channels: int = 1) -> nn.Sequential:
    """Three 3x3 'same' convs: per axis the path counts of one unit are 1 3 6 7 6 3 1."""
    return nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1) for _ in range(3)])


def strided(channels: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, 4, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1))


def analytic(model: nn.Module, layer: str, shape, unit="center"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return analytic_result(model, layer, shape, unit=unit)


def render(fig) -> np.ndarray:
    """RGB pixels of the figure as Agg draws it (row 0 at the top), floats in [0, 1]."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float64) / 255.0


def artists(ax, gid: str) -> list:
    return [a for a in ax.get_children() if a.get_gid() == gid]


def rect_of(ax):
    (patch,) = [p for p in ax.patches if p.get_gid() == "trf-box"]
    return patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height()


def expected_rect(box):
    (r0, r1), (c0, c1) = box
    return (c0 - 0.5, r0 - 0.5, c1 - c0 + 1, r1 - r0 + 1)


def assert_box_drawn(fig, ax, box, color, tol: int = 2) -> None:
    """The rendered image has ``color`` on all four sides of ``box`` (inclusive pixel box) at the
    display coordinates matplotlib maps its edges to, and not a few pixels inside the box."""
    pixels = render(fig)
    height = pixels.shape[0]
    (r0, r1), (c0, c1) = box
    to_px = ax.transData.transform
    (x0, y0), (x1, y1) = to_px([(c0 - 0.5, r0 - 0.5), (c1 + 0.5, r1 + 0.5)])
    rows = sorted((height - y0, height - y1))
    cols = sorted((x0, x1))
    target = np.array(to_rgb(color))

    def near(x: float, y: float) -> bool:
        xi, yi = int(round(x)), int(round(y))
        window = pixels[yi - tol: yi + tol + 1, xi - tol: xi + tol + 1]
        return bool((np.abs(window - target).max(axis=-1) < 0.08).any())

    mid_r, mid_c = sum(rows) / 2, sum(cols) / 2
    for x, y in ((cols[0], mid_r), (cols[1], mid_r), (mid_c, rows[0]), (mid_c, rows[1])):
        assert near(x, y), f"no box edge of colour {color} near display pixel ({x:.0f}, {y:.0f})"
    inset = 6 + tol + 1  # a few pixels inside, a quarter along (clear of the centre marker)
    quarter_r, quarter_c = rows[0] + (rows[1] - rows[0]) / 4, cols[0] + (cols[1] - cols[0]) / 4
    assert not near(cols[0] + inset, quarter_r), "box colour found inside the left edge"
    assert not near(quarter_c, rows[0] + inset), "box colour found inside the top edge"


# --- ERF heat map -------------------------------------------------------------------------------------

def test_erf_map_linear_colour_limits_data_and_box():
    model, shape = chain3(), (1, 24, 24)
    result = analytic(model, "2", shape)
    fig = plot.erf_map(result)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    assert image.get_clim() == (0.0, 1.0)
    assert image.get_extent() == [-0.5, 23.5, 23.5, -0.5]  # pixel [r, c] drawn at data (c, r)
    np.testing.assert_allclose(image.get_array(), result.raw / result.raw.max())
    assert "ERF of 2" in ax.get_title() and ax.get_xlabel().startswith("column")
    assert ax.get_ylabel().startswith("row")
    assert fig.axes[1].get_ylabel() == "influence / max"  # the colour bar
    box = rflens.receptive_field(model, shape).box("2", result.unit, clip=True)
    assert rect_of(ax) == expected_rect(box)
    assert_box_drawn(fig, ax, box, plot.BOX_COLOR)


def test_erf_map_log_scale_limits_and_floor():
    result = analytic(chain3(), "2", (1, 24, 24))
    fig = plot.erf_map(result, log=True, decades=3)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    assert image.get_clim() == (-3.0, 0.0)
    with np.errstate(divide="ignore"):
        expected = np.maximum(np.log10(result.raw / result.raw.max()), -3.0)
    np.testing.assert_allclose(image.get_array(), expected)
    assert image.get_array().min() == -3.0  # pixels outside the field sit on the floor
    assert "log" in ax.get_title() and "log10" in fig.axes[1].get_ylabel()


def test_erf_map_box_is_clipped_to_the_input_at_a_border_unit():
    model, shape = chain3(), (1, 20, 20)
    result = analytic(model, "2", shape, unit=(0, 5))
    rf = rflens.receptive_field(model, shape)
    assert result.trf.box == rf.box("2", (0, 5)) == ((-3, 3), (2, 8))  # unclipped
    clipped = rf.box("2", (0, 5), clip=True)
    assert clipped == ((0, 3), (2, 8))
    fig = plot.erf_map(result)
    ax = fig.axes[0]
    assert rect_of(ax) == expected_rect(clipped)
    assert "clipped" in ax.get_legend().get_texts()[0].get_text()
    assert_box_drawn(fig, ax, clipped, plot.BOX_COLOR)


def test_erf_map_zoom_limits_to_the_trf_box():
    result = analytic(chain3(), "2", (1, 40, 40))
    (r0, r1), (c0, c1) = result.trf.box  # (17, 23) for the centre unit 20
    ax = plot.erf_map(result, zoom=True).axes[0]
    pad = 1.0  # 10 % of 7 pixels is below the one-pixel minimum
    assert ax.get_xlim() == (c0 - 0.5 - pad, c1 + 0.5 + pad)
    assert ax.get_ylim() == (r1 + 0.5 + pad, r0 - 0.5 - pad)  # rows grow downwards


def test_erf_map_of_an_array_and_of_a_1d_map():
    values = np.zeros((10, 12))
    values[3:6, 4:9] = 1.0
    ax = plot.erf_map(values, trf_box=((2, 6), (3, 9))).axes[0]
    assert rect_of(ax) == expected_rect(((2, 6), (3, 9)))
    line = np.array([0, 1, 2, 1, 0], dtype=float)
    ax = plot.erf_map(line, trf_box=((1, 3),)).axes[0]
    bounds = sorted(float(a.get_xdata()[0]) for a in artists(ax, "trf-bound"))
    assert bounds == [0.5, 3.5]
    with pytest.raises(RflensError, match="non-negative"):
        plot.erf_map(-values)


# --- profiles ---------------------------------------------------------------------------------------

def test_erf_profiles_marginals_gaussian_and_trf_bounds():
    result = analytic(chain3(), "2", (1, 24, 24))
    fig = plot.erf_profiles(result)
    axes = [ax for ax in fig.axes]
    assert [ax.get_title() for ax in axes] == ["axis 0 (rows)", "axis 1 (columns)"]
    assert "ERF profiles of 2" in fig.get_suptitle()
    counts = np.array([1, 3, 6, 7, 6, 3, 1], dtype=float)  # three 3-wide boxes convolved
    for k, ax in enumerate(axes):
        heights = np.array([bar.get_height() for bar in ax.patches if bar.get_gid() == "erf-marginal"])
        expected = np.zeros(24)
        lo, hi = result.trf.box[k]
        expected[lo:hi + 1] = counts / counts.sum()
        np.testing.assert_allclose(heights, expected, atol=1e-12)
        (fit,) = artists(ax, "gaussian-fit")
        x, y = fit.get_xdata(), fit.get_ydata()
        assert abs(x[np.argmax(y)] - 12) < 0.1  # centred on the unit's field
        sigma = float(fit.get_label().split("σ=")[1].split(" px")[0])
        assert abs(sigma - math.sqrt(2)) < 0.1  # variance n(k²-1)/12 = 2 for n=3, k=3
        bounds = sorted(float(a.get_xdata()[0]) for a in artists(ax, "trf-bound"))
        assert bounds == [lo - 0.5, hi + 0.5]


# --- growth -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet_rf():
    import torchvision

    return rflens.receptive_field(torchvision.models.resnet18(), (3, 112, 112), name="resnet18")


def test_growth_plot_data_spans_and_labels(resnet_rf):
    rf = resnet_rf
    fig = plot.growth(rf, {"layer2": 60.0, "layer1": 33.0})
    ax = fig.axes[0]
    assert ax.get_title() == "Receptive-field growth: resnet18 at input 3×112×112"
    assert ax.get_xlabel() == "layer (execution order)"
    assert ax.get_ylabel() == "receptive field size (input pixels)"
    (line,) = artists(ax, "trf-size")
    np.testing.assert_array_equal(line.get_ydata(), [layer.size[0] for layer in rf.layers])
    (inp,) = artists(ax, "input-size")
    assert list(inp.get_ydata()) == [112, 112]
    big = [i for i, layer in enumerate(rf.layers) if layer.exceeds_input and not layer.is_global]
    covered = set()
    for span in artists(ax, "exceeds-input"):
        a, b = span.get_x() + 0.5, span.get_x() + span.get_width() - 0.5
        covered |= set(range(round(a), round(b) + 1))
    # layer2 has R = 99 at jump 8; the next 3x3 conv adds 2*8: 115 > 112
    assert covered == set(big) and big and rf.names[big[0]] == "layer3.0.conv1"
    (glob,) = artists(ax, "global")
    assert list(glob.get_xdata()) == [i for i, layer in enumerate(rf.layers) if layer.is_global]
    (erf,) = artists(ax, "erf-size")
    assert list(erf.get_xdata()) == [rf.names.index("layer2"), rf.names.index("layer1")]
    assert list(erf.get_ydata()) == [60.0, 33.0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "layer3" in labels and "conv1" in labels  # one tick per top-level module
    with pytest.raises(RflensError, match="no layer named"):
        plot.growth(rf, {"layer9": 1.0})


def test_growth_plot_per_axis_lines_and_unknown_layers():
    model = nn.Sequential(nn.Conv2d(1, 1, (3, 5)), nn.Conv2d(1, 1, (3, 5)))
    rf = rflens.receptive_field(model, (1, 20, 30))
    ax = plot.growth(rf).axes[0]
    (a0,), (a1,) = artists(ax, "trf-size-axis0"), artists(ax, "trf-size-axis1")
    assert list(a0.get_ydata()) == [3, 5, 5] and list(a1.get_ydata()) == [5, 9, 9]
    assert sorted(set(artists(ax, "input-size")[0].get_ydata()) | set(artists(ax, "input-size")[1].get_ydata())) == [20, 30]

    from nets import Flip

    rf = rflens.receptive_field(Flip(), (1, 16, 16))
    ax = plot.growth(rf).axes[0]
    unknown = [i for i, layer in enumerate(rf.layers) if not layer.known]
    spans = artists(ax, "unknown")
    assert unknown and spans and spans[0].get_x() == unknown[0] - 0.5
    assert np.isnan(artists(ax, "trf-size")[0].get_ydata()[unknown[0]])


# --- overlay on a real image ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()[::8, ::8]  # 64x64x3 uint8, bundled with scikit-image


def test_overlay_box_contours_and_pixels(astronaut):
    model, shape = strided(), (3, 64, 64)
    rf = rflens.receptive_field(model, shape, name="strided")
    unit = (0, 5)
    full, clipped = rf.box("4", unit), rf.box("4", unit, clip=True)
    assert full != clipped and full[0][0] < 0  # the field reaches above the image
    erf = analytic(model, "4", shape, unit=unit)
    fig = plot.overlay(astronaut, rf, "4", unit, erf=erf)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    np.testing.assert_allclose(image.get_array(), astronaut / 255.0)
    assert rect_of(ax) == expected_rect(clipped)
    assert "4 unit (0, 5)" in ax.get_title() and ax.get_xlim() == (-0.5, 63.5)
    contours = artists(ax, "erf-contour")
    assert len(contours) == 2
    levels = sorted(float(c.levels[0]) for c in contours)
    # independent check of the levels: the pixels at or above each hold >= p of the mass,
    # the pixels strictly above hold < p
    raw = erf.raw
    for level in levels:
        share_ge, share_gt = raw[raw >= level].sum() / raw.sum(), raw[raw > level].sum() / raw.sum()
        assert any(share_ge >= p > share_gt for p in (0.5, 0.9))
    assert_box_drawn(fig, ax, clipped, plot.IMAGE_BOX_COLOR)


def test_overlay_defaults_and_errors(astronaut):
    model, shape = strided(), (3, 64, 64)
    rf = rflens.receptive_field(model, shape)
    ax = plot.overlay(astronaut, rf, "4").axes[0]
    grid = rf["4"].grid
    assert rect_of(ax) == expected_rect(rf.box("4", (grid[0] // 2, grid[1] // 2), clip=True))
    gray = plot.overlay(astronaut[..., 0], rf, "4").axes[0].get_images()[0]
    assert gray.get_array().ndim == 2
    with pytest.raises(RflensError, match="64×64 input"):
        plot.overlay(astronaut[:32], rf, "4")
    with pytest.raises(RflensError, match="outside"):
        plot.overlay(astronaut, rf, "4", (99, 0))


# --- path-count grid --------------------------------------------------------------------------------

def brute_force_counts(layers, unit: int = 0) -> dict[int, int]:
    """Paths from every input pixel to ``unit`` by enumerating every choice of kernel tap:
    ``(kernel, stride, left padding)`` per layer, input to output; ``o = i*s - p + j``."""
    counts: dict[int, int] = {}
    for taps in itertools.product(*[range(k) for k, _, _ in layers]):
        pos = unit
        for (k, s, p), j in zip(reversed(layers), reversed(taps)):
            pos = pos * s - p + j
        counts[pos] = counts.get(pos, 0) + 1
    return counts


def written_counts(ax) -> dict[tuple[int, int], int]:
    return {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text())
            for t in ax.texts if t.get_gid() == "count"}


def test_path_count_grid_two_3x3_layers():
    fig = plot.path_counts([3, 3])
    ax = fig.axes[0]
    per_axis = np.convolve(np.ones(3, dtype=int), np.ones(3, dtype=int))
    assert list(per_axis) == [1, 2, 3, 2, 1]
    expected = {(r - 2, c - 2): int(per_axis[r] * per_axis[c]) for r in range(5) for c in range(5)}
    assert written_counts(ax) == expected
    (image,) = ax.get_images()
    assert image.get_clim() == (0.0, 9.0)
    assert "3×3 → 3×3" in ax.get_title() and "81 paths" in ax.get_title()


def test_path_count_grid_strided_sequential_matches_enumeration():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.Conv2d(1, 1, 3, padding=1))
    ax = plot.path_counts(model).axes[0]
    axis = brute_force_counts([(3, 1, 1), (3, 2, 1), (3, 1, 1)])
    expected = {(r, c): axis[r] * axis[c] for r in axis for c in axis}
    assert written_counts(ax) == expected
    assert sum(expected.values()) == 3 ** 6 and "729 paths" in ax.get_title()
    assert "3×3/2×2" in ax.get_title()


def test_path_count_grid_1d_and_too_many_cells():
    ax = plot.path_counts([3, 3, 3], ndim=1).axes[0]
    assert written_counts(ax) == {(0, c): v for c, v in zip(range(-3, 4), [1, 3, 6, 7, 6, 3, 1])}
    ax = plot.path_counts([3] * 12).axes[0]  # 25 cells a side: the numbers would not fit
    assert not written_counts(ax) and "too many cells" in ax.get_title()


# --- saving, backend, CLI ---------------------------------------------------------------------------

def test_save_formats_and_errors(tmp_path):
    fig = plot.path_counts([3, 3])
    magic = {"png": b"\x89PNG", "svg": b"<?xml", "pdf": b"%PDF"}
    for suffix, start in magic.items():
        path = tmp_path / "deep" / f"grid.{suffix}"
        plot.save(fig, path)
        assert path.read_bytes().startswith(start)
    buf = io.BytesIO()
    plot.save(fig, buf)
    assert buf.getvalue().startswith(b"\x89PNG")
    assert plot.data_uri(fig).startswith("data:image/png;base64,iVBOR")
    with pytest.raises(RflensError, match="use a .png"):
        plot.save(fig, tmp_path / "grid.xyz")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RflensError, match="cannot write"):
        plot.save(fig, blocker / "grid.png")


def test_no_pyplot_and_jupyter_png():
    code = ("import sys, rflens.plot as p; f = p.path_counts([3, 3]); b = f._repr_png_(); "
            "print(b[:4] == b'\\x89PNG', 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


SPEC = "input: [1, 32, 32]\nlayers:\n  - {op: conv, kernel: 3, stride: 2}\n  - {op: conv, kernel: 3}\n"


def test_cli_trf_and_erf_plot(tmp_path, capsys):
    spec = tmp_path / "chain.yaml"
    spec.write_text(SPEC)
    png = tmp_path / "growth.png"
    assert main(["trf", str(spec), "--format", "json", "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    capsys.readouterr()
    assert main(["trf", str(spec), "--format", "json", "--plot", str(tmp_path / "g.xyz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use a .png" in err
    erf_png = tmp_path / "erf.png"
    assert main(["erf", str(spec), "--layer", "layer1_conv", "--analytic", "--format", "json", "--plot",
                 str(erf_png)]) == 0
    assert erf_png.read_bytes().startswith(b"\x89PNG")
