"""Soak run: rflens against the gradient-support oracle on many random programs (``make soak``).

Program ``seed`` is ``draw_program(RandomDraw(seed), draw_features(RandomDraw(seed)))`` from
tests/programs.py: a seed is its own repro. Each program is checked by
``programs.check_program`` (the root row and two module rows, 30 units each).

    python tests/soak.py --count 10000 --start 0 --jobs 2 --out out/soak
    python tests/soak.py --seed 1234          # one program: its code and what disagrees

Writes ``summary.json`` and ``summary.md`` (seed range, counts, every failure class with the
smallest program that shows it, as runnable code) under ``--out``. Exit status 1 when any
program got a *silent* wrong answer (a clipped box that is neither the hull nor a flagged
superset, a spurious 'global', rows named after the compile wrapper); unknown rows and refusals
are counted and listed, not failures of the run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from program_check import Finding, check_program
from programs import RandomDraw, draw_features, draw_program

TIME_LIMIT_S = 60


def program_of(seed: int):
    draw = RandomDraw(seed)
    return draw_program(draw, draw_features(draw))


def _timeout(*_):
    raise TimeoutError(f"program took more than {TIME_LIMIT_S} s")


def run_one(seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        program = program_of(seed)
    except Exception as exc:  # noqa: BLE001
        return {"seed": seed, "features": [], "findings": [["harness", f"draw: {exc}"]], "lines": 0,
                "seconds": 0.0}
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(TIME_LIMIT_S)
    try:
        findings = check_program(program, seed)
    except TimeoutError as exc:
        findings = [Finding("timeout", str(exc))]
    except Exception as exc:  # noqa: BLE001 - one broken program must not end the soak
        findings = [Finding("harness", f"check: {type(exc).__name__}: {exc}")]
    finally:
        signal.alarm(0)
    return {"seed": seed, "features": list(program.features),
            "findings": [[f.kind, f.detail] for f in findings],
            "lines": program.source.count("\n"), "seconds": time.perf_counter() - start}


def _class_key(record: dict, kind: str, detail: str) -> str:
    """Programs with one construct (or none) are classed by it; programs with several share
    one 'mixed' class per kind (their cause is one of the single-construct classes, or new)."""
    features = record["features"][0] if len(record["features"]) == 1 else (
        "mixed" if record["features"] else "base")
    if kind in ("unknown", "error", "harness", "timeout"):
        what = detail.split(": ", 1)[-1][:90]
        return f"{kind} | {features} | {what}"
    return f"{kind} | {features}"


def summarise(records: list[dict], start: int, count: int, seconds: float) -> dict:
    outcome = Counter()
    classes: dict[str, dict] = {}
    by_feature = Counter()
    for r in records:
        kinds = sorted({k for k, _ in r["findings"]})
        silent = any(k in ("box", "global", "names") for k in kinds)
        outcome["silent wrong" if silent else ("gap" if kinds else "ok")] += 1
        for f in r["features"] or ["base"]:
            by_feature[(f, "silent wrong" if silent else ("gap" if kinds else "ok"))] += 1
        for kind, detail in r["findings"]:
            key = _class_key(r, kind, detail)
            entry = classes.setdefault(key, {"kind": kind, "programs": set(), "seed": r["seed"],
                                             "lines": r["lines"], "detail": detail})
            entry["programs"].add(r["seed"])
            if r["lines"] < entry["lines"]:
                entry.update(seed=r["seed"], lines=r["lines"], detail=detail)
    features = sorted({f for f, _ in by_feature})
    return {
        "seeds": [start, start + count - 1],
        "programs": len(records),
        "seconds": round(seconds, 1),
        "outcome": dict(outcome),
        "by_feature": {f: {o: by_feature[(f, o)] for o in ("ok", "gap", "silent wrong")} for f in features},
        "classes": sorted(({"class": k, "kind": v["kind"], "programs": len(v["programs"]),
                            "smallest_seed": v["seed"], "detail": v["detail"]}
                           for k, v in classes.items()), key=lambda c: (-c["programs"], c["class"])),
    }


def markdown(summary: dict) -> str:
    lo, hi = summary["seeds"]
    out = [f"# rflens soak: seeds {lo}..{hi}", "",
           f"{summary['programs']} programs in {summary['seconds']} s: "
           + ", ".join(f"{k} {v}" for k, v in sorted(summary["outcome"].items())), "",
           "| construct | ok | gap (unknown/refused) | silent wrong |", "|---|---|---|---|"]
    for f, row in summary["by_feature"].items():
        out.append(f"| {f} | {row['ok']} | {row['gap']} | {row['silent wrong']} |")
    out += ["", "## Failure classes (smallest program of each)", ""]
    for c in summary["classes"]:
        program = program_of(c["smallest_seed"])
        out += [f"### {c['class']} — {c['programs']} program(s)", "",
                f"seed {c['smallest_seed']}: {c['detail']}", "", "```python", program.repro().rstrip(),
                "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=int(os.environ.get("RFLENS_SOAK", "10000")))
    parser.add_argument("--start", type=int, default=int(os.environ.get("RFLENS_SOAK_START", "0")))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("RFLENS_SOAK_JOBS", "2")))
    parser.add_argument("--out", default="out/soak")
    parser.add_argument("--seed", type=int, help="show one program and its findings")
    parser.add_argument("--from-records", help="rebuild the summary from a records.jsonl")
    args = parser.parse_args(argv)
    if args.from_records:
        records = [json.loads(line) for line in Path(args.from_records).read_text().splitlines()]
        seeds = [r["seed"] for r in records]
        summary = summarise(records, min(seeds), len(records), 0.0)
        return _write(summary, records, Path(args.out))
    if args.seed is not None:
        print(program_of(args.seed).repro())
        record = run_one(args.seed)
        for kind, detail in record["findings"]:
            print(f"[{kind}] {detail}")
        return 1 if any(k in ("box", "global", "names") for k, _ in record["findings"]) else 0
    seeds = range(args.start, args.start + args.count)
    begin = time.perf_counter()
    records = []
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        for i, record in enumerate(pool.imap_unordered(run_one, seeds, chunksize=8), 1):
            records.append(record)
            if i % 500 == 0:
                print(f"{i}/{args.count} programs, {time.perf_counter() - begin:.0f} s", flush=True)
    records.sort(key=lambda r: r["seed"])
    summary = summarise(records, args.start, args.count, time.perf_counter() - begin)
    return _write(summary, records, Path(args.out))


def _write(summary: dict, records: list[dict], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "summary.md").write_text(markdown(summary))
    print(json.dumps({k: summary[k] for k in ("seeds", "programs", "seconds", "outcome")}))
    print(f"classes: {len(summary['classes'])}; details in {out / 'summary.md'}")
    return 1 if summary["outcome"].get("silent wrong", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
