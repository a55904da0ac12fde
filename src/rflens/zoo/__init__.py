"""The model-zoo sweep: run the TRF engine on every timm or torchvision model and say, per model,
whether every row is known, which ops have no rule, and how long it took.

``rflens.zoo.sweep("timm", every=10)`` gives a :class:`ZooResult`; ``rflens zoo timm -o zoo.json``
is the same from the command line. Each model runs in a worker process with a timeout (see
:mod:`rflens.zoo.pool`); how each is built and fed is in :mod:`rflens.zoo.catalog`.
"""

from __future__ import annotations

import time
from typing import Callable

from rflens.zoo.catalog import SOURCES, Entry, list_entries
from rflens.zoo.job import STATUSES
from rflens.zoo.markdown import page
from rflens.zoo.pool import PoolStats, run_pool
from rflens.zoo.result import ZooResult

DEFAULT_JOB = "rflens.zoo.job:run_entry"


def sweep(source: str, *, every: int = 1, patterns: list[str] | None = None, workers: int = 2,
          timeout: float = 60.0, on_record: Callable[[dict], None] | None = None,
          entries: list[Entry] | None = None, job: str = DEFAULT_JOB,
          recycle: int = 10_000, max_rss_mb: int = 4096) -> ZooResult:
    """Run the TRF engine on the models of ``source`` (``timm`` or ``torchvision``): those matching
    the glob ``patterns`` (all when None), every ``every``-th one, in ``workers`` worker
    processes, ``timeout`` seconds per model. ``entries`` replaces the listing (tests);
    ``on_record`` sees each model's record as it arrives."""
    from rflens.errors import RflensError

    if workers < 1:
        raise RflensError(f"--workers {workers}: need at least one worker process")
    if timeout <= 0:
        raise RflensError(f"--timeout {timeout}: must be a positive number of seconds")
    if entries is None:
        entries = list_entries(source, patterns, every)
    stats = PoolStats()
    start = time.perf_counter()
    preload = (source, "rflens.trf.engine") if job == DEFAULT_JOB else ()
    records = run_pool(entries, workers=workers, timeout=timeout, recycle=recycle, max_rss_mb=max_rss_mb,
                       on_record=on_record, job=job, stats=stats, preload=preload)
    wall = time.perf_counter() - start
    settings = {"every": every, "filter": list(patterns or []), "workers": workers, "timeout": timeout}
    return ZooResult(source, tuple(records), settings, wall, tuple(stats.startups), _versions(source),
                     tuple(stats.startup_cpu))


def _versions(source: str) -> dict[str, str]:
    import importlib

    import rflens

    out = {"rflens": rflens.__version__}
    for name in ("torch", "torchvision", "timm"):
        if name == "timm" and source != "timm":
            continue
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            pass
    return out


__all__ = ["sweep", "ZooResult", "Entry", "SOURCES", "STATUSES", "list_entries", "page"]
