"""rflens next to OpenERF (``pip install openerf``) on the same models, images, unit and gradient
combination: time, and the correlation of the two maps.

Models: timm ``resnet50`` (unit (3, 3) of ``layer4``), ``vit_small_patch16_224`` (the output of its
final ``norm``: tokens, unit (6, 6) of the 14x14 grid — OpenERF's centre-token rule takes the
upper-left of the four middle tokens) and ``swin_tiny_patch4_window7_224`` (``forward_features``,
unit (3, 3) of 7x7), all with timm's random initialisation (seed 0; nothing is downloaded). Images:
``--images`` synthetic photos-like pictures (smooth random colour fields with edges, assorted sizes)
written to a temporary folder, read by both tools through timm's evaluation transform of the model.

Both sides use OpenERF's combination: the mean of the unit's channels (``readout="mean"``), the input
gradient averaged over colour channels then ReLU (``reduce="mean-relu"``), averaged over images.
rflens reads token outputs through a small wrapper that drops the prefix (class) tokens and lays
the rest out as a ``(C, H, W)`` grid (ViT) or moves channels first (Swin's NHWC).

Also times a plain forward+backward of the same images in the same batches (no ERF bookkeeping).

    python benchmarks/erf_vs_openerf.py [--images 32] [--batch-size 16] [--models resnet50,vit,swin]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rflens.erf import ERFWarning, effective_receptive_field

CASES = {
    "resnet50": ("resnet50", "layer4", (3, 3)),
    "vit": ("vit_small_patch16_224", "norm", (6, 6)),
    "swin": ("swin_tiny_patch4_window7_224", "forward_features", (3, 3)),
}


class TokenGrid(nn.Module):
    """``forward_features`` of a timm token model as a ``(B, C, H, W)`` grid."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.pretrained_cfg = model.pretrained_cfg  # so rflens finds the model's preprocessing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model.forward_features(x)
        if y.dim() == 4:  # Swin: NHWC
            return y.permute(0, 3, 1, 2)
        y = y[:, getattr(self.model, "num_prefix_tokens", 1):]
        side = math.isqrt(y.shape[1])
        return y.transpose(1, 2).reshape(y.shape[0], y.shape[2], side, side)


def write_images(folder: Path, count: int) -> None:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    for i in range(count):
        w, h = int(rng.integers(240, 400)), int(rng.integers(240, 400))
        coarse = rng.integers(0, 256, size=(6, 6, 3)).astype(np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            draw.rectangle((x0, y0, x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 120))),
                           fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img.save(folder / f"img{i:03d}.png")


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def plain(model: nn.Module, folder: Path, batch_size: int) -> float:
    """Forward + input gradient of the same images in the same batches, no ERF bookkeeping."""
    from timm.data import create_transform, resolve_data_config
    from PIL import Image

    transform = create_transform(**resolve_data_config({}, model=model), is_training=False)
    files = sorted(folder.iterdir())
    start = time.perf_counter()
    xs = [transform(Image.open(f).convert("RGB")) for f in files]
    for i in range(0, len(xs), batch_size):
        x = torch.stack(xs[i:i + batch_size]).requires_grad_(True)
        torch.autograd.grad(model.forward_features(x).float().mean(), x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import openerf
    import timm

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_images(folder, args.images)
        for key in args.models.split(","):
            name, layer, unit = CASES[key]
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False).eval()
            start = time.perf_counter()
            theirs = openerf.compute_erf(model, image_dir=folder, target_layer=layer,
                                         device="cpu", show_progress=False)
            t_openerf = time.perf_counter() - start
            net, probe_layer = (model, layer) if key == "resnet50" else (TokenGrid(model), None)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ERFWarning)
                ours = effective_receptive_field(net, probe_layer, (3, 224, 224), inputs=str(folder),
                                                 samples=args.images, batch_size=args.batch_size,
                                                 unit=unit, reduce="mean-relu", readout="mean",
                                                 transform="timm", loader_workers=0, progress=False)
            t_rflens = time.perf_counter() - start
            t_plain = plain(model, folder, args.batch_size)
            rows.append({"model": name, "layer": layer, "unit": list(unit), "images": args.images,
                         "openerf_s": t_openerf, "rflens_s": t_rflens, "plain_fb_s": t_plain,
                         "correlation": corr(ours.normalized, theirs.erf_map),
                         "max_abs_diff_normalized": float(np.abs(ours.normalized - theirs.erf_map).max()),
                         "rflens_transform": ours.settings["inputs"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.images} images, rflens batches of {args.batch_size}, OpenERF batch 1, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'model':<32}{'OpenERF s':>10}{'rflens s':>10}{'plain f+b s':>13}{'corr':>14}{'max |diff|':>12}")
    for r in rows:
        print(f"{r['model']:<32}{r['openerf_s']:>10.2f}{r['rflens_s']:>10.2f}{r['plain_fb_s']:>13.2f}"
              f"{r['correlation']:>14.10f}{r['max_abs_diff_normalized']:>12.2e}")


if __name__ == "__main__":
    main()
