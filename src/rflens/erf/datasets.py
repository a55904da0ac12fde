"""Input sources with random access, for runs over data sets of any size and over several processes.

:func:`resolve_source` turns the ``inputs`` argument into an :class:`rflens.erf.inputs.InputSource`
whose ``dataset`` gives sample ``i`` directly (noise, tensors, image folders, the bundled photos), so
each process reads only its own samples, through a ``torch.utils.data.DataLoader`` with worker
processes for images. Iterables (a user's DataLoader, generators) stay streams
(:func:`rflens.erf.inputs.resolve_inputs`): every process reads them in full and keeps its share.

Image folders: a flat folder of images, or an ``ImageFolder``-style tree (one sub-folder per class,
any depth); files are taken in sorted path order (sub-folder names, then file names). The transform
(``transform=``):

- ``"auto"`` (default): the model's own preprocessing when it declares one — a timm model (one with a
  ``pretrained_cfg``) gets ``"timm"`` — else ``"resize-crop"``;
- ``"timm"``: timm's evaluation transform from ``timm.data.resolve_data_config`` for the model at the
  probed input size (resize to ``size / crop_pct``, centre crop, the model's mean/std and
  interpolation: 0.5/0.5 for ViTs, ImageNet's for ResNets);
- ``"resize-crop"``: shorter side resized to the input (bicubic), centre crop, ImageNet mean/std
  (:func:`rflens.erf.inputs.load_image`);
- ``"resize"``: both sides resized to the input, aspect ratio not kept (bicubic), ImageNet mean/std —
  what RepLKNet's ERF script does (``Resize((1024, 1024))``);
- a callable taking a PIL image (RGB, or L for one channel) and returning a ``(C, *spatial)`` tensor.

``mean`` / ``std`` replace the normalisation of ``"resize-crop"`` and ``"resize"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rflens.errors import RflensError
from rflens.erf.inputs import (IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, InputSource, load_image,
                               resolve_inputs, sample_seed, skimage_sample_files)

__all__ = ["TRANSFORMS", "resolve_source", "list_images", "NoiseDataset", "ImageDataset",
           "batch_loader", "describe_transform"]

TRANSFORMS = ("auto", "timm", "resize-crop", "resize")


class NoiseDataset(Dataset):
    """Sample ``i``: standard Gaussian pixels from a generator seeded by ``sample_seed(seed, i)``."""

    def __init__(self, shape: tuple[int, ...], seed: int, length: int) -> None:
        self.shape, self.seed, self.length = tuple(shape), seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(sample_seed(self.seed, i))
        return torch.randn(self.shape, generator=g)


class _TensorDataset(Dataset):
    def __init__(self, t: torch.Tensor) -> None:
        self.t = t

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.t[i].float()


class ImageDataset(Dataset):
    """Image ``i`` of ``files`` through ``load`` (path → ``(C, *spatial)`` tensor)."""

    def __init__(self, files: list[Path], load: Callable[[Path], torch.Tensor]) -> None:
        self.files, self.load = files, load

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.load(self.files[i])


def list_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` (flat or a class tree), in sorted path order."""
    if not folder.is_dir():
        raise RflensError(f"--inputs '{folder}' is not a folder; pass noise, samples or a folder of images")
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.relative_to(folder).parts)
    if not files:
        raise RflensError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder '{folder}' or its "
                          "sub-folders; add some or use --inputs noise")
    return files


def resolve_source(inputs: Any, shape: tuple[int, ...], seed: int = 0, *, count: int,
                   model: torch.nn.Module | None = None, transform: Any = "auto",
                   mean: Any = None, std: Any = None) -> InputSource:
    """The ``inputs`` argument as an :class:`InputSource` with random access where possible (see the
    module docstring); ``count`` is the number of samples the run asks for (noise has that many)."""
    if inputs is None or (isinstance(inputs, str) and inputs.strip().lower() == "noise"):
        src = resolve_inputs("noise", shape, seed)
        src.dataset = NoiseDataset(shape, seed, count)
        return src
    if isinstance(inputs, str) and inputs.strip().lower() == "samples":
        files, what = skimage_sample_files(), "scikit-image sample photo(s)"
    elif isinstance(inputs, (str, Path)):
        files, what = list_images(Path(inputs)), f"image(s) from {inputs}"
    else:
        src = resolve_inputs(inputs, shape, seed)
        if src.kind == "tensor":
            stacked = torch.stack(list(src.samples(shape))) if src.count else torch.empty((0, *shape))
            src.dataset = _TensorDataset(stacked)
        return src
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise RflensError(f"images need a 2-D input with 1 or 3 channels, not {'x'.join(map(str, shape))}; "
                          "use --inputs noise for other shapes")
    load, how = _loader(transform, shape, model, mean, std)
    src = InputSource("folder" if what.startswith("image") else "samples",
                      f"{len(files)} {what}, {how}", len(files),
                      lambda s: (load(f) for f in files))
    src.dataset = ImageDataset(files, load)
    return src


def describe_transform(transform: Any, shape: tuple[int, ...], model: Any) -> str:
    """One line naming the transform a run uses for images."""
    return _loader(transform, shape, model, None, None)[1]


def _loader(transform: Any, shape: tuple[int, ...], model: Any, mean: Any,
            std: Any) -> tuple[Callable[[Path], torch.Tensor], str]:
    channels = shape[0]
    if callable(transform):
        name = getattr(transform, "__name__", type(transform).__name__)
        return _Pil(channels, transform), f"transform {name}"
    if transform not in TRANSFORMS:
        raise RflensError(f"transform={transform!r} is not one of {', '.join(TRANSFORMS)} or a callable")
    if transform == "auto":
        transform = "timm" if hasattr(model, "pretrained_cfg") and channels == 3 else "resize-crop"
    if transform == "timm":
        return _timm(model, shape)
    norm = _stats(mean, std, channels)
    if transform == "resize-crop" and norm is None:
        return _ResizeCrop(shape), "resize shorter side + centre crop, ImageNet mean/std"
    mean_, std_ = norm or ((IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,)))
    fit = "stretch" if transform == "resize" else "crop"
    what = ("resize to the input (aspect ratio not kept)" if fit == "stretch"
            else "resize shorter side + centre crop")
    return (_Resize(shape, fit, mean_, std_),
            f"{what}, bicubic, mean {_fmt(mean_)} std {_fmt(std_)}")


def _fmt(values: tuple) -> str:
    return "/".join(f"{v:g}" for v in values)


def _stats(mean: Any, std: Any, channels: int) -> tuple[tuple, tuple] | None:
    if mean is None and std is None:
        return None
    out = []
    for name, value, default in (("mean", mean, 0.0), ("std", std, 1.0)):
        if value is None:
            value = (default,) * channels
        if isinstance(value, str):
            value = value.split(",")
        try:
            value = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else (value,)))
        except ValueError:
            raise RflensError(f"{name} {value!r} must be numbers like 0.5,0.5,0.5") from None
        if len(value) == 1:
            value = value * channels
        if len(value) != channels or (name == "std" and any(v <= 0 for v in value)):
            raise RflensError(f"{name} needs {channels} value(s) (positive for std), not {value}")
        out.append(value)
    return out[0], out[1]


class _ResizeCrop:
    """:func:`rflens.erf.inputs.load_image` (picklable for DataLoader workers)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __call__(self, path: Path) -> torch.Tensor:
        return load_image(path, self.shape)


def _open(path: Path, channels: int):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB" if channels == 3 else "L")
    except OSError as exc:
        raise RflensError(f"cannot read image '{path}': {exc}; remove it or convert it to PNG") from exc


class _Resize:
    def __init__(self, shape: tuple[int, ...], fit: str, mean: tuple, std: tuple) -> None:
        self.shape, self.fit, self.mean, self.std = shape, fit, mean, std

    def __call__(self, path: Path) -> torch.Tensor:
        from PIL import Image

        channels, height, width = self.shape
        img = _open(path, channels)
        if self.fit == "stretch":
            img = img.resize((width, height), Image.BICUBIC)
        else:
            from rflens.erf.inputs import _resize_crop

            img = _resize_crop(img, height, width)
        from torchvision.transforms import functional as TF

        return TF.normalize(TF.to_tensor(img), list(self.mean), list(self.std))


class _Pil:
    def __init__(self, channels: int, transform: Callable) -> None:
        self.channels, self.transform = channels, transform

    def __call__(self, path: Path) -> torch.Tensor:
        out = self.transform(_open(path, self.channels))
        return out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))


def _timm(model: Any, shape: tuple[int, ...]) -> tuple[Callable[[Path], torch.Tensor], str]:
    try:
        from timm.data import create_transform, resolve_data_config
    except ImportError as exc:
        raise RflensError("transform='timm' needs timm (pip install 'rflens[timm]')") from exc
    if model is None or not hasattr(model, "pretrained_cfg"):
        raise RflensError("transform='timm' needs a timm model (one with a pretrained_cfg); use "
                          "resize-crop or resize for other models")
    if shape[0] != 3:
        raise RflensError(f"transform='timm' reads RGB images; the model is probed with {shape[0]} channel(s)")
    config = resolve_data_config({"input_size": tuple(shape)}, model=model)
    transform = create_transform(**config, is_training=False)
    how = (f"timm data config: crop_pct {config.get('crop_pct')}, {config.get('interpolation')}, "
           f"mean {_fmt(config['mean'])} std {_fmt(config['std'])}")
    return _Pil(3, transform), how


def batch_loader(dataset: Dataset, batches: list[list[int]], workers: int) -> Any:
    """Iterate ``dataset`` in the given batches of indices (stacked tensors), with ``workers``
    DataLoader processes (0: in this process)."""
    if workers <= 0 or not isinstance(dataset, ImageDataset):
        return (torch.stack([dataset[i] for i in batch]) for batch in batches)
    return iter(DataLoader(dataset, batch_sampler=batches, num_workers=workers))
