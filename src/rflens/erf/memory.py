"""How many samples one backward pass may hold: the memory budget and the bytes autograd saves
per sample (from a shape-only meta forward, or counted on the first real pass)."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.func import functional_call

from rflens.trf.instrument import LayerRef, meta_state, run_to_layer

def memory_budget(device: torch.device, max_memory: int | None = None) -> int:
    """Bytes one backward pass may use: ``max_memory`` if given, else half the free GPU memory or
    30 % of the available RAM (at most 8 GiB)."""
    return _memory_budget(device, max_memory)


def _memory_budget(device: torch.device, max_memory: int | None) -> int:
    if max_memory:
        return int(max_memory)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    available = _available_ram()
    return int(min(8 * 2**30, 0.3 * available)) if available else 4 * 2**30


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def _count_saved_bytes(params: set[int]):
    """Count the bytes autograd saves for backward (activations; parameters excluded)."""
    seen: set[int] = set()
    counter = {"bytes": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in seen and ptr not in params:
                seen.add(ptr)
                counter["bytes"] += storage.nbytes()
        except Exception:
            counter["bytes"] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield counter


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def saved_bytes(model: nn.Module, ref: LayerRef, shape: tuple[int, ...],
                dtype: torch.dtype, batch: int = 1) -> float | None:
    """Bytes autograd would save for backward from the input to the layer ``ref`` for ``batch``
    samples of ``shape``, from a shape-only (meta device) forward pass; None when the model cannot
    run on meta tensors."""
    try:
        state = meta_state(model, keep_grad=True)
        counter = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            counter[0] += t.numel() * t.element_size()
            return t

        x = torch.empty((batch, *shape), device="meta", dtype=dtype, requires_grad=True)
        call = lambda inp: functional_call(model, state, (inp,))  # noqa: E731
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            run_to_layer(model, ref, (x,), call)
        return float(counter[0])
    except Exception:
        return None


def _estimate_sample_bytes(probe, shape: tuple[int, ...]) -> float | None:
    """Bytes one sample costs in a backward pass: :func:`saved_bytes` at batch 2 minus batch 1
    (parameters cancel) for the deepest of the probed layers, plus what grows with the number of
    targets (one input gradient and one float64 map each) and, for per-sample random weights
    batched with vmap, the sample's own parameter copies (:func:`_draw_bytes`)."""
    per_layer = []
    for ref in probe.refs:
        one = saved_bytes(probe.model, ref, shape, probe.dtype, 1)
        two = saved_bytes(probe.model, ref, shape, probe.dtype, 2)
        if one is None or two is None:
            return None
        per_layer.append(max(two - one, 1.0))
    return max(per_layer) + _extra_bytes(probe, shape)


def _extra_bytes(probe, shape: tuple[int, ...]) -> float:
    pixels = math.prod(shape)
    targets = probe.target_count(len(shape) - 1)
    element = torch.empty((), dtype=probe.dtype).element_size()
    extra = targets * (pixels * element + pixels / shape[0] * 8)
    if probe.settings.weights == "random" and probe.use_vmap:
        extra += _draw_bytes(probe.model, probe.dtype)
    return float(extra)


def _draw_bytes(model: nn.Module, dtype: torch.dtype) -> float:
    """Bytes of one sample's parameter copies on the vmap path: the float32 draw on the CPU, its
    slice of the stacked float32 tensor, and its slice of that stack on the device in ``dtype``."""
    numel = sum(p.numel() for p in model.parameters())
    return float(numel * (4 + 4 + torch.empty((), dtype=dtype).element_size()))


def _chunk_size(per_sample: float, budget: int, batch_size: int, probe) -> int:
    """Samples per backward pass: the batch size, fewer when twice the saved activations (saved
    tensors plus the gradients flowing back) would exceed the memory budget."""
    return int(max(1, min(batch_size, budget // (2 * per_sample))))
