"""Regenerate the README's tiling picture, docs/images/tile-plan.png.

    .venv/bin/python scripts/make_tile_figure.py        # a few seconds

The plan is rflens' for the U-Net of examples/unet.py (3 levels: tile offsets multiples of 8)
on scikit-image's bundled 512×512 camera photo with 192-pixel tiles; one inner tile shows its
input window (yellow) and the region of the output it keeps (cyan). The stitched output is
checked against the whole-image output before the picture is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "tile-plan.png"


def main() -> None:
    from skimage import data

    from rflens import plot, tile
    from rflens.sources.models import load_model

    model, _ = load_model(f"{ROOT / 'examples' / 'unet.py'}:build")
    image = data.camera()  # 512×512 uint8
    x = torch.from_numpy(image).float()[None, None] / 255.0
    plan = tile.plan(model, (1, *image.shape), 192, name="examples/unet.py")
    stitched = tile.run(model, x, plan, progress=False)
    diff = float((stitched - tile.whole(model, x, plan)).abs().max())
    if not plan.exact or diff > 1e-5:
        sys.exit(f"the plan does not stitch exactly (exact={plan.exact}, diff={diff})")
    fig = plot.tile_plan(plan, image, highlight=(1, 2))
    plot.save(fig, OUT)
    print(f"wrote {OUT.relative_to(ROOT)}: halo {plan.halo}, multiple {plan.multiple}, grid "
          f"{plan.grid}, max |tiled - whole| = {diff:.3g}")


if __name__ == "__main__":
    main()
