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

import os
from typing import Any

import torch
from torch import nn

from rflens.errors import RflensError
from rflens.erf.datasets import resolve_source
from rflens.erf.distributed import from_environment
from rflens.erf.probe import _Probe
from rflens.erf.result import ERFResult, TRFInfo, build_result
from rflens.erf.run import RunOptions, _run
from rflens.erf.settings import _resolve_dtype, _resolve_model, _settings, resolve_input_shape
from rflens.trf import LayerRef, receptive_field

__all__ = ["effective_receptive_field", "effective_receptive_fields", "trf_of_unit"]


# --- TRF of the probed unit -------------------------------------------------------------------------

def _engine(model: nn.Module, input_shape: tuple[int, ...], cache: dict | None):
    """The TRF engine's result for the model at this input (kept in ``cache``)."""
    if cache is not None and "rf" in cache:
        return cache["rf"]
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = first.dtype if first is not None else torch.float32
    rf = receptive_field(model, example_inputs=torch.empty((1, *input_shape), dtype=dtype, device="meta"))
    if cache is not None:
        cache["rf"] = rf
    return rf


def _engine_row(model: nn.Module, input_shape: tuple[int, ...], layer: str | None, cache: dict):
    """The engine's row of ``layer`` (its layout tells where a grid unit sits), or None."""
    try:
        rf = _engine(model, input_shape, cache)
        name = LayerRef.parse(layer, model).name
        return rf[name] if name in rf else None
    except Exception:  # noqa: BLE001 - the ERF then reads the layer as (B, C, *spatial)
        return None


def trf_of_unit(model: nn.Module, input_shape: tuple[int, ...], layer: str | None,
                unit: tuple[int, ...], cache: dict | None = None) -> tuple[TRFInfo | None, str | None]:
    """Ask the TRF engine for the probed unit's field (``cache``: a dict that keeps the engine's
    result between calls for the same model and input).

    Returns ``(info, None)``, or ``(None, reason)`` when the engine cannot give it; the ERF is still
    measured, only TRF-relative numbers become NaN."""
    if isinstance(unit, str):
        return None, f"unit {unit} is an extra token, no grid position; TRF-relative metrics are NaN"
    try:
        rf = _engine(model, input_shape, cache)
        name = LayerRef.parse(layer, model).name
        if name not in rf:
            return None, f"the TRF engine has no layer '{name}'; TRF-relative metrics are NaN"
        field_ = rf[name]
        if not field_.known:
            return None, f"the TRF engine does not know the field of '{name}'; TRF-relative metrics are NaN"
        box = field_.box(tuple(unit), clip=False)
        if field_.is_global:  # the unit depends on a whole axis: its field is the exact hull of it
            box = field_.box(tuple(unit), clip=True)
        if box is None:
            return None, f"unit {tuple(unit)} of '{name}' reads no input pixel; TRF-relative metrics are NaN"
        return TRFInfo(box=box, size=tuple(hi - lo + 1 for lo, hi in box),
                       center=tuple((lo + hi) / 2 for lo, hi in box),
                       jump=tuple(float(j) if j is not None else float('nan') for j in field_.jump), is_global=field_.is_global), None
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
                              max_memory: int | None = None, workers: int | None = None,
                              checkpoint: str | os.PathLike | None = None,
                              checkpoint_every: int = 256, transform: Any = None,
                              mean: Any = None, std: Any = None,
                              loader_workers: int | None = None) -> ERFResult:
    """Measure the gradient ERF of one unit of ``layer`` (see the module docstring for the procedure).

    - ``model``: an ``nn.Module`` or a MODEL string (``torchvision:NAME``, ``timm:NAME``,
      ``file.py:factory``, a spec file). ``layer``: a module name (None: the model output).
    - ``input_shape``: ``(C, *spatial)`` in pixels or ``"3x224x224"``; default the model's own.
    - ``inputs``: ``"noise"`` (default), ``"samples"``, a folder (flat or a class tree), a tensor or
      an iterable (:mod:`rflens.erf.datasets`, :mod:`rflens.erf.inputs`). ``transform`` (images):
      ``"auto"`` (the model's own timm preprocessing, else resize + centre crop), ``"timm"``,
      ``"resize-crop"``, ``"resize"`` or a callable on a PIL image; ``mean`` / ``std`` override the
      normalisation; ``loader_workers`` DataLoader processes read images (default 2; 0: none).
    - ``samples`` (default 64) are averaged; ``batch_size`` (default 16) is the most samples per
      backward pass (fewer when the memory budget ``max_memory`` in bytes, default 30 % of free RAM
      up to 8 GiB shared by the processes of a machine, or half of free GPU memory, says so).
    - ``weights``: ``"as-is"``, ``"random"`` (a fresh draw of PyTorch's default initialisation per
      sample, seeded by the sample's index: Luo's random-weight setting), ``"uniform"``
      (:func:`uniformize`) or a state-dict file (loaded with ``weights_only=True``). ``activations``:
      ``"as-is"`` or ``"linear"`` (:class:`_LinearMode`). ``reduce`` / ``readout``: the module docstring.
    - ``unit``: ``"center"`` (index ``n // 2`` per axis) or a tuple of output indices.
    - ``dtype``: None/"auto" (float64 for uniform or linear runs; float32 otherwise, the whole run
      redone in float64 when gradients come near float32 underflow), or a torch dtype / its name.
    - ``preset``: ``"luo2016"``, ``"replknet2022"`` or ``"openerf"`` (:data:`PRESETS`); explicit
      arguments win.
    - ``nonfinite``: ``"raise"`` (default) or ``"skip"`` samples whose gradient has NaN/Inf; skipped
      samples are counted in the result and a warning, never averaged in.
    - ``workers``: run on that many processes (:mod:`rflens.erf.distributed`; also picked up from
      ``torchrun``'s environment); ``device="cuda"`` puts rank ``r`` on ``cuda:LOCAL_RANK``.
    - ``checkpoint``: a ``.npz`` file for the partial sums, written every ``checkpoint_every``
      samples; a rerun with the same file continues (:mod:`rflens.erf.checkpoint`).
    """
    results = effective_receptive_fields(
        model, [layer], input_shape, units=[unit], inputs=inputs, samples=samples,
        batch_size=batch_size, weights=weights, activations=activations, reduce=reduce,
        readout=readout, dtype=dtype, seed=seed, progress=progress, device=device, preset=preset,
        nonfinite=nonfinite, max_memory=max_memory, workers=workers, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, transform=transform, mean=mean, std=std,
        loader_workers=loader_workers)
    return results[0]


def effective_receptive_fields(model: nn.Module | str, layers: list[str | None],
                               input_shape: tuple[int, ...] | str | None = None, *,
                               units: list[Any] | Any = "center", workers: int | None = None,
                               **options: Any) -> list[ERFResult]:
    """The ERFs of several units and layers measured together: every sample runs forward once, to
    the deepest of ``layers``, and backward once per (layer, unit) target, so a grid of units or
    every stage's centre unit costs one forward pass per sample instead of one per target. The
    memory budget counts the deepest layer's saved activations plus each target's gradient.

    ``units``: one spec or a list of specs applied to every layer: ``"center"``, indices, or
    ``"grid:G"`` / ``"grid:GxH"`` (the centre unit of each of G (H) equal bands per axis). Returns
    one :class:`ERFResult` per target, layer-major (every unit of ``layers[0]``, then ...). Other
    keyword arguments: :func:`effective_receptive_field`.
    """
    if not isinstance(layers, (list, tuple)) or not layers:
        raise RflensError("layers must be a non-empty list of layer names")
    unit_list = list(units) if isinstance(units, list) and _several(units) else [units]
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise RflensError(f"workers must be a positive integer, not {workers!r}")
    if workers and workers > 1 and not _in_process_group():
        return _spawned(model, list(layers), input_shape, unit_list, workers, options)
    return _measure(model, list(layers), input_shape, unit_list, workers, **options)


def _several(units: list) -> bool:
    return any(not isinstance(u, int) for u in units)


def _in_process_group() -> bool:
    import torch.distributed as dist

    return (dist.is_available() and dist.is_initialized()) or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _spawned(model: Any, layers: list, input_shape: Any, units: list, workers: int,
             options: dict) -> list[ERFResult]:
    """Run :func:`_measure` on ``workers`` new processes and give back rank 0's results, their
    notes re-emitted here as warnings."""
    from rflens.erf.distributed import spawn

    if isinstance(model, nn.Module):
        _check_picklable(model)
    return spawn(workers, _rank_job, (model, layers, input_shape, units, workers, options))


def _check_picklable(model: nn.Module) -> None:
    import pickle

    try:
        pickle.dumps(type(model))
    except Exception as exc:
        raise RflensError(f"workers > 1 sends the model to new processes, but its class "
                          f"{type(model).__qualname__} cannot be pickled ({type(exc).__name__}); "
                          "define it at module level in an importable file, or pass a MODEL string") from exc


def _rank_job(model: Any, layers: list, input_shape: Any, units: list, workers: int,
              options: dict) -> list[ERFResult]:
    import warnings

    if os.environ.get("RANK") == "0":  # the caller's own process: its warnings are the run's
        return _measure(model, layers, input_shape, units, workers, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _measure(model, layers, input_shape, units, workers, report=False, **options)


def _measure(model: Any, layers: list, input_shape: Any, units: list, workers: int | None, *,
             inputs: Any = None, samples: int | None = None, batch_size: int | None = None,
             weights: str | None = None, activations: str | None = None, reduce: str | None = None,
             readout: str | None = None, dtype: Any = None, seed: int = 0, progress: bool = True,
             device: Any = None, preset: str | None = None, nonfinite: str = "raise",
             max_memory: int | None = None, checkpoint: Any = None, checkpoint_every: int = 256,
             transform: Any = None, mean: Any = None, std: Any = None,
             loader_workers: int | None = None, model_seed: int | None = None,
             report: bool = True) -> list[ERFResult]:
    settings = _settings(preset, {"inputs": inputs, "samples": samples, "batch_size": batch_size,
                                  "weights": weights, "activations": activations, "reduce": reduce,
                                  "readout": readout, "input_shape": input_shape,
                                  "transform": transform})
    if nonfinite not in ("raise", "skip"):
        raise RflensError(f"nonfinite={nonfinite!r} is not one of raise, skip")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise RflensError(f"checkpoint_every must be a positive integer, not {checkpoint_every!r}")
    if model_seed is not None:
        torch.manual_seed(model_seed)  # a MODEL string with random weights draws the same model
    net, meta, name = _resolve_model(model)
    shape = resolve_input_shape(settings.input_shape, meta, name)
    for layer in layers:
        LayerRef.parse(layer, net)
    requested = torch.device(device) if device is not None else _model_device(net)
    if requested.type == "cuda" and not torch.cuda.is_available():
        raise RflensError("device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    comm = from_environment(requested, workers)
    try:
        return _measure_in(net, name, meta, layers, shape, units, settings, comm, requested, dtype,
                           seed, progress, nonfinite, max_memory, checkpoint, checkpoint_every,
                           mean, std, loader_workers, samples, preset, report)
    finally:
        comm.finish()


def _measure_in(net, name, meta, layers, shape, units, settings, comm, requested, dtype, seed,
                progress, nonfinite, max_memory, checkpoint, checkpoint_every, mean, std,
                loader_workers, samples, preset, report=True) -> list[ERFResult]:
    dev = comm.device(requested)
    source = resolve_source(settings.inputs, shape, seed, count=settings.samples, model=net,
                            transform=settings.transform, mean=mean, std=std)
    notes: list[str] = []
    count = settings.samples
    if source.count is not None and source.count < count:
        if samples is not None or preset is not None:
            notes.append(f"asked for {count} samples but the inputs ({source.description}) hold "
                         f"{source.count}; used {source.count} (pass a folder with more images)")
        count = source.count
    # only checkpoints and several processes need to know the weights are the ones expected
    checksum = _weights_checksum(net) if checkpoint or comm.active else None
    _check_same_model(comm, checksum)
    probe = _Probe(net, layers, settings, _resolve_dtype(dtype, settings), dev, seed, units)
    cache: dict = {}
    probe.rows = [_engine_row(net, shape, layer, cache) for layer in layers]
    fingerprint = {"model": name, "weights_checksum": checksum, "layers": layers,
                   "units": [str(u) for u in units], "input_shape": list(shape),
                   "inputs": source.description, "samples": count, "seed": seed,
                   "weights": settings.weights, "activations": settings.activations,
                   "reduce": settings.reduce, "readout": settings.readout,
                   "dtype": str(dtype), "nonfinite": nonfinite}
    options = RunOptions(progress=progress, nonfinite=nonfinite, max_memory=max_memory, comm=comm,
                         checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                         fingerprint=fingerprint,
                         loader_workers=2 if loader_workers is None else int(loader_workers))
    try:
        acc = _run(probe, source, shape, count, settings.batch_size, options)
        if probe.targets is None:  # resumed a finished checkpoint: resolve the units with one pass
            probe.maps(_first_input(source, shape), 0)
    finally:
        probe.restore()
    if not report:  # a helper process of a spawned run: rank 0 reports
        return []
    return [_result(acc, k, probe, source, settings, net, name, shape, layers, notes, samples, seed,
                    preset, dev, comm, cache)
            for k in range(len(probe.targets))]


def _first_input(source, shape):
    dataset = getattr(source, "dataset", None)
    sample = dataset[0] if dataset is not None else next(iter(source.samples(shape)))
    return sample[None]


def _result(acc, k, probe, source, settings, net, name, shape, layers, notes, samples, seed, preset,
            dev, comm, cache) -> ERFResult:
    layer_index, unit = probe.targets[k]
    layer = layers[layer_index]
    used, skipped, zero = int(acc.used[k]), int(acc.skipped[k]), int(acc.zero[k])
    if used + skipped == 0:
        raise RflensError(f"the inputs ({source.description}) gave no samples")
    if used == 0:
        raise RflensError(f"no usable samples: all {skipped} gave NaN/Inf gradients")
    out = list(notes)
    if acc.exhausted and samples is not None and used + skipped < samples:
        out.append(f"asked for {samples} samples but the inputs ran out after {used + skipped}")
    out += probe.notes
    if skipped:
        out.append(f"left out {skipped} sample(s) with NaN/Inf gradients (first: sample {acc.first_bad})")
    if zero:
        out.append(f"{zero} sample(s) had an all-zero gradient (dead unit for that input?)")
    trf, why = trf_of_unit(net, shape, layer, unit, cache)
    if why:
        out.append(why)
    used_settings = {"inputs": source.description, "weights": settings.weights,
                     "activations": settings.activations, "reduce": settings.reduce,
                     "readout": settings.readout, "batch_size": settings.batch_size,
                     "largest_pass": acc.largest_pass,
                     "dtype": str(probe.dtype).removeprefix("torch."), "seed": seed,
                     "preset": preset, "device": str(dev), "processes": comm.world}
    return build_result(acc.total[k] / used, model=name, layer=layer, input_shape=shape,
                        output_shape=probe.output_shapes[layer_index],
                        unit=(unit,) if isinstance(unit, str) else unit, samples=used,
                        method="gradient", settings=used_settings, trf=trf, notes=out,
                        samples_zero=zero, samples_skipped=skipped)


def _weights_checksum(model: nn.Module) -> str:
    """A float64 sum over every floating parameter and buffer (and their count), as text."""
    total, count = 0.0, 0
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point() and t.device.type != "meta":
                total += float(t.detach().sum(dtype=torch.float64))
                count += t.numel()
    return f"{count}:{total:.17g}"


def _check_same_model(comm, checksum: str) -> None:
    """Every process must hold the same weights (a MODEL string drawn without a seed would not)."""
    if not comm.active:
        return
    import numpy as np

    value = float(checksum.split(":")[1])
    low = comm.all_reduce(np.array([value]), "min")[0]
    high = comm.all_reduce(np.array([value]), "max")[0]
    if low != high:
        raise RflensError("the model's weights differ between the processes (a randomly initialised "
                          "model drawn without a fixed seed?); seed the model before building it")


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
