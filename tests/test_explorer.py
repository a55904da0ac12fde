"""The explorer (``rflens report``'s interactive section and ``rflens.report.explore``).

In headless Chromium the tests click units and pixels with the mouse, press keys, read back what
the page drew (the SVG rectangles of the field boxes, the highlighted units) and compare it with
``rf.box`` / ``rf.units_seeing`` from Python; for small models they also compare the page's
geometry for every unit of every layer. The highlighted set of units is compared with a
brute-force scan over ``rf.box(layer, unit, clip=True)`` where fields have one path component.
Every request the page makes is recorded: none may leave ``file:``/``data:``.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rflens
from rflens.errors import RflensError
from rflens.report import build_report, explore, picture, write_report
from rflens.report.explorer_data import erf_contours, layer_data, payload, to_script_json

from browser import browser, open_recorded  # noqa: F401 (a fixture)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


# --- small models -------------------------------------------------------------------------------

class UNet(nn.Module):
    """Two stride-2 convs down, two transposed convs up (k=3 s=2: phase-dependent fields; k=2
    s=2), skip concatenations (the second one non-aligned) and a 1×1 head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.down1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1)
        self.up1 = nn.ConvTranspose2d(32, 8, 2, stride=2)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        e = torch.relu(self.enc(x))
        d1 = torch.relu(self.down1(e))
        d2 = torch.relu(self.down2(d1))
        u2 = torch.cat([self.up2(d2), d1], 1)
        return self.head(torch.cat([self.up1(u2), e], 1))


class Odd(nn.Module):
    """A non-aligned sum of two resolutions and adaptive pooling to a size that does not divide
    the input (explicit tables, ``exact_units``)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 3, stride=3)
        self.pool = nn.AdaptiveAvgPool2d((5, 7))

    def forward(self, x):
        return self.pool(self.a(x) + F.interpolate(self.b(x), size=x.shape[-2:], mode="nearest"))


class Circular(nn.Module):
    """Circular padding: the border units' exact hulls wrap around (not the clipped field)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)
        self.post = nn.Conv2d(1, 1, 3, stride=2, padding=1)

    def forward(self, x):
        return self.post(self.conv(F.pad(x, (1, 1, 1, 1), mode="circular")))


class DiagonalSum(nn.Module):
    """Shifted copies summed: several path components per unit and units that see nothing."""

    def forward(self, x):
        n = 5
        return sum(F.pad(x, (k, n - 1 - k, k, n - 1 - k)) for k in range(n))


class WithFlip(nn.Module):
    """A flip (no rule: unknown field below it) and global pooling."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.after = nn.Conv2d(4, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.conv(x)
        return self.after(torch.flip(y, dims=[3])) + self.pool(y).mean()


class Gated(nn.Module):
    """A feature map gated by its global average: every unit depends on every pixel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y * self.pool(y))


def chain(*layers):
    return nn.Sequential(*layers)


def fields(model, shape, name=None):
    return rflens.receptive_field(model, shape, name=name)


# --- the data, without a browser ----------------------------------------------------------------------

def test_tables_are_small_and_hulls_stored_only_when_needed():
    rf = fields(chain(nn.Conv2d(1, 1, 7, stride=2, padding=3), nn.Conv2d(1, 1, 3, stride=2)), (1, 64, 48))
    data = layer_data(rf["1"])
    assert [a["hull"] for a in data["axes"]] == [None, None]  # clipped field == exact hull
    # unit i of layer 0 sees [2i - 3, 2i + 3]; layer 1 composes with stride 2, kernel 3: [4i-3, 4i+7]
    assert layer_data(rf["0"])["axes"][0] | {"hull": None} == {
        "period": 1, "shift": 2, "lo": [-3], "hi": [3], "exact": None, "jump": "2", "hull": None,
        "sizes": [7, 7]}
    assert data["axes"][1]["lo"] == [-3] and data["axes"][1]["hi"] == [7] and data["axes"][1]["shift"] == 4
    circular = layer_data(fields(Circular(), (1, 8, 8))["conv"])
    assert circular["axes"][0]["hull"]["lo"][0][0] == 0 and circular["axes"][0]["hull"]["hi"][0][0] == 7
    diagonal = layer_data(fields(DiagonalSum(), (1, 4, 4))["output"])
    assert len(diagonal["axes"][0]["hull"]["lo"]) > 1  # several components
    unknown = layer_data(fields(WithFlip(), (3, 8, 8))["after"])
    assert unknown["axes"] is None and "flip" in unknown["why"]


def test_script_json_cannot_close_the_script():
    text = to_script_json({"name": "</script><script>alert(1)</script>&<!--"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>&<!--"}


def segments(path: str) -> set[tuple[int, int, int, int]]:
    """Unit-length edges of an SVG path made of ``M x y H x2`` / ``M x y V y2`` runs."""
    out = set()
    for x, y, kind, end in re.findall(r"M(-?\d+) (-?\d+)([HV])(-?\d+)", path):
        x, y, end = int(x), int(y), int(end)
        for k in range(x if kind == "H" else y, end):
            out.add((k, y, k + 1, y) if kind == "H" else (x, k, x, k + 1))
    assert "".join(re.findall(r"M-?\d+ -?\d+[HV]-?\d+", path)) == path
    return out


def box_outline(r0: int, r1: int, c0: int, c1: int) -> set[tuple[int, int, int, int]]:
    """Edges around pixels rows r0..r1-1, columns c0..c1-1 (hand-written oracle)."""
    return ({(c, r, c + 1, r) for c in range(c0, c1) for r in (r0, r1)}
            | {(c, r, c, r + 1) for r in range(r0, r1) for c in (c0, c1)})


def test_erf_contours_outline_the_mass():
    one = np.zeros(10)
    one[3:6] = 1.0  # three equal pixels hold all the mass: both fractions need all three
    levels = erf_contours(one)
    assert [level["p"] for level in levels] == [0.5, 0.9]
    assert segments(levels[0]["slices"]["0"]) == box_outline(0, 1, 3, 6)
    two = np.zeros((12, 12))
    two[4:8, 2:9] = 1.0
    two[5:7, 4:7] = 10.0  # 60 of the 82 units of mass: the 50 % region is the inner block
    levels = erf_contours(two)
    assert segments(levels[0]["slices"]["0"]) == box_outline(5, 7, 4, 7)
    assert segments(levels[1]["slices"]["0"]) == box_outline(4, 8, 2, 9)  # 90 % needs the rest
    ring = np.ones((5, 5))
    ring[2, 2] = 0.0  # a hole is outlined too
    assert segments(erf_contours(ring)[1]["slices"]["0"]) == box_outline(0, 5, 0, 5) | box_outline(2, 3, 2, 3)
    three = np.zeros((3, 6, 6))
    three[1, 2:4, 2:4] = 1.0
    assert list(erf_contours(three)[0]["slices"]) == ["1"]
    assert erf_contours(np.zeros((4, 4))) == []


def test_picture_sources(tmp_path):
    from PIL import Image

    def decode(uri):
        assert uri.startswith("data:image/png;base64,")
        return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))

    photo = picture((3, 40, 30))
    assert photo.kind == "photo" and decode(photo.uri).size == (30, 40)
    assert decode(picture((1, 20, 20)).uri).mode == "L"
    assert picture((4, 20, 20)).kind == "grid" and picture((1, 50)).kind == "grid"
    assert decode(picture((1, 50)).uri).size == (50, 1)
    assert decode(picture((1, 6, 20, 24)).uri).size == (24, 20)
    assert decode(picture((3, 2048, 1000)).uri).size == (500, 1024)  # stored downsampled
    file = tmp_path / "red.png"
    Image.new("RGB", (60, 20), (255, 0, 0)).save(file)
    mine = picture((3, 16, 16), file)
    assert mine.kind == "image" and "red.png" in mine.description
    assert decode(mine.uri).getpixel((8, 8)) == (255, 0, 0) and decode(mine.uri).size == (16, 16)
    array = picture((3, 8, 8), np.full((8, 8, 3), 0.5)).uri
    assert decode(array).getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(RflensError, match="needs a 2-D input"):
        picture((1, 50), file)
    with pytest.raises(RflensError, match="no such file"):
        picture((3, 8, 8), tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(RflensError, match="cannot read it as an image"):
        picture((3, 8, 8), tmp_path / "bad.png")


def test_explore_checks_its_arguments():
    rf = fields(UNet(), (3, 32, 32))
    with pytest.raises(RflensError, match="no layer named 'up3'.*up2"):
        explore(rf, layer="up3")
    other = fields(UNet(), (3, 16, 16))
    fake = type("R", (), {"layer": "up2", "raw": np.zeros((16, 16))})()
    with pytest.raises(RflensError, match="measured at input 16×16"):
        explore(rf, erf=fake)
    assert "up2" in other
    html_text = explore(rf, layer="up1")._repr_html_()
    assert html_text.count("class='rfx'") == 1 and "<script>" in html_text
    assert json.loads(re.search(r"class='rfx-data'>(.*?)</script>", html_text).group(1))["initial"] == \
        rf.names.index("up1")


def test_cli_report_image_options(tmp_path, capsys):
    from PIL import Image

    from rflens.cli import main

    spec = tmp_path / "chain.yaml"
    spec.write_text("input: [3, 24, 24]\nlayers:\n  - {op: conv, kernel: 3, stride: 2}\n")
    image = tmp_path / "blue.png"
    Image.new("RGB", (30, 30), (0, 0, 255)).save(image)
    out = tmp_path / "r.html"
    assert main(["report", str(spec), "--erf-layers", "none", "--image", str(image), "-o", str(out), "-q"]) == 0
    assert "&#x27;blue.png&#x27;, resized and centre-cropped to 24×24" in out.read_text()
    assert main(["report", str(spec), "--erf-layers", "none", "--no-explorer", "-o", str(out), "-q"]) == 0
    assert "class='rfx'" not in out.read_text() and "<script" not in out.read_text()
    capsys.readouterr()
    for argv, message in ((["--image", str(tmp_path / "nope.png")], "no such file"),
                          (["--image", str(image), "--no-explorer"], "drop --no-explorer")):
        assert main(["report", str(spec), "--erf-layers", "none", "-o", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


# --- in the browser -------------------------------------------------------------------------------

def as_box(values):
    return None if values is None else tuple(tuple(int(v) for v in iv) for iv in values)


def drawn(page, root: str) -> dict:
    """What the explorer ``root`` shows now: the boxes as drawn (SVG rectangles, per axis
    inclusive (lo, hi) for 2-D), the selected unit, the highlighted units and the notes."""
    return page.evaluate("""(id) => {
        const root = document.getElementById(id);
        const rect = (cls) => {
            const r = root.querySelector('.rfx-img rect.' + cls);
            return r ? ['x', 'y', 'width', 'height'].map(k => Number(r.getAttribute(k))) : null;
        };
        const unit = root.querySelector('.rfx-units rect.rfx-unit');
        const seeing = Array.from(root.querySelectorAll('.rfx-units rect.rfx-seeing')).map(r =>
            ['x', 'y', 'width', 'height'].map(k => Number(r.getAttribute(k))));
        const notes = Array.from(root.querySelectorAll('.rfx-notes li')).map(li => li.dataset.note);
        const facts = {};
        root.querySelectorAll('.rfx-facts tr').forEach(tr => { facts[tr.dataset.key] = tr.cells[1].textContent; });
        return {full: rect('rfx-box-full'), clip: rect('rfx-box-clip'), unit: unit ? unit.dataset.unit : null,
                seeing: seeing, notes: notes, facts: facts, layer: root.querySelector('.rfx-img').dataset.layer,
                contours: root.querySelectorAll('.rfx-img .rfx-contour').length,
                offClasses: root.querySelectorAll('.rfx-img .rfx-off').length,
                erf: (g => g ? [Number(g.dataset.dx), Number(g.dataset.dy)] : null)(root.querySelector('.rfx-erf'))};
    }""", root)


def rect_box(rect, ndim: int = 2):
    if rect is None:
        return None
    x, y, w, h = (int(v) for v in rect)
    cols = (x, x + w - 1)
    return (cols,) if ndim == 1 else ((y, y + h - 1), cols)


def seeing_set(seen) -> set[tuple[int, int]]:
    return {(r, c) for x, y, w, h in seen for r in range(int(y), int(y + h)) for c in range(int(x), int(x + w))}


def client_point(page, root: str, panel: str, x: float, y: float) -> tuple[float, float]:
    """Screen position of SVG coordinates (x, y) of ``panel`` ('rfx-img' or 'rfx-units')."""
    return tuple(page.evaluate("""([id, panel, x, y]) => {
        const svg = document.querySelector('#' + id + ' .' + panel);
        const p = svg.createSVGPoint(); p.x = x; p.y = y;
        const q = p.matrixTransform(svg.getScreenCTM());
        return [q.x, q.y];
    }""", [root, panel, x, y]))


def choose(page, root: str, layer: str) -> None:
    """Pick ``layer`` in the explorer's drop-down, as a user would."""
    value = page.evaluate("""([id, name]) => Array.from(document.querySelectorAll('#' + id + ' select.rfx-layer option'))
        .find(o => o.textContent.startsWith(name + ' \u2014')).value""", [root, layer])
    page.locator(f"#{root} select.rfx-layer").select_option(value=value)
    assert drawn(page, root)["layer"] == layer


def click_unit(page, root: str, unit) -> None:
    page.locator(f"#{root} .rfx-units").scroll_into_view_if_needed()
    r, c = (0, unit[0]) if len(unit) == 1 else unit[-2:]
    page.mouse.click(*client_point(page, root, "rfx-units", c + 0.5, r + 0.5))


def click_pixel(page, root: str, pixel) -> None:
    page.locator(f"#{root} .rfx-img").scroll_into_view_if_needed()
    r, c = (0, pixel[0]) if len(pixel) == 1 else pixel[-2:]
    page.mouse.click(*client_point(page, root, "rfx-img", c + 0.5, r + 0.5))


def brute_seeing(layer, pixel) -> set[tuple[int, ...]]:
    """Units whose clipped box holds ``pixel``, by scanning every unit (one-component fields)."""
    out = set()
    for unit in itertools.product(*(range(n) for n in layer.grid)):
        box = layer.box(unit, clip=True)
        if box is not None and all(lo <= p <= hi for p, (lo, hi) in zip(pixel, box)):
            out.add(unit)
    return out


def js_geometry(page, root: str, layer_index: int) -> dict:
    """The page's boxes for every unit and its inverse map for every pixel of one layer (sent
    as one JSON string: Playwright's own serialisation of nested arrays is slow)."""
    return json.loads(page.evaluate("""([id, li]) => {
        const ex = window.rflensExplorers[id];
        const L = ex.data.layers[li], geo = new window.rflensExplorer.Geo(L, ex.data.spatial);
        const units = [[]];
        L.grid.forEach(n => { const next = []; units.forEach(u => { for (let i = 0; i < n; i++) next.push(u.concat([i])); }); units.splice(0, units.length, ...next); });
        const pixels = [[]];
        ex.data.spatial.forEach(n => { const next = []; pixels.forEach(u => { for (let i = 0; i < n; i++) next.push(u.concat([i])); }); pixels.splice(0, pixels.length, ...next); });
        return JSON.stringify({box: units.map(u => geo.box(u)), clip: units.map(u => geo.clipBox(u)),
                seeing: pixels.map(p => geo.seeing(p).range), units: units, pixels: pixels});
    }""", [root, layer_index]))


def check_every_unit(page, root: str, rf) -> int:
    """Compare the page's geometry with Python for every unit and pixel of every known layer."""
    checked = 0
    for index, layer in enumerate(rf.layers):
        if not layer.known:
            continue
        geo = js_geometry(page, root, index)
        for unit, box, clip in zip(geo["units"], geo["box"], geo["clip"]):
            assert as_box(box) == layer.box(tuple(unit)), (layer.name, unit)
            assert as_box(clip) == layer.box(tuple(unit), clip=True), (layer.name, unit)
        for pixel, seen in zip(geo["pixels"], geo["seeing"]):
            assert as_box(seen) == layer.units_seeing(tuple(pixel)), (layer.name, pixel)
        checked += 1
    return checked


def check_clicks(page, root: str, layer, pixels) -> None:
    """Click corner, border and centre units and some pixels; compare what is drawn."""
    nr, nc = layer.grid
    units = {(0, 0), (0, nc - 1), (nr - 1, 0), (nr - 1, nc - 1), (nr // 2, nc // 2), (0, nc // 2),
             (nr // 2, nc - 1)}
    for unit in sorted(units):
        click_unit(page, root, unit)
        seen = drawn(page, root)
        assert seen["unit"] == f"{unit[0]},{unit[1]}"
        assert rect_box(seen["full"]) == layer.box(unit), (layer.name, unit)
        assert rect_box(seen["clip"]) == layer.box(unit, clip=True), (layer.name, unit)
    for pixel in pixels:
        click_pixel(page, root, pixel)
        seen = drawn(page, root)
        expected = layer.units_seeing(pixel)
        units = seeing_set(seen["seeing"])
        if expected is None:
            assert units == set()
            continue
        rows, cols = zip(*units)
        assert ((min(rows), max(rows)), (min(cols), max(cols))) == expected, (layer.name, pixel)
        if all(f.lo.shape[0] == 1 for f in layer.factors):
            assert units == brute_seeing(layer, pixel), (layer.name, pixel)


def resnet18_units_and_pixels(page, root: str, rf) -> None:
    """Layers of resnet18 picked from the drop-down, units and pixels clicked, compared with Python."""
    page.locator(f"#{root}").scroll_into_view_if_needed()
    assert page.evaluate(f"document.getElementById('{root}').dataset.rfxState") == "ready"
    options = page.locator(f"#{root} select.rfx-layer option").all_inner_texts()
    assert [o.split(" — ")[0] for o in options] == rf.names
    pixels = [(0, 0), (111, 111), (56, 37), (5, 111), (111, 0)]
    for name in ("conv1", "layer1.0.conv2", "layer2", "layer4"):
        choose(page, root, name)
        check_clicks(page, root, rf[name], pixels)
    # the whole geometry of a few layers, unit by unit and pixel by pixel
    sub = rf.select(["conv1", "layer2.0.downsample.0", "layer4"])
    for layer in sub.layers:
        geo = js_geometry(page, root, rf.names.index(layer.name))
        assert [as_box(b) for b in geo["box"]] == [layer.box(tuple(u)) for u in geo["units"]]
        assert [as_box(b) for b in geo["clip"]] == [layer.box(tuple(u), clip=True) for u in geo["units"]]
        picked = geo["pixels"][::7]
        assert [as_box(s) for s in geo["seeing"][::7]] == [layer.units_seeing(tuple(p)) for p in picked]
    # global layers say so and draw no box
    for name in ("avgpool", "fc"):
        choose(page, root, name)
        seen = drawn(page, root)
        assert seen["full"] is None and seen["clip"] is None and "global" in seen["notes"]
    click_pixel(page, root, (3, 4))
    assert "every unit of this global layer" in drawn(page, root)["facts"]["pixel"]


def resnet18_keyboard_erf_and_layout(page, root: str, rf) -> Path:
    """The layout at 1280×800, arrow keys, ERF translation, the whole-field view, the layer table;
    returns a screenshot of the explorer."""
    page.evaluate(f"document.getElementById('{root}').scrollIntoView()")
    # usable at 1280×800: nothing overflows sideways and the whole explorer fits the window
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    frame = page.locator(f"#{root}").bounding_box()
    assert frame["width"] <= 1280 and frame["height"] <= 800, frame
    for part in (".rfx-img", ".rfx-units", ".rfx-info", "select.rfx-layer"):
        box = page.locator(f"#{root} {part}").bounding_box()
        assert box["width"] > 100 and box["y"] >= 0 and box["y"] + box["height"] <= 800, (part, box)
    assert page.locator(f"#{root} .rfx-img").bounding_box()["width"] >= 400
    choose(page, root, "layer1")
    layer = rf["layer1"]
    erf_unit = (layer.grid[0] // 2, layer.grid[1] // 2)
    click_unit(page, root, erf_unit)
    seen = drawn(page, root)
    assert seen["contours"] > 0 and seen["erf"] == [0, 0] and "measured at this unit" in seen["facts"]["erf"]
    # arrow keys move the unit; each step redraws the exact box; the ERF follows by the jump
    for key, step in (("ArrowRight", (0, 1)), ("ArrowDown", (1, 0)), ("ArrowLeft", (0, -1)),
                      ("ArrowUp", (-1, 0)), ("ArrowDown", (1, 0))):
        before = tuple(int(v) for v in drawn(page, root)["unit"].split(","))
        page.keyboard.press(key)
        seen = drawn(page, root)
        unit = tuple(b + s for b, s in zip(before, step))
        assert seen["unit"] == f"{unit[0]},{unit[1]}"
        assert rect_box(seen["full"]) == layer.box(unit) and rect_box(seen["clip"]) == layer.box(unit, clip=True)
        shift = [(u - e) * 4 for u, e in zip(unit, erf_unit)]  # layer1's jump is 4
        assert seen["erf"] == [shift[1], shift[0]] and seen["contours"] > 0
        assert ("translated by" if any(shift) else "measured at this unit") in seen["facts"]["erf"]
    for _ in range(3):
        page.keyboard.press("Shift+ArrowLeft")  # 8 units each, stops at the border
    seen = drawn(page, root)
    assert seen["unit"] == f"{erf_unit[0] + 1},0"
    assert rect_box(seen["full"]) == layer.box((erf_unit[0] + 1, 0))
    assert layer.box((erf_unit[0] + 1, 0))[1][0] < 0  # the field reaches into padding:
    assert seen["contours"] == 0 and "not available" in seen["facts"]["erf"]  # no translation
    assert "reaches into padding" in seen["facts"]["box"]
    page.keyboard.press("PageDown")
    assert drawn(page, root)["layer"] == rf.names[rf.names.index("layer1") + 1]
    page.keyboard.press("PageUp")
    click_pixel(page, root, (40, 60))
    assert drawn(page, root)["facts"]["pixel"].startswith("pixel (40, 60): units rows")
    page.keyboard.press("Escape")
    assert "pixel" not in drawn(page, root)["facts"]
    # "whole field": the view grows to every unit's unclipped box
    choose(page, root, "layer4")
    page.locator(f"#{root} input.rfx-pad").check()
    x, y, w, h = (float(v) for v in page.locator(f"#{root} .rfx-img").get_attribute("viewBox").split())
    boxes = [rf["layer4"].box(u) for u in itertools.product(*(range(n) for n in rf["layer4"].grid))]
    (r0, r1), (c0, c1) = [(min(b[a][0] for b in boxes), max(b[a][1] for b in boxes)) for a in (0, 1)]
    assert x <= c0 < c1 + 1 <= x + w and y <= r0 < r1 + 1 <= y + h and r0 < -100
    page.locator(f"#{root} input.rfx-pad").uncheck()
    x, y, w, h = (float(v) for v in page.locator(f"#{root} .rfx-img").get_attribute("viewBox").split())
    assert -10 < x < 0 and x + w < 125
    # a click on a row of the layer table explores that layer
    page.locator("tr[data-layer='layer3.0.conv1'] td.name").click()
    assert drawn(page, root)["layer"] == "layer3.0.conv1"
    choose(page, root, "layer1")
    click_unit(page, root, (erf_unit[0] - 2, erf_unit[1] + 3))
    click_pixel(page, root, (60, 52))
    page.locator(f"#{root}").scroll_into_view_if_needed()
    shot = ARTIFACTS / "explorer.png"
    page.locator(f"#{root}").screenshot(path=str(shot))
    return shot


def test_resnet18_in_chromium(browser):
    """One report, one page (the report is built once even when tests run in parallel)."""
    from PIL import Image
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    ARTIFACTS.mkdir(exist_ok=True)
    path = write_report(ARTIFACTS / "explorer-resnet18.html",
                        build_report(model, (3, 112, 112), name="resnet18", erf_layers=["layer1"], samples=2))
    rf = fields(model, (3, 112, 112), name="resnet18")
    context, page, requests, errors = open_recorded(browser, path.as_uri(), viewport=(1280, 800))
    try:
        shot = resnet18_keyboard_erf_and_layout(page, "rfx-report", rf)
        resnet18_units_and_pixels(page, "rfx-report", rf)
        assert errors == []
    finally:
        context.close()
    external = [url for url in requests if not url.startswith(("file:", "data:"))]
    assert external == [] and path.as_uri() in requests
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    cyan = (np.abs(pixels - np.array([0, 229, 255])).max(axis=-1) < 40).sum()  # the clipped box
    magenta = (np.abs(pixels - np.array([255, 0, 212])).max(axis=-1) < 60).sum()  # pixel + seers
    assert cyan > 300 and magenta > 30, (cyan, magenta)


def test_unet_with_transposed_convs(browser, tmp_path):
    rf = fields(UNet(), (3, 32, 32), name="unet")
    page_path = explore(rf, layer="up2").save(tmp_path / "unet.html")
    context, page, requests, errors = open_recorded(browser, page_path.as_uri(), viewport=(1280, 800))
    try:
        root = page.evaluate("document.querySelector('.rfx').id")
        assert check_every_unit(page, root, rf) == len(rf.layers)
        pixels = [(0, 0), (31, 31), (16, 9), (1, 30)]
        for name in ("up2", "up1", "head"):
            choose(page, root, name)
            assert not rf[name].uniform
            check_clicks(page, root, rf[name], pixels)
            seen = drawn(page, root)
            assert "nonuniform" in seen["notes"]
            assert ("nonaligned" in seen["notes"]) == (not rf[name].aligned)
        # phase-dependent: neighbouring units of up2 have boxes of different sizes
        choose(page, root, "up2")
        sizes = set()
        for unit in ((4, 4), (4, 5)):
            click_unit(page, root, unit)
            box = rect_box(drawn(page, root)["full"])
            assert box == rf["up2"].box(unit)
            sizes.add(box[1][1] - box[1][0])
        assert len(sizes) == 2
        assert errors == []
    finally:
        context.close()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []


def test_odd_fields_and_several_explorers_on_one_page(browser, tmp_path):
    models = [fields(Odd(), (1, 17, 16), name="odd"), fields(Circular(), (1, 9, 8), name="circular"),
              fields(DiagonalSum(), (1, 4, 4), name="diagonal"),
              fields(WithFlip(), (3, 8, 8), name="flip <&> 'x'"), fields(Gated(), (1, 10, 12), name="gated")]
    assert models[0]["pool"].factors[0].field.exact_units is not None
    body = "".join(explore(rf).to_html() for rf in models)
    page_path = tmp_path / "many.html"
    page_path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>")
    context, page, requests, errors = open_recorded(browser, page_path.as_uri())
    try:
        roots = page.evaluate("Array.from(document.querySelectorAll('.rfx')).map(r => r.id)")
        assert len(set(roots)) == 5
        for root, rf in zip(roots, models):
            assert page.evaluate(f"document.getElementById('{root}').dataset.rfxState") == "ready"
            known = sum(layer.known for layer in rf.layers)
            assert check_every_unit(page, root, rf) == known
        root, rf = roots[2], models[2]  # units of the diagonal sum that see nothing draw nothing
        empty = next(u for u in itertools.product(range(8), range(8)) if rf.box("output", u, clip=True) is None)
        choose(page, root, "output")
        click_unit(page, root, empty)
        seen = drawn(page, root)
        assert seen["clip"] is None and "depends on no input pixel" in seen["facts"]["clip"]
        root, rf = roots[3], models[3]
        choose(page, root, "after")
        seen = drawn(page, root)
        assert seen["full"] is None and "unknown" in seen["notes"]
        assert page.locator(f"#{root} select.rfx-layer option").first.inner_text().startswith("conv")
        assert page.locator(f"#{root} .rfx-info").inner_text().count("flip") >= 1
        root, rf = roots[4], models[4]  # a global layer with a 10×12 grid: all units see a pixel
        choose(page, root, "head")
        assert rf["head"].is_global and rf["head"].grid == (10, 12)
        click_unit(page, root, (2, 3))
        click_pixel(page, root, (9, 0))
        seen = drawn(page, root)
        assert seen["full"] is None and seen["clip"] is None and "global" in seen["notes"]
        assert seeing_set(seen["seeing"]) == set(itertools.product(range(10), range(12)))
        assert "every unit of this global layer" in seen["facts"]["pixel"]
        choose(page, root, "conv")  # the pixel query follows the layer
        assert seeing_set(drawn(page, root)["seeing"]) == brute_seeing(rf["conv"], (9, 0))
        assert errors == []
    finally:
        context.close()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []


def test_jupyter_style_insertion(browser, tmp_path):
    """A notebook front end sets an output's HTML and then runs its scripts (JupyterLab replaces
    each script node); the explorer must start from that, twice on one page."""
    rf = fields(UNet(), (3, 32, 32), name="unet")
    blank = tmp_path / "notebook.html"
    blank.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
                     "<div class='out'></div><div class='out'></div></body></html>")
    context, page, requests, errors = open_recorded(browser, blank.as_uri())
    try:
        for k, layer in enumerate(("up1", "down2")):
            page.evaluate("""([k, text]) => {
                const out = document.querySelectorAll('.out')[k];
                out.innerHTML = text;
                out.querySelectorAll('script').forEach(old => {
                    const s = document.createElement('script');
                    if (old.type) s.type = old.type;  // attributes other than the type are dropped
                    s.textContent = old.textContent;
                    old.replaceWith(s);
                });
            }""", [k, explore(rf, layer=layer)._repr_html_()])
        roots = page.evaluate("Array.from(document.querySelectorAll('.rfx')).map(r => [r.id, r.dataset.rfxState])")
        assert [state for _, state in roots] == ["ready", "ready"] and roots[0][0] != roots[1][0]
        for (root, _), layer in zip(roots, ("up1", "down2")):
            assert drawn(page, root)["layer"] == layer
            click_unit(page, root, (3, 2))
            assert rect_box(drawn(page, root)["full"]) == rf[layer].box((3, 2))
        # keys work with the focus anywhere in the explorer (here: after a button click)
        root = roots[1][0]
        page.locator(f"#{root} button.rfx-prev").click()
        page.locator(f"#{root} button.rfx-next").click()
        page.keyboard.press("ArrowRight")
        assert drawn(page, root)["unit"] == "3,3"
        assert errors == []
    finally:
        context.close()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []


def test_one_and_three_dimensional_inputs(browser, tmp_path):
    strip = fields(chain(nn.Conv1d(1, 2, 5, stride=2, padding=2), nn.ConvTranspose1d(2, 1, 3, stride=2)), (1, 40))
    volume = fields(chain(nn.Conv3d(1, 2, 3, stride=(1, 2, 2), padding=1), nn.Conv3d(2, 2, 3, stride=2)), (1, 8, 16, 16))
    paths = [explore(strip, layer="1").save(tmp_path / "strip.html"),
             explore(volume, layer="1").save(tmp_path / "volume.html")]
    context, page, requests, errors = open_recorded(browser, paths[0].as_uri())
    try:
        root = page.evaluate("document.querySelector('.rfx').id")
        assert check_every_unit(page, root, strip) == len(strip.layers)
        height = page.locator(f"#{root} .rfx-img").bounding_box()["height"]
        assert 40 <= height <= 80  # a strip
        for unit in (0, 1, 2, 20, strip["1"].grid[0] - 1):
            click_unit(page, root, (unit,))
            seen = drawn(page, root)
            assert rect_box(seen["full"], ndim=1) == strip["1"].box(unit)
            assert seen["full"][1] == 0 and seen["full"][3] == 1
        page.keyboard.press("ArrowRight")
        assert rect_box(drawn(page, root)["full"], ndim=1) == strip["1"].box(strip["1"].grid[0] - 1)
        page.keyboard.press("ArrowLeft")
        assert rect_box(drawn(page, root)["full"], ndim=1) == strip["1"].box(strip["1"].grid[0] - 2)
        click_pixel(page, root, (13,))
        units = seeing_set(drawn(page, root)["seeing"])
        assert {c for _, c in units} == {u for (u,) in brute_seeing(strip["1"], (13,))}
        context.close()
        context, page, requests2, errors2 = open_recorded(browser, paths[1].as_uri())
        requests += requests2
        errors += errors2
        root = page.evaluate("document.querySelector('.rfx').id")
        layer = volume["1"]
        assert check_every_unit(page, root, volume) == len(volume.layers)
        assert page.locator(f"#{root} input.rfx-slice").count() == 1
        click_unit(page, root, (layer.grid[1] // 2, layer.grid[2] // 2))
        seen = drawn(page, root)
        unit = tuple(int(v) for v in seen["unit"].split(","))
        assert unit[0] == layer.grid[0] // 2  # the unit keeps its depth index
        assert rect_box(seen["full"]) == layer.box(unit)[1:] and seen["offClasses"] == 0
        depth = layer.box(unit)[0]
        page.evaluate("""([id, v]) => { const s = document.querySelector('#' + id + ' input.rfx-slice');
            s.value = String(v); s.dispatchEvent(new Event('input')); }""", [root, depth[1] + 1])
        seen = drawn(page, root)  # a slice the field misses
        assert seen["offClasses"] >= 2 and "slice" in seen["notes"]
        page.locator(f"#{root} .rfx-units").focus()
        page.keyboard.press("+")
        seen = drawn(page, root)
        assert seen["unit"] == f"{unit[0] + 1},{unit[1]},{unit[2]}"
        assert rect_box(seen["full"]) == layer.box((unit[0] + 1, unit[1], unit[2]))[1:]
        click_pixel(page, root, (5, 7))
        facts = drawn(page, root)["facts"]["pixel"]
        d_range, r_range, c_range = layer.units_seeing((page.evaluate(
            f"window.rflensExplorers['{root}'].state.slice"), 5, 7))
        assert f"depth {d_range[0]}…{d_range[1]}, rows {r_range[0]}…{r_range[1]}, cols {c_range[0]}…{c_range[1]}" in facts
        assert errors == []
    finally:
        context.close()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []


def test_long_model_names_wrap(browser, tmp_path):
    name = "experiments/segmentation/very_long_directory_name/" + "deeply_nested_" * 6 + "model_file.py:build_the_network_factory"
    text = build_report(chain(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)), (3, 16, 16), name=name, erf_layers=[])
    assert html.escape(name) in text
    path = write_report(tmp_path / "long.html", text)
    context, page, requests, errors = open_recorded(browser, path.as_uri(), viewport=(1280, 800))
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        summary = page.locator("#summary").bounding_box()
        warnings = page.locator("#warnings").bounding_box()
        model = page.locator("#summary dd").first.bounding_box()
        assert model["x"] + model["width"] <= summary["x"] + summary["width"] + 1
        assert summary["x"] + summary["width"] <= warnings["x"]
        assert model["height"] > 30  # wrapped onto several lines
        assert errors == []
    finally:
        context.close()
