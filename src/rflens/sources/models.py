"""Resolving the CLI's MODEL argument and ``--input`` shapes.

MODEL forms:

- ``torchvision:NAME``: any builder in ``torchvision.models.list_models()`` (classification,
  segmentation, detection, video, optical flow, quantized), built with ``weights=None`` and, where the
  builder takes one, ``weights_backbone=None``: no weights are ever downloaded.
  ``torchvision:NAME@WEIGHTS`` (``resnet50@IMAGENET1K_V2``, ``resnet50@DEFAULT``): those trained
  weights, read from the torch hub cache (see :mod:`rflens.sources.weights`; never downloaded).
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False)`` (needs ``pip install rflens[timm]``);
  ``timm:NAME@TAG`` (``resnet50@a1_in1k``, ``resnet50@DEFAULT``): the tag's pretrained weights from
  the Hugging Face hub cache or the torch hub cache.
- ``path/to/file.py:factory``: imports ``file.py`` and calls ``factory()``, which must return an
  ``nn.Module``. This RUNS that file's code, with the file's folder on ``sys.path`` while it is
  imported: only point it at files you trust.
- ``path/to/spec.yaml`` / ``.yml`` / ``.json``: a layer spec file (see :mod:`rflens.sources.spec`).
- ``path/to/model.onnx``: an ONNX graph, converted to PyTorch (see :mod:`rflens.sources.onnx`; needs
  ``pip install rflens[onnx]``). Its rows are named after the ONNX nodes.

``load_model(..., weights=FILE)`` then loads a state dict or ``.safetensors`` file into the model.

Shapes are ``(C, *spatial)`` without the batch axis, in pixels (frames for the time axis of video).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from rflens.errors import RflensError
from rflens.sources.spec import SPEC_SUFFIXES, build_spec, load_spec, read_spec, spec_name

DEFAULT_SHAPE = (3, 224, 224)
VIDEO_FRAMES = 16
_SHAPE_FORMS = "C x spatial sizes, e.g. 3x224x224 (2-D), 1x64 (1-D) or 1x16x32x32 (3-D)"
_MODEL_FORMS = ("torchvision:NAME[@WEIGHTS], timm:NAME[@TAG], path/to/file.py:factory, a spec file "
                "(.yaml, .yml, .json) or an ONNX file (.onnx)")
UNTRAINED = "untrained (the library's default initialisation)"


def load_model(spec: str, weights: str | None = None) -> tuple[nn.Module, dict]:
    """Resolve a MODEL argument (see the module docstring) to ``(model, metadata)``.

    ``metadata`` is ``{"source": "torchvision"|"timm"|"file"|"spec"|"onnx", "name": str,
    "input_shape": tuple | None, "weights": str}``: ``input_shape`` is the shape the model itself
    declares (a spec file's ``input``, timm's ``pretrained_cfg["input_size"]``, an ONNX graph's
    static input), else None; see :func:`default_input_shape` for a fallback. ``weights`` says in
    words which weights the model holds (untrained, a pretrained tag and its file, a state-dict
    file, the ONNX initializers); a report shows it. ``weights``: a state-dict or ``.safetensors``
    file loaded into the model (strictly). A ``file.py:factory`` spec RUNS that file.
    """
    text = spec.strip() if isinstance(spec, str) else ""
    if not text:
        raise RflensError(f"empty MODEL; give one of {_MODEL_FORMS}")
    model, meta = _load(text)
    if weights is not None:
        from rflens.sources.weights import load_weights_file

        if meta["source"] == "onnx":
            raise RflensError(f"--weights does not apply to ONNX models: {text} carries its own "
                              "weights (its initializers); export the model again with the weights")
        meta["weights"] = load_weights_file(model, str(weights))
        meta["weights_file"] = str(Path(weights).resolve())
    return model, meta


def _load(text: str) -> tuple[nn.Module, dict]:
    suffix = Path(text).suffix.lower()
    if suffix in SPEC_SUFFIXES:
        return _load_spec_file(text)
    if suffix == ".onnx":
        from rflens.sources.onnx import load_onnx

        return load_onnx(text)
    prefix, _, rest = text.partition(":")
    if prefix.lower() == "torchvision":
        return _load_torchvision(rest.strip())
    if prefix.lower() == "timm":
        return _load_timm(rest.strip())
    path, _, factory = text.rpartition(":")
    if path.endswith(".py"):
        return _load_factory(path, factory.strip())
    raise RflensError(_unknown_model_message(text))


def check_input_shape(meta: dict, shape: tuple[int, ...]) -> None:
    """Refuse an input shape ``(C, *spatial)`` that contradicts the sizes the model fixes (an ONNX
    graph's static channel and spatial sizes, ``meta["input_dims"]``, None where dynamic)."""
    dims = meta.get("input_dims")
    if not dims:
        return
    if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)):
        want = "x".join("?" if d is None else str(d) for d in dims)
        raise RflensError(f"{meta.get('name', 'the model')} takes inputs of shape {want} (C x spatial, "
                          f"? = any size); --input {'x'.join(map(str, shape))} does not fit")


def parse_input(text: str) -> tuple[int, ...]:
    """Parse an ``--input`` shape: ``C`` then 1 to 3 spatial sizes, separated by ``x`` or ``,``
    (``3x224x224``, ``3,224,224``, ``1x64``, ``1x16x32x32``; spaces and brackets are ignored).
    Returns ``(C, *spatial)`` without the batch axis; every size must be a positive integer."""
    raw = text if isinstance(text, str) else ""
    body = raw.strip().strip("()[]").strip()
    parts = [p.strip() for p in re.split(r"[xX,]", body)] if body else []
    if not parts:
        raise RflensError(f"empty --input; expected {_SHAPE_FORMS}")
    if not all(re.fullmatch(r"[+]?\d+", p) for p in parts):
        raise RflensError(f"bad --input '{raw}': sizes must be positive integers; "
                          f"expected {_SHAPE_FORMS}")
    sizes = tuple(int(p) for p in parts)
    if any(s <= 0 for s in sizes):
        raise RflensError(f"bad --input '{raw}': sizes must be positive (no zeros); "
                          f"expected {_SHAPE_FORMS}")
    if not 2 <= len(sizes) <= 4:
        raise RflensError(f"bad --input '{raw}': {len(sizes)} size(s), need a channel count and 1 to 3 "
                          f"spatial sizes; expected {_SHAPE_FORMS}")
    return sizes


def default_input_shape(model_name: str) -> tuple[int, ...]:
    """A sensible input shape ``(C, *spatial)`` for a model, in pixels (and frames).

    ``model_name`` is a MODEL argument or a bare torchvision name. Spec files give their own
    ``input``, ONNX files their graph input (an error names the dynamic sizes to give with
    ``--input``); timm models their ``pretrained_cfg`` input size; ``inception_v3`` 3x299x299; torchvision
    video models 3x16xSxS with S the crop size of their reference weights (112, or 224 for
    s3d/mvit/swin3d, which need it); everything else 3x224x224. Reads no weights.
    """
    text = model_name.strip()
    if Path(text).suffix.lower() in SPEC_SUFFIXES:
        return load_spec(text)[1]
    if Path(text).suffix.lower() == ".onnx":
        from rflens.sources.onnx import declared_input_shape

        return declared_input_shape(text)
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() == "timm":
        return _timm_default_shape(rest.split("@")[0].strip())
    name = (rest if sep and prefix.lower() == "torchvision" else text).split("@")[0].strip().lower()
    if name in ("inception_v3", "quantized_inception_v3"):
        return (3, 299, 299)
    if name in _torchvision_video_models():
        size = _video_crop_size(name)
        return (3, VIDEO_FRAMES, size, size)
    return DEFAULT_SHAPE


def _load_spec_file(path: str) -> tuple[nn.Module, dict]:
    data = read_spec(path)
    model, shape = build_spec(data, source=path)
    return model, _meta("spec", spec_name(data, path), shape)


def _load_torchvision(name: str) -> tuple[nn.Module, dict]:
    from torchvision import models

    from rflens.sources.weights import split_tag, torchvision_pretrained

    name, tag = split_tag(name)
    available = models.list_models()
    if not name:
        raise RflensError("torchvision: needs a model name, e.g. torchvision:resnet18")
    key = name.lower()
    if key not in available:
        raise RflensError(f"unknown torchvision model '{name}'{_suggest(key, available)}; "
                          "list them with torchvision.models.list_models()")
    builder = models.get_model_builder(key)
    with warnings.catch_warnings():  # googlenet/inception_v3 warn about a future init change
        warnings.filterwarnings("ignore", "The default weight initialization", FutureWarning)
        if tag is not None:
            model, weights_name, described = torchvision_pretrained(key, tag, builder)
            return model, _meta("torchvision", f"{key}@{weights_name}", None, described)
        kwargs: dict[str, Any] = {"weights": None}
        if "weights_backbone" in inspect.signature(builder).parameters:
            kwargs["weights_backbone"] = None
        model = _call(lambda: builder(**kwargs), f"building torchvision:{key}")
    return model, _meta("torchvision", key, None)


def _load_timm(name: str) -> tuple[nn.Module, dict]:
    from rflens.sources.weights import split_tag, timm_pretrained

    timm = _import_timm()
    name, tag = split_tag(name)
    if not name:
        raise RflensError("timm: needs a model name, e.g. timm:resnet50")
    if not timm.is_model(name):
        raise RflensError(f"unknown timm model '{name}'{_suggest(name, timm.list_models())}; "
                          "list them with timm.list_models('*pattern*')")
    if tag is not None:
        model, label, described = timm_pretrained(timm, name, tag)
    else:
        model = _call(lambda: timm.create_model(name, pretrained=False), f"building timm:{name}")
        described, label = None, name
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    return model, _meta("timm", label, tuple(size) if size else None, described)


def _import_timm() -> Any:
    try:
        return importlib.import_module("timm")
    except ModuleNotFoundError as exc:
        if exc.name != "timm":
            raise RflensError(f"timm is installed but cannot be imported ({_one_line(exc)}); "
                              "reinstall it with pip install -U timm") from exc
        raise RflensError("timm models need timm, which is not installed; run pip install timm "
                          "(or pip install rflens[timm])") from exc
    except ImportError as exc:
        raise RflensError(f"timm is installed but cannot be imported ({_one_line(exc)}); "
                          "reinstall it with pip install -U timm") from exc


def _timm_default_shape(name: str) -> tuple[int, ...]:
    try:
        timm = importlib.import_module("timm")
        cfg = timm.get_pretrained_cfg(name)
    except Exception:  # timm missing or unknown name: load_model reports those
        return DEFAULT_SHAPE
    size = getattr(cfg, "input_size", None)
    return tuple(size) if size else DEFAULT_SHAPE


def _load_factory(path: str, factory: str) -> tuple[nn.Module, dict]:
    """Import ``path`` (RUNNING its code) and call its ``factory()``; check it returns a module."""
    label = f"{path}:{factory}"
    if not factory:
        raise RflensError(f"{path}: name the factory after a colon, e.g. {path}:make_model")
    if not factory.isidentifier():
        raise RflensError(f"{label}: '{factory}' is not a Python name; expected {path}:function_name")
    module = _import_file(Path(path))
    if not hasattr(module, factory):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise RflensError(f"{path} has no attribute '{factory}'{_suggest(factory, names)}; "
                          f"callables defined there: {', '.join(names) or 'none'}")
    target = getattr(module, factory)
    if not callable(target):
        raise RflensError(f"{label} is not callable (type {type(target).__name__}); point at a "
                          "function or class that returns an nn.Module")
    model = _call(target, f"{label}() (called with no arguments)")
    if not isinstance(model, nn.Module):
        raise RflensError(f"{label}() returned {type(model).__name__}, expected a torch.nn.Module; "
                          "make the factory return the model")
    return model, _meta("file", label, None, f"as {label}() builds them")


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise RflensError(f"{path}: model file not found; check the path (cwd is {Path.cwd()})")
    resolved = path.resolve()
    stem = re.sub(r"\W", "_", resolved.stem)
    module_name = f"rflens_user_{stem}_{abs(hash(str(resolved))):x}"
    loader_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if loader_spec is None or loader_spec.loader is None:
        raise RflensError(f"{path}: cannot be imported as a Python module; check it is a .py file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(resolved.parent))
    try:
        loader_spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise RflensError(f"{path}: syntax error at line {exc.lineno}: {exc.msg}; "
                          "fix the file") from exc
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise RflensError(f"{path}: running the file failed with {type(exc).__name__}: "
                          f"{_one_line(exc)}; fix the file (it is executed to load the model)") from exc
    finally:
        _remove_first(sys.path, str(resolved.parent))
    return module


def _call(fn: Any, what: str) -> Any:
    try:
        return fn()
    except RflensError:
        raise
    except (Exception, SystemExit) as exc:
        raise RflensError(f"{what} raised {type(exc).__name__}: {_one_line(exc)}; "
                          "fix the model code or pick another model") from exc


def _unknown_model_message(text: str) -> str:
    hint = ""
    if text.endswith(".py"):
        hint = f" (add the factory: {text}:make_model)"
    elif re.fullmatch(r"[\w.\-]+", text):
        from torchvision import models

        if text.lower() in models.list_models():
            hint = f" (did you mean 'torchvision:{text.lower()}'?)"
    return f"unrecognised MODEL '{text}'{hint}; expected {_MODEL_FORMS}"


def _torchvision_video_models() -> list[str]:
    from torchvision import models

    return models.list_models(module=models.video)


def _video_crop_size(name: str) -> int:
    from torchvision import models

    try:
        crop = models.get_model_weights(name).DEFAULT.transforms.keywords["crop_size"]
    except (AttributeError, KeyError, ValueError):
        return 112
    return int(crop[0] if isinstance(crop, (tuple, list)) else crop)


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name.lower(), choices, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _meta(source: str, name: str, shape: tuple[int, ...] | None, weights: str | None = None) -> dict:
    return {"source": source, "name": name, "input_shape": shape, "weights": weights or UNTRAINED}


def _remove_first(items: list, value: Any) -> None:
    if value in items:
        items.remove(value)


def _one_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 300 else text[:297] + "..."


__all__ = ["DEFAULT_SHAPE", "default_input_shape", "load_model", "parse_input", "check_input_shape"]
