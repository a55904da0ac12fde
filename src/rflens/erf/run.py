"""The sample loop of a gradient ERF: global batches sized to the memory budget, split over the
processes of a run, float64 sums, NaN/Inf samples counted and left out, checkpoints, one progress
bar over all processes.

Samples ``0 .. count-1`` are cut into *global batches* of ``chunk`` samples (batch ``k`` holds
samples ``k*chunk .. (k+1)*chunk - 1``); batch ``k`` is computed by rank ``k % world``, and the
processes advance in *rounds* of ``world`` batches. So every sample is computed in the same batch
whatever the number of processes, and only the order of the float64 additions differs. After each
round the ranks exchange a few counters (one small all-reduce): progress, whether the inputs ran
out, and whether float32 gradients came near underflow — then every rank restarts the run in
float64, so a map never mixes precisions.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from rflens.errors import RflensError
from rflens.erf.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rflens.erf.datasets import batch_loader
from rflens.erf.distributed import Comm
from rflens.erf.inputs import InputSource
from rflens.erf.memory import (_chunk_size, _count_saved_bytes, _estimate_sample_bytes, _extra_bytes,
                               _is_oom, _memory_budget)
from rflens.erf.probe import _Probe, _Retry

_COUNTS = ("used", "zero", "skipped")
_NO_BAD = np.iinfo(np.int64).max


@dataclass
class _Accumulator:
    """Float64 sums per target ``(targets, *spatial)`` and per-target counters."""

    total: np.ndarray | None = None
    used: np.ndarray | None = None
    zero: np.ndarray | None = None
    skipped: np.ndarray | None = None
    first_bad: int = _NO_BAD
    exhausted: bool = False
    largest_pass: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, maps: torch.Tensor, first_index: int) -> None:
        arr = maps.numpy()  # (targets, B, *spatial)
        flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
        finite = np.isfinite(flat).all(axis=2)  # (targets, B)
        bad = np.nonzero(~finite.all(axis=0))[0]
        if bad.size:
            self.first_bad = min(self.first_bad, first_index + int(bad[0]))
        good = np.where(finite.reshape(finite.shape + (1,) * (arr.ndim - 2)), arr, 0.0)
        part = good.sum(axis=1)
        self.total += part
        self.used += finite.sum(axis=1)
        self.skipped += (~finite).sum(axis=1)
        self.zero += (finite & (flat.max(axis=2, initial=0.0) == 0)).sum(axis=1)

    def counts(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _COUNTS}

    def combined(self, comm: Comm) -> "_Accumulator":
        """The sums and counters of all ranks (this rank's own are left as they are)."""
        if not comm.active:
            return self
        out = _Accumulator(total=comm.all_reduce(self.total.copy()),
                           first_bad=int(comm.all_reduce(np.array([self.first_bad]), "min")[0]),
                           exhausted=bool(comm.all_reduce(np.array([int(self.exhausted)]), "max")[0]),
                           largest_pass=int(comm.all_reduce(np.array([self.largest_pass]), "max")[0]),
                           notes=list(self.notes))
        for name in _COUNTS:
            setattr(out, name, comm.all_reduce(getattr(self, name).copy()))
        return out


def _empty(targets: int, spatial: tuple[int, ...]) -> _Accumulator:
    acc = _Accumulator(total=np.zeros((targets, *spatial)))
    acc.used, acc.zero, acc.skipped = (np.zeros(targets, np.int64) for _ in range(3))
    return acc


@dataclass
class RunOptions:
    """How a run is carried out (none of it changes the map)."""

    progress: bool = True
    nonfinite: str = "raise"
    max_memory: int | None = None
    comm: Comm = field(default_factory=Comm)
    checkpoint: Any = None
    checkpoint_every: int = 256
    fingerprint: dict | None = None
    loader_workers: int = 0


def _run(probe: _Probe, source: InputSource, shape: tuple[int, ...], samples: int, batch_size: int,
         options: RunOptions) -> _Accumulator:
    """Every rank's share of ``samples`` samples of ``source``; returns the sums of all ranks."""
    comm = options.comm
    resume = load_checkpoint(options.checkpoint, options.fingerprint) if options.checkpoint else None
    if resume is not None and resume.dtype == "float64" and probe.dtype != torch.float64:
        probe.switch_to_float64("resumed a checkpoint computed in float64")
    chunk = resume.chunk if resume is not None else _agreed_chunk(probe, source, shape, batch_size,
                                                                   options, comm)
    while True:
        acc = _run_batches(probe, source, shape, samples, chunk, options, resume)
        if acc is not None:
            break
        probe.switch_to_float64("switched to float64: float32 gradients came near underflow")
        resume = None
    total = acc.combined(comm)
    if total.skipped.sum() and options.nonfinite == "raise":
        skipped, seen = int(total.skipped.max()), int((total.used + total.skipped).max())
        raise RflensError(f"{skipped} of {seen} sample(s) gave NaN/Inf input gradients at layer "
                          f"'{probe.layer}' (first: sample {total.first_bad}); try dtype='float64', "
                          "check the model and inputs, or pass nonfinite='skip' to leave them out")
    return total


def _agreed_chunk(probe: _Probe, source: InputSource, shape: tuple[int, ...], batch_size: int,
                  options: RunOptions, comm: Comm) -> int:
    """Samples per global batch, the same on every rank: the memory budget (RAM shared by the
    processes of one machine) over the bytes one sample saves for backward. Models that cannot run
    on meta tensors measure it on sample 0 alone (that pass is not counted)."""
    budget = _memory_budget(probe.device, options.max_memory)
    if probe.device.type == "cpu" and not options.max_memory:
        budget //= max(comm.local_world, 1)
    per_sample = _estimate_sample_bytes(probe, shape)
    if per_sample is None:
        first = _first_sample(source, shape)
        if first is None:
            chunk = 1
        else:
            params = {p.untyped_storage().data_ptr() for p in probe.model.parameters()}
            with _count_saved_bytes(params) as saved:
                _maps_retrying(probe, first[None], 0)
            per_sample = max(saved["bytes"], 1.0) + _extra_bytes(probe, shape)
    chunk = _chunk_size(per_sample, budget, batch_size, probe) if per_sample else 1
    return int(comm.all_reduce(np.array([chunk], dtype=np.int64), "min")[0])


def _first_sample(source: InputSource, shape: tuple[int, ...]) -> torch.Tensor | None:
    dataset = getattr(source, "dataset", None)
    if dataset is not None:
        return dataset[0] if len(dataset) else None
    return next(iter(source.samples(shape)), None)


def _run_batches(probe: _Probe, source: InputSource, shape: tuple[int, ...], samples: int, chunk: int,
                 options: RunOptions, resume: Checkpoint | None) -> _Accumulator | None:
    """This rank's batches, in rounds; None when some rank saw float32 underflow (restart)."""
    comm = options.comm
    batches = math.ceil(samples / chunk)
    start = resume.next_batch if resume is not None else 0
    acc = _resumed(resume) if resume is not None else _empty(probe.target_count(len(shape) - 1), shape[1:])
    if resume is not None and resume.done:
        return acc if comm.is_main else _empty(*acc.total.shape[:1], acc.total.shape[1:])
    if resume is not None and not comm.is_main:
        acc = _empty(acc.total.shape[0], acc.total.shape[1:])  # rank 0 carries the saved sums
    mine = list(range(start + comm.rank, batches, comm.world))
    stream = _my_batches(source, shape, mine, chunk, samples, options.loader_workers)
    done = min(start * chunk, samples)
    saved_at = done // options.checkpoint_every
    rounds = math.ceil((batches - start) / comm.world)
    with _progress_bar(options.progress and comm.is_main and samples > chunk, samples, done) as advance:
        for k in range(rounds):
            index = start + k * comm.world + comm.rank
            x = next(stream, None) if index < batches else None
            flag = ran_out = 0
            count = 0
            if isinstance(x, _RanOut):
                ran_out, x = 1, x.partial
            if x is not None and x.shape[0]:
                maps = _maps_retrying(probe, x, index * chunk)
                if probe.underflow_risk:
                    flag = 1
                else:
                    acc.add(maps, index * chunk)
                    count = int(x.shape[0])
            state = comm.all_reduce(np.array([flag, count, ran_out], dtype=np.int64))
            if state[0]:
                return None
            done += int(state[1])
            advance(int(state[1]))
            next_batch = start + (k + 1) * comm.world
            last = k == rounds - 1 or state[2]
            if options.checkpoint and (last or done // options.checkpoint_every > saved_at):
                saved_at = done // options.checkpoint_every
                _save(options, acc, probe, min(next_batch, batches), chunk, bool(last))
            if state[2]:
                acc.exhausted = True
                break
    acc.largest_pass = max(acc.largest_pass, probe.largest_pass)
    return acc


def _resumed(resume: Checkpoint | None) -> _Accumulator:
    if resume is None:
        return _Accumulator()
    acc = _Accumulator(total=resume.totals.copy())
    for name in _COUNTS:
        setattr(acc, name, resume.counts[name].astype(np.int64))
    first_bad = resume.counts.get("first_bad")
    acc.first_bad = int(first_bad[0]) if first_bad is not None else _NO_BAD
    acc.largest_pass = int(resume.counts["largest_pass"][0]) if "largest_pass" in resume.counts else 0
    return acc


def _save(options: RunOptions, acc: _Accumulator, probe: _Probe, next_batch: int, chunk: int,
          done: bool) -> None:
    """All ranks' sums so far, written by rank 0 (a collective call: every rank takes part)."""
    comm = options.comm
    total = acc.combined(comm)
    if not comm.is_main:
        return
    counts = total.counts()
    counts["first_bad"] = np.array([total.first_bad], np.int64)
    counts["largest_pass"] = np.array([max(total.largest_pass, probe.largest_pass)], np.int64)
    save_checkpoint(options.checkpoint, Checkpoint(
        fingerprint=options.fingerprint or {}, totals=total.total, counts=counts,
        next_batch=next_batch, chunk=chunk, dtype=str(probe.dtype).removeprefix("torch."), done=done,
        notes=tuple(probe.notes)))


class _RanOut:
    """The inputs ended inside (or before) this batch; ``partial`` holds what there was."""

    def __init__(self, partial: torch.Tensor | None) -> None:
        self.partial = partial


def _my_batches(source: InputSource, shape: tuple[int, ...], mine: list[int], chunk: int,
                samples: int, workers: int) -> Iterator[Any]:
    """This rank's global batches in order: stacked tensors, a :class:`_RanOut` when the inputs end."""
    dataset = getattr(source, "dataset", None)
    if dataset is not None:
        n = min(samples, len(dataset))
        index_lists = [list(range(k * chunk, min((k + 1) * chunk, n))) for k in mine]
        full = [b for b in index_lists if b]
        yield from batch_loader(dataset, full, workers)
        if len(full) < len(index_lists):
            yield _RanOut(None)
        return
    stream = source.samples(shape)
    position = 0
    for k in mine:
        first, stop = k * chunk, min((k + 1) * chunk, samples)
        while position < first:
            if next(stream, None) is None:
                yield _RanOut(None)
                return
            position += 1
        batch = []
        while position < stop:
            item = next(stream, None)
            if item is None:
                yield _RanOut(torch.stack(batch) if batch else None)
                return
            batch.append(item)
            position += 1
        yield torch.stack(batch)


def _maps_retrying(probe: _Probe, x: torch.Tensor, first_index: int) -> torch.Tensor:
    """``probe.maps`` for one batch; a vmap failure recomputes it one draw at a time, an
    out-of-memory error splits it into halves (this rank only)."""
    try:
        return probe.maps(x, first_index)
    except _Retry:
        return _maps_retrying(probe, x, first_index)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        if x.shape[0] == 1:
            raise RflensError(f"one sample of shape {'x'.join(map(str, x.shape[1:]))} does not fit in "
                              "memory; use a smaller input") from exc
        half = x.shape[0] // 2
        return torch.cat([_maps_retrying(probe, x[:half], first_index),
                          _maps_retrying(probe, x[half:], first_index + half)], dim=1)


@contextlib.contextmanager
def _progress_bar(show: bool, total: int, done: int = 0):
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("ERF"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("samples", total=total, completed=done)
        yield lambda n: bar.advance(task, n)
