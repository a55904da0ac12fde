"""The sample loop of a gradient ERF: batches sized to the memory budget, float64 sums, NaN/Inf
samples counted and left out, a progress bar."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from rflens.errors import RflensError
from rflens.erf.inputs import InputSource
from rflens.erf.memory import _chunk_size, _count_saved_bytes, _estimate_sample_bytes, _is_oom, _memory_budget
from rflens.erf.probe import _Probe, _Retry


@dataclass
class _Accumulator:
    total: np.ndarray | None = None
    used: int = 0
    zero: int = 0
    skipped: int = 0
    exhausted: bool = False
    largest_pass: int = 0
    bad_indices: list[int] = field(default_factory=list)

    def add(self, maps: torch.Tensor, first_index: int) -> None:
        self.largest_pass = max(self.largest_pass, int(maps.shape[0]))
        arr = maps.numpy()
        flat = arr.reshape(arr.shape[0], -1)
        finite = np.isfinite(flat).all(axis=1)
        for i in np.nonzero(~finite)[0]:
            self.bad_indices.append(first_index + int(i))
        good = arr[finite]
        self.skipped += int((~finite).sum())
        self.zero += int((flat[finite].max(axis=1, initial=0.0) == 0).sum())
        part = good.sum(axis=0)
        self.total = part if self.total is None else self.total + part
        self.used += int(good.shape[0])



def _run(probe: _Probe, source: InputSource, shape: tuple[int, ...], samples: int, batch_size: int,
         progress: bool, nonfinite: str, max_memory: int | None) -> _Accumulator:
    acc = _Accumulator()
    stream = source.samples(shape)
    budget = _memory_budget(probe.device, max_memory)
    per_sample = _estimate_sample_bytes(probe, shape)
    # without an estimate, the first sample runs alone and its saved tensors are counted
    chunk = _chunk_size(per_sample, budget, batch_size, probe) if per_sample else 1
    done = 0
    pending: list[torch.Tensor] = []
    with _progress_bar(progress and samples > batch_size, samples) as advance:
        while done < samples:
            while len(pending) < min(chunk, samples - done) and not acc.exhausted:
                try:
                    pending.append(next(stream))
                except StopIteration:
                    acc.exhausted = True
            if not pending:
                break
            x = torch.stack(pending[:chunk])
            params = {p.untyped_storage().data_ptr() for p in probe.model.parameters()}
            try:
                with _count_saved_bytes(params) if per_sample is None else contextlib.nullcontext({}) as saved:
                    maps = probe.maps(x, done)
            except _Retry:
                chunk = 1
                continue
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                if chunk == 1:
                    raise RflensError(f"one sample of shape {'x'.join(map(str, shape))} does not fit in "
                                      "memory; use a smaller input") from exc
                chunk = max(1, chunk // 2)
                continue
            if probe.underflow_risk:
                probe.switch_to_float64(f"switched to float64 at sample {done}: float32 gradients "
                                        "came near underflow")
                continue
            acc.add(maps, done)
            done += x.shape[0]
            del pending[:x.shape[0]]
            advance(x.shape[0])
            if per_sample is None:
                per_sample = max(saved["bytes"] / x.shape[0], 1.0)
                chunk = _chunk_size(per_sample, budget, batch_size, probe)
    if acc.skipped and nonfinite == "raise":
        raise RflensError(f"{acc.skipped} of {acc.used + acc.skipped} sample(s) gave NaN/Inf input "
                          f"gradients at layer '{probe.layer}' (first: sample {acc.bad_indices[0]}); "
                          "try dtype='float64', check the model and inputs, or pass nonfinite='skip' "
                          "to leave them out")
    return acc


@contextlib.contextmanager
def _progress_bar(show: bool, total: int):
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("ERF"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("samples", total=total)
        yield lambda n: bar.advance(task, n)
