"""Tiled vs whole-input inference of a U-Net on a large image: time and peak memory side by side.
Not a test: it prints a table.

    .venv/bin/python benchmarks/tile_speed.py [--size 4096] [--tile 512] [--base 8] [--levels 3]
                                             [--threads N] [--repeat 1] [--device cpu]

The model is examples/unet.py (random weights, eval mode, float32), the input one channel of
standard normal noise. Each method runs in a fresh child process (so that one method's memory
does not hide the other's): the plan is made first (meta tensors, timed apart), then the run is
timed (best of --repeat; wall clock, and CPU time of all the child's threads, which is the
fairer number on a busy machine) and its peak memory taken as the child's peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) minus its resident size just before the run (the model,
the input and the imports); on CUDA, ``torch.cuda.max_memory_allocated`` minus the allocation
before the run. Both outputs are saved and compared: the largest absolute difference in float32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from rflens import tile
    from rflens.sources.models import load_model

    torch.set_num_threads(args.threads)
    model, _ = load_model(f"{ROOT / 'examples' / 'unet.py'}:build")
    model = type(model)(1, args.base, args.levels).eval()  # the size asked for
    device = torch.device(args.device)
    model = model.to(device)
    x = torch.randn((1, 1, args.size, args.size), generator=torch.Generator().manual_seed(0))
    tile.plan(model, (1, 64, 64), 64)  # warm-up: the first trace in a process imports a lot
    start = time.perf_counter()
    plan = tile.plan(model, (1, args.size, args.size), args.tile)
    plan_s = time.perf_counter() - start
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = _rss_bytes()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        if args.method == "tiled":
            y = tile.run(model, x, plan, progress=False)
        else:
            y = tile.whole(model, x, plan).cpu()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
        if args.repeat > 1:
            del y
            y = None
    if y is None:  # keep the last output for the comparison
        y = tile.run(model, x, plan, progress=False) if args.method == "tiled" else \
            tile.whole(model, x, plan).cpu()
    peak = (torch.cuda.max_memory_allocated() - base) if cuda else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    np.save(args.save, y.numpy())
    print(json.dumps({"seconds": best, "cpu_seconds": best_cpu, "peak_bytes": int(peak), "plan_seconds": plan_s,
                      "tiles": plan.n_tiles, "grid": list(plan.grid), "tile": list(plan.tile), "halo": plan.halo,
                      "multiple": list(plan.multiple), "overhead": plan.overhead,
                      "exact": plan.exact}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--base", type=int, default=8, help="channels of the first level (8)")
    p.add_argument("--levels", type=int, default=3, help="poolings (3)")
    p.add_argument("--threads", type=int, default=torch_threads())
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--method", choices=("tiled", "whole"), help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.method:
        child(args)
        return
    import numpy as np

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("tiled", "whole"):
            out = Path(tmp) / f"{method}.npy"
            cmd = [sys.executable, __file__, "--method", method, "--save", str(out)] + [
                f"--{k}={v}" for k, v in (("size", args.size), ("tile", args.tile),
                                          ("base", args.base), ("levels", args.levels),
                                          ("threads", args.threads), ("repeat", args.repeat),
                                          ("device", args.device))]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"{method} run failed:\n{done.stderr[-2000:]}")
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
            outputs[method] = np.load(out)
    diff = float(np.abs(outputs["tiled"] - outputs["whole"]).max())
    t, w = results["tiled"], results["whole"]
    print(f"U-Net (examples/unet.py, base {args.base}, {args.levels} levels) on 1×{args.size}×"
          f"{args.size}, float32, {args.device}, {args.threads} thread(s); {platform.processor() or platform.machine()}")
    print(f"plan: halo {t['halo']}, multiple {t['multiple']}, tile {t['tile']} (asked {args.tile}), "
          f"grid {t['grid']} = "
          f"{t['tiles']} tiles, overhead {100 * t['overhead']:.1f} %, exact {t['exact']}, "
          f"planned in {t['plan_seconds']:.2f} s")
    print(f"{'':8} {'wall time':>10} {'CPU time':>10} {'peak memory':>13}")
    for name, r in (("tiled", t), ("whole", w)):
        print(f"{name:8} {r['seconds']:9.1f}s {r['cpu_seconds']:9.1f}s "
              f"{r['peak_bytes'] / 2**20:9.0f} MiB")
    print(f"{'ratio':8} {t['seconds'] / w['seconds']:9.2f}x {t['cpu_seconds'] / w['cpu_seconds']:9.2f}x "
          f"{t['peak_bytes'] / max(w['peak_bytes'], 1):12.3f}x   (tiled / whole)")
    print(f"max |tiled - whole| = {diff:.3g} (float32)")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
