"""Markdown pages of zoo sweeps: a summary, one table row per family, the ops without a rule, and
every model that is not ``known`` with its reason (a model not listed there is known)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from rflens.zoo.job import STATUSES, generic

INTRO = """\
# The model zoo

How far rflens' theoretical receptive fields get on every vision model of timm and torchvision,
measured by the sweep that ships with rflens. Regenerate this page with `make zoo` (each section
below says how long its sweep took), or by hand:

```
rflens zoo timm -o zoo-timm.json
rflens zoo torchvision -o zoo-torchvision.json
rflens zoo --from zoo-timm.json zoo-torchvision.json --markdown docs/zoo.md
```

Every model is built without weights (on the meta device where its constructor allows, else on
the CPU with initialisation switched off) and analysed at its own input size: timm's
`pretrained_cfg["input_size"]`, torchvision's defaults (3x224x224, 3x299x299 for Inception,
3x16x112x112 or 3x16x224x224 for video), a detector's own resize size (fields are then in the
pixels of the image handed to the detector), two 3x224x224 images for RAFT (fields refer to the
first). Each model runs in a worker process with a timeout.

Status: **known** — every row has an exact field or is flagged global; **unknown** — some rows
are unknown (rflens says which op, and why); **failed** — the model could not be built or
analysed, timed out, or crashed its worker; **skipped** — not run (the reason says why).
**global** counts the known models with at least one row flagged global (every classifier has one
at its pooling; a ViT from its first attention block on); *first global* is the row most models
of the family first flag global.
"""


def page(results: Sequence, intro: str = INTRO) -> str:
    """A whole page: the introduction, then one section per sweep."""
    return intro + "\n" + "\n".join(sweep_markdown(r, 2) for r in results)


def sweep_markdown(result, level: int = 2) -> str:
    h = "#" * level
    c = result.counts()
    n = len(result.records)
    s = result.settings
    lines = [f"{h} {result.source}", ""]
    versions = ", ".join(f"{k} {v}" for k, v in result.versions.items())
    every = f", every {s['every']}th model" if s.get("every", 1) > 1 else ""
    filt = f", models matching {' '.join(s['filter'])}" if s.get("filter") else ""
    workers = s.get("workers", "?")
    lines.append(f"{n} models{every}{filt}; {versions}. Wall time {result.wall_seconds:.0f} s with "
                 f"{workers} worker process(es) and a timeout of {s.get('timeout', 0):g} s per model; "
                 f"the workers spent {result.cpu_seconds:.0f} CPU seconds (on a machine shared with other "
                 f"jobs the wall time is longer than CPU seconds / workers).")
    lines.append("")
    lines.append("| status | models | share |")
    lines.append("|---|---:|---:|")
    for status in STATUSES:
        lines.append(f"| {status} | {c[status]} | {_share(c[status], n)} |")
    lines += ["", _time_line(result), "", f"{h}# {result.source}: families", "",
              "| family | models | known | global | unknown | failed | skipped | first global | "
              "ops without a rule (models) | first cause of unknown rows (models) |",
              "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for family, records in result.families().items():
        fc = result.counts(records)
        glob = sum(1 for r in records if r["status"] == "known" and r.get("global_rows"))
        firsts = Counter(r["first_global"] for r in records if r.get("first_global"))
        first = f"`{firsts.most_common(1)[0][0]}`" if firsts else ""
        ops = _ops(records)
        causes = [(cause, k) for cause, k in result.causes(records)
                  if not cause.startswith(("failed", "skipped"))]
        cause = f"{_cell(causes[0][0])} ({causes[0][1]})" if causes else ""
        lines.append(f"| {family} | {len(records)} | {fc['known']} | {glob} | {fc['unknown'] or ''} | "
                     f"{fc['failed'] or ''} | {fc['skipped'] or ''} | {first} | {ops} | {cause} |")
    lines += ["", f"{h}# {result.source}: ops without a rule", ""]
    top = result.top_ops(20)
    if top:
        lines += ["| op | models | calls |", "|---|---:|---:|"]
        lines += [f"| `{_cell(op)}` | {m} | {k} |" for op, m, k in top]
    else:
        lines.append("None: every op met has a rule.")
    lines += ["", f"{h}# {result.source}: models that are not known", ""]
    rest = [r for r in result.records if r["status"] != "known"]
    if not rest:
        lines.append("None.")
    else:
        lines += ["| model | family | status | input | first unknown row | why |",
                  "|---|---|---|---|---|---|"]
        for r in sorted(rest, key=lambda r: (r["family"], r["name"])):
            why = "; ".join(r.get("why_unknown") or []) or r.get("reason") or ""
            shape = ", ".join("x".join(map(str, i)) for i in r.get("input") or [])
            first = f"`{r['first_unknown']}`" if r.get("first_unknown") else ""
            lines.append(f"| {r['name']} | {r['family']} | {r['status']} | {shape} | {first} | "
                         f"{_cell(why)} |")
    return "\n".join(lines) + "\n"


def _time_line(result) -> str:
    split = result.time_split()
    total = sum(split.values()) or 1.0
    parts = ", ".join(f"{k} {v:.0f} s ({100 * v / total:.0f}%)" for k, v in
                      sorted(split.items(), key=lambda x: -x[1]) if v)
    return f"Time summed over the worker processes: {parts}."


def _ops(records) -> str:
    models: Counter = Counter()
    for r in records:
        for op in r.get("unsupported", {}):
            models[generic(op)] += 1
    return "; ".join(f"`{_cell(op)}` ({k})" for op, k in models.most_common(4))


def _share(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%" if n else ""


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
