"""``rflens experiment NAME [-o DIR]``: reproduce a finding of the receptive-field literature.

NAME is one of :data:`rflens.experiments.EXPERIMENTS`, ``all`` (every one, in order) or ``list``.
Each run writes ``DIR/NAME.json`` and ``DIR/NAME.png`` and prints a table of its checks (expected
vs measured, agrees or not; open questions show their answer); ``all`` ends with one summary row
per experiment. ``--quick`` runs the quick mode of the multi-seed training experiments,
``--workers N`` spreads their seeds over N processes. The exit code is 0 unless ``--strict`` is
given and some measurement disagrees with the literature (then 1).
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    from rflens.experiments import DEFAULT_DIR, names

    p = sub.add_parser("experiment", help="reproduce the receptive-field literature (figure + numbers)",
                       description="Run one experiment (or 'all'; 'list' lists them), write NAME.json "
                                   "and NAME.png into DIR and print what was expected, what was "
                                   f"measured and whether they agree. Experiments: {', '.join(names())}.")
    p.add_argument("name", metavar="NAME", help="an experiment name, 'all' or 'list'")
    p.add_argument("-o", "--output-dir", metavar="DIR", default=DEFAULT_DIR,
                   help=f"folder for NAME.json and NAME.png (default {DEFAULT_DIR})")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch threads (default 1: the models are tiny, and one thread avoids "
                        "contention on a shared machine)")
    p.add_argument("--quick", action="store_true",
                   help="the quick mode of the experiments that train networks over seeds (fewer "
                        "samples and epochs: checks the wiring in seconds; its numbers are not the "
                        "published ones)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes for the seeds of the multi-seed experiments (default 1; the "
                        "numbers do not depend on it)")
    p.add_argument("--strict", action="store_true",
                   help="exit with code 1 when a measurement disagrees with the literature")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rflens.experiments import get, names, run_experiment

    console = Console(soft_wrap=False, width=max(Console().width, 120))
    if args.name == "list":
        console.print(_list_table())
        return 0
    selected = names() if args.name == "all" else [get(args.name).name]
    results = []
    for name in selected:
        result = run_experiment(name, args.output_dir, seed=args.seed, threads=args.threads,
                                quick=args.quick, workers=args.workers)
        console.print(_checks_table(result))
        print(f"wrote {args.output_dir}/{name}.json and {args.output_dir}/{name}.png", file=sys.stderr)
        results.append(result)
    if len(results) > 1:
        console.print(_summary_table(results))
    return 1 if args.strict and not all(r.passed for r in results) else 0


def _list_table():
    from rich.table import Table

    from rflens.experiments import EXPERIMENTS

    table = Table(title="rflens experiments (rflens experiment NAME | all)")
    table.add_column("NAME", style="bold")
    table.add_column("what it reproduces")
    for e in EXPERIMENTS.values():
        table.add_row(e.name, e.summary)
    return table


def _checks_table(result):
    from rich.table import Table

    mode = ", quick mode" if result.settings.get("mode") == "quick" else ""
    table = Table(title=f"{result.name}: {result.title}  ({result.wall_s:.1f} s wall, "
                        f"{result.cpu_s:.1f} s CPU{mode})", title_justify="left")
    table.add_column("quantity")
    table.add_column("expected")
    table.add_column("measured")
    table.add_column("agrees", justify="center")
    for c in result.checks:
        verdict = (f"[yellow]open: {c.answer}[/yellow]" if c.open
                   else "[green]yes[/green]" if c.passed else "[red]NO[/red]")
        table.add_row(c.quantity, c.expected, c.measured, verdict)
    return table


def _summary_table(results):
    from rich.table import Table

    table = Table(title="summary", title_justify="left")
    table.add_column("experiment", style="bold")
    table.add_column("checks agreeing", justify="right")
    table.add_column("wall s", justify="right")
    table.add_column("CPU s", justify="right")
    for r in results:
        checks = [c for c in r.checks if not c.open]
        good = sum(bool(c.passed) for c in checks)
        colour = "green" if good == len(checks) else "red"
        opened = len(r.checks) - len(checks)
        extra = f" (+{opened} open)" if opened else ""
        quick = " (quick)" if r.settings.get("mode") == "quick" else ""
        table.add_row(r.name + quick, f"[{colour}]{good}/{len(checks)}[/{colour}]{extra}",
                      f"{r.wall_s:.1f}", f"{r.cpu_s:.1f}")
    total_wall = sum(r.wall_s for r in results)
    total_cpu = sum(r.cpu_s for r in results)
    table.add_row("total", "", f"{total_wall:.1f}", f"{total_cpu:.1f}")
    return table
