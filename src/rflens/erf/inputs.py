"""Where the images an ERF is averaged over come from.

Every source yields single samples shaped ``(C, *spatial)`` (no batch axis), as float tensors, in a
fixed order, so a run is reproducible and does not depend on the batch size:

- ``"noise"`` (default): i.i.d. standard Gaussian pixels; sample ``i`` is drawn from its own generator
  seeded by ``(seed, i)``, so it is the same whatever the batch size.
- a tensor or numpy array ``(N, C, *spatial)`` or ``(C, *spatial)``: its samples, in order.
- any iterable (a ``DataLoader``, a list, a generator) of tensors, ``(tensor, label)`` pairs or dicts
  holding an ``"image"``/``"pixel_values"``/``"input"`` tensor, batched or not.
- a folder of images (``.png .jpg .jpeg .bmp .tif .tiff .webp .gif``), read in name order.
- ``"samples"``: the natural photos that ship inside the scikit-image wheel (``skimage/data``: no
  download), read straight from its data folder.

Images are converted to RGB (3 channels) or grayscale (1), resized so the shorter side matches the
input and centre-cropped, scaled to [0, 1] and normalised with the ImageNet mean and std (RGB) or
mean 0.5, std 0.5 (grayscale). 8-bit images are scaled by 1/255; images with wider pixels (16- and
32-bit integer, float: PIL modes ``I;16``, ``I``, ``F``) by their own range, ``(v - min) / (max -
min)`` (a constant image becomes 0), and a single-channel one is repeated for an RGB input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rflens.errors import RflensError

__all__ = ["InputSource", "resolve_inputs", "SKIMAGE_SAMPLES", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
# Natural photos bundled in scikit-image's wheel (read from skimage/data, never fetched).
SKIMAGE_SAMPLES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                   "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png",
                   "camera.png", "coins.png", "moon.png", "horse.png", "grass.png", "gravel.png",
                   "brick.png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_KEYS = ("image", "pixel_values", "input", "inputs", "x")


@dataclass
class InputSource:
    """A sequence of input samples. ``count`` is how many there are (None: unlimited or unknown);
    ``description`` names the source in results and JSON."""

    kind: str
    description: str
    count: int | None
    _samples: Any  # callable (shape) -> Iterator[Tensor]

    def samples(self, shape: tuple[int, ...]) -> Iterator[torch.Tensor]:
        """Yield samples shaped ``shape`` = ``(C, *spatial)``, float32, on the CPU."""
        for sample in self._samples(shape):
            yield _check_sample(sample, shape, self.description)


def resolve_inputs(inputs: Any, shape: tuple[int, ...], seed: int = 0) -> InputSource:
    """Turn the ``inputs`` argument (see the module docstring) into an :class:`InputSource`."""
    if inputs is None or (isinstance(inputs, str) and inputs.strip().lower() == "noise"):
        return _noise(seed)
    if isinstance(inputs, str) and inputs.strip().lower() == "samples":
        return _skimage_samples(shape)
    if isinstance(inputs, (str, Path)):
        return _folder(Path(inputs), shape)
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(inputs)
    if isinstance(inputs, torch.Tensor):
        return _tensor(inputs, shape)
    if isinstance(inputs, Iterable):
        return _iterable(inputs)
    raise RflensError(f"inputs of type {type(inputs).__name__} are not understood; pass 'noise', "
                      "'samples', a folder of images, a tensor or an iterable of tensors")


# --- sources -------------------------------------------------------------------------------------

def _noise(seed: int) -> InputSource:
    def gen(shape: tuple[int, ...]) -> Iterator[torch.Tensor]:
        i = 0
        while True:
            g = torch.Generator().manual_seed(sample_seed(seed, i))
            yield torch.randn(shape, generator=g)
            i += 1

    return InputSource("noise", f"noise (standard Gaussian, seed {seed})", None, gen)


def sample_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for sample ``index`` of run ``seed`` (``stream`` separates independent uses)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(stream), int(index)]).generate_state(2)
    return int(state[0]) << 31 ^ int(state[1])


def _tensor(t: torch.Tensor, shape: tuple[int, ...]) -> InputSource:
    t = t.detach()
    if t.dim() == len(shape):
        t = t.unsqueeze(0)
    if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != tuple(shape):
        raise RflensError(f"input tensor has shape {tuple(t.shape)} but the model is probed at "
                          f"{_fmt(shape)}; pass a tensor (N, {', '.join(map(str, shape))}) or change "
                          "the input shape")
    return InputSource("tensor", f"tensor of {t.shape[0]} sample(s)", int(t.shape[0]),
                       lambda _shape: iter(t.float().unbind(0)))


def _iterable(items: Iterable) -> InputSource:
    count = None  # items may be single samples or batches: known only once read

    def gen(shape: tuple[int, ...]) -> Iterator[torch.Tensor]:
        for item in items:
            t = _tensor_of(item)
            if t.dim() == len(shape):
                yield t
            elif t.dim() == len(shape) + 1:
                yield from t.unbind(0)
            else:
                raise RflensError(f"an item of the inputs iterable has shape {tuple(t.shape)}, "
                                  f"expected {_fmt(shape)} or a batch of those")

    return InputSource("iterable", type(items).__name__, count, gen)


def _tensor_of(item: Any) -> torch.Tensor:
    if isinstance(item, dict):
        for key in _KEYS:
            if key in item:
                return _tensor_of(item[key])
        raise RflensError(f"a dict from the inputs iterable has keys {sorted(item)[:6]}; expected one "
                          f"of {', '.join(_KEYS)}")
    if isinstance(item, (tuple, list)) and item:
        return _tensor_of(item[0])
    if isinstance(item, np.ndarray):
        return torch.from_numpy(item)
    if isinstance(item, torch.Tensor):
        return item.detach()
    raise RflensError(f"an item of the inputs iterable is a {type(item).__name__}; yield tensors, "
                      "(tensor, label) pairs or dicts with an 'image' tensor")


def _folder(path: Path, shape: tuple[int, ...]) -> InputSource:
    if not path.is_dir():
        raise RflensError(f"--inputs '{path}' is not a folder; pass noise, samples or a folder of images")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise RflensError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder '{path}'; add some or "
                          "use --inputs noise")
    _check_image_shape(shape, f"images from '{path}'")
    return InputSource("folder", f"{len(files)} image(s) from {path}", len(files),
                       lambda s: (load_image(f, s) for f in files))


def skimage_sample_files() -> list[Path]:
    """Paths of the bundled scikit-image sample photos (raises if scikit-image is missing)."""
    try:
        import skimage
    except ImportError as exc:
        raise RflensError("--inputs samples needs scikit-image (pip install 'rflens[images]'), or "
                          "pass a folder of images") from exc
    folder = Path(skimage.__file__).parent / "data"
    files = [folder / name for name in SKIMAGE_SAMPLES if (folder / name).is_file()]
    if not files:
        raise RflensError(f"no sample images found in {folder}; pass a folder of images instead")
    return files


def _skimage_samples(shape: tuple[int, ...]) -> InputSource:
    files = skimage_sample_files()
    _check_image_shape(shape, "sample images")
    return InputSource("samples", f"{len(files)} scikit-image sample photo(s)", len(files),
                       lambda s: (load_image(f, s) for f in files))


# --- images -------------------------------------------------------------------------------------

def _check_image_shape(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise RflensError(f"{what} need a 2-D input with 1 or 3 channels, not {_fmt(shape)}; use "
                          "--inputs noise for other shapes")


def load_image(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """Read one image as a normalised ``(C, H, W)`` float tensor (see the module docstring)."""
    from PIL import Image

    channels, height, width = shape
    try:
        with Image.open(path) as img:
            img, scale = _unit_range(img, channels)
            img = _resize_crop(img, height, width)
            array = np.clip(np.asarray(img, dtype=np.float32) / scale, 0.0, 1.0)  # bicubic overshoot
        if channels == 3 and array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
    except OSError as exc:
        raise RflensError(f"cannot read image '{path}': {exc}; remove it or convert it to PNG") from exc
    t = torch.from_numpy(array.copy())
    t = t.permute(2, 0, 1) if t.dim() == 3 else t.unsqueeze(0)
    mean = IMAGENET_MEAN if channels == 3 else (0.5,)
    std = IMAGENET_STD if channels == 3 else (0.5,)
    return (t - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _unit_range(img: Any, channels: int) -> tuple[Any, float]:
    """The image in a mode PIL can resize, and the number that scales it to [0, 1]: 8-bit modes
    converted to RGB/L (scale 255); wider modes (``I;16*``, ``I``, ``F``) as one float channel
    scaled by the image's own range (scale 1)."""
    from PIL import Image

    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        values = np.asarray(img, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        values = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        return Image.fromarray(values.astype(np.float32), mode="F"), 1.0
    return img.convert("RGB" if channels == 3 else "L"), 255.0


def _resize_crop(img: Any, height: int, width: int) -> Any:
    from PIL import Image

    scale = max(height / img.height, width / img.width)
    size = (max(width, math.ceil(img.width * scale - 1e-9)), max(height, math.ceil(img.height * scale - 1e-9)))
    img = img.resize(size, Image.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return img.crop((left, top, left + width, top + height))


def _check_sample(sample: torch.Tensor, shape: tuple[int, ...], where: str) -> torch.Tensor:
    if not isinstance(sample, torch.Tensor):
        raise RflensError(f"{where} gave a {type(sample).__name__}, not a tensor")
    if tuple(sample.shape) != tuple(shape):
        raise RflensError(f"{where} gave a sample of shape {tuple(sample.shape)}, expected "
                          f"{_fmt(shape)}; resize the inputs or change the input shape")
    if not sample.is_floating_point():
        sample = sample.float()
    return sample


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)
