"""Worker processes for a sweep: each model runs in a child process, with a timeout.

Workers are forked from a ``forkserver`` (``spawn`` where there is none): a clean process that has
imported torch, timm and rflens once and never ran a model, so a fresh worker starts in a
fraction of a second with nothing shared with the parent (the parent's threads and state stay
out). A worker takes models one at a time over a pipe. A model that runs past
its timeout gets its worker killed; a model that crashes its worker (a segfault, running out of
memory) loses only that worker; either way the model is recorded as ``failed`` and a new worker
takes over. Workers retire once their memory passes a limit (or after ``recycle`` models), so that
memory models leave behind does not pile up over a long sweep.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable

from rflens.zoo.catalog import Entry
from rflens.zoo.job import empty_record

READY = "ready"


@dataclass
class _Worker:
    process: Any
    conn: Connection
    started: float
    ready_at: float | None = None
    task: Entry | None = None
    deadline: float = float("inf")
    done: int = 0


@dataclass
class PoolStats:
    """How the pool spent its time: ``startups`` (seconds from starting a worker to its being
    ready, each), ``startup_cpu`` (the CPU seconds the worker spent on that: imports),
    ``killed`` (workers killed at a timeout), ``crashed`` (workers that died)."""

    startups: list[float] = field(default_factory=list)
    startup_cpu: list[float] = field(default_factory=list)
    killed: int = 0
    crashed: int = 0


def run_pool(entries: Iterable[Entry], *, workers: int = 2, timeout: float = 60.0, recycle: int = 10_000,
             max_rss_mb: int = 4096, preload: Iterable[str] = (),
             on_record: Callable[[dict], None] | None = None, job: str = "rflens.zoo.job:run_entry",
             stats: PoolStats | None = None) -> list[dict]:
    """Run every entry in ``workers`` child processes; records come back in the entries' order.

    ``timeout``: seconds one model may take in its worker (the worker's own start-up is not
    counted). A worker retires after ``recycle`` models or once its resident memory passes
    ``max_rss_mb`` MiB (starting one costs seconds of imports). ``job``: ``module:function`` a
    worker calls with each entry (the tests point it at jobs that hang or crash). ``on_record`` is
    called with each record as it arrives; each record gains ``worker_rss_mb``, the worker's
    resident memory after the model. ``preload``: modules a worker imports before it takes a
    model."""
    todo = list(entries)
    results: dict[int, dict] = {}
    pending = list(enumerate(todo))[::-1]  # popped from the end: first entry first
    stats = stats if stats is not None else PoolStats()
    ctx = _context(["rflens.zoo.pool", *preload])
    pool: list[_Worker] = []
    index_of: dict[int, int] = {}

    def finish(worker: _Worker, record: dict) -> None:
        k = index_of.pop(id(worker))
        results[k] = record
        worker.task, worker.deadline = None, float("inf")
        if on_record is not None:
            on_record(record)

    try:
        while pending or any(w.task is not None for w in pool):
            while len(pool) < min(workers, len(pending) + sum(w.task is not None for w in pool)):
                pool.append(_start(ctx, job, recycle, max_rss_mb, tuple(preload)))
            for w in pool:
                if w.ready_at is not None and w.task is None and pending:
                    k, entry = pending.pop()
                    w.task, w.deadline = entry, time.monotonic() + timeout
                    index_of[id(w)] = k
                    w.conn.send(entry)
            now = time.monotonic()
            wait_for = max(0.0, min((w.deadline for w in pool), default=now + 1) - now)
            ready = wait([w.conn for w in pool] + [w.process.sentinel for w in pool],
                         timeout=min(wait_for, 5.0))
            for w in list(pool):
                if w.conn in ready or w.process.sentinel in ready:
                    _receive(w, pool, stats, finish)
                elif w.task is not None and time.monotonic() >= w.deadline:
                    record = empty_record(w.task)
                    record.update(reason=f"timed out after {timeout:g} s (worker killed)",
                                  seconds=round(timeout, 3))
                    _stop(w, pool, kill=True)
                    stats.killed += 1
                    finish(w, record)
    finally:
        for w in list(pool):
            _stop(w, pool, kill=w.task is not None)
    return [results[k] for k in range(len(todo))]


def _context(preload: list[str]):
    """The forkserver context, told to import ``preload`` (it does so once, when it starts; a
    server already running keeps what it has, and workers import the rest themselves)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    return ctx


def _receive(w: _Worker, pool: list[_Worker], stats: PoolStats, finish) -> None:
    try:
        message = w.conn.recv() if w.conn.poll() else None
    except (EOFError, OSError):
        message = None
    if isinstance(message, tuple) and message[0] == READY:
        w.ready_at = time.monotonic()
        stats.startups.append(round(w.ready_at - w.started, 3))
        stats.startup_cpu.append(round(message[1], 3))
        return
    if isinstance(message, dict):
        w.done += 1
        retire = message.pop("_retire", False)
        finish(w, message)
        if retire or not w.process.is_alive():
            _stop(w, pool, kill=False)
        return
    if w.process.is_alive() and message is None:
        return  # woken without a message (a spurious wake-up)
    # the worker died: with a model (a crash) or without one (it retired)
    if w.task is not None:
        record = empty_record(w.task)
        code = w.process.exitcode
        record["reason"] = f"the worker process died (exit code {code}) while running this model"
        stats.crashed += 1
        finish(w, record)
    _stop(w, pool, kill=False)


def _start(ctx, job: str, recycle: int, max_rss_mb: int, preload: tuple[str, ...]) -> _Worker:
    parent, child = ctx.Pipe()
    process = ctx.Process(target=serve, args=(child, job, recycle, max_rss_mb, preload), daemon=True)
    started = time.monotonic()  # before start(): the first start also starts the forkserver
    process.start()
    child.close()
    return _Worker(process, parent, started)


def _stop(w: _Worker, pool: list[_Worker], kill: bool) -> None:
    if w in pool:
        pool.remove(w)
    if kill and w.process.is_alive():
        w.process.kill()
    else:
        try:
            w.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
    w.process.join(timeout=10)
    if w.process.is_alive():
        w.process.kill()
        w.process.join()
    w.conn.close()


def serve(conn: Connection, job: str, recycle: int, max_rss_mb: int, preload: tuple[str, ...]) -> None:
    """A worker's loop: import the job and the ``preload`` modules, say ready, run entries until
    told to stop (None), ``recycle`` entries are done or its resident memory passes
    ``max_rss_mb``."""
    import importlib
    import warnings

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # the sweep's parallelism is its worker processes
    warnings.simplefilter("ignore")
    module, _, name = job.partition(":")
    fn = getattr(importlib.import_module(module), name)
    for extra in preload:  # before saying ready: a model's timeout does not pay for imports
        try:
            importlib.import_module(extra)
        except ImportError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    conn.send((READY, time.process_time()))
    done = 0
    while True:
        try:
            entry = conn.recv()
        except (EOFError, OSError):
            return
        if entry is None:
            return
        record = fn(entry)
        done += 1
        rss = resident_mb()
        if rss is not None:
            record["worker_rss_mb"] = rss
        retire = done >= recycle or (rss is not None and rss > max_rss_mb)
        if retire:
            record["_retire"] = True
        conn.send(record)
        if retire:
            return


def resident_mb() -> int | None:
    """This process's resident memory in MiB (Linux; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 2**20

