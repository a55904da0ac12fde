"""Regenerate the README's pictures in docs/images/ (one of each kind rflens draws).

    .venv/bin/python scripts/make_figures.py            # about 30 s on 2 cores
    .venv/bin/python scripts/make_figures.py --no-report-screenshot

Uses torchvision's resnet18 with untrained weights (torch.manual_seed(0); nothing is downloaded),
scikit-image's bundled astronaut photo, and, for the report and explorer screenshots, headless
Chromium through Playwright when a ``chromium`` binary is on PATH.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
SHAPE = (3, 224, 224)


def _erf(model, layer: str, samples: int):
    import rflens

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rflens.effective_receptive_field(model, layer, SHAPE, samples=samples, progress=False,
                                                seed=0)


def _astronaut(size: int) -> np.ndarray:
    from skimage import data, transform

    return transform.resize(data.astronaut(), (size, size), anti_aliasing=True)


def erf_maps_side_by_side(result):
    """The linear and the log heat map of one ERF in one picture."""
    from rflens import plot

    fig = plot.RFFigure(figsize=(10.4, 4.4), dpi=plot.DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    plot.erf_map(result, zoom=True, ax=left)
    plot.erf_map(result, zoom=True, log=True, ax=right)
    return fig


BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


def report_screenshots(report: Path, top: Path, explorer: Path) -> bool:
    """The top of the report at half size, and the explorer at 1280×800 (resnet18's layer2: a
    unit beside the centre, its box and translated ERF contours, and a clicked pixel with the
    units that see it); False when there is no browser."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return False
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1500})
        page.goto(report.as_uri())
        shot = Path(tmp) / "shot.png"
        page.screenshot(path=str(shot))
        image = Image.open(shot).convert("RGB")
        image.resize((image.width // 2, image.height // 2), Image.LANCZOS).save(top, optimize=True)

        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(report.as_uri())
        root = page.locator("#rfx-report")
        root.scroll_into_view_if_needed()
        layer2 = page.evaluate("Array.from(document.querySelectorAll('#rfx-report option'))"
                               ".find(o => o.textContent.startsWith('layer2 ')).value")
        page.locator("#rfx-report select.rfx-layer").select_option(value=layer2)

        def click(panel: str, x: float, y: float) -> None:
            point = page.evaluate("""([panel, x, y]) => {
                const svg = document.querySelector('#rfx-report .' + panel), p = svg.createSVGPoint();
                p.x = x; p.y = y; const q = p.matrixTransform(svg.getScreenCTM()); return [q.x, q.y]; }""",
                                  [panel, x, y])
            page.mouse.click(*point)

        click("rfx-units", 15.5, 12.5)  # unit (12, 15) of 28×28: its ERF is the centre's, shifted
        click("rfx-img", 150.5, 60.5)   # pixel (60, 150)
        page.mouse.move(1, 1)
        root.screenshot(path=str(explorer))
        Image.open(explorer).convert("RGB").save(explorer, optimize=True)
        browser.close()
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-report-screenshot", action="store_true")
    args = parser.parse_args()

    import torchvision

    import rflens
    from rflens import plot
    from rflens.report import build_report, write_report

    start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    rf = rflens.receptive_field(model, SHAPE, name="resnet18")

    erfs = {layer: _erf(model, layer, 16) for layer in ("layer1", "layer2", "layer3")}
    sizes = {layer: float(np.mean(r.metrics.extent[0.95])) for layer, r in erfs.items()}
    plot.save(plot.growth(rf, sizes), OUT / "growth.png")

    layer2 = _erf(model, "layer2", 64)
    layer2 = dataclasses.replace(layer2, model="resnet18")
    plot.save(erf_maps_side_by_side(layer2), OUT / "erf-map.png")
    plot.save(plot.erf_profiles(layer2), OUT / "erf-profiles.png")
    plot.save(plot.overlay(_astronaut(SHAPE[1]), rf, "layer2", erf=layer2), OUT / "overlay.png")
    plot.save(plot.path_counts([3, 3]), OUT / "path-counts.png")

    if not args.no_report_screenshot:
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            report = write_report(Path(tmp) / "report.html",
                                  build_report(torchvision.models.resnet18(), SHAPE, name="resnet18",
                                               erf_layers=["layer1", "layer2", "layer3"]))
            if not report_screenshots(report, OUT / "report.png", OUT / "explorer.png"):
                print("no chromium on PATH: kept the old docs/images/report.png and explorer.png",
                      file=sys.stderr)
    for path in sorted(OUT.glob("*.png")):
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size / 1024:.0f} KiB")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
