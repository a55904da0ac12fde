"""Which models a zoo sweep runs, which family each belongs to, and how each is built and fed.

Models are built without weights and as cheaply as possible: on the meta device (no memory, no
initialisation cost) where the constructor allows it; otherwise on the CPU with PyTorch's
``torch.nn.init`` functions switched off (the values do not matter, only shapes do). The input is
the one the model is made for: timm's ``pretrained_cfg["input_size"]``, torchvision's defaults
(:func:`rflens.sources.models.default_input_shape`), a detector's own resize size, two images for
the optical-flow models.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from rflens.errors import RflensError
from rflens.sources.models import default_input_shape

SOURCES = ("timm", "torchvision")


@dataclass(frozen=True)
class Entry:
    """One model of a sweep: its ``name`` in ``source`` and its ``family`` (timm's architecture
    module, e.g. ``vision_transformer``; torchvision's builder module below ``torchvision.models``,
    e.g. ``resnet`` or ``detection.faster_rcnn``)."""

    source: str
    name: str
    family: str


@dataclass
class Built:
    """A model ready to analyse: ``inputs`` are batch-1 tensors (the engine's ``example_inputs``),
    ``device`` where its weights live (``meta`` or ``cpu``), ``note`` what was adapted, in words."""

    model: nn.Module
    inputs: tuple
    device: str
    note: str = ""
    shapes: list = field(default_factory=list)  # each input without the batch axis


def list_entries(source: str, patterns: list[str] | None = None, every: int = 1) -> list[Entry]:
    """The models of ``source`` (``timm`` or ``torchvision``), sorted by name; only those matching
    one of the glob ``patterns`` when given; then every ``every``-th one (the first included)."""
    if source not in SOURCES:
        raise RflensError(f"unknown zoo '{source}'; choose one of {', '.join(SOURCES)}")
    if every < 1:
        raise RflensError(f"--every {every}: must be a positive integer (1 = every model)")
    families = _timm_families() if source == "timm" else _torchvision_families()
    names = sorted(families)
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not names:
            raise RflensError(f"no {source} model matches {' '.join(patterns)}; "
                              f"names look like {', '.join(sorted(families)[:3])}, ...")
    return [Entry(source, n, families[n]) for n in names[::every]]


def _timm_families() -> dict[str, str]:
    timm = _import("timm")
    families: dict[str, str] = {}
    for module in timm.list_modules():
        for name in timm.list_models(module=module):
            families.setdefault(name, module)
    for name in timm.list_models():
        families.setdefault(name, "other")
    return families


def _torchvision_families() -> dict[str, str]:
    from torchvision import models

    return {name: models.get_model_builder(name).__module__.removeprefix("torchvision.models.")
            for name in models.list_models()}


def build(entry: Entry, device: str = "meta") -> Built:
    """Build ``entry`` without weights on ``device`` (``meta``: under ``torch.device("meta")``;
    ``cpu``: real tensors, initialisation skipped) and give it its input."""
    with _quiet():
        if entry.source == "timm":
            return _build_timm(entry.name, device)
        return _build_torchvision(entry.name, device)


def _build_timm(name: str, device: str) -> Built:
    timm = _import("timm")
    with _placement(device):
        model = timm.create_model(name, pretrained=False)
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    shape = tuple(size) if size else default_input_shape(f"timm:{name}")
    return Built(model, (_image(model, shape, device),), device, "", [list(shape)])


def _build_torchvision(name: str, device: str) -> Built:
    from torchvision import models

    builder = models.get_model_builder(name)
    kwargs: dict[str, Any] = {"weights": None}
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs["weights_backbone"] = None
    with _placement(device):
        model = builder(**kwargs)
    module = builder.__module__
    if module.startswith("torchvision.models.optical_flow"):
        shape = (3, 224, 224)
        images = (_image(model, shape, device), _image(model, shape, device))
        return Built(model, images, device, "two images (image1, image2); fields refer to image1",
                     [list(shape), list(shape)])
    if module.startswith("torchvision.models.detection"):
        size = int(model.transform.min_size[0])
        shape = (3, size, size)
        _take_batched_images(model)
        return Built(model, (_image(model, shape, device),), device,
                     f"batch tensor split into the list of images the detector takes; input "
                     f"{size}x{size} (its own resize size)", [list(shape)])
    shape = default_input_shape(name)
    return Built(model, (_image(model, shape, device),), device, "", [list(shape)])


def _take_batched_images(model: nn.Module) -> None:
    """A torchvision detector takes a list of (C, H, W) images; the engine feeds one batched
    tensor. The sweep's own detector gets a subclass whose ``forward`` splits the batch into that
    list, so its row names stay the detector's own (a wrapper module would prefix them)."""
    base = type(model)

    def forward(self, images, targets=None):
        return base.forward(self, list(images.unbind(0)), targets)

    model.__class__ = type(base.__name__, (base,), {"forward": forward})


def _image(model: nn.Module, shape: tuple[int, ...], device: str) -> torch.Tensor:
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return torch.empty((1, *shape), dtype=dtype, device="meta" if device == "meta" else "cpu")


@contextlib.contextmanager
def _placement(device: str) -> Iterator[None]:
    if device == "meta":
        with torch.device("meta"), _SkipMetaInit():
            yield
        return
    with _no_init():
        yield


class _SkipMetaInit(TorchFunctionMode):
    """While a model is built on meta: in-place writes into a meta tensor (the random draws and
    arithmetic of weight initialisation) return the tensor at once. A meta tensor holds no values,
    so nothing is lost; what is saved is PyTorch's meta kernels for them, about half of a large
    model's construction time."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _INIT_WRITES:
            target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes tensor=
            if isinstance(target, torch.Tensor) and target.is_meta:
                return None if func is torch.Tensor.__setitem__ else target
        return func(*args, **kwargs)


# in-place tensor methods weight initialisers use; none changes its tensor's shape
_INIT_WRITES = {getattr(torch.Tensor, name) for name in (
    "normal_", "uniform_", "zero_", "fill_", "copy_", "erfinv_", "mul_", "add_", "sub_", "div_",
    "clamp_", "clamp_min_", "clamp_max_", "exponential_", "bernoulli_", "random_", "log_normal_",
    "cauchy_", "geometric_", "fill_diagonal_", "addcmul_", "sqrt_", "neg_", "abs_", "exp_",
    "log_", "tanh_", "__setitem__") if hasattr(torch.Tensor, name)}
# and torch.nn.init's initialisers (called through this mode as a whole: their inner writes are not)
_INIT_WRITES |= {getattr(torch.nn.init, name) for name in dir(torch.nn.init)
                 if name.endswith("_") and not name.startswith("_")}


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Switch ``torch.nn.init``'s in-place initialisers off (construction of a large model on CPU
    otherwise spends seconds drawing random numbers nobody reads)."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, _keep)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def _keep(tensor, *args, **kwargs):
    return tensor


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise RflensError(f"the {name} zoo needs {name}, which cannot be imported ({exc}); "
                          f"pip install {name}") from exc
