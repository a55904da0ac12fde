"""The picture under the explorer: the user's image, a bundled photo, or a plain grid.

Every picture is an RGB or grey PNG of exactly the input's spatial size (rows × columns; a 1-D
input is a one-row strip), so one picture pixel is one input pixel. Photos are resized so that
they cover the input and centre-cropped (Pillow's ``ImageOps.fit``, bicubic) — the same framing as
the ERF inputs of ``rflens.erf.inputs``. Pictures larger than :data:`MAX_SIDE` on a side are
stored downsampled (the page stretches them back to input pixels; the geometry is unaffected).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rflens.errors import RflensError

MAX_SIDE = 1024  # longest stored side in pixels; beyond it the picture is only for orientation
BUNDLED_PHOTO = "astronaut.png"  # from scikit-image's bundled data (no download)


@dataclass(frozen=True)
class Picture:
    """A PNG ``data:`` URI and what it shows (for the page's caption)."""

    uri: str
    description: str
    kind: str  # "image", "photo" or "grid"


def picture(input_shape: Sequence[int], image: Any = None) -> Picture:
    """The picture for an input ``(C, *spatial)``.

    ``image``: a path to an image file, an array ``H×W`` / ``H×W×3`` (uint8, or float in [0, 1]),
    a ``C×H×W`` tensor, or None — then scikit-image's bundled photo for 2-D inputs with 1 or 3
    channels, and a plain grid for every other input. A given image needs a 2-D input.
    """
    channels, spatial = int(input_shape[0]), tuple(int(n) for n in input_shape[1:])
    if image is not None:
        if len(spatial) != 2:
            raise RflensError(f"an image needs a 2-D input; this input is "
                              f"{'×'.join(map(str, input_shape))} (C×spatial); drop --image")
        pil, origin = _as_pil(image)
        fitted = _fit(pil, spatial, grey=channels == 1)
        return Picture(_uri(fitted), f"{origin}, resized and centre-cropped to "
                                     f"{spatial[0]}×{spatial[1]}", "image")
    if len(spatial) == 2 and channels in (1, 3):
        photo = _bundled_photo()
        if photo is not None:
            return Picture(_uri(_fit(photo, spatial, grey=channels == 1)),
                           f"scikit-image's bundled '{BUNDLED_PHOTO}' photo, resized and "
                           f"centre-cropped to {spatial[0]}×{spatial[1]} (pass --image FILE for "
                           "your own)", "photo")
    return Picture(_uri(_grid(spatial)), "a plain grid (8×8-pixel blocks): no image for this input",
                   "grid")


def _as_pil(image: Any) -> tuple[Any, str]:
    from PIL import Image

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise RflensError(f"--image {path}: no such file; pass a PNG or JPEG file")
        try:
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB"), f"'{path.name}'"
        except OSError as exc:
            raise RflensError(f"--image {path}: cannot read it as an image ({exc}); pass a PNG or "
                              "JPEG file") from exc
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            image = np.moveaxis(image, 0, -1)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise RflensError(f"an image must be H×W, H×W×3 or H×W×4 (or a C×H×W tensor), not shape "
                          f"{array.shape}")
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        if array.size and array.max() > 1.0:
            array = array / 255.0
        array = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    img = Image.fromarray(array[..., :3] if array.ndim == 3 else array)
    return img.convert("RGB"), f"a {array.shape[0]}×{array.shape[1]} image"


def _bundled_photo() -> Any:
    from PIL import Image

    try:
        import skimage
    except ImportError:
        return None
    path = Path(skimage.__file__).parent / "data" / BUNDLED_PHOTO
    if not path.is_file():
        return None
    with Image.open(path) as img:
        return img.convert("RGB")


def _fit(img: Any, spatial: tuple[int, int], grey: bool) -> Any:
    from PIL import Image, ImageOps

    height, width = spatial
    fitted = ImageOps.fit(img, (width, height), method=Image.BICUBIC)
    if grey:
        fitted = fitted.convert("L")
    longest = max(height, width)
    if longest > MAX_SIDE:
        scale = MAX_SIDE / longest
        fitted = fitted.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                               Image.BICUBIC)
    return fitted


def _grid(spatial: tuple[int, ...]) -> Any:
    """Light 8×8-pixel checkerboard over the last two axes (one row for a 1-D input)."""
    from PIL import Image

    rows, cols = (1, spatial[0]) if len(spatial) == 1 else spatial[-2:]
    scale = min(1.0, MAX_SIDE / max(rows, cols))
    r = np.arange(max(1, round(rows * scale))) / scale
    c = np.arange(max(1, round(cols * scale))) / scale
    checker = ((r[:, None] // 8).astype(int) + (c[None, :] // 8).astype(int)) % 2
    return Image.fromarray(np.where(checker == 1, 222, 240).astype(np.uint8))


def _uri(img: Any) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
