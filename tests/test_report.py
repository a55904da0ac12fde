"""The HTML report: content, warnings, escaping, self-containment, the CLI, and a real browser.

The browser test opens the report in headless Chromium (Debian's ``chromium``, driven by
Playwright), records every request the page makes (none may leave ``file:``/``data:``), checks the
layer table and the images in the DOM, and keeps ``artifacts/report.png`` and ``report.html``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rflens
from rflens.cli import main
from rflens.errors import RflensError
from rflens.report import ERFEntry, auto_erf_layers, build_report, render_html

from browser import browser, open_recorded  # noqa: F401 (a fixture)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WEIRD = "<b>&weird\"'"  # a legal module name that is also HTML


class Troubled(nn.Module):
    """Every kind of warning: a non-aligned merge, an op without a rule (flip), a global op
    (adaptive pooling), layers whose field exceeds the input, and a module name that is HTML."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=0)
        self.deep = nn.Sequential(*[nn.Conv2d(4, 4, 5, padding=2) for _ in range(3)])
        self.add_module(WEIRD, nn.Conv2d(4, 4, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        x = self.a(x) + F.pad(self.b(x), (0, 2, 0, 2))  # branch b is shifted by one pixel
        x = getattr(self, WEIRD)(self.deep(x))
        return self.head(torch.flip(x, dims=[3]) * self.pool(x))


def resources(text: str) -> list[str]:
    """Every URL the HTML could load: src/href attributes and CSS url()/@import."""
    urls = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", text, flags=re.I)
    urls += re.findall(r"url\(\s*['\"]?([^'\")]*)", text, flags=re.I)
    urls += re.findall(r"@import\s+['\"]?([^'\";]+)", text, flags=re.I)
    return urls


NETWORK_JS = ("fetch(", "xmlhttprequest", "import(", "websocket", "eventsource", "sendbeacon",
              "importscripts", "serviceworker", ".src =", ".src=", "location.href", "window.open")


def assert_self_contained(text: str) -> None:
    """Every URL is a data: PNG or a #fragment; scripts are inline (no src) and call no network
    API; no link/iframe/object element, no http(s) anywhere."""
    for url in resources(text):
        assert url.startswith("data:image/png;base64,") or url.startswith("#"), url[:80]
    lowered = text.lower()
    assert "<link" not in lowered and "<iframe" not in lowered and "<object" not in lowered
    assert "http://" not in lowered and "https://" not in lowered and "//cdn" not in lowered
    for tag in re.findall(r"<script\b[^>]*>", lowered):
        assert "src" not in tag, tag
    for code in re.findall(r"<script\b[^>]*>(.*?)</script>", lowered, flags=re.S):
        assert not [word for word in NETWORK_JS if word in code], [w for w in NETWORK_JS if w in code]


@pytest.fixture(scope="module")
def troubled_html():
    torch.manual_seed(0)
    return build_report(Troubled(), (3, 16, 16), name="troubled <net>", erf_layers=["deep"], samples=2)


def test_report_sections_and_warnings(troubled_html):
    text = troubled_html
    rf = rflens.receptive_field(Troubled(), (3, 16, 16))
    assert "<title>Receptive fields of troubled &lt;net&gt;</title>" in text
    assert "input 3×16×16" in text
    for section in ("summary", "warnings", "explore", "growth", "erf", "layers"):
        assert f"<section id='{section}'" in text

    def group(gid: str) -> str:
        return re.search(rf"<div id='warn-{gid}'>(.*?)</div>", text, flags=re.S).group(1)

    assert rf.alignment_issues and "non-aligned add" in group("non-aligned")
    assert f"<span class='count bad'>{len(rf.alignment_issues)}</span>" in group("non-aligned")
    assert "<li>pool</li>" in group("global") and "<li>head</li>" in group("global")
    assert "flip" in group("unknown")
    big = [layer.name for layer in rf.layers if layer.exceeds_input and not layer.is_global]
    assert big and all(html.escape(name) in group("exceeds") for name in big)
    # one table row per layer, in order, names escaped
    rows = re.findall(r"<tr class='[^']*' data-layer='([^']*)'>", text)
    assert rows == [html.escape(layer.name, quote=True) for layer in rf.layers]
    # the ERF section: three images and the metrics of the chosen layer
    article = re.search(r"<article class='erf' data-layer='deep'>(.*?)</article>", text, re.S).group(1)
    assert article.count("<img ") == 3 and "Gaussian sigma (px)" in article
    assert "averaged over 2 samples of noise" in text


def test_report_escapes_module_names_and_is_self_contained(troubled_html):
    text = troubled_html
    assert WEIRD not in text and "<b>" not in text
    assert html.escape(WEIRD, quote=True) in text
    assert_self_contained(text)
    assert len(re.findall(r"<img ", text)) == 4  # growth + heat map + log heat map + profiles


def test_self_containment_check_catches_external_urls():
    page = "<html><body><img src='data:image/png;base64,iVBOR'><a href='#x'>x</a></body></html>"
    assert_self_contained(page)
    for bad in ("<img src='https://example.org/a.png'>", "<style>b{background:url(x.png)}</style>",
                "<link rel=stylesheet href='s.css'>", "<script src='//cdn.example.org/x.js'></script>",
                "<script src=x.js></script>", "<script>fetch('x.json')</script>",
                "<script>new XMLHttpRequest()</script>", "<script>import('./m.js')</script>"):
        with pytest.raises(AssertionError):
            assert_self_contained(page.replace("<body>", "<body>" + bad))


def test_render_shows_erf_errors_escaped():
    rf = rflens.receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3)), (1, 8, 8))
    text = render_html(rf, [ERFEntry("0", error="bad <thing> happened")])
    assert "no ERF: bad &lt;thing&gt; happened" in text
    text = render_html(rf, [])
    assert "No ERF was computed" in text


def test_auto_erf_layers_for_resnet18():
    import torchvision

    model = torchvision.models.resnet18()
    rf = rflens.receptive_field(model, (3, 224, 224))
    assert auto_erf_layers(rf, model) == ["layer1", "layer2", "layer3"]  # layer4: 435 px > 224


def test_build_report_rejects_unknown_layer():
    with pytest.raises(RflensError, match="no layer 'deepp'.*did you mean deep"):
        build_report(Troubled(), (3, 16, 16), erf_layers=["deepp"])


SPEC = "input: [1, 32, 32]\nlayers:\n  - {op: conv, kernel: 3, stride: 2}\n  - {op: conv, kernel: 3}\n"


def test_cli_report(tmp_path, capsys):
    spec = tmp_path / "chain.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "sub" / "r.html"
    assert main(["report", str(spec), "--erf-layers", "none", "-o", str(out), "-q"]) == 0
    stdout = capsys.readouterr().out
    assert f"wrote {out.resolve()}" in stdout and out.resolve().as_uri() in stdout
    text = out.read_text()
    assert "No ERF was computed" in text and "layer1_conv" in text
    import html as _html

    from rflens.sources import load_model

    assert f"weights: {_html.escape(load_model(str(spec))[1]['weights'])}" in text  # what was used
    assert_self_contained(text)
    for argv, message in ((["--erf-layers", "nope"], "no layer 'nope'"),
                          (["--samples", "0"], "--samples must be a positive"),
                          (["-o", str(tmp_path / "r.txt")], "give a .html file"),
                          (["--erf-layers", "auto", "layer1_conv"], "not a mix")):
        argv = ["report", str(spec), *argv] + ([] if "-o" in argv else ["-o", str(out)])
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


# --- in a real browser --------------------------------------------------------------------------------


def test_request_recorder_sees_external_requests(browser, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text("<html><body><img src='http://rflens.invalid/x.png'></body></html>")
    context, _, requests, _ = open_recorded(browser, probe.as_uri())
    context.close()
    assert any(url.startswith("http://rflens.invalid") for url in requests)


def test_report_renders_in_chromium(browser, tmp_path, capsys):
    from PIL import Image

    ARTIFACTS.mkdir(exist_ok=True)
    report = ARTIFACTS / "report.html"
    assert main(["report", "torchvision:resnet18", "--input", "3x112x112", "--erf-layers", "layer1",
                 "layer2", "--samples", "4", "-o", str(report), "-q"]) == 0
    capsys.readouterr()
    context, page, requests, errors = open_recorded(browser, report.as_uri())
    try:
        assert errors == []
        external = [u for u in requests if not u.startswith(("file:", "data:"))]
        assert external == [], external
        assert report.as_uri() in requests
        names = page.locator("table.trf tbody td.name").all_inner_texts()
        import torchvision

        rf = rflens.receptive_field(torchvision.models.resnet18(), (3, 112, 112))
        assert names == rf.names
        for name in ("conv1", "layer1.0.conv1", "layer3.1.conv2", "layer4", "fc"):
            assert page.locator(f"tr[data-layer='{name}'] td.name").inner_text() == name
        images = page.evaluate("Array.from(document.images).map(i => "
                               "[i.className, i.complete, i.naturalWidth, i.naturalHeight])")
        assert [i[0] for i in images] == ["growth"] + ["erf-map", "erf-map-log", "erf-profiles"] * 2
        assert all(done and w > 200 and h > 200 for _, done, w, h in images), images
        shot = ARTIFACTS / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        growth_shot = tmp_path / "growth.png"
        page.locator("img.growth").screenshot(path=str(growth_shot))
    finally:
        context.close()
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert pixels.shape[0] > 2000 and pixels.std() > 20
    assert (pixels.min(axis=-1) < 200).mean() > 0.05  # not a blank page
    growth = np.asarray(Image.open(growth_shot).convert("RGB")).astype(int)
    blue = (np.abs(growth - np.array([31, 119, 180])).max(axis=-1) < 30).sum()  # the TRF line
    assert blue > 200
