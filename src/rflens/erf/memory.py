"""How many samples one backward pass may hold: the memory budget and the bytes autograd saves
per sample (from a shape-only meta forward, or counted on the first real pass)."""

from __future__ import annotations

import contextlib
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
    """Bytes saved per sample: :func:`saved_bytes` at batch 2 minus batch 1 (parameters cancel)."""
    one = saved_bytes(probe.model, probe.ref, shape, probe.dtype, 1)
    two = saved_bytes(probe.model, probe.ref, shape, probe.dtype, 2)
    if one is None or two is None:
        return None
    return max(two - one, 1.0)


def _chunk_size(per_sample: float, budget: int, batch_size: int, probe) -> int:
    """Samples per backward pass: the batch size, fewer when twice the saved activations (saved
    tensors plus the gradients flowing back) would exceed the memory budget."""
    if probe.settings.weights == "random" and not probe.use_vmap:
        return 1
    return int(max(1, min(batch_size, budget // (2 * per_sample))))
