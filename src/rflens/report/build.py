"""Building a report: the TRF analysis, the ERF layers chosen and measured, the HTML written."""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from rflens.errors import RflensError
from rflens.erf import effective_receptive_field
from rflens.report.html import ERFEntry, render_html
from rflens.report.images import picture
from rflens.trf import LayerRef, receptive_field

ERF_SAMPLES = 16
AUTO_ERF_LAYERS = 3


# --- choosing and computing ERFs -------------------------------------------------------------------

def auto_erf_layers(rf: Any, model: Any, count: int = AUTO_ERF_LAYERS) -> list[str]:
    """The default ERF layers: the last ``count`` top-level modules (children of the model, in
    execution order) whose output still has a spatial grid (more than one unit on some axis) and
    a known, local field no larger than the input. For resnet18 at 224×224: layer1, layer2, layer3."""
    children = {name for name, _ in model.named_children()}
    picked = [layer.name for layer in rf.layers
              if layer.name in children and layer.known and not layer.is_global
              and not layer.exceeds_input and max(layer.grid, default=0) > 1]
    return picked[-count:] if count > 0 else []


def compute_erfs(model: Any, input_shape: Sequence[int], layers: Sequence[str], *,
                 samples: int = ERF_SAMPLES, inputs: Any = "noise", seed: int = 0,
                 name: str | None = None, log: Callable[[str], None] | None = None) -> list[ERFEntry]:
    """Gradient ERFs (``rflens.effective_receptive_field``, centre unit) of ``layers``, each with
    ``samples`` inputs. A layer that fails with a :class:`RflensError` becomes an entry with its
    error instead of stopping the report; the ERF's warnings are kept in the entry. ``name``
    replaces the results' model label (otherwise the module's class name)."""
    label = name
    entries = []
    for layer in layers:
        start = time.perf_counter()
        if log:
            log(f"ERF of {layer} ({samples} samples)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = effective_receptive_field(model, layer, tuple(input_shape), samples=samples,
                                                   inputs=inputs, seed=seed, progress=False)
                if label:
                    result = dataclasses.replace(result, model=label)
                entry = ERFEntry(layer, result=result)
            except RflensError as exc:
                entry = ERFEntry(layer, error=str(exc))
        entry.seconds = time.perf_counter() - start
        known = set(entry.result.warnings) if entry.result is not None else set()
        entry.notes = [str(w.message) for w in caught if str(w.message) not in known]
        entries.append(entry)
    return entries


def check_layers(model: Any, layers: Sequence[str]) -> None:
    """Raise a one-line :class:`RflensError` (with close names) for a layer the model lacks."""
    for name in layers:
        LayerRef.parse(name, model)


def build_report(model: Any, input_shape: Sequence[int] | None = None, *, name: str | None = None,
                 erf_layers: Sequence[str] | str | None = "auto", samples: int = ERF_SAMPLES,
                 inputs: Any = "noise", seed: int = 0, image: Any = None, explorer: bool = True,
                 weights: str | None = None, log: Callable[[str], None] | None = None) -> str:
    """Analyse ``model`` and return the report's HTML.

    ``input_shape``: ``(C, *spatial)`` without batch (default ``(3, 224, 224)``). ``erf_layers``:
    module names, ``"auto"`` (:func:`auto_erf_layers`) or ``None``/``[]`` for no ERF section.
    ERFs use ``samples`` inputs of ``inputs`` (default standard Gaussian noise), the model's own
    weights, ``|gradient|`` summed over channels, at each layer's centre unit; the report says so.
    ``image``: the picture under the explorer (a file path, an array or a tensor; see
    :func:`rflens.report.images.picture`); default scikit-image's bundled photo (1 or 3 channels,
    2-D) or a grid. ``explorer=False`` leaves the interactive section out. ``weights``: which
    weights the model carries, as the report should state it (``rflens.load_model`` gives it as
    ``meta["weights"]``); default "the model's own weights (as passed)".
    """
    shape = tuple(input_shape) if input_shape is not None else (3, 224, 224)
    pic = picture(shape, image) if explorer else None  # a bad --image fails before any work
    label = name or type(model).__name__
    rf = receptive_field(model, shape, name=label)
    if erf_layers == "auto":
        layers = auto_erf_layers(rf, model)
    else:
        layers = list(erf_layers or [])
        check_layers(model, layers)
    entries = compute_erfs(model, shape, layers, samples=samples, inputs=inputs, seed=seed, name=label,
                           log=log)
    params = sum(p.numel() for p in model.parameters())
    return render_html(rf, entries, samples=samples, parameters=params, image=pic, explorer=explorer,
                       weights=weights or "the model's own weights (as passed)",
                       erf_choice="chosen automatically (the last top-level stages whose field fits "
                                  "the input)" if erf_layers == "auto" else "chosen by the user")


def write_report(path: str | Path, text: str) -> Path:
    """Write the HTML ``text`` to ``path`` (parent folders created); returns the absolute path."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise RflensError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target.resolve()

