"""Trained weights without a network: ``torchvision:NAME@WEIGHTS``, ``timm:NAME@TAG`` and
``--weights FILE``.

rflens never downloads. A pretrained tag is looked up in the local caches the libraries use:

- torchvision: ``torch.hub.get_dir()/checkpoints/<file name of the weights' URL>`` (the hub
  directory is ``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``). The builder runs with the
  weights enum, so it sets what the weights need (class count, input transform), but the state
  dict is read from that file with ``torch.load(weights_only=True)``.
- timm: the Hugging Face hub cache (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``)
  for the tag's ``hf_hub_id`` (``model.safetensors``, else ``pytorch_model.bin`` or the tag's own
  file name), else the torch hub checkpoints folder for tags with a URL; timm then loads that file
  (its checkpoint filters and head adaptation apply).

When the file is not there the error is immediate and names it and where to put it.
``--weights FILE`` loads a state dict (``torch.load(weights_only=True)``; a ``state_dict`` /
``model`` entry of a checkpoint and ``module.`` prefixes are unwrapped) or a ``.safetensors``
file into any model, strictly: every key must match.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any, Callable
from unittest import mock
from urllib.parse import urlparse

import torch
from torch import nn

from rflens.errors import RflensError


def split_tag(name: str) -> tuple[str, str | None]:
    """``"resnet50@IMAGENET1K_V2"`` -> ``("resnet50", "IMAGENET1K_V2")``; no ``@`` -> tag None."""
    base, sep, tag = name.partition("@")
    if sep and not tag.strip():
        raise RflensError(f"'{name}': name the weights after '@', e.g. resnet50@DEFAULT")
    return base.strip(), (tag.strip() if sep else None)


def hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub`` caches the file of ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def torchvision_pretrained(key: str, tag: str,
                           builder: Callable[..., nn.Module]) -> tuple[nn.Module, str, str]:
    """Build ``torchvision:key`` with its weights ``tag`` read from the hub cache; returns the
    model, the weights' name (``IMAGENET1K_V2``) and a description naming the file."""
    from torchvision import models

    try:
        enum = models.get_model_weights(key)
    except (ValueError, KeyError) as exc:
        raise RflensError(f"torchvision:{key} has no pretrained weights") from exc
    choices = {w.name.upper(): w for w in enum}
    weights = enum.DEFAULT if tag.upper() == "DEFAULT" else choices.get(tag.upper())
    if weights is None:
        listing = ", ".join(choices) + f" (DEFAULT = {enum.DEFAULT.name})"
        raise RflensError(f"torchvision:{key} has no weights '{tag}'; its weights are {listing}")
    path = hub_checkpoint(weights.url)
    label = f"torchvision:{key}@{weights.name}"
    if not path.is_file():
        raise RflensError(f"{label}: weights file not found at {path}; rflens never downloads: put "
                          f"{path.name} (from {weights.url}) there, or set TORCH_HOME to a cache that "
                          "has it")
    state = read_state_dict(path)
    kwargs: dict[str, Any] = {"weights": weights, "progress": False}
    if "Quantized" in type(weights).__name__ and "quantize" in inspect.signature(builder).parameters:
        kwargs["quantize"] = True  # quantized weights fit only the quantized model
    with mock.patch.object(type(weights), "get_state_dict", lambda *_a, **_k: state):
        model = _build(lambda: builder(**kwargs), label)
    return model, weights.name, f"torchvision {type(weights).__name__}.{weights.name} ({path})"


def timm_pretrained(timm: Any, name: str, tag: str) -> tuple[nn.Module, str, str]:
    """Create ``timm:name`` with the pretrained weights of ``tag`` from the local caches; returns
    the model, its full timm name (``resnet50.a1_in1k``) and a description naming the file."""
    full = name if tag.upper() in ("DEFAULT", "PRETRAINED") else f"{name}.{tag}"
    cfg = timm.get_pretrained_cfg(full)
    if cfg is None:
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*") if "." in t]
        known = ", ".join(tags[:12]) + (", ..." if len(tags) > 12 else "") if tags else "none"
        raise RflensError(f"timm:{name} has no pretrained tag '{tag}'; its tags: {known}")
    if getattr(cfg, "tag", None) and full == name:
        full = f"{name}.{cfg.tag}"
    label = f"timm:{full}"
    path = _timm_cached_file(cfg)
    if path is None:
        raise RflensError(f"{label}: pretrained weights not in the local caches; rflens never downloads: "
                          f"{_timm_where(cfg)}, or pass the file with --weights FILE")
    model = _build(lambda: timm.create_model(full, pretrained=True,
                                             pretrained_cfg_overlay={"file": str(path)}), label)
    return model, full, f"timm {full} ({path})"


def _timm_cached_file(cfg: Any) -> Path | None:
    repo = getattr(cfg, "hf_hub_id", None)
    if repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            names = [getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin"]
            for filename in [n for n in names if n]:
                found = try_to_load_from_cache(repo, filename)
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found)
    url = getattr(cfg, "url", None)
    if url and hub_checkpoint(url).is_file():
        return hub_checkpoint(url)
    return None


def _timm_where(cfg: Any) -> str:
    repo, url = getattr(cfg, "hf_hub_id", None), getattr(cfg, "url", None)
    parts = []
    if repo:
        try:
            from huggingface_hub.constants import HF_HUB_CACHE
        except ImportError:
            HF_HUB_CACHE = "~/.cache/huggingface/hub"
        folder = Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        parts.append(f"run 'hf download {repo} model.safetensors' where there is network and copy "
                     f"{folder} to this machine")
    if url:
        parts.append(f"put {hub_checkpoint(url).name} (from {url}) at {hub_checkpoint(url)}")
    return " or ".join(parts) if parts else "this tag names no file"


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (``weights_only=True``),
    unwrapped from ``state_dict``/``model``/``model_state_dict`` entries, ``module.`` removed."""
    path = Path(path)
    if not path.is_file():
        raise RflensError(f"weights file {path} not found; check the path (cwd is {Path.cwd()})")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except ImportError as exc:
        raise RflensError(f"{path}: reading .safetensors needs the safetensors package; run "
                          "pip install safetensors") from exc
    except Exception as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(exc).split()))[:200]  # no terminal colours
        raise RflensError(f"cannot read weights from {path} (read as a .safetensors file or with "
                          f"torch.load(weights_only=True); {type(exc).__name__}: {text}); give a "
                          "state dict saved with torch.save(model.state_dict(), path) or a "
                          ".safetensors file") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise RflensError(f"{path} holds a {type(state).__name__} without tensors, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights_file(model: nn.Module, path: str) -> str:
    """Load ``path`` into ``model`` (in place, strictly); returns a description for metadata."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and isinstance(own[k], torch.Tensor)
              and isinstance(state[k], torch.Tensor) and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            k = shapes[0]
            detail.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the "
                          f"file, {tuple(own[k].shape)} in the model)")
        raise RflensError(f"weights {path} do not fit the model: {'; '.join(detail)}; check that file "
                          "and MODEL match")
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    kind = "safetensors" if str(path).lower().endswith(".safetensors") else "state dict"
    return f"{kind} {Path(path).resolve()} ({len(state)} tensors)"


def _build(fn: Callable[[], nn.Module], label: str) -> nn.Module:
    try:
        return fn()
    except RflensError:
        raise
    except Exception as exc:
        raise RflensError(f"building {label} raised {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:240]}; check that the weights file is "
                          "the one for this model") from exc


__all__ = ["split_tag", "hub_checkpoint", "torchvision_pretrained", "timm_pretrained",
           "read_state_dict", "load_weights_file"]
