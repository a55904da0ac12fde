"""The result of a zoo sweep: one record per model (see :mod:`rflens.zoo.job`) plus how the sweep
ran. It renders itself as JSON, as a Markdown page (a table per family) and in the terminal."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rflens.errors import RflensError
from rflens.zoo.job import STATUSES, generic

SCHEMA_VERSION = 1
KIND = "rflens-zoo"


@dataclass(frozen=True)
class ZooResult:
    """A sweep over the models of ``source`` (``timm`` or ``torchvision``).

    ``records``: one dict per model, in the order they were listed. ``settings``: ``every``,
    ``filter``, ``workers``, ``timeout``. ``wall_seconds``: the whole sweep, start to end.
    ``startups``: seconds each worker process took to start (imports), ``startup_cpu`` the CPU
    seconds of each start. ``versions``: of rflens, torch, torchvision and timm."""

    source: str
    records: tuple[dict, ...]
    settings: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    startups: tuple[float, ...] = ()
    versions: dict = field(default_factory=dict)
    startup_cpu: tuple[float, ...] = ()

    # summaries ----------------------------------------------------------------------------
    def counts(self, records=None) -> dict[str, int]:
        """Models per status (every status present, zeros included)."""
        c = Counter(r["status"] for r in (self.records if records is None else records))
        return {s: c.get(s, 0) for s in STATUSES}

    def families(self) -> dict[str, list[dict]]:
        """Records by family, families in name order."""
        out: dict[str, list[dict]] = {}
        for r in sorted(self.records, key=lambda r: (r["family"], r["name"])):
            out.setdefault(r["family"], []).append(r)
        return out

    def top_ops(self, n: int = 20) -> list[tuple[str, int, int]]:
        """The ops without a rule, as ``(op, models, calls)``, most models first."""
        models: Counter = Counter()
        calls: Counter = Counter()
        for r in self.records:
            for op, k in r.get("unsupported", {}).items():
                models[generic(op)] += 1
                calls[generic(op)] += k
        return [(op, m, calls[op]) for op, m in sorted(models.items(), key=lambda x: (-x[1], x[0]))][:n]

    def causes(self, records=None) -> list[tuple[str, int]]:
        """Why models are not ``known``: the first unknown row's reason (or the failure), with
        shapes blanked, as ``(cause, models)``, most models first."""
        c: Counter = Counter()
        for r in (self.records if records is None else records):
            if r["status"] == "unknown":
                c[generic((r.get("why_unknown") or ["(no reason given)"])[0])] += 1
            elif r["status"] in ("failed", "skipped"):
                c[f"{r['status']}: {generic(r.get('reason') or '')}"] += 1
        return sorted(c.items(), key=lambda x: (-x[1], x[0]))

    def time_split(self) -> dict[str, float]:
        """Seconds summed over all models, per step (``build``, ``capture``, ``analysis``,
        ``result``), plus ``failed`` (time of models that failed or timed out) and ``startup``
        (worker processes starting)."""
        split = Counter()
        for r in self.records:
            for k, v in r.get("times", {}).items():
                if not k.startswith("_"):
                    split[k] += v
            if r["status"] == "failed" and not r.get("times"):
                split["failed"] += r.get("seconds", 0.0)
        split["startup"] = sum(self.startups)
        return {k: round(v, 2) for k, v in split.items()}

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the whole sweep in its workers: every model plus every worker start."""
        return sum(r.get("cpu_seconds", 0.0) for r in self.records) + sum(self.startup_cpu)

    @property
    def known_fraction(self) -> float:
        return self.counts()["known"] / len(self.records) if self.records else 0.0

    # serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "schema_version": SCHEMA_VERSION, "source": self.source,
                "settings": dict(self.settings), "versions": dict(self.versions),
                "wall_seconds": round(self.wall_seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
                "startups": list(self.startups), "startup_cpu": list(self.startup_cpu),
                "counts": self.counts(), "models": list(self.records)}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @staticmethod
    def from_dict(data: dict, where: str = "the data") -> "ZooResult":
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise RflensError(f"{where} is not an rflens zoo sweep (no \"kind\": \"{KIND}\"); "
                              "write one with 'rflens zoo timm -o FILE'")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise RflensError(f"{where} has zoo schema version {data.get('schema_version')}, this "
                              f"rflens reads {SCHEMA_VERSION}; run the sweep again")
        return ZooResult(data["source"], tuple(data["models"]), data.get("settings", {}),
                         data.get("wall_seconds", 0.0), tuple(data.get("startups", ())),
                         data.get("versions", {}), tuple(data.get("startup_cpu", ())))

    @staticmethod
    def load(path: str | Path) -> "ZooResult":
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise RflensError(f"cannot read {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise RflensError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from exc
        return ZooResult.from_dict(data, str(path))

    def to_markdown(self, heading_level: int = 2) -> str:
        from rflens.zoo.markdown import sweep_markdown

        return sweep_markdown(self, heading_level)

    def __rich__(self):
        from rich.table import Table

        table = Table(title=f"rflens zoo {self.source}: {len(self.records)} models, "
                            f"{self.wall_seconds:.0f} s", title_justify="left")
        table.add_column("family")
        for s in STATUSES:
            table.add_column(s, justify="right")
        table.add_column("first cause")
        for family, records in self.families().items():
            c = self.counts(records)
            causes = self.causes(records)
            table.add_row(family, *(str(c[s] or "") for s in STATUSES),
                          causes[0][0][:80] if causes else "")
        c = self.counts()
        table.add_row("[b]all[/b]", *(f"[b]{c[s]}[/b]" for s in STATUSES), "")
        return table
