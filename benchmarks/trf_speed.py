"""How long does ``rflens.receptive_field`` take, next to a plain meta-tensor forward pass and
torchscan's summary (a real CPU forward with hooks), measured side by side in one run?

    python benchmarks/trf_speed.py [--repeat 7] [--models resnet50 vgg16 ...]

Prints one row per model: medians in milliseconds and the ratio rflens / plain meta forward.
Not a test: timings depend on the machine; run it to see the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time

import torch
import torchvision

import rflens

MODELS = ["resnet50", "vgg16", "densenet121", "convnext_tiny", "efficientnet_b0"]


def median_time(fn, repeat: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plain_meta_forward(model: torch.nn.Module, shape) -> callable:
    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.empty((1, *shape), device="meta")

    def run():
        with torch.no_grad():
            meta(x)
    return run


def torchscan_summary(model, shape):
    try:
        import torchscan
    except ImportError:
        return None

    def run():
        with contextlib.redirect_stdout(io.StringIO()):
            torchscan.summary(model, shape)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    shape = (3, 224, 224)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {shape}, "
          f"median of {args.repeat}")
    print(f"{'model':16s} {'rflens ms':>10s} {'meta fwd ms':>12s} {'ratio':>6s} {'torchscan ms':>13s}")
    for name in args.models:
        model = torchvision.models.get_model(name, weights=None).eval()
        t_rf = median_time(lambda: rflens.receptive_field(model, shape), args.repeat)
        t_meta = median_time(plain_meta_forward(model, shape), args.repeat)
        scan = torchscan_summary(model, shape)
        try:
            t_scan = median_time(scan, max(1, args.repeat // 3)) if scan else None
        except Exception as exc:  # torchscan fails on some models; say so
            t_scan = None
            print(f"  (torchscan failed on {name}: {type(exc).__name__})")
        scan_text = f"{t_scan * 1e3:13.1f}" if t_scan is not None else f"{'n/a':>13s}"
        print(f"{name:16s} {t_rf * 1e3:10.1f} {t_meta * 1e3:12.1f} {t_rf / t_meta:6.2f} {scan_text}",
              flush=True)


if __name__ == "__main__":
    main()
