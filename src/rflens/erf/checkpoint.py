"""Checkpoints of a long ERF run: the float64 partial sums, the counters and where the run stands,
written atomically (a temporary file renamed over the old one) so an interruption at any moment
leaves either the previous or the new checkpoint.

A checkpoint records a *fingerprint* of the run (model and a checksum of its weights, layers,
units, input shape, inputs, transform, seed, weights, activations, reduction, read-out, sample
count) and the batch size that fixes which samples share a pass. A rerun with the same file and the
same arguments continues after the last completed round and gives the same map as an uninterrupted
run (the batches are the same, whatever the number of processes); one with different arguments is
refused with the first field that differs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rflens.errors import RflensError

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint", "FORMAT"]

FORMAT = 1


@dataclass
class Checkpoint:
    """What a run needs to continue. ``next_batch``: every global batch below it is in the sums;
    ``chunk``: samples per batch; ``dtype``: the dtype the sums were computed in; ``done``: the run
    finished (a rerun just rebuilds the result)."""

    fingerprint: dict
    totals: np.ndarray
    counts: dict[str, np.ndarray]
    next_batch: int
    chunk: int
    dtype: str
    done: bool = False
    notes: tuple[str, ...] = ()


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` (a ``.npz`` file) atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    meta = {"format": FORMAT, "fingerprint": ckpt.fingerprint, "next_batch": ckpt.next_batch,
            "chunk": ckpt.chunk, "dtype": ckpt.dtype, "done": ckpt.done, "notes": list(ckpt.notes)}
    arrays = {f"count_{k}": np.asarray(v) for k, v in ckpt.counts.items()}
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, totals=ckpt.totals, meta=np.array(json.dumps(meta)), **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise RflensError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc


def load_checkpoint(path: str | os.PathLike, fingerprint: dict) -> Checkpoint | None:
    """The checkpoint in ``path`` (None when the file does not exist). Raises a one-line error when
    it cannot be read or was made by a run with other arguments."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            totals = np.array(data["totals"], dtype=np.float64)
            counts = {k.removeprefix("count_"): np.array(data[k]) for k in data.files
                      if k.startswith("count_")}
    except (OSError, ValueError, KeyError) as exc:
        raise RflensError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to "
                          "start afresh") from exc
    if meta.get("format") != FORMAT:
        raise RflensError(f"checkpoint {path} has format {meta.get('format')}, this rflens writes "
                          f"{FORMAT}; delete it to start afresh")
    diff = _first_difference(meta["fingerprint"], fingerprint)
    if diff is not None:
        raise RflensError(f"checkpoint {path} belongs to another run ({diff}); pass the same "
                          "arguments, another --checkpoint file, or delete it")
    return Checkpoint(fingerprint=meta["fingerprint"], totals=totals, counts=counts,
                      next_batch=int(meta["next_batch"]), chunk=int(meta["chunk"]),
                      dtype=str(meta["dtype"]), done=bool(meta["done"]), notes=tuple(meta["notes"]))


def _first_difference(saved: dict, current: dict) -> str | None:
    for key in sorted(set(saved) | set(current)):
        if _norm(saved.get(key)) != _norm(current.get(key)):
            return f"{key}: {_short(saved.get(key))} there, {_short(current.get(key))} now"
    return None


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
