"""Stand-in jobs for the zoo's worker pool (tests/test_zoo_sweep.py): each takes an entry and
returns a record, hangs, or kills its own process, depending on the entry's name."""

from __future__ import annotations

import os
import time


def by_name(entry):
    if entry.name.startswith("hang"):
        time.sleep(3600)
    if entry.name.startswith("crash"):
        os._exit(7)  # like a segfault: no exception, no reply, the process is gone
    return {"name": entry.name, "source": entry.source, "family": entry.family, "status": "known",
            "reason": None, "seconds": 0.0, "pid": os.getpid()}
