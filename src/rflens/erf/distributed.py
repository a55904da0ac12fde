"""Several processes for one ERF: ``torch.distributed`` with gloo (CPU) or nccl (CUDA).

A run is *distributed* in one of three ways:

- ``workers=N`` (``--workers N``): the calling process is rank 0 and rflens starts N - 1 more
  (``torch.multiprocessing`` with the ``spawn`` method), joined in a process group on a free
  localhost port; the caller gets rank 0's result;
- under ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
  ``MASTER_PORT``): every process runs the same command, rflens joins them in a process group (and
  leaves it again when done);
- inside a process group the caller already initialised: rflens uses it as it is.

Samples are split by global batch index (batch ``k`` goes to rank ``k % world``), random weight
draws are seeded by the global sample index, and the float64 sums are all-reduced, so the map does
not depend on the number of processes. With CUDA, rank ``r`` uses ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from rflens.errors import RflensError

__all__ = ["Comm", "SINGLE", "from_environment", "spawn", "free_port", "TIMEOUT"]

TIMEOUT = datetime.timedelta(minutes=30)


@dataclass
class Comm:
    """This process's place in a run: ``rank`` of ``world`` (``local_rank`` among the processes of
    its machine, ``local_world`` of them). ``active`` when a process group is in use; ``owned``
    when rflens created it (and destroys it at the end)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    active: bool = False
    owned: bool = False
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """The device of this rank: ``cuda:LOCAL_RANK`` for a CUDA run without an index."""
        if requested.type == "cuda" and requested.index is None and self.world > 1:
            return torch.device("cuda", self.local_rank % max(torch.cuda.device_count(), 1))
        return requested

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def all_reduce(self, values: np.ndarray, op: str = "sum") -> np.ndarray:
        """Element-wise sum / max / min of ``values`` over all ranks (float64 or int64 kept)."""
        if not self.active:
            return values
        import torch.distributed as dist

        reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
        t = torch.from_numpy(np.ascontiguousarray(values)).to(self._comm_device())
        dist.all_reduce(t, op=reduce_op)
        return t.cpu().numpy()

    def finish(self) -> None:
        """Leave the process group when rflens created it."""
        if self.owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owned = self.active = False


SINGLE = Comm()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise RflensError(f"environment variable {name}={value!r} is not an integer") from None


def from_environment(device: torch.device, workers: int | None = None) -> Comm:
    """The :class:`Comm` of this process: an initialised process group, else one built from
    ``torchrun``'s environment (``RANK``/``WORLD_SIZE``), else a single process."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        _check_workers(workers, world)
        return Comm(dist.get_rank(), world, _env_int("LOCAL_RANK", dist.get_rank()),
                    _env_int("LOCAL_WORLD_SIZE", world), active=world > 1, owned=False,
                    backend=dist.get_backend())
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Comm()
    _check_workers(workers, world)
    if not dist.is_available():
        raise RflensError("WORLD_SIZE is set but this torch build has no torch.distributed")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise RflensError(f"WORLD_SIZE={world} is set but {name} is not; start the processes with "
                              "torchrun, or use --workers N")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if backend == "nccl":
        torch.cuda.set_device(local_rank % max(torch.cuda.device_count(), 1))
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=TIMEOUT)
    return Comm(rank, world, local_rank, _env_int("LOCAL_WORLD_SIZE", world), active=True, owned=True,
                backend=backend)


def _check_workers(workers: int | None, world: int) -> None:
    if workers not in (None, 1, world):
        raise RflensError(f"workers={workers} inside a run of {world} processes (torchrun or an "
                          "initialised process group); drop --workers, the launcher sets the count")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(workers: int, job: Callable[..., Any], args: tuple) -> Any:
    """Run ``job(*args)`` as rank 0 in this process and in ``workers - 1`` new processes (ranks
    1 ...), joined in one process group on localhost (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT`` set, so :func:`from_environment` finds it), and return rank 0's
    value. Rank 0 starts only when every new process has read its arguments; an
    :class:`RflensError` in a new process is raised here with its message, any other failure as a
    ``RuntimeError`` naming the rank."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    port = free_port()
    context = mp.start_processes(_worker, args=(workers, port, queue, job, args), nprocs=workers - 1,
                                 join=False, start_method="spawn")
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    saved_env = {k: os.environ.get(k) for k in keys}
    threads = torch.get_num_threads()
    try:
        _wait_ready(context, queue, workers - 1)
        os.environ.update(_rank_env(0, workers, port))
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) // workers)))
        try:
            result = job(*args)
        except Exception as exc:
            _raise_child_failure(context, queue, exc)
            raise
        while not context.join(timeout=1):
            pass
        return result
    except BaseException:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
        raise
    finally:
        torch.set_num_threads(threads)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _rank_env(rank: int, workers: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(workers), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(workers), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def _wait_ready(context, queue, count: int) -> None:
    ready = 0
    while ready < count:
        while not queue.empty():
            kind, payload = queue.get()
            if kind == "ready":
                ready += 1
            else:
                _raise_message(kind, payload, None)
        if ready < count and any(p.exitcode is not None for p in context.processes):
            import time

            time.sleep(0.2)  # let a failing process's message arrive
            failure = _first_failure(queue)
            if failure is not None:
                _raise_message(*failure, None)
            raise RuntimeError("an ERF worker process exited before it started (could it import the "
                               "model's class?)")
        if ready < count:
            import time

            time.sleep(0.02)


def _raise_child_failure(context, queue, exc: BaseException) -> None:
    """After rank 0 failed: a new process's own failure, when there is one, says more."""
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        failure = _first_failure(queue)
        if failure is not None:
            _raise_message(*failure, exc)
        if all(p.exitcode is not None for p in context.processes) or isinstance(exc, RflensError):
            return
        time.sleep(0.1)


def _raise_message(kind: str, message: str, cause: BaseException | None) -> None:
    if kind == "rflens":
        raise RflensError(message) from None
    raise RuntimeError(message) from cause


def _first_failure(queue) -> tuple[str, str] | None:
    found = None
    while not queue.empty():
        kind, payload = queue.get()
        if kind in ("rflens", "error") and found is None:
            found = (kind, payload)
    return found


def _worker(index: int, workers: int, port: int, queue, job: Callable[..., Any], args: tuple) -> None:
    rank = index + 1
    queue.put(("ready", rank))
    os.environ.update(_rank_env(rank, workers, port))
    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // workers)))
    try:
        job(*args)
    except RflensError as exc:
        queue.put(("rflens", str(exc)))
        raise
    except BaseException as exc:
        queue.put(("error", f"ERF worker {rank} of {workers} failed: {type(exc).__name__}: "
                            f"{str(exc).strip()[:300]}"))
        raise
