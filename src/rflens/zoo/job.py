"""One model of a sweep: build it, run the TRF engine on it, and sum the result up in one record
(a plain dict, so that it crosses process boundaries and lands in JSON as is).

Record fields: ``name``, ``source``, ``family``, ``status`` (see :data:`STATUSES`), ``reason`` (one
line: why not ``known``), ``seconds`` (build + analysis, in the worker), ``cpu_seconds`` (the
worker's CPU time for them: what the model costs when other processes compete for the cores),
``times`` (``build``,
``capture``, ``analysis``, ``result``: seconds per step), ``input`` (each input's shape without the
batch axis), ``build`` and ``capture`` (``meta`` or ``cpu``), ``rows``, ``unknown_rows``,
``global_rows``, ``first_global`` and ``first_unknown`` (row names), ``why_unknown`` (what the first
unknown row says), ``unsupported`` (op -> number of calls without a rule), ``warning`` (the first
line of the engine's first warning), ``warnings`` (how many), ``note`` (how the input was adapted).
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any, Iterator

from rflens.errors import RflensError
from rflens.zoo.catalog import Entry, build

# known: every row known (exact, or flagged global; see fine()); unknown: some rows unknown; failed: the
# model could not be built or analysed (or timed out, or crashed its worker); skipped: not run
STATUSES = ("known", "unknown", "failed", "skipped")
LINE = 300  # characters kept of one line of text


def empty_record(entry: Entry) -> dict[str, Any]:
    return {"name": entry.name, "source": entry.source, "family": entry.family, "status": "failed",
            "reason": None, "seconds": 0.0, "cpu_seconds": 0.0, "times": {}, "input": [], "build": None,
            "capture": None,
            "rows": 0, "unknown_rows": 0, "global_rows": 0, "first_global": None,
            "first_unknown": None, "why_unknown": [], "unsupported": {}, "warning": None,
            "warnings": 0, "note": ""}


def run_entry(entry: Entry) -> dict[str, Any]:
    """Build and analyse one model; never raises for a model's own failure (it becomes a
    ``failed`` or ``skipped`` record with the reason)."""
    record = empty_record(entry)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        _run(entry, record)
    except Exception as exc:  # noqa: BLE001 - a model's failure is a result, not a crash
        record["status"] = "failed"
        record["reason"] = one_line(f"{type(exc).__name__}: {exc}")
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["cpu_seconds"] = round(time.process_time() - cpu, 3)
    return record


def _run(entry: Entry, record: dict[str, Any]) -> None:
    import rflens

    times = record["times"]
    built = _build(entry, "meta", times, record)
    if built is None:
        return
    try:
        rf = _analyse(rflens, entry, built, times)
    except RflensError as exc:
        # a model built on meta cannot fall back to a real CPU run: build it for real and retry
        if built.device != "meta":
            raise
        built = _build(entry, "cpu", times, record, after=exc)
        if built is None:
            return
        rf = _analyse(rflens, entry, built, times)
    summarise(rf, record)


def _build(entry: Entry, device: str, times: dict, record: dict, after: Exception | None = None):
    """Build on ``device``, from meta falling back to CPU when the constructor cannot run on meta;
    None when the model is skipped (a missing optional package makes the record ``skipped``)."""
    t = time.perf_counter()
    built = None
    try:
        built = build(entry, device)
    except ModuleNotFoundError as exc:
        record.update(status="skipped", reason=f"needs the package {exc.name}, which is not installed")
        return None
    except Exception as exc:  # noqa: BLE001
        if device != "meta":
            raise RflensError(one_line(f"building {entry.name} on cpu failed: {type(exc).__name__}: "
                                       f"{exc}")) from exc
        after = exc
    finally:
        times["build"] = round(times.get("build", 0.0) + time.perf_counter() - t, 4)
    if built is None:
        return _build(entry, "cpu", times, record, after=after)
    record["build"] = built.device
    record["input"] = built.shapes
    notes = [built.note] if built.note else []
    if after is not None:
        notes.append(one_line(f"built on cpu because the meta attempt failed "
                              f"({type(after).__name__}: {after})"))
    record["note"] = "; ".join(notes)
    return built


def _analyse(rflens, entry: Entry, built, times: dict):
    with phase_timers(times):
        t = time.perf_counter()
        try:
            return rflens.receptive_field(built.model, example_inputs=built.inputs, name=entry.name)
        finally:
            total = time.perf_counter() - t
            times["result"] = round(times.get("result", 0.0) + total - _engine_part(times), 4)


def _engine_part(times: dict) -> float:
    return times.pop("_capture_now", 0.0) + times.pop("_analysis_now", 0.0)


@contextlib.contextmanager
def phase_timers(times: dict) -> Iterator[None]:
    """Time the engine's two steps (capture, then the rules over the op graph) by wrapping them in
    :mod:`rflens.trf.engine` for the duration of the block. Only the sweep's worker processes do
    this; the wrappers are removed on exit."""
    from rflens.trf import engine

    saved = {}
    for attr, key in (("capture_with_fallback", "capture"), ("analyse", "analysis")):
        fn = getattr(engine, attr, None)
        if fn is None:
            continue
        saved[attr] = fn
        setattr(engine, attr, _timed(fn, key, times))
    try:
        yield
    finally:
        for attr, fn in saved.items():
            setattr(engine, attr, fn)


def _timed(fn, key: str, times: dict):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - t
            times[key] = round(times.get(key, 0.0) + spent, 4)
            times[f"_{key}_now"] = times.get(f"_{key}_now", 0.0) + spent
    return wrapper


def summarise(rf, record: dict[str, Any]) -> None:
    """Fill ``record`` from a :class:`~rflens.trf.result.ReceptiveField`: status, row counts,
    first global and first unknown rows, ops without a rule, warnings."""
    layers = list(rf.layers)
    unknown = [layer for layer in layers if not fine(layer)]
    first_global = next((layer.name for layer in layers if layer.is_global), None)
    unsupported: dict[str, int] = {}
    for u in rf.unsupported_ops:
        key = u.op if u.reason == "no receptive-field rule" else f"{u.op}: {u.reason}"
        unsupported[one_line(key)] = unsupported.get(one_line(key), 0) + u.count
    why = list(unknown[0].unknown_ops) + list(unknown[0].lost) if unknown else []
    record.update(
        status="unknown" if unknown else "known",
        capture=rf.capture_path,
        rows=len(layers),
        unknown_rows=len(unknown),
        global_rows=sum(layer.is_global for layer in layers),
        first_global=first_global,
        first_unknown=unknown[0].name if unknown else None,
        why_unknown=[one_line(w) for w in why],
        unsupported=unsupported,
        warning=one_line(rf.warnings[0].splitlines()[0]) if rf.warnings else None,
        warnings=len(rf.warnings),
    )
    if unknown:
        record["reason"] = f"{len(unknown)} of {len(layers)} rows unknown from {unknown[0].name}: " \
                           + "; ".join(record["why_unknown"][:2])


def fine(layer) -> bool:
    """A row that counts for ``known``: an exact field, or one flagged global with no unknown op or
    lost axis upstream (a global flag on a row that is unknown too is not enough: RAFT's rows
    after its ``grid_sample`` are both)."""
    return layer.known or (layer.is_global and not layer.unknown_ops and not layer.lost)


def one_line(text: Any, limit: int = LINE) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


_SHAPE = re.compile(r"\((?:\d+, )*\d+,?\)|\[(?:\d+, )*\d+\]")


def generic(reason: str) -> str:
    """A reason with its shapes and counts blanked, so that the same cause in different models (or
    layers) reads the same: ``view from (1, 56, 56, 96) to (...)`` -> ``view from (…) to (…)``."""
    return re.sub(r"\b\d+×", "N×", _SHAPE.sub("(…)", reason))
