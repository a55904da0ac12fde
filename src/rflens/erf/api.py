"""Gradient effective receptive fields (Luo et al., NIPS 2016; Ding et al., CVPR 2022).

The ERF of a unit is the map ``|dy/dx|`` of how much each input pixel influences it (see
docs/receptive-fields.md, "Effective receptive field"). rflens computes, per input sample ``x``:

1. the chosen layer's output ``y`` (the forward stops at that layer);
2. the scalar ``s = sum_c y[c, unit]`` (``readout="sum"``, Luo: output gradient 1 at the unit, 0
   elsewhere) or ``sum_c relu(y[c, unit])`` (``readout="relu"``, RepLKNet's code);
3. ``g = ds/dx`` for every sample of a batch in one backward pass;
4. ``sum over input channels`` of ``|g|`` (``reduce="abs"``), ``relu(g)`` (``"relu"``, RepLKNet)
   or ``g**2`` (``"square"``), in float64;

and averages step 4 over the samples: that mean is ``ERFResult.raw`` (float64, input pixels).

Conventions: the *centre unit* is index ``n // 2`` on each spatial axis of the layer output (for even
``n`` the second of the two middle units, as RepLKNet's ``out_size // 2``). Coordinates are 0-based
input pixels. The layer is a row name as ``rflens trf`` prints it (a ``named_modules()`` path, with
``#k`` for its k-th call and ``[key]`` for one of several outputs; ``output`` or None for the model
itself; see :class:`rflens.trf.LayerRef`). The model is evaluated in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rflens.errors import RflensError
from rflens.erf.inputs import resolve_inputs
from rflens.erf.probe import _Probe
from rflens.erf.result import ERFResult, TRFInfo, build_result
from rflens.erf.run import _run
from rflens.erf.settings import _resolve_dtype, _resolve_model, _settings, resolve_input_shape
from rflens.trf import LayerRef, receptive_field

__all__ = ["effective_receptive_field", "trf_of_unit"]


# --- TRF of the probed unit -------------------------------------------------------------------------

def trf_of_unit(model: nn.Module, input_shape: tuple[int, ...], layer: str | None,
                unit: tuple[int, ...]) -> tuple[TRFInfo | None, str | None]:
    """Ask the TRF engine for the probed unit's field.

    Returns ``(info, None)``, or ``(None, reason)`` when the engine cannot give it; the ERF is still
    measured, only TRF-relative numbers become NaN."""
    try:
        first = next((p for p in model.parameters() if p.is_floating_point()), None)
        dtype = first.dtype if first is not None else torch.float32
        rf = receptive_field(model, example_inputs=torch.empty((1, *input_shape), dtype=dtype,
                                                               device="meta"))
        name = LayerRef.parse(layer, model).name
        if name not in rf:
            return None, f"the TRF engine has no layer '{name}'; TRF-relative metrics are NaN"
        field_ = rf[name]
        if not field_.known:
            return None, f"the TRF engine does not know the field of '{name}'; TRF-relative metrics are NaN"
        box = field_.box(tuple(unit), clip=False)
        if box is None:
            return None, f"unit {tuple(unit)} of '{name}' reads no input pixel; TRF-relative metrics are NaN"
        return TRFInfo(box=box, size=tuple(hi - lo + 1 for lo, hi in box),
                       center=tuple((lo + hi) / 2 for lo, hi in box),
                       jump=tuple(float(j) for j in field_.jump), is_global=field_.is_global), None
    except Exception as exc:  # the ERF does not depend on the TRF engine succeeding
        return None, f"TRF engine failed ({type(exc).__name__}: {str(exc)[:160]}); TRF-relative metrics are NaN"


def effective_receptive_field(model: nn.Module | str, layer: str | None = None,
                              input_shape: tuple[int, ...] | str | None = None, *,
                              inputs: Any = None, samples: int | None = None,
                              batch_size: int | None = None, weights: str | None = None,
                              activations: str | None = None, reduce: str | None = None,
                              readout: str | None = None, unit: Any = "center", dtype: Any = None,
                              seed: int = 0, progress: bool = True, device: Any = None,
                              preset: str | None = None, nonfinite: str = "raise",
                              max_memory: int | None = None) -> ERFResult:
    """Measure the gradient ERF of one unit of ``layer`` (see the module docstring for the procedure).

    - ``model``: an ``nn.Module`` or a MODEL string (``torchvision:NAME``, ``timm:NAME``,
      ``file.py:factory``, a spec file). ``layer``: a module name (None: the model output).
    - ``input_shape``: ``(C, *spatial)`` in pixels or ``"3x224x224"``; default the model's own.
    - ``inputs``: ``"noise"`` (default), ``"samples"``, a folder, a tensor or an iterable
      (:mod:`rflens.erf.inputs`). ``samples`` (default 64) are averaged; ``batch_size`` (default 16) is
      the most samples per backward pass (fewer when the memory budget ``max_memory`` in bytes,
      default 30 % of free RAM up to 8 GiB or half of free GPU memory, says so).
    - ``weights``: ``"as-is"``, ``"random"`` (a fresh draw of PyTorch's default initialisation per
      sample, Luo's random-weight setting), ``"uniform"`` (:func:`uniformize`) or a state-dict file
      (loaded with ``weights_only=True``). ``activations``: ``"as-is"`` or ``"linear"``
      (:class:`_LinearMode`). ``reduce`` / ``readout``: see the module docstring.
    - ``unit``: ``"center"`` (index ``n // 2`` per axis) or a tuple of output indices.
    - ``dtype``: None/"auto" (float64 for uniform or linear runs; float32 otherwise, switching to
      float64 when gradients near float32 underflow), or a torch dtype / its name.
    - ``preset``: ``"luo2016"`` or ``"replknet2022"`` (:data:`PRESETS`); explicit arguments win.
    - ``nonfinite``: ``"raise"`` (default) or ``"skip"`` samples whose gradient has NaN/Inf; skipped
      samples are counted in the result and a warning, never averaged in.
    """
    settings = _settings(preset, {"inputs": inputs, "samples": samples, "batch_size": batch_size,
                                  "weights": weights, "activations": activations, "reduce": reduce,
                                  "readout": readout, "input_shape": input_shape})
    if nonfinite not in ("raise", "skip"):
        raise RflensError(f"nonfinite={nonfinite!r} is not one of raise, skip")
    net, meta, name = _resolve_model(model)
    shape = resolve_input_shape(settings.input_shape, meta, name)
    LayerRef.parse(layer, net)
    source = resolve_inputs(settings.inputs, shape, seed)
    notes: list[str] = []
    count = settings.samples
    if source.count is not None and source.count < count:
        if samples is not None or preset is not None:
            notes.append(f"asked for {count} samples but the inputs ({source.description}) hold "
                         f"{source.count}; used {source.count} (pass a folder with more images)")
        count = source.count
    dev = torch.device(device) if device is not None else _model_device(net)
    probe = _Probe(net, layer, settings, _resolve_dtype(dtype, settings), dev, seed, unit)
    try:
        acc = _run(probe, source, shape, count, settings.batch_size, progress, nonfinite, max_memory)
    finally:
        probe.restore()
    if acc.used + acc.skipped == 0:
        raise RflensError(f"the inputs ({source.description}) gave no samples")
    if acc.used == 0:
        raise RflensError(f"no usable samples: all {acc.skipped} gave NaN/Inf gradients")
    raw = acc.total / acc.used
    if acc.exhausted and samples is not None and acc.used + acc.skipped < samples:
        notes.append(f"asked for {samples} samples but the inputs ran out after "
                     f"{acc.used + acc.skipped}")
    notes += probe.notes
    if acc.skipped:
        notes.append(f"left out {acc.skipped} sample(s) with NaN/Inf gradients "
                     f"(first: sample {acc.bad_indices[0]})")
    if acc.zero:
        notes.append(f"{acc.zero} sample(s) had an all-zero gradient (dead unit for that input?)")
    trf, why = trf_of_unit(net, shape, layer, probe.unit)
    if why:
        notes.append(why)
    used_settings = {"inputs": source.description, "weights": settings.weights,
                     "activations": settings.activations, "reduce": settings.reduce,
                     "readout": settings.readout, "batch_size": settings.batch_size,
                     "largest_pass": acc.largest_pass,
                     "dtype": str(probe.dtype).removeprefix("torch."), "seed": seed,
                     "preset": preset, "device": str(dev)}
    return build_result(raw, model=name, layer=layer, input_shape=shape,
                        output_shape=probe.output_shape, unit=probe.unit, samples=acc.used,
                        method="gradient", settings=used_settings, trf=trf, notes=notes,
                        samples_zero=acc.zero, samples_skipped=acc.skipped)


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
