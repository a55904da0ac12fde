"""``rflens zoo timm|torchvision``: run the TRF engine on every model of a zoo and sum it up."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("zoo", help="sweep every timm or torchvision model (slow; opt-in)",
                       description="Run the theoretical receptive field on every model of timm or "
                                   "torchvision (built without weights, each in a worker process "
                                   "with a timeout) and report per model whether every row is known, "
                                   "the first global layer, the ops without a rule and the time taken. "
                                   "With --from, read earlier sweeps instead of running one.")
    p.add_argument("source", nargs="?", choices=("timm", "torchvision"), help="which zoo to sweep")
    p.add_argument("--every", type=int, default=1, metavar="K", help="only every K-th model (default 1)")
    p.add_argument("--filter", action="append", metavar="GLOB",
                   help="only models whose name matches GLOB (repeatable), e.g. 'vit_*'")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds one model may take before its worker is killed (default 60)")
    p.add_argument("--from", dest="inputs", nargs="+", metavar="JSON",
                   help="read these sweep files (written with -o) instead of sweeping")
    p.add_argument("-o", "--output", metavar="FILE", help="write the sweep as JSON to FILE")
    p.add_argument("--markdown", metavar="FILE", help="write the Markdown page (docs/zoo.md) to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per model on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rflens.cli.common import emit
    from rflens.errors import RflensError
    from rflens.zoo import ZooResult, list_entries, page, sweep

    if (args.source is None) == (args.inputs is None):
        raise RflensError("give a zoo to sweep (timm or torchvision) or --from JSON files, not both")
    if args.inputs:
        results = [ZooResult.load(path) for path in args.inputs]
        if args.output:
            raise RflensError("-o writes a new sweep; with --from, write Markdown with --markdown")
    else:
        entries = list_entries(args.source, args.filter, args.every)
        progress = None if args.quiet else _Progress(len(entries))
        results = [sweep(args.source, every=args.every, patterns=args.filter, workers=args.workers,
                         timeout=args.timeout, on_record=progress, entries=entries)]
        if args.output:
            emit(results[0].to_json(), args.output)
    if args.markdown:
        emit(page(results), args.markdown)
    from rich.console import Console

    console = Console(stderr=bool(args.output or args.markdown), soft_wrap=False)
    if not console.is_terminal:
        console.width = 160
    for result in results:
        console.print(result)
        c = result.counts()
        console.print(f"{len(result.records)} models: " + ", ".join(f"{k} {v}" for k, v in c.items())
                      + f"; wall time {result.wall_seconds:.0f} s", highlight=False)
    return 0


class _Progress:
    """One line per model on stderr, as models finish: how many are done of how many, status,
    seconds, name, and the reason when not known."""

    def __init__(self, total: int) -> None:
        self.done, self.total = 0, total

    def __call__(self, record: dict) -> None:
        self.done += 1
        reason = f"  {record['reason'][:140]}" if record["status"] != "known" and record.get("reason") else ""
        print(f"{self.done:5d}/{self.total} {record['status']:8s} {record['seconds']:6.1f}s "
              f"{record['name']}{reason}", file=sys.stderr, flush=True)
