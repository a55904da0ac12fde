"""Dense prediction speed: one pass of the rarefied network vs the prod(J) shifted passes of
shift-and-stitch, side by side, for a few models. Not a test: it prints a table.

    .venv/bin/python benchmarks/dense_speed.py [--quick] [--dtype float32] [--repeat 3]
                                               [--threads N] [--device cpu] [--shifts-per-pass 1]
                                               [--clock wall|cpu]

Columns: J (total stride per axis), shifts (= passes of shift-and-stitch unless --shifts-per-pass
batches several per pass), time of all shifted passes plus stitching, time of one rarefied pass
(best of --repeat after a warm-up), ratio (shift-and-stitch / rarefied: how many times faster the
rarefied pass is), and the max |difference| on the interior where both must agree.
Weights are random (weights=None); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn

from rflens.dense import compare


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    layer: str | None
    shape: tuple[int, ...]  # (C, *spatial)
    quick: bool = True


def _toy_1d() -> nn.Module:
    return nn.Sequential(nn.Conv1d(8, 32, 5, 2, 2), nn.ReLU(), nn.MaxPool1d(3, 2, 1),
                         nn.Conv1d(32, 32, 5, 2, 2), nn.ReLU(), nn.AvgPool1d(2),
                         nn.Conv1d(32, 32, 3, padding=1))


def _toy_2d() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1))


def _vgg16() -> nn.Module:
    return torchvision.models.vgg16(weights=None).features


def _resnet18() -> nn.Module:
    return torchvision.models.resnet18(weights=None)


CASES = [
    Case("toy 1-D conv/pool chain", _toy_1d, None, (8, 4096)),
    Case("toy 2-D conv/pool chain", _toy_2d, None, (3, 128, 128)),
    Case("vgg16 features", _vgg16, "9", (3, 112, 112)),
    Case("vgg16 features", _vgg16, "16", (3, 112, 112)),
    Case("resnet18", _resnet18, "layer1", (3, 112, 112)),
    Case("resnet18", _resnet18, "layer2", (3, 112, 112)),
    Case("vgg16 features", _vgg16, "23", (3, 128, 128), quick=False),
    Case("resnet18", _resnet18, "layer3", (3, 224, 224), quick=False),
]


def _row(case: Case, args: argparse.Namespace) -> list[str]:
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = case.build().to(device=args.device, dtype=dtype).eval()
    x = torch.randn((1, *case.shape), dtype=dtype, device=args.device)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    r = compare(model, x, layer=case.layer, repeat=args.repeat, warmup=True,
                shifts_per_pass=args.shifts_per_pass, clock=clock)
    diff = r["max_abs_diff"]
    return [case.name, case.layer or "-", "x".join(map(str, case.shape)),
            "x".join(map(str, r["jump"])), f"{r['shifts']}/{r['passes']}",
            f"{r['time_shift_stitch_s']:.4f}", f"{r['time_rarefied_s']:.4f}", f"{r['ratio']:.2f}",
            "nan" if math.isnan(diff) else f"{diff:.1e}"]


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for i, row in enumerate([header, *rows]):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="skip the slowest cases")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--shifts-per-pass", type=int, default=1)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or process CPU time (steadier on a shared machine; with N "
                        "threads it sums their time)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device "
          f"{args.device}, {torch.get_num_threads()} threads, {args.dtype}, best of {args.repeat}, "
          f"{args.shifts_per_pass} shift(s) per pass, {args.clock} clock")
    header = ["model", "layer", "input", "J", "shifts/passes", "shift+stitch s", "rarefied s",
              "ratio", "max|diff|"]
    rows = []
    for case in CASES:
        if args.quick and not case.quick:
            continue
        rows.append(_row(case, args))
        print(f"  done: {case.name} {case.layer or ''}", file=sys.stderr)
    _print_table(header, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
